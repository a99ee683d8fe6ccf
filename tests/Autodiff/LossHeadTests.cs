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
}
