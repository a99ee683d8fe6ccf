using Google.Protobuf;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using OnnxUnlearn.Unlearning;

namespace OnnxUnlearn.Tests.Runtime;

/// <summary>
/// Data is checked where it meets the loss: class labels are integers in [0, classes) (or the ignore index), float inputs
/// and targets hold no NaN or infinity unless <see cref="LossSettings.AllowNonFinite"/>; nothing wrong reaches ONNX Runtime.
/// </summary>
public class DataCheckTests
{
    static readonly Dictionary<string, NdArray> Mlp = Npz.Read(Fixtures.File("mlp", "data.npz"));

    static Dataset WithLabel(NdArray label, string name = "labels.npz") => new(new Dictionary<string, NdArray> { ["x"] = Mlp["x"], ["label"] = label }, name);

    static Dataset WithLabels(string name, params (int Row, long Value)[] changes)
    {
        var labels = Mlp["label"].ToInt64();
        foreach (var (row, value) in changes) labels[row] = value;
        return WithLabel(NdArray.FromInt64(labels, labels.Length), name);
    }

    static Dataset WithX(int row, int column, float value)
    {
        var x = (float[])Mlp["x"].Data.Clone();
        x[row * 64 + column] = value;
        return new(new Dictionary<string, NdArray> { ["x"] = NdArray.FromFloat(x, 64, 64), ["label"] = Mlp["label"] }, "x.npz");
    }

    static UserError Refused(Dataset data, LossSettings? settings = null)
    {
        using var model = Evaluator.Open(Fixtures.File("mlp", "model.onnx"), settings ?? new LossSettings(), data);
        return Assert.Throws<UserError>(() => model.Loss(model.ReadParameters(), data));
    }

    [Theory]
    [InlineData(3, -1, "holds -1 at row 3, outside the 10 classes [0, 10) of the loss ce of output 'logits'")]
    [InlineData(5, 10, "holds 10 at row 5, outside the 10 classes [0, 10) of the loss ce of output 'logits'")]
    [InlineData(0, long.MinValue, "holds -9223372036854775808 at row 0, outside the 10 classes")]
    public void LabelsOutsideTheClassesAreRefusedNamingTheRowAndValue(int row, long value, string message)
    {
        var e = Refused(WithLabels("bad.npz", (row, value)));
        Assert.Contains("'bad.npz': array 'label' " + message, e.Message);
        Assert.Equal(["IgnoreIndex"], e.Settings);
    }

    [Fact]
    public void TheIgnoreIndexMayLieOutsideTheClasses()
    {
        using var data = WithLabels("padded.npz", (3, -1), (7, -1));
        using var model = Evaluator.Open(Fixtures.File("mlp", "model.onnx"), new LossSettings { IgnoreIndex = -1 }, data);
        Assert.Equal(62, model.Loss(model.ReadParameters(), data).Count);
        var e = Refused(WithLabels("other.npz", (3, -2)), new LossSettings { IgnoreIndex = -1 });
        Assert.Contains("holds -2 at row 3", e.Message);
        Assert.Contains("only -1, the ignore index, may lie outside", e.Message);
    }

    [Fact]
    public void BoolAndFloatLabelsAreRefusedForClassLosses()
    {
        var labels = Mlp["label"].ToInt64();
        var asBool = Refused(WithLabel(NdArray.FromBool(labels.Select(v => v % 2 == 1).ToArray(), 64)));
        Assert.Contains("array 'label' has dtype bool, but the loss ce of output 'logits' takes integer class indices in [0, 10)", asBool.Message);
        var asFloat = Refused(WithLabel(NdArray.FromFloat(labels.Select(v => (float)v).ToArray(), 64)));
        Assert.Contains("array 'label' has dtype float32", asFloat.Message);
        Assert.Contains("y.astype('int64')", asFloat.Message);
        Assert.Equal(["Loss", "Loss"], asFloat.Settings);
        var asDouble = Refused(WithLabel(NdArray.FromDouble(labels.Select(v => (double)v).ToArray(), 64)));
        Assert.Contains("has dtype float64, but the loss ce", asDouble.Message);
    }

    [Fact]
    public void TheDataTheEvaluatorIsOpenedWithIsCheckedWhenItsFirstGraphIsBuilt()
    {
        // Per-sample scores feed batches of their own (GradientBatch): the data set they come from was checked already.
        using var data = WithLabels("train.npz", (9, 12));
        using var model = Evaluator.Open(Fixtures.File("mlp", "model.onnx"), new LossSettings(), data);
        var e = Assert.Throws<UserError>(() => model.FeedTypes);
        Assert.Contains("'train.npz': array 'label' holds 12 at row 9", e.Message);
    }

    [Theory]
    [InlineData(float.NaN, "NaN")]
    [InlineData(float.PositiveInfinity, "+Inf")]
    [InlineData(float.NegativeInfinity, "-Inf")]
    public void NonFiniteInputsAreRefusedUnlessAllowed(float value, string shown)
    {
        using var data = WithX(2, 7, value);
        var e = Assert.Throws<UserError>(() => Evaluator.Open(Fixtures.File("mlp", "model.onnx"), new LossSettings(), data));
        Assert.Contains($"'x.npz': array 'x' (an input of '{Fixtures.File("mlp", "model.onnx")}') holds {shown} at row 2, column 7", e.Message);
        Assert.Equal(["AllowNonFinite"], e.Settings);

        using var model = Evaluator.Open(Fixtures.File("mlp", "model.onnx"), new LossSettings { AllowNonFinite = true }, data);
        Assert.True(double.IsNaN(model.Loss(model.ReadParameters(), data).Loss));
    }

    [Fact]
    public void NonFiniteDataMeasuredLaterIsRefusedToo()
    {
        using var train = new Dataset(Mlp, "train.npz");
        using var model = Evaluator.Open(Fixtures.File("mlp", "model.onnx"), new LossSettings(), train);
        using var test = WithX(60, 0, float.NaN);
        var g = new float[model.Layout.Size];
        var e = Assert.Throws<UserError>(() => model.Gradient(model.ReadParameters(), test, g));
        Assert.Contains("holds NaN at row 60, column 0", e.Message);
    }

    [Fact]
    public void NonFiniteRegressionTargetsAreRefused()
    {
        var d = Npz.Read(Fixtures.File("skl_linreg", "data.npz"));
        var y = (float[])d["label"].Data.Clone();
        y[17] = float.NaN;
        using var data = new Dataset(new Dictionary<string, NdArray> { ["X"] = d["X"], ["label"] = NdArray.FromFloat(y, 64, 1) }, "y.npz");
        using var model = Evaluator.Open(Fixtures.File("skl_linreg", "model.onnx"), new LossSettings { Loss = LossKind.MeanSquaredError }, data);
        var e = Assert.Throws<UserError>(() => model.Loss(model.ReadParameters(), data));
        Assert.Contains("array 'label' (the targets of the loss mse of output 'variable') holds NaN at row 17", e.Message);
    }

    [Fact]
    public void CorrectedLabelsOutsideTheClassesChangeNoWeight()
    {
        using var dir = new TempDir();
        var forget = Npz.Read(Fixtures.File("mlp", "forget.npz"));
        var labels = forget["label"].ToInt64();
        labels[1] = -3;
        Npz.Write(dir.File("corrected.npz"), new Dictionary<string, NdArray> { ["x"] = forget["x"], ["label"] = NdArray.FromInt64(labels, labels.Length) });
        var request = new UnlearnRequest(Fixtures.File("mlp", "model.onnx"), Fixtures.File("mlp", "data.npz"), Fixtures.File("mlp", "forget.npz"),
            dir.File("corrected.npz"), null, dir.File("new.onnx"));
        var e = Assert.Throws<UserError>(() => UnlearnJob.Run(request, new LossSettings(), new UnlearnOptions { Steps = 1 }));
        Assert.Contains("corrected.npz': array 'label' holds -3 at row 1, outside the 10 classes", e.Message);
        Assert.False(File.Exists(dir.File("new.onnx")));
    }

    [Fact]
    public void IntegerInputsGivenFractionsOrOutOfRangeValuesAreRefused()
    {
        var d = Npz.Read(Fixtures.File("transformer", "data.npz"));
        var tokens = d["tokens"].ToDouble();
        tokens[8 * 40 + 5] = 2.5;
        using var data = new Dataset(new Dictionary<string, NdArray> { ["tokens"] = NdArray.FromDouble(tokens, 64, 8), ["label"] = d["label"] }, "t.npz");
        using var model = Evaluator.Open(Fixtures.File("transformer", "model.onnx"), new LossSettings(), data);
        var e = Assert.Throws<UserError>(() => model.Loss(model.ReadParameters(), data));
        Assert.Contains("'t.npz' array 'tokens' holds 2.5 at row 40, column 5 (index within the row of shape (8)), but the model takes Int64 values there", e.Message);
        tokens[8 * 40 + 5] = 1;
        var ints = tokens.Select(v => (long)v).ToArray();
        ints[8 * 50 + 1] = long.MaxValue;
        var wide = new Dataset(new Dictionary<string, NdArray> { ["tokens"] = NdArray.FromInt64(ints, 64, 8) }, "w.npz");
        e = Assert.Throws<UserError>(() => wide.Batch(48, 4, new Dictionary<string, Microsoft.ML.OnnxRuntime.Tensors.TensorElementType> { ["tokens"] = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Int32 }));
        Assert.Contains("'w.npz' array 'tokens' holds 9223372036854775807 at row 50, column 1 (index within the row of shape (8)), outside the range of Int32", e.Message);
    }

    [Fact]
    public void AnUntypedGraphInputIsNamed()
    {
        var m = global::Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.File("mlp", "model.onnx")));
        m.Graph.Input[0].Type = null;
        var file = ModelFile.FromBytes(m.ToByteArray(), "untyped.onnx");
        using var data = new Dataset(Mlp, "d.npz");
        var e = Assert.Throws<UserError>(() => Evaluator.Open(file, new LossSettings(), data));
        Assert.Contains("input 'x' of 'untyped.onnx' has no type", e.Message);
        Assert.Contains("input 'x' of 'the model' has no type", Assert.Throws<UserError>(() => Evaluator.SyntheticInputs(m.Graph)).Message);

        m.Graph.Input[0].Type = new global::Onnx.TypeProto { TensorType = new() { Shape = new() } };
        Assert.Contains("undefined element type", Assert.Throws<UserError>(() => Evaluator.SyntheticInputs(m.Graph)).Message);
    }

    [Fact]
    public void HugeDeclaredDimsAreRefusedNamingTheTensor()
    {
        var m = global::Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.File("mlp", "model.onnx")));
        var bias = m.Graph.Initializer.First(t => t.Name == "fc2.bias");
        bias.Dims.Clear(); bias.Dims.Add(long.MaxValue);
        // The loader refuses such a tensor before anything counts its elements (summaries, layouts, the evaluator).
        var e = Assert.Throws<UserError>(() => ModelFile.FromBytes(m.ToByteArray(), "huge.onnx"));
        Assert.Contains("tensor 'fc2.bias' in model file 'huge.onnx' has shape [9223372036854775807]", e.Message);

        bias.Dims.Clear(); bias.Dims.Add(1L << 62); bias.Dims.Add(8);
        e = Assert.Throws<UserError>(() => ModelFile.FromBytes(m.ToByteArray(), "wrap.onnx"));
        Assert.Contains("tensor 'fc2.bias' in model file 'wrap.onnx'", e.Message);
        // Dims that disagree with the data the file holds (found by the fuzz test: 10 → 10485760 with the framing intact)
        // are refused before anything is allocated for them.
        bias.Dims.Clear(); bias.Dims.Add(10);
        var weight = m.Graph.Initializer.First(t => t.Name == "fc2.weight");
        weight.Dims[0] = 10485760;
        using var data = new Dataset(Mlp, "d.npz");
        e = Assert.Throws<UserError>(() => Evaluator.Open(ModelFile.FromBytes(m.ToByteArray(), "dims.onnx"), new LossSettings(), data));
        Assert.Contains("tensor 'fc2.weight'", e.Message);
        Assert.Contains("dims.onnx", e.Message);
        weight.Dims[0] = 10;
        var input = m.Graph.Input[0].Type.TensorType.Shape.Dim;
        input[1].DimValue = long.MaxValue;
        Assert.Contains("more than the 67108864 elements", Assert.Throws<UserError>(() => Evaluator.SyntheticInputs(m.Graph)).Message);
    }
}
