namespace OnnxUnlearn.Tests.Autodiff;

/// <summary>Each elementwise and product rule against finite differences (one line per case).</summary>
public class ElementwiseGradientTests
{
    static readonly long[] S = [3, 4];

    [Theory]
    [InlineData("Neg")] [InlineData("Abs")] [InlineData("Exp")] [InlineData("Sin")] [InlineData("Cos")] [InlineData("Tanh")]
    [InlineData("Sigmoid")] [InlineData("Softplus")] [InlineData("Softsign")] [InlineData("Erf")] [InlineData("Relu")]
    [InlineData("LeakyRelu")] [InlineData("Elu")] [InlineData("Selu")] [InlineData("Celu")] [InlineData("HardSigmoid")]
    [InlineData("HardSwish")] [InlineData("Mish")] [InlineData("Identity")] [InlineData("ThresholdedRelu")]
    public void Unary(string op) => new NodeModel { Op = op, Inputs = [("x", S)], Opset = 18 }.Check();

    [Theory]
    [InlineData("Tan")] [InlineData("Asin")] [InlineData("Acos")] [InlineData("Atan")] [InlineData("Sinh")] [InlineData("Cosh")]
    [InlineData("Asinh")] [InlineData("Atanh")]
    public void TrigonometricInsideTheirDomain(string op) =>
        new NodeModel { Op = op, Inputs = [("x", S)], Values = { ["x"] = Enumerable.Range(0, 12).Select(i => -0.8f + i * 0.14f).ToArray() } }.Check();

    [Fact]
    public void Acosh() => new NodeModel { Op = "Acosh", Inputs = [("x", S)], Values = { ["x"] = Enumerable.Range(0, 12).Select(i => 1.2f + i * 0.3f).ToArray() } }.Check();

    [Fact]
    public void Shrink() => new NodeModel { Op = "Shrink", Inputs = [("x", S)], Attrs = [("lambd", 0.3f), ("bias", 0.2f)] }.Check();

    [Theory]
    [InlineData(0L, 0L)] [InlineData(1L, 0L)] [InlineData(0L, 1L)] [InlineData(1L, 1L)]
    public void CumSum(long exclusive, long reverse) =>
        new NodeModel { Op = "CumSum", Inputs = [("x", [3, 4])], IntConsts = { [1] = [1] }, Attrs = [("exclusive", exclusive), ("reverse", reverse)], Double = true }.Check();

    [Theory]
    [InlineData("Log")] [InlineData("Sqrt")] [InlineData("Reciprocal")]
    public void UnaryPositive(string op) =>
        new NodeModel { Op = op, Inputs = [("x", S)], Values = { ["x"] = Enumerable.Range(1, 12).Select(i => 0.5f + i * 0.25f).ToArray() } }.Check();

    [Theory]
    [InlineData("none")] [InlineData("tanh")]
    public void Gelu(string approximate) => new NodeModel { Op = "Gelu", Inputs = [("x", S)], Opset = 20, Attrs = [("approximate", approximate)] }.Check();

    [Theory]
    [InlineData("Add")] [InlineData("Sub")] [InlineData("Mul")] [InlineData("Div")]
    public void BinaryBroadcasting(string op)
    {
        new NodeModel { Op = op, Inputs = [("a", [2, 3, 4]), ("b", [4])] }.Check();
        new NodeModel { Op = op, Inputs = [("a", [2, 1, 4]), ("b", [3, 1])], Double = true }.Check();
        new NodeModel { Op = op, Inputs = [("a", [3, 4]), ("b", [3, 4])] }.Check();
    }

    [Fact]
    public void Pow() => new NodeModel
    {
        Op = "Pow", Inputs = [("a", S), ("b", [4])],
        Values = { ["a"] = Enumerable.Range(1, 12).Select(i => 0.3f + i * 0.2f).ToArray() },
    }.Check();

    [Theory]
    [InlineData("Max")] [InlineData("Min")] [InlineData("Sum")] [InlineData("Mean")]
    public void Variadic(string op) => new NodeModel { Op = op, Inputs = [("a", [2, 3, 4]), ("b", [3, 4]), ("c", [4])] }.Check();

    [Fact]
    public void PRelu() => new NodeModel { Op = "PRelu", Inputs = [("x", [2, 3, 4]), ("slope", [3, 1])] }.Check();

    [Fact]
    public void Clip() => new NodeModel { Op = "Clip", Inputs = [("x", S)], FloatConsts = { [1] = [-0.5f], [2] = [0.7f] } }.Check();

    [Theory]
    [InlineData(new long[] { 3, 4 }, new long[] { 4, 5 })]
    [InlineData(new long[] { 2, 3, 4 }, new long[] { 4, 5 })]
    [InlineData(new long[] { 2, 3, 4 }, new long[] { 2, 4, 5 })]
    [InlineData(new long[] { 1, 3, 4 }, new long[] { 2, 4, 5 })]
    [InlineData(new long[] { 4 }, new long[] { 2, 4, 5 })]
    [InlineData(new long[] { 2, 3, 4 }, new long[] { 4 })]
    [InlineData(new long[] { 4 }, new long[] { 4 })]
    public void MatMul(long[] a, long[] b) => new NodeModel { Op = "MatMul", Inputs = [("a", a), ("b", b)] }.Check();

    [Theory]
    [InlineData(0, 0)] [InlineData(1, 0)] [InlineData(0, 1)] [InlineData(1, 1)]
    public void Gemm(long transA, long transB) => new NodeModel
    {
        Op = "Gemm",
        Inputs = [("a", transA == 1 ? [4, 3] : [3, 4]), ("b", transB == 1 ? [5, 4] : [4, 5]), ("c", [5])],
        Attrs = [("transA", transA), ("transB", transB), ("alpha", 0.7f), ("beta", 1.3f)],
    }.Check();
    [Theory]
    [InlineData(true)] [InlineData(false)]
    public void ModFloat(bool isDouble) => new NodeModel
    {   // Y = fmod(A, B), B broadcast along rows; no ratio A/B near an integer (where Y jumps)
        Op = "Mod", Inputs = [("a", [3, 4]), ("b", [4])], Attrs = [("fmod", 1L)], Double = isDouble,
        Values = { ["a"] = Enumerable.Range(0, 12).Select(i => i * 1.37f - 7.1f).ToArray(), ["b"] = [0.7f, -1.3f, 2.1f, -0.45f] },
    }.Check();

    [Theory]
    [InlineData(new long[] { 3, 3 })] [InlineData(new long[] { 2, 4, 4 })] [InlineData(new long[] { 2, 2 })] [InlineData(new long[] { 2, 1, 1 })]
    public void Det(long[] shape) => new NodeModel { Op = "Det", Inputs = [("a", shape)] }.Check();

    [Fact]
    public void DetSingular() => new NodeModel
    {   // rank 2 (row 3 = row 1 + row 2): det = 0, but the cofactors (the gradient) are not; inverse-based formulas fail here
        Op = "Det", Inputs = [("a", [3, 3])], Values = { ["a"] = [1, 2, 3, 4, 5, 6, 5, 7, 9] },
    }.Check();
}
