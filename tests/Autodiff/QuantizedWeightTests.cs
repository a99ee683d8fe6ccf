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
/// QDQ models (issue 15, point 2): qdq_mlp (testdata/quant_models.py) is the digits MLP with fc1.weight int8 per channel
/// (axis 0), fc2.weight uint8 per tensor (zero point 128) behind DequantizeLinear, and uint8 QuantizeLinear/DequantizeLinear
/// pairs on the input and the hidden activation. The parameters are the real weights W = (q − zp)·scale.
/// </summary>
public class QuantizedWeightTests(ITestOutputHelper log)
{
    const string Fixture = "qdq_mlp", Fc1 = "fc1.weight_quantized", Fc2 = "fc2.weight_quantized";

    static Evaluator Open(Dataset data) => Evaluator.Open(Fixtures.File(Fixture, "model.onnx"), new LossSettings(), data);

    static ModelProto Load() => ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.File(Fixture, "model.onnx")));

    static TensorProto Init(ModelProto m, string name) => m.Graph.Initializer.Single(t => t.Name == name);

    /// <summary>W = (q − zp)·scale of a weight, computed here from the stored tensors (per row when the scale is per channel).</summary>
    static float[] RealWeight(ModelProto m, string q, string scale, string zeroPoint)
    {
        var codes = Init(m, q).ReadFloats(""); var s = Init(m, scale).ReadFloats(""); var z = Init(m, zeroPoint).ReadFloats("");
        int row = (int)(codes.Length / Init(m, q).Dims[0]);
        return codes.Select((c, i) => s.Length == 1 ? (c - z[0]) * s[0] : (c - z[i / row]) * s[i / row]).ToArray();
    }

    [Fact]
    public void QuantizedWeightsAreTheTrainableRealWeights()
    {
        var file = ModelFile.Load(Fixtures.File(Fixture, "model.onnx"));
        var parameters = TrainableParameters.Discover(file);
        Assert.Equal([Fc1, Fc2, "fc1.bias", "fc2.bias"], parameters.Where(p => p.Trainable).Select(p => p.Name));
        var fc1 = parameters.Single(p => p.Name == Fc1); var fc2 = parameters.Single(p => p.Name == Fc2);
        Assert.Equal((DataTypes.Int8, 32, 64L, -128, 127), (fc1.DataType, fc1.Grid!.Scale.Length, fc1.Grid.Inner, fc1.Grid.Lo, fc1.Grid.Hi));
        Assert.Equal((DataTypes.UInt8, 1, 128, 0, 255), (fc2.DataType, fc2.Grid!.Scale.Length, fc2.Grid.ZeroPoint[0], fc2.Grid.Lo, fc2.Grid.Hi));
        Assert.DoesNotContain(parameters, p => p.Name.EndsWith("zero_point")); // integers read as zero points are not weights
        using var data = Dataset.Load(Fixtures.File(Fixture, "data.npz"));
        using var s = Open(data);
        var theta = s.ReadParameters();
        var m = Load();
        Assert.Equal(RealWeight(m, Fc1, "fc1.weight_scale", "fc1.weight_zero_point"), theta.Tensor(0).ToArray());
        Assert.Equal(RealWeight(m, Fc2, "fc2.weight_scale", "fc2.weight_zero_point"), theta.Tensor(1).ToArray());
        Assert.Equal("float32+uint8+int8 as stored", s.FiguresForward);
        Assert.Equal("float32 artifact (quantized weights dequantized, quantizers straight through)", s.GradientForward);
    }

    /// <summary>
    /// (a) The loss figure is ONNX Runtime's run of the quantized model file (its DequantizeLinear/QuantizeLinear kernels),
    /// cross-entropy in float64 of its logits: the lowered W is what DequantizeLinear computes, float32 (q − zp)·scale, so
    /// they agree to float32 summation order (bar 1e-6 relative). θ moved off the grid by under half a step is measured as
    /// the model it would be written as: the figure is unchanged.
    /// </summary>
    [Fact]
    public void LossFigureIsOnnxRuntimesRunOfTheQuantizedModel()
    {
        using var data = Dataset.Load(Fixtures.File(Fixture, "data.npz"));
        using var s = Open(data);
        using var session = new InferenceSession(Fixtures.File(Fixture, "model.onnx"));
        double ort = CrossEntropy(session, data, []);
        var theta = s.ReadParameters();
        double figure = s.Loss(theta, data).Loss;
        log.WriteLine($"ONNX Runtime's run of the QDQ model: {ort:G9}; figure {figure:G9}");
        Assert.True(Math.Abs(ort - figure) <= 1e-6 * ort, $"ONNX Runtime {ort:G9}, figure {figure:G9}");
        var off = theta.Clone();
        var fc1 = s.Layout.Parameters[0].Grid!;
        for (int i = 0; i < 2048; i++) off.Tensor(0).Span[i] += 0.4f * fc1.Step(i) * (i % 2 == 0 ? 1 : -1);
        Assert.Equal(figure, s.Loss(off, data).Loss);
    }

    /// <summary>
    /// (b) The gradient with respect to W (straight through the hidden activation's QuantizeLinear/DequantizeLinear) against
    /// central differences of ONNX Runtime's forward of a float model: W fed as float inputs in place of DequantizeLinear(q),
    /// and the activation pair replaced by h + c, with c = DQ(Q(h)) − h measured by ONNX Runtime at the stored weights and
    /// held constant. That model's loss at the stored weights is the quantized model's, and its exact derivative is the
    /// straight-through one (the rounding offsets do not move with W), so no quantization error enters the comparison;
    /// the input's pair stays (it reads data only). Each tensor's 3 elements of largest |g|, step 1e-3 of max |W|: bar 5e-4
    /// of |g| + 1e-6 (measured: at most 8.3e-5; curvature O(h²) and float32 rounding of the loss differences). Both ONNX
    /// Runtime sessions run unoptimized, so h is computed the same way in both.
    /// </summary>
    [Fact]
    public void GradientMatchesFiniteDifferencesWithTheRoundingOffsetsHeld()
    {
        using var data = Dataset.Load(Fixtures.File(Fixture, "data.npz"));
        using var s = Open(data);
        var theta = s.ReadParameters();
        var grad = new float[s.Layout.Size];
        s.Gradient(theta, data, grad);

        var m = Load();
        var probe = m.Clone();
        probe.Graph.Output.Add(new ValueInfoProto { Name = "/relu/Relu_output_0" });
        probe.Graph.Output.Add(new ValueInfoProto { Name = "relu_dequantized" });
        // Unoptimized: ONNX Runtime's QDQ fusions would compute h in integers here and in floats in the model below.
        using var plain = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
        using var probeSession = new InferenceSession(probe.ToByteArray(), plain);
        using var x = OrtValue.CreateTensorValueFromMemory((float[])data.Arrays["x"].Data, data.Arrays["x"].Shape);
        using var outs = probeSession.Run(new RunOptions(), ["x"], [x], ["/relu/Relu_output_0", "relu_dequantized"]);
        var h = outs[0].GetTensorDataAsSpan<float>().ToArray(); var hq = outs[1].GetTensorDataAsSpan<float>().ToArray();
        var offset = new TensorProto { Name = "relu_offset", DataType = DataTypes.Float, Dims = { 64, 32 } };
        offset.FloatData.AddRange(hq.Select((v, i) => v - h[i]));
        Assert.Contains(offset.FloatData, c => c != 0); // the pair does round

        // The float model: weights as inputs, the weight DequantizeLinears gone, the hidden pair replaced by h + c.
        var g = m.Graph;
        foreach (var name in new[] { Fc1, Fc2 })
        {
            g.Initializer.Remove(Init(m, name));
            g.Input.Add(new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = DataTypes.Float } } });
        }
        var nodes = g.Node.Where(n => !n.Name.StartsWith("fc") && n.Name != "relu_QuantizeLinear").ToList();
        foreach (var n in nodes)
            for (int k = 0; k < n.Input.Count; k++)
                if (n.Input[k] is "fc1.weight_dequantized" or "fc2.weight_dequantized") n.Input[k] = n.Input[k].Replace("_dequantized", "_quantized");
        var add = nodes.Single(n => n.Name == "relu_DequantizeLinear");
        add.OpType = "Add"; add.Input.Clear(); add.Input.Add("/relu/Relu_output_0"); add.Input.Add("relu_offset"); add.Attribute.Clear();
        g.Node.Clear(); g.Node.AddRange(nodes); g.Initializer.Add(offset);
        using var session = new InferenceSession(m.ToByteArray(), plain);

        var w = new[] { theta.Tensor(0).ToArray(), theta.Tensor(1).ToArray() };
        double Loss() => CrossEntropy(session, data, [(Fc1, w[0], [32, 64]), (Fc2, w[1], [10, 32])]);
        double atStored = Loss();
        log.WriteLine($"float model with held offsets: {atStored:G9}; quantized model: {s.Loss(theta, data).Loss:G9}");
        Assert.True(Math.Abs(atStored - s.Loss(theta, data).Loss) <= 1e-6 * atStored, "the float model with held offsets computes the quantized model's loss");
        CheckAgainstDifferences(s, grad, w, 2, Loss, log);
    }

    /// <summary>
    /// The gradient of each of the first <paramref name="tensors"/> tensors at its 3 largest elements against central
    /// differences of <paramref name="loss"/> (step 1e-3 of the tensor's max |W|, moving <paramref name="w"/> in place):
    /// bar 5e-4·|g| + 1e-6.
    /// </summary>
    internal static void CheckAgainstDifferences(Evaluator s, float[] grad, float[][] w, int tensors, Func<double> loss, ITestOutputHelper log)
    {
        double worst = 0;
        for (int t = 0; t < tensors; t++)
        {
            var gt = s.Layout.Of(grad.AsSpan(), t).ToArray();
            float step = 1e-3f * w[t].Max(Math.Abs);
            foreach (int i in Enumerable.Range(0, gt.Length).OrderByDescending(i => Math.Abs(gt[i])).Take(3))
            {
                float stored = w[t][i];
                w[t][i] = stored + step; double plus = loss();
                w[t][i] = stored - step; double minus = loss();
                w[t][i] = stored;
                double fd = (plus - minus) / ((double)(stored + step) - (stored - step));
                double err = Math.Abs(fd - gt[i]);
                worst = Math.Max(worst, err / Math.Abs(gt[i]));
                log.WriteLine($"{s.Layout.Parameters[t].Name}[{i}]: gradient {gt[i]:E5}, differences {fd:E5}, relative error {err / Math.Abs(gt[i]):E2}");
                Assert.True(err <= 5e-4 * Math.Abs(gt[i]) + 1e-6, $"{s.Layout.Parameters[t].Name}[{i}]: gradient {gt[i]:E5}, differences {fd:E5}");
            }
        }
        log.WriteLine($"largest relative error {worst:E2}");
    }

    /// <summary>
    /// (c) Write-back: new real values become integer codes q' = clamp(round(W'/scale) + zp) with the stored scale and zero
    /// point (computed here by hand); only the bytes of the codes that change differ, one byte per element. Cases: +1.3 and
    /// −2.2 steps (move), +0.4 step (rounds back: unchanged), far beyond the range (clamped to 127 / 255).
    /// </summary>
    [Fact]
    public void WriteBackStoresTheNewIntegerCodesOnly()
    {
        using var data = Dataset.Load(Fixtures.File(Fixture, "data.npz"));
        using var s = Open(data);
        var theta = s.ReadParameters();
        var m = Load();
        var s1 = Init(m, "fc1.weight_scale").ReadFloats(""); var s2 = Init(m, "fc2.weight_scale").ReadFloats("")[0];
        var q1 = Init(m, Fc1).RawData.ToByteArray(); var q2 = Init(m, Fc2).RawData.ToByteArray();
        // (tensor, element, move in steps)
        (int T, int I, float Steps)[] moves = [(0, 5, 1.3f), (0, 64 * 7 + 3, -2.2f), (0, 100, 0.4f), (0, 64 * 31 + 63, 1000f), (1, 17, 1.3f), (1, 300, -0.4f), (1, 0, 1000f)];
        var after = theta.Clone();
        foreach (var (t, i, steps) in moves) after.Tensor(t).Span[i] += steps * (t == 0 ? s1[i / 64] : s2);
        var selected = moves.Select(x => s.Layout.Offset(x.T) + x.I).ToArray();
        using var dir = new TempDir();
        var summary = WeightPatch.Write(Fixtures.File(Fixture, "model.onnx"), dir.File("new.onnx"), s.Layout.Patches(selected, after.Span));

        var before = File.ReadAllBytes(Fixtures.File(Fixture, "model.onnx")); var written = File.ReadAllBytes(dir.File("new.onnx"));
        var at = WeightPatch.Locate(before, Fixtures.Root);
        var expected = (byte[])before.Clone();
        foreach (var (t, i, _) in moves)
        {
            float w = after.Tensor(t).Span[i];
            byte code = t == 0 ? (byte)(sbyte)Math.Clamp(Math.Round(w / s1[i / 64], MidpointRounding.ToEven), -128, 127)
                               : (byte)Math.Clamp(Math.Round(w / s2, MidpointRounding.ToEven) + 128, 0, 255);
            var (offset, length) = at[t == 0 ? Fc1 : Fc2].ElementRange(i);
            Assert.Equal(1, length);
            expected[offset] = code;
            log.WriteLine($"{(t == 0 ? Fc1 : Fc2)}[{i}]: {(t == 0 ? (sbyte)q1[i] : q2[i])} -> {(t == 0 ? (sbyte)code : code)}");
        }
        Assert.Equal(expected, written);
        int differing = before.Zip(written).Count(p => p.First != p.Second);
        Assert.Equal(5, differing); // the two ±0.4-step moves round back
        Assert.Equal((5L, 5L), (summary.ElementsChanged, summary.BytesChanged));
        Assert.Equal(127, (sbyte)written[at[Fc1].ElementRange(64 * 31 + 63).Offset]);
        Assert.Equal(255, written[at[Fc2].ElementRange(0).Offset]);
        // Read back, θ is the new values snapped to the grid: the values the loss figure measured.
        using var reopened = Evaluator.Open(dir.File("new.onnx"), new LossSettings(), data);
        var snapped = Precision.RoundedToStored(s.Layout, after.Span)!;
        Assert.Equal(snapped, reopened.ReadParameters().Span.ToArray());
    }

    /// <summary>
    /// DequantizeLinear as each opset writes it, on logits = MatMul(x, DQ(q)) with q [4, 3]: θ is (q − zp)·scale computed here,
    /// and the loss figure is ONNX Runtime's run of the model file with its own DequantizeLinear kernel (float64 cross-entropy
    /// of its logits, unoptimized; bar 1e-6 relative, measured 3e-8).
    /// </summary>
    [Theory]
    [InlineData(10, DataTypes.Int8, null, false)]   // opset 10: per tensor only, no axis attribute
    [InlineData(13, DataTypes.UInt8, 1L, false)]    // per column: axis 1
    [InlineData(19, DataTypes.Int8, -2L, false)]    // per row: negative axis
    [InlineData(21, DataTypes.UInt8, null, true)]   // per column by the default axis 1; zero point omitted (0)
    public void DequantizeLinearOfEachOpset(int opset, int type, long? axis, bool noZeroPoint)
    {
        using var dir = new TempDir();
        var (model, expected) = SmallQdq(opset, type, axis, noZeroPoint, int32Data: false);
        File.WriteAllBytes(dir.File("m.onnx"), model.ToByteArray());
        var data = SmallData(dir.File("d.npz"));
        using var d = Dataset.Load(data);
        using var s = Evaluator.Open(dir.File("m.onnx"), new LossSettings(), d);
        Assert.Equal(["q"], s.Layout.Parameters.Select(p => p.Name));
        Assert.Equal(expected, s.ReadParameters().Span.ToArray());
        // Unoptimized: for a DequantizeLinear weight read by a MatMul with a float input, ONNX Runtime's optimizer substitutes
        // a kernel that also quantizes x on the fly (measured: 1e-5 to 1.4e-4 of the loss away from the graph's meaning).
        using var plain = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
        using var session = new InferenceSession(dir.File("m.onnx"), plain);
        double ort = CrossEntropy(session, d, [], classes: 3);
        double figure = s.Loss(s.ReadParameters(), d).Loss;
        Assert.True(Math.Abs(ort - figure) <= 1e-6 * ort, $"ONNX Runtime {ort:G9}, figure {figure:G9}");
        var grad = new float[s.Layout.Size];
        s.Gradient(s.ReadParameters(), d, grad);
        Assert.Contains(grad, v => v != 0);
    }

    [Fact]
    public void BlockwiseQuantizationIsFrozenByName()
    {
        var (model, _) = SmallQdq(21, DataTypes.Int8, 0L, false, int32Data: false);
        model.Graph.Node[0].Attribute.Add(new AttributeProto { Name = "block_size", Type = AttributeProto.Types.AttributeType.Int, I = 2 });
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("m.onnx"), model.ToByteArray());
        var q = TrainableParameters.Discover(ModelFile.Load(dir.File("m.onnx"))).Single(p => p.Name == "q");
        Assert.False(q.Trainable);
        Assert.Contains("DequantizeLinear 'dq' dequantizes in blocks (block_size)", q.WhyNot);
    }

    /// <summary>
    /// int8 codes kept in int32_data (varints, sign-extended: 10 bytes when negative): a new code of the same varint length
    /// is patched in place; one of another length is refused in one line naming the tensor and the fix.
    /// </summary>
    [Fact]
    public void Int32DataCodesArePatchedInPlaceOrRefused()
    {
        using var dir = new TempDir();
        var (model, w) = SmallQdq(13, DataTypes.Int8, null, false, int32Data: true);
        File.WriteAllBytes(dir.File("m.onnx"), model.ToByteArray());
        var file = ModelFile.Load(dir.File("m.onnx"));
        var q = TrainableParameters.Discover(file).Single(p => p.Name == "q");
        var layout = new ParameterLayout([q]);
        var theta = layout.ReadValues(file);
        var codes = model.Graph.Initializer.Single(t => t.Name == "q").Int32Data.ToArray(); // -5 .. 6
        int positive = Array.IndexOf(codes, 3), negative = Array.IndexOf(codes, -2);
        theta[positive] += 2 * q.Grid!.Step(positive); // 3 -> 5: one byte, as before
        WeightPatch.Write(dir.File("m.onnx"), dir.File("new.onnx"), layout.Patches([positive], theta));
        var written = ModelProto.Parser.ParseFrom(File.ReadAllBytes(dir.File("new.onnx"))).Graph.Initializer.Single(t => t.Name == "q").Int32Data.ToArray();
        Assert.Equal(codes.Select((c, i) => i == positive ? 5 : c), written);
        theta[negative] += 4 * q.Grid.Step(negative); // -2 -> 2: 10 bytes -> 1
        var e = Assert.Throws<UserError>(() => WeightPatch.Write(dir.File("m.onnx"), dir.File("new2.onnx"), layout.Patches([negative], theta)));
        Assert.Contains("tensor q keeps its Int8 values as varints in int32_data", e.Message);
        Assert.Contains("Re-save the tensor with raw_data", e.Message);
    }

    /// <summary>x [N, 4] → MatMul(x, DequantizeLinear(q [4, 3])) → logits; q = −5..6 (int8) or 120..131 (uint8); scales per axis when given.</summary>
    static (ModelProto Model, float[] W) SmallQdq(int opset, int type, long? axis, bool noZeroPoint, bool int32Data)
    {
        int[] codes = Enumerable.Range(type == DataTypes.Int8 ? -5 : 120, 12).ToArray();
        int a = axis is { } ax ? (int)(ax < 0 ? ax + 2 : ax) : opset >= 13 && noZeroPoint ? 1 : -1; // -1: per tensor
        int channels = a < 0 ? 1 : a == 0 ? 4 : 3;
        float[] scales = Enumerable.Range(0, channels).Select(c => 0.05f + 0.01f * c).ToArray();
        int[] zps = noZeroPoint ? new int[channels] : Enumerable.Range(0, channels).Select(c => type == DataTypes.Int8 ? c - 1 : 125 + c).ToArray();
        var g = new GraphProto { Name = "small_qdq" };
        var q = new TensorProto { Name = "q", DataType = type, Dims = { 4, 3 } };
        if (int32Data) q.Int32Data.AddRange(codes);
        else q.RawData = ByteString.CopyFrom(codes.Select(c => (byte)c).ToArray());
        g.Initializer.Add(q);
        var scale = new TensorProto { Name = "scale", DataType = DataTypes.Float, FloatData = { scales } };
        if (a >= 0) scale.Dims.Add(channels);
        g.Initializer.Add(scale);
        var node = new NodeProto { OpType = "DequantizeLinear", Name = "dq", Input = { "q", "scale" }, Output = { "w" } };
        if (!noZeroPoint)
        {
            var zp = new TensorProto { Name = "zp", DataType = type, RawData = ByteString.CopyFrom(zps.Select(z => (byte)z).ToArray()) };
            if (a >= 0) zp.Dims.Add(channels);
            g.Initializer.Add(zp);
            node.Input.Add("zp");
        }
        if (axis is { } value) node.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = value });
        g.Node.Add(node);
        g.Node.Add(new NodeProto { OpType = "MatMul", Name = "mm", Input = { "x", "w" }, Output = { "logits" } });
        TypeProto Tensor(params long[] dims)
        {
            var shape = new TensorShapeProto();
            foreach (var d in dims) shape.Dim.Add(d < 0 ? new TensorShapeProto.Types.Dimension { DimParam = "N" } : new TensorShapeProto.Types.Dimension { DimValue = d });
            return new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = DataTypes.Float, Shape = shape } };
        }
        g.Input.Add(new ValueInfoProto { Name = "x", Type = Tensor(-1, 4) });
        g.Output.Add(new ValueInfoProto { Name = "logits", Type = Tensor(-1, 3) });
        var m = new ModelProto { IrVersion = opset >= 21 ? 10 : opset >= 19 ? 9 : 7, Graph = g, OpsetImport = { new OperatorSetIdProto { Domain = "", Version = opset } } };
        var w = codes.Select((c, i) => { int ch = a < 0 ? 0 : a == 0 ? i / 3 : i % 3; return (float)(c - zps[ch]) * scales[ch]; }).ToArray();
        return (m, w);
    }

    internal static string SmallData(string path)
    {
        var rng = new Random(3);
        Npz.Write(path, new Dictionary<string, NdArray>
        {
            ["x"] = NdArray.FromFloat(Enumerable.Range(0, 8 * 4).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray(), [8, 4]),
            ["label"] = NdArray.FromInt64(Enumerable.Range(0, 8).Select(i => (long)(i % 3)).ToArray(), [8]),
        });
        return path;
    }

    /// <summary>Mean cross-entropy in float64 of the logits ONNX Runtime computes for the whole data set in one batch.</summary>
    internal static double CrossEntropy(InferenceSession session, Dataset data, (string Name, float[] Values, long[] Shape)[] extra, int classes = 10)
    {
        var labels = data.Arrays["label"].ToInt64();
        var values = new List<OrtValue> { OrtValue.CreateTensorValueFromMemory((float[])data.Arrays["x"].Data, data.Arrays["x"].Shape) };
        values.AddRange(extra.Select(e => OrtValue.CreateTensorValueFromMemory(e.Values, e.Shape)));
        try
        {
            using var outputs = session.Run(new RunOptions(), ["x", .. extra.Select(e => e.Name)], values, ["logits"]);
            var logits = outputs[0].GetTensorDataAsSpan<float>().ToArray();
            double loss = 0;
            for (int n = 0; n < labels.Length; n++)
            {
                var row = logits.AsSpan(classes * n, classes).ToArray().Select(v => (double)v).ToArray();
                double max = row.Max();
                loss += max + Math.Log(row.Sum(z => Math.Exp(z - max))) - row[labels[n]];
            }
            return loss / labels.Length;
        }
        finally { foreach (var v in values) v.Dispose(); }
    }
}
