using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using Xunit.Abstractions;

namespace OnnxUnlearn.Tests.Autodiff;

/// <summary>
/// Dynamically quantized models (issue 15, point 2): dynq_mlp (testdata/quant_models.py) is the digits MLP in ONNX Runtime's
/// dynamic form, DynamicQuantizeLinear → MatMulInteger → Cast → Mul by Mul(x_scale, w_scale) → Add bias, with fc1.weight
/// int8 per output column (zero points 0) and fc2.weight uint8 per tensor (zero point 128), both stored [in, out].
/// The parameters are the real weights W = (q − zp)·scale.
/// </summary>
public class DynamicQuantizationTests(ITestOutputHelper log)
{
    const string Fixture = "dynq_mlp", Fc1 = "fc1.weight_quantized", Fc2 = "fc2.weight_quantized";

    static Evaluator Open(Dataset data) => Evaluator.Open(Fixtures.File(Fixture, "model.onnx"), new LossSettings(), data);

    static ModelProto Load() => ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.File(Fixture, "model.onnx")));

    static TensorProto Init(ModelProto m, string name) => m.Graph.Initializer.Single(t => t.Name == name);

    /// <summary>W = (q − zp)·scale computed here from the stored tensors (per column when the scale is per channel).</summary>
    static float[] RealWeight(ModelProto m, string q, string scale, string zeroPoint)
    {
        var codes = Init(m, q).ReadFloats(""); var s = Init(m, scale).ReadFloats(""); var z = Init(m, zeroPoint).ReadFloats("");
        int cols = (int)Init(m, q).Dims[1];
        return codes.Select((c, i) => s.Length == 1 ? (c - z[0]) * s[0] : (c - z[i % cols]) * s[i % cols]).ToArray();
    }

    [Fact]
    public void IntegerMatMulWeightsAreTheTrainableRealWeights()
    {
        var file = ModelFile.Load(Fixtures.File(Fixture, "model.onnx"));
        var parameters = TrainableParameters.Discover(file);
        Assert.Equal([Fc1, Fc2, "fc1.bias", "fc2.bias"], parameters.Where(p => p.Trainable).Select(p => p.Name));
        var fc1 = parameters.Single(p => p.Name == Fc1); var fc2 = parameters.Single(p => p.Name == Fc2);
        Assert.Equal((DataTypes.Int8, 32, 1L, -128, 127), (fc1.DataType, fc1.Grid!.Scale.Length, fc1.Grid.Inner, fc1.Grid.Lo, fc1.Grid.Hi));
        Assert.Equal((DataTypes.UInt8, 1, 128, 0, 255), (fc2.DataType, fc2.Grid!.Scale.Length, fc2.Grid.ZeroPoint[0], fc2.Grid.Lo, fc2.Grid.Hi));
        Assert.Equal("the scale of a dynamically quantized weight (a constant of its grid)", parameters.Single(p => p.Name == "fc1.weight_scale").WhyNot);
        Assert.DoesNotContain(parameters, p => p.Name.EndsWith("zero_point"));
        using var data = Dataset.Load(Fixtures.File(Fixture, "data.npz"));
        using var s = Open(data);
        var theta = s.ReadParameters();
        var m = Load();
        Assert.Equal(RealWeight(m, Fc1, "fc1.weight_scale", "fc1.weight_zero_point"), theta.Tensor(0).ToArray());
        Assert.Equal(RealWeight(m, Fc2, "fc2.weight_scale", "fc2.weight_zero_point"), theta.Tensor(1).ToArray());
        Assert.Equal("float32+uint8+int8 as stored", s.FiguresForward);
    }

    /// <summary>
    /// (a) The loss figure against ONNX Runtime's run of the model file (its DynamicQuantizeLinear and MatMulInteger kernels;
    /// float64 cross-entropy of its logits). The lowered forward keeps the activation's rounding but multiplies the
    /// dequantized values in float32 where MatMulInteger sums integers exactly: bar 1e-5 relative (measured 7.2e-9).
    /// </summary>
    [Fact]
    public void LossFigureIsOnnxRuntimesRunOfTheQuantizedModel()
    {
        using var data = Dataset.Load(Fixtures.File(Fixture, "data.npz"));
        using var s = Open(data);
        using var session = new InferenceSession(Fixtures.File(Fixture, "model.onnx"));
        double ort = QuantizedWeightTests.CrossEntropy(session, data, []);
        double figure = s.Loss(s.ReadParameters(), data).Loss;
        log.WriteLine($"ONNX Runtime's run of the dynamic model: {ort:G9}; figure {figure:G9}; relative difference {Math.Abs(ort - figure) / ort:E2}");
        Assert.True(Math.Abs(ort - figure) <= 1e-5 * ort, $"ONNX Runtime {ort:G9}, figure {figure:G9}");
    }

    /// <summary>
    /// (b) The gradient with respect to W and the biases (straight through both DynamicQuantizeLinears) against central
    /// differences of ONNX Runtime's forward of a float model: logits = MatMul(h + c_h, W2) + b2, h = Relu(MatMul(x + c_x, W1) + b1),
    /// with the rounding offsets c = DQ(DynamicQuantizeLinear(v)) − v measured by ONNX Runtime at the stored weights and
    /// held constant, and W fed as float inputs. Its exact derivative is the straight-through one; each tensor's 3 elements
    /// of largest |g|, step 1e-3 of max |W|: bar 5e-4 of |g| + 1e-6 (the QDQ test's bar; measured: at most 2.1e-4, on the
    /// biases; the weights at most 7.1e-5).
    /// </summary>
    [Fact]
    public void GradientMatchesFiniteDifferencesWithTheRoundingOffsetsHeld()
    {
        using var data = Dataset.Load(Fixtures.File(Fixture, "data.npz"));
        using var s = Open(data);
        var theta = s.ReadParameters();
        var grad = new float[s.Layout.Size];
        s.Gradient(theta, data, grad);

        // The quantized activations, dequantized, as ONNX Runtime's kernels compute them at the stored weights.
        var probe = Load();
        foreach (var v in new[] { "x", "/relu/Relu_output_0" })
        {
            probe.Graph.Node.Add(new NodeProto { OpType = "DequantizeLinear", Input = { v + "_quantized", v + "_scale", v + "_zero_point" }, Output = { v + "_dq" } });
            probe.Graph.Output.Add(new ValueInfoProto { Name = v + "_dq" });
        }
        probe.Graph.Output.Add(new ValueInfoProto { Name = "/relu/Relu_output_0" });
        using var plain = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
        using var probeSession = new InferenceSession(probe.ToByteArray(), plain);
        var xs = (float[])data.Arrays["x"].Data;
        using var x = OrtValue.CreateTensorValueFromMemory(xs, data.Arrays["x"].Shape);
        using var outs = probeSession.Run(new RunOptions(), ["x"], [x], ["x_dq", "/relu/Relu_output_0_dq", "/relu/Relu_output_0"]);
        var xq = outs[0].GetTensorDataAsSpan<float>().ToArray(); var hq = outs[1].GetTensorDataAsSpan<float>().ToArray(); var h = outs[2].GetTensorDataAsSpan<float>().ToArray();
        TensorProto Offset(string name, float[] q, float[] v, long cols)
        {
            var t = new TensorProto { Name = name, DataType = DataTypes.Float, Dims = { 64, cols } };
            t.FloatData.AddRange(q.Select((a, i) => a - v[i]));
            Assert.Contains(t.FloatData, c => c != 0); // the quantizer does round
            return t;
        }

        var m = Load();
        var g = new GraphProto { Name = "reference", Input = { m.Graph.Input }, Output = { m.Graph.Output },
            Initializer = { Offset("cx", xq, xs, 64), Offset("ch", hq, h, 32) } };
        foreach (var (name, shape) in new[] { (Fc1, new long[] { 64, 32 }), (Fc2, [32, 10]), ("fc1.bias", [32]), ("fc2.bias", [10]) })
            g.Input.Add(new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = DataTypes.Float } } });
        NodeProto Node(string op, string a, string b, string y) => new() { OpType = op, Input = { a, b }, Output = { y } };
        g.Node.AddRange([Node("Add", "x", "cx", "x1"), Node("MatMul", "x1", Fc1, "m1"), Node("Add", "m1", "fc1.bias", "a1"),
            new NodeProto { OpType = "Relu", Input = { "a1" }, Output = { "h" } }, Node("Add", "h", "ch", "h1"),
            Node("MatMul", "h1", Fc2, "m2"), Node("Add", "m2", "fc2.bias", "logits")]);
        var reference = new ModelProto { IrVersion = 7, Graph = g, OpsetImport = { new OperatorSetIdProto { Domain = "", Version = 13 } } };
        using var session = new InferenceSession(reference.ToByteArray(), plain);

        long[][] shapes = [[64, 32], [32, 10], [32], [10]];
        string[] names = [Fc1, Fc2, "fc1.bias", "fc2.bias"];
        Assert.Equal(names, s.Layout.Parameters.Select(p => p.Name));
        var w = Enumerable.Range(0, 4).Select(t => theta.Tensor(t).ToArray()).ToArray();
        double Loss() => QuantizedWeightTests.CrossEntropy(session, data, Enumerable.Range(0, 4).Select(t => (names[t], w[t], shapes[t])).ToArray());
        double atStored = Loss(), figure = s.Loss(theta, data).Loss;
        log.WriteLine($"float model with held offsets: {atStored:G9}; quantized model: {figure:G9}");
        Assert.True(Math.Abs(atStored - figure) <= 1e-5 * atStored, "the float model with held offsets computes the quantized model's loss");
        QuantizedWeightTests.CheckAgainstDifferences(s, grad, w, 4, Loss, log);
    }

    /// <summary>
    /// (c) Write-back: new real values become codes q' = clamp(round(W'/scale) + zp) with the stored per-column scale (fc1,
    /// [in, out]: column i % 32) or per-tensor scale and zero point 128 (fc2), computed here by hand; one byte per moved
    /// element, nothing else. Cases: +1.3 and −2.2 steps (move), ±0.4 step (rounds back), far beyond the range (clamped).
    /// </summary>
    [Fact]
    public void WriteBackStoresTheNewIntegerCodesOnly()
    {
        using var data = Dataset.Load(Fixtures.File(Fixture, "data.npz"));
        using var s = Open(data);
        var theta = s.ReadParameters();
        var m = Load();
        var s1 = Init(m, "fc1.weight_scale").ReadFloats(""); var s2 = Init(m, "fc2.weight_scale").ReadFloats("")[0];
        (int T, int I, float Steps)[] moves = [(0, 5, 1.3f), (0, 32 * 7 + 3, -2.2f), (0, 100, 0.4f), (0, 32 * 63 + 31, 1000f), (1, 17, 1.3f), (1, 300, -0.4f), (1, 0, 1000f)];
        var after = theta.Clone();
        foreach (var (t, i, steps) in moves) after.Tensor(t).Span[i] += steps * (t == 0 ? s1[i % 32] : s2);
        var selected = moves.Select(x => s.Layout.Offset(x.T) + x.I).ToArray();
        using var dir = new TempDir();
        var summary = WeightPatch.Write(Fixtures.File(Fixture, "model.onnx"), dir.File("new.onnx"), s.Layout.Patches(selected, after.Span));

        var before = File.ReadAllBytes(Fixtures.File(Fixture, "model.onnx")); var written = File.ReadAllBytes(dir.File("new.onnx"));
        var at = WeightPatch.Locate(before, Fixtures.Root);
        var expected = (byte[])before.Clone();
        foreach (var (t, i, _) in moves)
        {
            float w = after.Tensor(t).Span[i];
            byte code = t == 0 ? (byte)(sbyte)Math.Clamp(Math.Round(w / s1[i % 32], MidpointRounding.ToEven), -128, 127)
                               : (byte)Math.Clamp(Math.Round(w / s2, MidpointRounding.ToEven) + 128, 0, 255);
            var (offset, length) = at[t == 0 ? Fc1 : Fc2].ElementRange(i);
            Assert.Equal(1, length);
            expected[offset] = code;
        }
        Assert.Equal(expected, written);
        Assert.Equal(5, before.Zip(written).Count(p => p.First != p.Second)); // the two ±0.4-step moves round back
        Assert.Equal((5L, 5L), (summary.ElementsChanged, summary.BytesChanged));
        Assert.Equal(127, (sbyte)written[at[Fc1].ElementRange(32 * 63 + 31).Offset]);
        Assert.Equal(255, written[at[Fc2].ElementRange(0).Offset]);
        using var reopened = Evaluator.Open(dir.File("new.onnx"), new LossSettings(), data);
        Assert.Equal(Precision.RoundedToStored(s.Layout, after.Span)!, reopened.ReadParameters().Span.ToArray());
    }

    /// <summary>
    /// Forms of the pattern on logits = rescale(MatMulInteger(DynamicQuantizeLinear(x), q [4, 3])): per-column uint8 with no
    /// zero point and the scales' Mul written (w_scale, x_scale) is trained, θ = (q − zp)·scale computed here, and its loss
    /// figure is ONNX Runtime's run of the file (bar 1e-6 relative, measured 3.6e-8); without the Mul after the Cast, the weight is frozen
    /// with the reason.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void SmallDynamicMatMul(bool rescaled)
    {
        int[] codes = Enumerable.Range(120, 12).ToArray();
        float[] scales = [0.05f, 0.06f, 0.07f];
        var g = new GraphProto { Name = "small_dynq" };
        g.Initializer.Add(new TensorProto { Name = "q", DataType = DataTypes.UInt8, Dims = { 4, 3 }, RawData = ByteString.CopyFrom(codes.Select(c => (byte)c).ToArray()) });
        g.Initializer.Add(new TensorProto { Name = "w_scale", DataType = DataTypes.Float, Dims = { 3 }, FloatData = { scales } });
        g.Node.Add(new NodeProto { OpType = "DynamicQuantizeLinear", Name = "dql", Input = { "x" }, Output = { "xq", "xs", "xz" } });
        g.Node.Add(new NodeProto { OpType = "MatMulInteger", Name = "mmi", Input = { "xq", "q", "xz" }, Output = { "yi" } });
        g.Node.Add(new NodeProto { OpType = "Cast", Name = "cast", Input = { "yi" }, Output = { rescaled ? "yf" : "logits" },
            Attribute = { new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = DataTypes.Float } } });
        if (rescaled)
        {
            g.Node.Add(new NodeProto { OpType = "Mul", Name = "scales", Input = { "w_scale", "xs" }, Output = { "s" } });
            g.Node.Add(new NodeProto { OpType = "Mul", Name = "rescale", Input = { "yf", "s" }, Output = { "logits" } });
        }
        TypeProto Tensor(long d) => new() { TensorType = new TypeProto.Types.Tensor { ElemType = DataTypes.Float, Shape = new TensorShapeProto
            { Dim = { new TensorShapeProto.Types.Dimension { DimParam = "N" }, new TensorShapeProto.Types.Dimension { DimValue = d } } } } };
        g.Input.Add(new ValueInfoProto { Name = "x", Type = Tensor(4) });
        g.Output.Add(new ValueInfoProto { Name = "logits", Type = Tensor(3) });
        var m = new ModelProto { IrVersion = 7, Graph = g, OpsetImport = { new OperatorSetIdProto { Domain = "", Version = 13 } } };
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("model.onnx"), m.ToByteArray());
        var q = TrainableParameters.Discover(ModelFile.Load(dir.File("model.onnx"))).Single(p => p.Name == "q");
        if (!rescaled)
        {
            Assert.Equal((false, "the Cast of MatMulInteger 'mmi' is not read by one Mul; only ONNX Runtime's dynamic form DynamicQuantizeLinear → MatMulInteger → Cast → Mul by Mul(x_scale, w_scale) is supported"), (q.Trainable, q.WhyNot));
            return;
        }
        Assert.True(q.Trainable, q.WhyNot);
        using var data = Dataset.Load(QuantizedWeightTests.SmallData(dir.File("data.npz")));
        using var s = Evaluator.Open(dir.File("model.onnx"), new LossSettings(), data);
        Assert.Equal(codes.Select((c, i) => c * scales[i % 3]).ToArray(), s.ReadParameters().Span.ToArray());
        using var session = new InferenceSession(dir.File("model.onnx"));
        double ort = QuantizedWeightTests.CrossEntropy(session, data, [], classes: 3);
        double figure = s.Loss(s.ReadParameters(), data).Loss;
        log.WriteLine($"ONNX Runtime {ort:G9}, figure {figure:G9}");
        Assert.True(Math.Abs(ort - figure) <= 1e-6 * ort, $"ONNX Runtime {ort:G9}, figure {figure:G9}");
    }
}
