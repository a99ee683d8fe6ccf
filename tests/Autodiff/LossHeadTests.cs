using Google.Protobuf;
using Onnx;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;

namespace OnnxUnlearn.Tests.Autodiff;

public class LossHeadTests
{
    /// <summary>The mlp fixture with a final Softmax (as deployed classifiers often are), written next to the original.</summary>
    static string WithSoftmax(TempDir dir, string op = "Softmax")
    {
        var m = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.File("mlp", "model.onnx")));
        var logits = m.Graph.Output[0].Name;
        foreach (var n in m.Graph.Node) for (int i = 0; i < n.Output.Count; i++) if (n.Output[i] == logits) n.Output[i] = "raw_logits";
        m.Graph.Node.Add(new NodeProto { OpType = op, Name = "final", Input = { "raw_logits" }, Output = { logits }, Attribute = { Attributes.Make("axis", 1L) } });
        var path = dir.File("probs.onnx");
        File.WriteAllBytes(path, m.ToByteArray());
        return path;
    }

    /// <summary>
    /// The mlp fixture ending in a softmax written out as Exp/ReduceSum/Div (probabilities), or with <paramref name="log"/>
    /// as x − Log(ReduceSum(Exp(x))) (log-probabilities): nothing the look-through recognises.
    /// </summary>
    static string WithCustomSoftmax(TempDir dir, bool log)
    {
        var m = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.File("mlp", "model.onnx")));
        var logits = m.Graph.Output[0].Name;
        foreach (var n in m.Graph.Node) for (int i = 0; i < n.Output.Count; i++) if (n.Output[i] == logits) n.Output[i] = "raw_logits";
        m.Graph.Initializer.Add(new TensorProto { Name = "class_axis", DataType = 7, Dims = { 1 }, Int64Data = { 1 } });
        m.Graph.Node.Add(new NodeProto { OpType = "Exp", Name = "exp", Input = { "raw_logits" }, Output = { "e" } });
        m.Graph.Node.Add(new NodeProto { OpType = "ReduceSum", Name = "total", Input = { "e", "class_axis" }, Output = { "z" }, Attribute = { Attributes.Make("keepdims", 1L) } });
        if (log)
        {
            m.Graph.Node.Add(new NodeProto { OpType = "Log", Name = "log_total", Input = { "z" }, Output = { "log_z" } });
            m.Graph.Node.Add(new NodeProto { OpType = "Sub", Name = "normalise", Input = { "raw_logits", "log_z" }, Output = { logits } });
        }
        else m.Graph.Node.Add(new NodeProto { OpType = "Div", Name = "normalise", Input = { "e", "z" }, Output = { logits } });
        var path = dir.File(log ? "custom_log_softmax.onnx" : "custom_softmax.onnx");
        File.WriteAllBytes(path, m.ToByteArray());
        return path;
    }

    static (float[] Grad, LossResult Result) Gradient(string model, LossKind loss)
    {
        using var data = Dataset.Load(Fixtures.File("mlp", "data.npz"));
        using var s = Evaluator.Open(model, new LossSettings { Loss = loss }, data);
        var g = new float[s.Layout.Size];
        return (g, s.Gradient(s.ReadParameters(), data, g));
    }

    /// <summary><paramref name="model"/> with <paramref name="loss"/> gives the loss, accuracy and gradient of the plain mlp with ce on its logits.</summary>
    static void GivesTheLogitsGradient(string model, LossKind loss, string head)
    {
        var (expected, r0) = Gradient(Fixtures.File("mlp", "model.onnx"), LossKind.CrossEntropy);
        var (actual, r1) = Gradient(model, loss);
        Assert.Equal(r0.Loss, r1.Loss, 1e-5);
        Assert.Equal(r0.Accuracy, r1.Accuracy);
        double err = Numerics.RelativeL2(expected, actual);
        Assert.True(err < 1e-5, $"{head}/{loss}: relative error {err:E2}");
    }

    [Theory]
    [InlineData("Softmax", LossKind.CrossEntropy)]
    [InlineData("LogSoftmax", LossKind.CrossEntropy)]
    [InlineData("Softmax", LossKind.CrossEntropyProb)]
    [InlineData("LogSoftmax", LossKind.NegativeLogLikelihood)]
    public void ProbabilityOutputsGiveTheLogitsGradient(string op, LossKind loss)
    {
        using var dir = new TempDir();
        GivesTheLogitsGradient(WithSoftmax(dir, op), loss, op);
    }

    [Theory]
    [InlineData(LossKind.CrossEntropy, "ce expects logits")]
    [InlineData(LossKind.NegativeLogLikelihood, "nll expects log-probabilities")]
    public void ProbabilitiesTheLookThroughMissesAreRefused(LossKind loss, string expects)
    {
        using var dir = new TempDir();
        var e = Assert.Throws<UserError>(() => Gradient(WithCustomSoftmax(dir, log: false), loss));
        Assert.Contains("output 'logits', made by Div node 'normalise', holds probabilities", e.Message);
        Assert.Contains(expects, OnnxUnlearn.Cli.Cli.Describe(e));
        Assert.Contains("--loss ce-prob", OnnxUnlearn.Cli.Cli.Describe(e));
        Assert.Contains("--output", OnnxUnlearn.Cli.Cli.Describe(e));
    }

    [Theory]
    [InlineData(false, LossKind.CrossEntropyProb)]      // probabilities: ce-prob is the loss for them
    [InlineData(true, LossKind.NegativeLogLikelihood)]  // log-probabilities: what nll wants
    [InlineData(true, LossKind.CrossEntropy)]           // and ce too: softmax(log p) = p
    public void CustomSoftmaxGivesTheLogitsGradientWithTheRightLoss(bool log, LossKind loss)
    {
        using var dir = new TempDir();
        GivesTheLogitsGradient(WithCustomSoftmax(dir, log), loss, log ? "log-softmax" : "softmax");
    }

    [Fact]
    public void RowsAreClassifiedFromTheirValues()
    {
        Assert.Equal(RowKind.Probabilities, LossHead.Rows<float>([0.25f, 0.75f, 1f, 0f], 2));
        Assert.Equal(RowKind.Other, LossHead.Rows<float>([0.25f, 0.75f, 0.5f, 0.49f], 2));     // a row sums to 0.99
        Assert.Equal(RowKind.Other, LossHead.Rows<float>([1.5f, -0.5f], 2));                   // sums to 1, outside [0, 1]
        Assert.Equal(RowKind.LogProbabilities, LossHead.Rows<double>([Math.Log(0.25), Math.Log(0.75)], 2));
        Assert.Equal(RowKind.Other, LossHead.Rows<float>([1f, 1f], 1));                        // one class: nothing to tell
        Assert.Equal(RowKind.Other, LossHead.Rows<float>([float.NaN, 1f], 2));
        Assert.Equal(RowKind.Other, LossHead.Rows<float>([], 2));
    }

    [Fact]
    public void SigmoidGradientStaysAccurateWhenSaturated()
    {
        // σ(x) ≈ 1e-7 and 1 − 1e-7: σ' = σ(x)σ(−x) must keep float32 relative precision (σ(1 − σ) from a rounded σ would not).
        float[] x = [-16f, -14f, 14f, 16f];
        var (model, feeds, wrt) = new NodeModel { Op = "Sigmoid", Inputs = [("x", [4])], Values = { ["x"] = x } }.Build();
        var grad = GradCheck.Gradient(model, feeds, wrt, "y0", [1f, 1f, 1f, 1f]);
        for (int i = 0; i < x.Length; i++)
        {
            double s = 1 / (1 + Math.Exp(-(double)x[i]));
            double exact = s * (1 - s);
            Assert.True(Math.Abs(grad[i] - exact) <= 1e-6 * exact, $"x = {x[i]}: {grad[i]:E6} vs {exact:E6}");
        }
    }

    /// <summary>The mlp fixture with <paramref name="nodes"/> after its logits (renamed raw_logits); the last must make 'logits'.</summary>
    static string WithHead(TempDir dir, string file, params NodeProto[] nodes)
    {
        var m = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.File("mlp", "model.onnx")));
        var logits = m.Graph.Output[0].Name;
        Assert.Equal("logits", logits);
        foreach (var n in m.Graph.Node) for (int i = 0; i < n.Output.Count; i++) if (n.Output[i] == logits) n.Output[i] = "raw_logits";
        m.Graph.Node.AddRange(nodes);
        var path = dir.File(file);
        File.WriteAllBytes(path, m.ToByteArray());
        return path;
    }

    static NodeProto Node(string op, string name, string[] inputs, string output, params AttributeProto[] attrs) =>
        new() { OpType = op, Name = name, Input = { inputs }, Output = { output }, Attribute = { attrs } };

    /// <summary>The mlp data with one-hot float labels [N, 10], as bce takes them.</summary>
    static Dataset OneHot()
    {
        var npz = OnnxUnlearn.Data.Npz.Read(Fixtures.File("mlp", "data.npz"));
        var y = npz["label"].ToInt64();
        var hot = new float[y.Length * 10];
        for (int i = 0; i < y.Length; i++) hot[i * 10 + y[i]] = 1;
        return new Dataset(new Dictionary<string, OnnxUnlearn.Data.NdArray> { ["x"] = npz["x"], ["label"] = OnnxUnlearn.Data.NdArray.FromFloat(hot, y.Length, 10) }, "one-hot mlp data");
    }

    static UserError Refused(string model, LossKind loss, Dataset? data = null)
    {
        using var own = data is null ? Dataset.Load(Fixtures.File("mlp", "data.npz")) : null;
        using var s = Evaluator.Open(model, new LossSettings { Loss = loss }, data ?? own!);
        return Assert.Throws<UserError>(() => s.Artifact());
    }

    [Fact]
    public void NllOnLogitsIsRefusedNamingTheOutputItsNodeAndCe()
    {
        var e = Refused(Fixtures.File("mlp", "model.onnx"), LossKind.NegativeLogLikelihood);
        var text = OnnxUnlearn.Cli.Cli.Describe(e);
        Assert.Contains("output 'logits', made by Gemm node '/fc2/Gemm', does not hold log-probabilities", text);
        Assert.Matches(@"values range over \[-\d[\d.]*, \d[\d.]*\], where log-probabilities are ≤ 0", text);
        Assert.Contains("For logits use --loss ce", text);
        Assert.Contains("--loss nll takes −output[label]", text);
        Assert.Equal(["Loss", "Loss", "Loss", "Output"], e.Settings);
    }

    [Fact]
    public void NllOnNegativeLogitsIsRefusedByTheRowsLogSumExp()
    {
        // logits − 20: every value ≤ 0, so only the rows' log-sum-exp (far from 0) tells them from log-probabilities.
        using var dir = new TempDir();
        var model = WithHead(dir, "negative.onnx", Node("Add", "shift_down", ["raw_logits", "minus20"], "logits"));
        var m = ModelProto.Parser.ParseFrom(File.ReadAllBytes(model));
        m.Graph.Initializer.Add(new TensorProto { Name = "minus20", DataType = 1, FloatData = { -20f } });
        File.WriteAllBytes(model, m.ToByteArray());
        var text = OnnxUnlearn.Cli.Cli.Describe(Refused(model, LossKind.NegativeLogLikelihood));
        Assert.Contains("output 'logits', made by Add node 'shift_down', does not hold log-probabilities", text);
        Assert.Matches(@"and its rows' log-sum-exp \(along the last axis\) over \[-1\d[\d.]*, -1\d[\d.]*\], not 0", text);
        Assert.Contains("For logits use --loss ce", text);
    }

    [Fact]
    public void CeProbOnLogitsIsRefusedNamingTheOutputItsNodeAndCe()
    {
        var e = Refused(Fixtures.File("mlp", "model.onnx"), LossKind.CrossEntropyProb);
        var text = OnnxUnlearn.Cli.Cli.Describe(e);
        Assert.Contains("output 'logits', made by Gemm node '/fc2/Gemm', does not hold probabilities", text);
        Assert.Contains("outside [0, 1]", text);
        Assert.Contains("For logits use --loss ce (it applies a softmax itself); for log-probabilities, --loss nll", text);
    }

    [Fact]
    public void CeProbOnLogProbabilitiesSuggestsNll()
    {
        using var dir = new TempDir();
        var e = Refused(WithSoftmax(dir, "LogSoftmax"), LossKind.CrossEntropyProb);
        var text = OnnxUnlearn.Cli.Cli.Describe(e);
        Assert.Contains("output 'logits', made by LogSoftmax node 'final', does not hold probabilities", text);
        Assert.Contains("They are log-probabilities (every row's log-sum-exp is 0): use --loss nll", text);
    }

    [Fact]
    public void NllOnIndependentProbabilitiesSuggestsCeProb()
    {
        // σ(z) per class: in [0, 1] but rows do not sum to 1, so ce/nll's probability check lets them by; nll's does not.
        using var dir = new TempDir();
        var model = WithHead(dir, "sigmoids.onnx", Node("Sigmoid", "squash", ["raw_logits"], "sig"), Node("Flatten", "flat", ["sig"], "logits"));
        var e = Refused(model, LossKind.NegativeLogLikelihood);
        var text = OnnxUnlearn.Cli.Cli.Describe(e);
        Assert.Contains("output 'logits', made by Flatten node 'flat', does not hold log-probabilities", text);
        Assert.Contains("Its values lie in [0, 1]: for probabilities use --loss ce-prob", text);
        // ... which is the loss for them: −log σ(z_label), as ce computes it from z on a final Sigmoid.
        using var data = Dataset.Load(Fixtures.File("mlp", "data.npz"));
        using var prob = Evaluator.Open(model, new LossSettings { Loss = LossKind.CrossEntropyProb }, data);
        using var sigmoid = Evaluator.Open(WithHead(dir, "sigmoid.onnx", Node("Sigmoid", "squash", ["raw_logits"], "logits")), new LossSettings(), data);
        Assert.Equal(LossKind.SigmoidLogLoss, sigmoid.Artifact().Loss);
        Assert.Equal(sigmoid.Loss(sigmoid.ReadParameters(), data).Loss, prob.Loss(prob.ReadParameters(), data).Loss, 1e-5);
    }

    [Fact]
    public void BceOnASigmoidTheLookThroughMissesIsRefusedNamingTheSigmoidsInput()
    {
        using var dir = new TempDir();
        using var data = OneHot();
        var model = WithHead(dir, "sigmoids.onnx", Node("Sigmoid", "squash", ["raw_logits"], "sig"), Node("Flatten", "flat", ["sig"], "logits"));
        var e = Refused(model, LossKind.BinaryCrossEntropy, data);
        var text = OnnxUnlearn.Cli.Cli.Describe(e);
        Assert.Contains("output 'logits', made by Flatten node 'flat' from Sigmoid node 'squash', holds probabilities: on the probed samples every value lies in [0, 1]", text);
        Assert.Contains("--loss bce expects logits (it applies a sigmoid itself)", text);
        Assert.Contains("Name the logits the Sigmoid reads (--output raw_logits)", text);
        // That output is right: bce of the logits, as on a final Sigmoid (looked through) and on the plain model's logits.
        double Loss(string path, string? output = null)
        {
            using var s = Evaluator.Open(path, new LossSettings { Loss = LossKind.BinaryCrossEntropy, Output = output }, data);
            return s.Loss(s.ReadParameters(), data).Loss;
        }
        double plain = Loss(Fixtures.File("mlp", "model.onnx"));
        Assert.True(plain > 0.01, $"bce {plain}");
        Assert.Equal(plain, Loss(model, "raw_logits"), 1e-6);
        Assert.Equal(plain, Loss(WithHead(dir, "sigmoid.onnx", Node("Sigmoid", "squash", ["raw_logits"], "logits"))), 1e-6);
    }

    [Fact]
    public void BceOnSoftmaxProbabilitiesIsRefusedSuggestingCeProbAndCe()
    {
        using var dir = new TempDir();
        using var data = OneHot();
        var e = Refused(WithSoftmax(dir), LossKind.BinaryCrossEntropy, data);
        var text = OnnxUnlearn.Cli.Cli.Describe(e);
        Assert.Contains("output 'logits', made by Softmax node 'final', holds probabilities: on the probed samples every row along the last axis lies in [0, 1] and sums to 1", text);
        Assert.Contains("use --loss ce-prob (or --loss ce, which takes the logits before a final Softmax)", text);
        // A softmax written out (Div): its rows are distributions, so it is refused all the same.
        var custom = Refused(WithCustomSoftmax(dir, log: false), LossKind.BinaryCrossEntropy, data);
        Assert.Contains("output 'logits', made by Div node 'normalise', holds probabilities", custom.Message);
        Assert.Contains("Loss = ce-prob", custom.Message);
    }

    [Fact]
    public void BceOnLogitsThatHappenToLieInTheUnitIntervalIsKept()
    {
        // 0.5 + logits/100: every probed value in [0, 1], but made by an Add, rows not summing to 1: logits, not refused.
        using var dir = new TempDir();
        using var data = OneHot();
        var model = WithHead(dir, "small.onnx", Node("Mul", "shrink", ["raw_logits", "hundredth"], "small"), Node("Add", "shift", ["small", "half"], "logits"));
        var m = ModelProto.Parser.ParseFrom(File.ReadAllBytes(model));
        m.Graph.Initializer.Add(new TensorProto { Name = "hundredth", DataType = 1, FloatData = { 0.01f } });
        m.Graph.Initializer.Add(new TensorProto { Name = "half", DataType = 1, FloatData = { 0.5f } });
        File.WriteAllBytes(model, m.ToByteArray());
        using var s = Evaluator.Open(model, new LossSettings { Loss = LossKind.BinaryCrossEntropy }, data);
        var info = s.Artifact().Loss;
        Assert.Equal(LossKind.BinaryCrossEntropy, info);
        var r = s.Loss(s.ReadParameters(), data);
        // bce of z ∈ [0.42, 0.56]: log(1 + e^−z) for the label, log(1 + e^z) for the rest, ≈ 0.95 on average
        Assert.InRange(r.Loss, 0.9, 1.0);
    }

    [Theory]
    [InlineData("nll", "does not hold log-probabilities", "--loss ce")]
    [InlineData("ce-prob", "does not hold probabilities", "--loss ce")]
    public void CliRefusesTheLossWithExitCode2(string loss, string says, string fits)
    {
        var (code, stdout, err) = OnnxUnlearn.Tests.Cli.CliRunner.Run("eval", Fixtures.File("mlp", "model.onnx"), "--data", Fixtures.File("mlp", "data.npz"), "--loss", loss);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        var line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("error: output 'logits', made by Gemm node '/fc2/Gemm', " + says, line);
        Assert.Contains(fits, line);
    }

    [Fact]
    public void ProbedValuesRecordRangesRowSumsAndLogSumExp()
    {
        var v = ProbedValues.Of<double>([Math.Log(0.25), Math.Log(0.75), Math.Log(0.5), Math.Log(0.5)], 2);
        Assert.Equal(Math.Log(0.25), v.Min, 1e-12);
        Assert.Equal(Math.Log(0.75), v.Max, 1e-12);
        Assert.Equal(Math.Log(0.25 * 0.75), v.MinRowSum, 1e-12);
        Assert.Equal(0, v.MinLogSumExp, 1e-12);
        Assert.Equal(0, v.MaxLogSumExp, 1e-12);
        Assert.True(v.LogProbabilities);
        Assert.False(v.InUnitInterval);
        // all ≤ 0 but a row's log-sum-exp is log 2: not log-probabilities
        var w = ProbedValues.Of<float>([-1f, -2f, 0f, 0f], 2);
        Assert.False(w.LogProbabilities);
        Assert.Equal(Math.Log(2), w.MaxLogSumExp, 1e-6);
        // a positive value: no log-sum-exp is computed (NaN), nor needed
        var z = ProbedValues.Of<float>([0.5f, 2f], 2);
        Assert.True(double.IsNaN(z.MaxLogSumExp));
        Assert.False(z.InUnitInterval);
        Assert.True(ProbedValues.Of<float>([0.3f, 0.9f, 1.00001f, 0f], 2).InUnitInterval); // rounding slack; rows need not sum to 1
        Assert.False(ProbedValues.Of<float>([0.3f, 1.01f], 2).InUnitInterval);
        // merged probes: the union of the ranges
        var both = v.Merge(w);
        Assert.Equal(8, both.Count);
        Assert.Equal(-2, both.Min, 1e-12);
        Assert.False(both.LogProbabilities);
        // NaN: flagged, left out of the ranges, and nothing is known
        var nan = ProbedValues.Of<float>([float.NaN, 0.5f], 2);
        Assert.True(nan.HasNaN);
        Assert.Equal(0.5, nan.Max);
        Assert.False(nan.Known);
        Assert.False(nan.InUnitInterval);
        Assert.Equal(RowKind.Other, nan.Rows);
    }
}
