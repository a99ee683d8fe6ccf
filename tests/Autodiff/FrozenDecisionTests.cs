using OnnxUnlearn.Runtime;

namespace OnnxUnlearn.Tests.Autodiff;

/// <summary>
/// Each frozen-decision rewrite: at the reference its gradient equals the plain one, and it is the gradient of the
/// frozen graph's loss (finite differences of the frozen artifact itself).
/// </summary>
public class FrozenDecisionTests
{
    static readonly long[] S = [3, 4];
    static long[] L(params long[] v) => v;

    [Theory]
    [InlineData("Relu")] [InlineData("LeakyRelu")] [InlineData("Abs")] [InlineData("ThresholdedRelu")]
    [InlineData("HardSigmoid")] [InlineData("HardSwish")]
    public void Unary(string op) => new NodeModel { Op = op, Inputs = [("x", S)], Opset = 18, Values = { ["x"] = Enumerable.Range(0, 12).Select(i => (i - 5.5f) * 0.9f).ToArray() } }.Check(freezeDecisions: true);

    [Fact]
    public void PRelu() => new NodeModel { Op = "PRelu", Inputs = [("x", [2, 3, 4]), ("slope", [3, 1])] }.Check(freezeDecisions: true);

    [Fact]
    public void Clip() => new NodeModel { Op = "Clip", Inputs = [("x", S)], FloatConsts = { [1] = [-0.5f], [2] = [0.7f] } }.Check(freezeDecisions: true);

    [Theory]
    [InlineData("Max")] [InlineData("Min")]
    public void Variadic(string op) => new NodeModel { Op = op, Inputs = [("a", [2, 3, 4]), ("b", [3, 4]), ("c", [4])] }.Check(freezeDecisions: true);

    [Fact]
    public void MaxPool() => new NodeModel { Op = "MaxPool", Inputs = [("x", [2, 2, 5, 6])], Attrs = [("kernel_shape", L(3, 3)), ("strides", L(2, 1)), ("pads", L(1, 1, 1, 1))] }.Check(freezeDecisions: true);

    [Fact]
    public void GlobalMaxPool() => new NodeModel { Op = "GlobalMaxPool", Inputs = [("x", [2, 3, 4, 5])] }.Check(freezeDecisions: true);

    /// <summary>
    /// Exported models with unnamed nodes (each reference copy was named "__ref", which ONNX Runtime refused as a
    /// duplicate) and with Constant nodes between the layers (the copies went first, ahead of the constants they read):
    /// the smooth gradient at θ = θ_ref is the plain one.
    /// </summary>
    [Theory]
    [InlineData("tf_style")] [InlineData("const_nodes")] [InlineData("opset9")] [InlineData("cnn")]
    public void FixtureSmoothGradientAtTheReferenceIsThePlainOne(string fixture)
    {
        using var data = Dataset.Load(Fixtures.File(fixture, "data.npz"));
        using var s = Evaluator.Open(Fixtures.File(fixture, "model.onnx"), new LossSettings(), data);
        Assert.True(s.HasDecisions);
        var theta = s.ReadParameters();
        var plain = new float[s.Layout.Size];
        var smooth = new float[s.Layout.Size];
        var r = s.Gradient(theta, data, plain);
        var rs = s.SmoothGradient(theta, theta, data, smooth);
        Assert.Equal(r.Loss, rs.Loss, 1e-6);
        Assert.Contains(plain, v => v != 0);
        double err = Numerics.RelativeL2(plain, smooth);
        Assert.True(err < 1e-6, $"{fixture}: relative error {err:E2}");
    }
}
