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
}
