using Onnx;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using OnnxUnlearn.Unlearning;
using Xunit.Abstractions;
using static OnnxUnlearn.Tests.Exporters.Exporter;

namespace OnnxUnlearn.Tests.Exporters;

/// <summary>
/// scikit-learn models in skl2onnx's real form (testdata/skl_logreg, skl_linreg; see testdata/sklearn_models.py):
/// LinearClassifier → L1 Normalizer → ZipMap (the default), the same without ZipMap, one-vs-rest (LOGISTIC scores), and a
/// LinearRegressor, against float64 reference gradients.
/// </summary>
public class SklearnTests(ITestOutputHelper log)
{
    const string Coefficients = "LinearClassifier.coefficients", Intercepts = "LinearClassifier.intercepts";

    /// <summary>Mean loss and gradient by parameter name over the fixture's data.</summary>
    static (double Loss, Dictionary<string, float[]> Grad, TrainingArtifact Artifact) Grad(string fixture, string model, LossKind loss)
    {
        using var data = Dataset.Load(Fixtures.File(fixture, "data.npz"));
        using var s = Evaluator.Open(Fixtures.File(fixture, model), new LossSettings { Loss = loss, BatchSize = 24 }, data);
        var grad = new float[s.Layout.Size];
        var r = s.Gradient(s.ReadParameters(), data, grad);
        return (r.Loss, Enumerable.Range(0, s.Layout.Count).ToDictionary(i => s.Layout.Parameters[i].Name, i => s.Layout.Of(grad, i).ToArray()), s.Artifact());
    }

    [Theory]
    [InlineData("skl_logreg", "model.onnx", "", "ce")]          // ZipMap: the loss goes on the probabilities it reads
    [InlineData("skl_logreg", "nozipmap.onnx", "", "ce")]
    [InlineData("skl_logreg", "nozipmap.onnx", "", "ce-prob")]  // through the Normalizer's and Softmax's rules instead
    [InlineData("skl_logreg", "ovr.onnx", "ovr/", "ce")]        // σ(z)/Σσ(z), computed from z
    [InlineData("skl_logreg", "ovr.onnx", "ovr/", "ce-prob")]
    [InlineData("skl_linreg", "model.onnx", "", "mse")]         // LinearRegressor, output `variable` [N, 1]
    public void GradMatchesTheFloat64Reference(string fixture, string model, string prefix, string loss)
    {
        var reference = Npz.Read(Fixtures.File(fixture, "reference.npz"));
        var (value, grad, _) = Grad(fixture, model, LossHead.Parse(loss));
        Assert.Equal(reference[prefix + "loss"].ToDouble()[0], value, 1e-5 * Math.Max(1, Math.Abs(value)));
        var names = reference.Keys.Where(k => k.StartsWith(prefix + "grad/")).Select(k => k[(prefix + "grad/").Length..]).Order().ToList();
        Assert.Equal(names, grad.Keys.Order());
        foreach (var name in names)
        {
            double err = Numerics.RelativeL2(reference[prefix + "grad/" + name].ToDouble(), grad[name]);
            log.WriteLine($"{fixture}/{model} {loss} {name}: relative L2 error {err:E2}");
            Assert.True(err < 1e-4, $"{fixture}/{model} {loss} {name}: relative L2 error {err:E2}");
        }
    }

    [Fact]
    public void CrossEntropyLooksThroughTheNormalizerToTheScores()
    {
        // The plain form (LinearClassifier's own softmax output, as testdata/linear_classifier has it) and the skl2onnx
        // form with its L1 Normalizer give the same loss and gradient: both are taken of the scores before the softmax.
        var file = ModelFile.Load(Fixtures.File("skl_logreg", "nozipmap.onnx"));
        var plain = file.Model.Clone();
        var g = plain.Graph;
        g.Node.Remove(g.Node.Single(n => n.OpType == "Normalizer"));
        g.Node.Single(n => n.OpType == "LinearClassifier").Output[1] = "probabilities";
        using var dir = new TempDir();
        using var data = Dataset.Load(Fixtures.File("skl_logreg", "data.npz"));
        (double, float[], string) Run(string path)
        {
            using var s = Evaluator.Open(path, new LossSettings(), data);
            var grad = new float[s.Layout.Size];
            var r = s.Gradient(s.ReadParameters(), data, grad);
            return (r.Loss, grad, s.Artifact().Output);
        }
        var (lossPlain, gradPlain, _) = Run(Save(plain, dir.File("plain.onnx")));
        var (loss, grad, output) = Run(file.Path);
        Assert.NotEqual("probabilities", output);
        Assert.Equal(lossPlain, loss, 1e-7);
        Assert.True(Numerics.RelativeL2(gradPlain, grad) < 1e-6);

        var (_, _, ovr) = Grad("skl_logreg", "ovr.onnx", LossKind.CrossEntropy);
        Assert.Equal(LossKind.CrossEntropyOfSigmoids, ovr.Loss);
        Assert.Equal("probabilities", ovr.ModelOutput);
    }

    [Fact]
    public void OneVsRestCrossEntropyStaysAccurateWhereTheSigmoidsSaturate()
    {
        // Scores ×40: σ(z) rounds to 0 or 1 in float32. With the first 8 labels flipped, those samples are confidently
        // wrong: σ(z_label) underflows, so −log of the rounded probabilities is inf (ce-prob clamps it at −log 1e-12).
        // From z, the loss and its gradient match a float64 evaluation.
        var m = ModelFile.Load(Fixtures.File("skl_logreg", "ovr.onnx")).Model.Clone();
        var clf = m.Graph.Node.Single(n => n.OpType == "LinearClassifier");
        foreach (var a in clf.Attribute.Where(a => a.Name is "coefficients" or "intercepts"))
            for (int i = 0; i < a.Floats.Count; i++) a.Floats[i] *= 40;
        var w = clf.Attribute.Single(a => a.Name == "coefficients").Floats.ToArray();
        var bias = clf.Attribute.Single(a => a.Name == "intercepts").Floats.ToArray();
        using var dir = new TempDir();
        var path = Save(m, dir.File("sharp.onnx"));
        using var original = Dataset.Load(Fixtures.File("skl_logreg", "data.npz"));
        var y = original.Arrays[LossHead.LabelInput].ToInt64().Select((v, i) => i < 8 ? (v + 1) % 10 : v).ToArray();
        using var data = new Dataset(new Dictionary<string, NdArray> { ["X"] = original.Arrays["X"], [LossHead.LabelInput] = NdArray.FromInt64(y, y.Length) }, "flipped");
        using var s = Evaluator.Open(path, new LossSettings(), data);
        var grad = new float[s.Layout.Size];
        var r = s.Gradient(s.ReadParameters(), data, grad);

        // float64: ℓ = −log σ(z_y) + log Σσ(z_j), log σ(z) = −log(1 + e^−z); dℓ/dz = (p − onehot)·σ(−z)/N
        var x = data.Arrays["X"].ToFloat();
        int n = (int)data.Rows, c = bias.Length, f = w.Length / c;
        double loss = 0; var gw = new double[w.Length];
        for (int i = 0; i < n; i++)
        {
            var logSig = new double[c];
            for (int k = 0; k < c; k++)
            {
                double z = bias[k];
                for (int j = 0; j < f; j++) z += (double)w[k * f + j] * x[i * f + j];
                logSig[k] = z >= 0 ? -Math.Log(1 + Math.Exp(-z)) : z - Math.Log(1 + Math.Exp(z));
            }
            double max = logSig.Max(), lse = max + Math.Log(logSig.Sum(u => Math.Exp(u - max)));
            loss += (lse - logSig[y[i]]) / n;
            for (int k = 0; k < c; k++)
            {
                double dz = (Math.Exp(logSig[k] - lse) - (k == y[i] ? 1 : 0)) * (1 - Math.Exp(logSig[k])) / n;
                for (int j = 0; j < f; j++) gw[k * f + j] += dz * x[i * f + j];
            }
        }
        Assert.Equal(loss, r.Loss, 1e-4 * loss);
        double err = Numerics.RelativeL2(gw, s.Layout.Of(grad, s.Layout.Parameters.ToList().FindIndex(p => p.Name == Coefficients)).ToArray());
        using var prob = Evaluator.Open(path, new LossSettings { Loss = LossKind.CrossEntropyProb }, data);
        double clamped = prob.Gradient(prob.ReadParameters(), data, []).Loss;
        log.WriteLine($"saturated one-vs-rest: loss {loss:F4} (float64), {r.Loss:F4} (ce), {clamped:F4} (ce-prob); coefficient gradient relative L2 error {err:E2}");
        Assert.True(err < 1e-4, $"relative L2 error {err:E2}");
        Assert.True(Math.Abs(clamped - loss) > 0.1 * loss, "the rounded probabilities were expected to lose the loss here");
    }

    [Fact]
    public void ZipMapOutputIsSkippedByDefaultAndNamedInErrors()
    {
        var file = ModelFile.Load(Fixtures.File("skl_logreg", "model.onnx"));
        Assert.Equal("probabilities", Parameters.OutputOrDefault(file, null));
        var e = Assert.Throws<UserError>(() => Parameters.OutputOrDefault(file, "output_probability"));
        Assert.Contains("ZipMap", e.Message);
        Assert.Contains("--output 'probabilities'", OnnxUnlearn.Cli.Cli.Describe(e));
        Assert.Throws<UserError>(() => TrainableParameters.Discover(file, "output_probability"));

        var summary = ModelSummary.Of(file);
        Assert.Equal("seq(map(int64, float32))", summary.Outputs.Single(o => o.Name == "output_probability").Type);
        Assert.Empty(summary.OpsWithoutGradient); // Normalizer has a rule; ZipMap is never on a loss path
        Assert.All(summary.Parameters, p => Assert.True(p.Trainable, p.Reason));
        Assert.Equal(650, summary.TrainableElements);
    }

    [Fact]
    public void RegressionTargetsWithoutTheirTargetAxisAreAClearError()
    {
        // sklearn's y is [N]; LinearRegressor's `variable` is [N, 1], so mse needs the targets as [N, 1].
        using var original = Dataset.Load(Fixtures.File("skl_linreg", "data.npz"));
        var t = original.Arrays[LossHead.LabelInput];
        using var flat = new Dataset(new Dictionary<string, NdArray> { ["X"] = original.Arrays["X"], [LossHead.LabelInput] = NdArray.FromFloat(t.ToFloat(), t.Shape[0]) }, "flat.npz");
        using var s = Evaluator.Open(Fixtures.File("skl_linreg", "model.onnx"), new LossSettings { Loss = LossKind.MeanSquaredError }, original);
        var e = Assert.Throws<UserError>(() => s.Gradient(s.ReadParameters(), flat, new float[s.Layout.Size]));
        Assert.Contains("'label' has shape (64)", e.Message);
        Assert.Contains("needs 2 axes", e.Message);
        Assert.Contains("reshape(-1, 1)", e.Message);
    }

    [Theory]
    [InlineData("model.onnx")]
    [InlineData("ovr.onnx")]
    public void UnlearnALabelFlipPatchesOnlyTheCoefficients(string model)
    {
        // Four samples of the training set had their labels flipped: correct them, updating the classifier (last layer).
        using var dir = new TempDir();
        var input = Fixtures.File("skl_logreg", model);
        var output = dir.File("unlearned.onnx");
        using var train = Dataset.Load(Fixtures.File("skl_logreg", "data.npz"));
        var (forget, corrected) = Correction(train, 4, 10);
        using (forget) using (corrected)
        {
            var (selected, edited) = Unlearn(input, train, forget, corrected, new UnlearnOptions { Select = SelectionKind.LastLayer }, output);
            Assert.Equal(10 * 64 + 10, selected.Length);
            var diff = ModelDiff.Compare(input, output);
            Assert.Null(diff.StructureDifference);
            Assert.False(diff.OtherBytesDiffer);
            Assert.Contains(Coefficients, diff.Parameters.Select(p => p.Name));
            Assert.All(diff.Parameters, p => Assert.Contains(p.Name, new[] { Coefficients, Intercepts }));
            // ONNX Runtime runs the written model (ZipMap included) and gives what the in-memory edit gives.
            var x = new Dictionary<string, NdArray> { ["X"] = train.Arrays["X"] };
            var written = ModelFile.Load(output).Model;
            written.Graph.Output.Add(new global::Onnx.ValueInfoProto { Name = "probabilities" });
            edited.Graph.Output.Add(new global::Onnx.ValueInfoProto { Name = "probabilities" });
            Assert.Equal(Run(edited, x, "probabilities"), Run(written, x, "probabilities"));
        }
    }
}
