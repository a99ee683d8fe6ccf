using Google.Protobuf;
using Onnx;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Autodiff.Lowering;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using OnnxUnlearn.Tests.Autodiff;
using OnnxUnlearn.Unlearning;
using static OnnxUnlearn.Tests.Exporters.Exporter;

namespace OnnxUnlearn.Tests.Exporters;

/// <summary>
/// ai.onnx.ml LinearClassifier/LinearRegressor as skl2onnx writes LogisticRegression (LOGISTIC, SOFTMAX), LinearSVC
/// (NONE) and LinearRegression, built by hand: weights are attributes, lowered to standard ops for gradients.
/// </summary>
public class LinearModelTests
{
    const int Features = 4;

    /// <summary>Outputs label (int64) then probabilities (float): the default loss output must skip the labels.</summary>
    internal static ModelProto Classifier(int rows, int labels, string post, string name = "linear")
    {
        var rng = new Random(5 + rows);
        var node = Node("LinearClassifier", ["X"], ["label", "probabilities"],
            ("coefficients", Random(rng, rows * Features)), ("intercepts", Random(rng, rows, 0.5)),
            ("classlabels_ints", Enumerable.Range(0, labels).Select(i => (long)i).ToArray()),
            ("post_transform", post), ("multi_class", 0L));
        node.Domain = "ai.onnx.ml";
        node.Name = name;
        var g = new GraphProto { Name = "classifier", Node = { node } };
        g.Input.Add(Value("X", DataTypes.Float, -1, Features));
        g.Output.Add(Value("label", DataTypes.Int64, -1));
        g.Output.Add(Value("probabilities", DataTypes.Float, -1, rows == 1 && labels == 2 ? 2 : rows));
        return Model(g, opset: 13, producer: "skl2onnx", domains: ("ai.onnx.ml", 1));
    }

    internal static ModelProto Regressor(int targets, string post)
    {
        var rng = new Random(9 + targets);
        var node = Node("LinearRegressor", ["X"], ["variable"],
            ("coefficients", Random(rng, targets * Features)), ("intercepts", Random(rng, targets)), ("targets", (long)targets), ("post_transform", post));
        node.Domain = "ai.onnx.ml";
        node.Name = "";
        var g = new GraphProto { Name = "regressor", Node = { node } };
        g.Input.Add(Value("X", DataTypes.Float, -1, Features));
        g.Output.Add(Value("variable", DataTypes.Float, -1, targets));
        return Model(g, opset: 13, producer: "skl2onnx", domains: ("ai.onnx.ml", 1));
    }

    static ModelProto Build(string kind, int rows, int labels, string post) => kind == "classifier" ? Classifier(rows, labels, post) : Regressor(rows, post);

    static Dictionary<string, NdArray> X(int rows = 12) => new() { ["X"] = Samples(rows, Features, 2, seed: 8, input: "X")["X"] };

    [Theory]
    [InlineData("classifier", 3, 3, "NONE")]
    [InlineData("classifier", 3, 3, "LOGISTIC")]
    [InlineData("classifier", 3, 3, "SOFTMAX")]
    [InlineData("classifier", 2, 2, "LOGISTIC")] // skl2onnx's binary form: two rows
    [InlineData("classifier", 1, 2, "NONE")]     // binary with one row: scores [1 − s, s]
    [InlineData("classifier", 1, 2, "LOGISTIC")] // [1 − σ(s), σ(s)]
    [InlineData("classifier", 1, 2, "SOFTMAX")]
    [InlineData("classifier", 1, 0, "LOGISTIC")] // a lone score: no transform
    [InlineData("regressor", 1, 0, "NONE")]
    [InlineData("regressor", 1, 0, "LOGISTIC")]
    [InlineData("regressor", 2, 0, "LOGISTIC")]
    [InlineData("regressor", 2, 0, "SOFTMAX")]
    public void LoweredScoresEqualOnnxRuntime(string kind, int rows, int labels, string post)
    {
        var m = Build(kind, rows, labels, post);
        var lowered = LinearScores.Lower(OpsetUpgrade.Apply(m), m.Graph);
        var output = m.Graph.Output[^1].Name;
        Assert.DoesNotContain(lowered.Graph.Node, n => n.Output.Contains(output) && n.Domain == "ai.onnx.ml");
        var expected = Run(m, X(), output);
        var actual = Run(lowered, X(), output);
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-6 + 1e-5 * Math.Abs(expected[i]), $"element {i}: ONNX Runtime {expected[i]}, lowered {actual[i]}");
    }

    [Theory]
    [InlineData("classifier", 3, 3, "NONE")]
    [InlineData("classifier", 3, 3, "LOGISTIC")]
    [InlineData("classifier", 3, 3, "SOFTMAX")]
    [InlineData("classifier", 1, 2, "LOGISTIC")]
    [InlineData("classifier", 1, 2, "NONE")]
    [InlineData("regressor", 2, 0, "NONE")]
    public void GradientMatchesFiniteDifferences(string kind, int rows, int labels, string post)
    {
        using var dir = new TempDir();
        var m = Build(kind, rows, labels, post);
        int columns = (int)m.Graph.Output[^1].Type.TensorType.Shape.Dim[1].DimValue;
        var rng = new Random(2);
        var arrays = X();
        arrays[LossHead.LabelInput] = NdArray.FromFloat(Random(rng, 12 * columns), 12, columns);
        using var data = new Dataset(arrays, "samples");
        using var s = Evaluator.Open(Save(m, dir.File("model.onnx")), new LossSettings { Loss = LossKind.MeanSquaredError }, data);
        Assert.Equal(m.Graph.Output[^1].Name, s.Artifact().Output); // the first float output, not the labels
        var prefix = kind == "classifier" ? "linear" : "LinearRegressor_0";
        Assert.Equal([prefix + ".coefficients", prefix + ".intercepts"], s.Layout.Parameters.Select(p => p.Name));
        Assert.Equal([rows, Features], s.Layout.Parameters[0].Shape);
        var r = GradCheck.CheckSession(s, data);
        Assert.True(r.MaxRelError <= GradCheck.Tolerance(false), $"relative error {r.MaxRelError:E2} ({r.Detail})");
    }

    [Fact]
    public void InspectShowsAttributeParameters()
    {
        var file = new ModelFile(Classifier(3, 3, "SOFTMAX"), "clf.onnx", Path.GetTempPath());
        var s = ModelSummary.Of(file);
        Assert.Empty(s.OpsWithoutGradient);
        Assert.Collection(s.Parameters,
            p => { Assert.Equal("linear.coefficients", p.Name); Assert.Equal([3L, Features], p.Shape); Assert.Equal("node-attribute", p.Storage); Assert.True(p.Trainable); },
            p => { Assert.Equal("linear.intercepts", p.Name); Assert.Equal([3L], p.Shape); Assert.True(p.Trainable); });
        // The labels carry no gradient: the reason points at the scores output.
        var labels = ModelSummary.Of(file, "label");
        Assert.All(labels.Parameters, p => { Assert.False(p.Trainable); Assert.Contains("--output 'probabilities'", OnnxUnlearn.Cli.Cli.Describe(p.Reason!)); });
        // An unnamed node is named by its position, as the write-back names it.
        var unnamed = Regressor(1, "NONE");
        Assert.Equal(["LinearRegressor_0.coefficients", "LinearRegressor_0.intercepts"],
            ModelSummary.Of(new ModelFile(unnamed, "reg.onnx", Path.GetTempPath())).Parameters.Select(p => p.Name));
    }

    [Fact]
    public void WithoutAFloatOutputTheErrorSaysHowToChooseOne()
    {
        var m = Classifier(3, 3, "NONE");
        m.Graph.Output.RemoveAt(1);
        var file = new ModelFile(m, "labels-only.onnx", Path.GetTempPath());
        var e = Assert.Throws<UserError>(() => Parameters.OutputOrDefault(file, null));
        Assert.Contains("no float output", e.Message);
        Assert.Contains("'label' (int64)", e.Message);
        Assert.Contains("--output", OnnxUnlearn.Cli.Cli.Describe(e));
        Assert.All(ModelSummary.Of(file).Parameters, p => Assert.Contains("no float output", p.Reason));
    }

    [Fact]
    public void UnsupportedPostTransformIsAUserError()
    {
        var m = Classifier(3, 3, "PROBIT");
        Assert.Contains("PROBIT", Assert.Throws<UserError>(() => LinearScores.Lower(OpsetUpgrade.Apply(m), m.Graph)).Message);
    }

    [Fact]
    public void UnlearnPatchesTheAttributeFloatsAndMatchesAnInMemoryEdit()
    {
        using var dir = new TempDir();
        var input = Save(Classifier(3, 3, "NONE"), dir.File("svc.onnx")); // LinearSVC: raw decision scores
        var output = dir.File("new.onnx");
        var arrays = Samples(24, Features, 3, input: "X");
        using var train = new Dataset(arrays, "train");
        var (forget, corrected) = Correction(train, 4, 3);
        using (forget) using (corrected)
        {
            var (selected, edited) = Unlearn(input, train, forget, corrected, new UnlearnOptions { Select = SelectionKind.LastLayer }, output);
            Assert.Equal(3 * Features + 3, selected.Length); // the classifier is the last layer
            var diff = ModelDiff.Compare(input, output);
            Assert.Null(diff.StructureDifference);
            Assert.False(diff.OtherBytesDiffer);
            Assert.Equal(["linear.coefficients", "linear.intercepts"], diff.Parameters.Select(p => p.Name));
            var x = new Dictionary<string, NdArray> { ["X"] = arrays["X"] };
            var written = Run(ModelFile.Load(output).Model, x, "probabilities");
            Assert.Equal(Run(edited, x, "probabilities"), written);
            Assert.NotEqual(Run(ModelFile.Load(input).Model, x, "probabilities"), written);
        }
    }

    [Fact]
    public void PatchingThePyTorchFixtureChangesOnlyTheSelectedAttributeFloats()
    {
        // testdata/linear_classifier: LinearClassifier 'LinearClassifier' with 10×64 coefficients and 10 intercepts.
        var input = Fixtures.File("linear_classifier", "model.onnx");
        var patches = new Dictionary<string, TensorPatch>
        {
            ["LinearClassifier.coefficients"] = new([0, 639], [0.5f, -0.75f]),
            ["LinearClassifier.intercepts"] = new([9], [1.25f]),
        };
        using var dir = new TempDir();
        var output = dir.File("patched.onnx");
        Assert.Equal(3, WeightPatch.Write(input, output, patches).ElementsChanged);

        var diff = ModelDiff.Compare(input, output);
        Assert.Null(diff.StructureDifference);
        Assert.False(diff.OtherBytesDiffer);
        Assert.Equal(new Dictionary<string, long> { ["LinearClassifier.coefficients"] = 2, ["LinearClassifier.intercepts"] = 1 },
            diff.Parameters.ToDictionary(p => p.Name, p => p.ElementsDiffering));
        Assert.Equal(new FileInfo(input).Length, new FileInfo(output).Length);

        static Dictionary<string, float[]> Values(ModelFile f) => Parameters.Candidates(f.Graph).ToDictionary(c => c.Name, c => c.Tensor.ReadFloats(f.Folder));
        var before = Values(ModelFile.Load(input));
        var after = Values(ModelFile.Load(output));
        foreach (var (name, values) in before)
        {
            var expected = values.ToArray();
            var p = patches[name];
            for (int k = 0; k < p.Values.Length; k++) expected[p.Indices![k]] = p.Values[k];
            Assert.Equal(expected, after[name]);
        }
    }
}
