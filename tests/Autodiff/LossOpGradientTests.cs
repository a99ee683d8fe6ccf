namespace OnnxUnlearn.Tests.Autodiff;

/// <summary>The loss ops NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss against finite differences.</summary>
public class LossOpGradientTests
{
    // Targets for [N = 2, C = 3, d…]: every class appears, and 1 doubles as the in-range ignore_index below.
    static readonly long[] Targets2 = [2, 0];
    static readonly long[] TargetsNd = [0, 2, 1, 1, 2, 0, 1, 0];

    static NodeModel Model(string op, long[] x, string reduction, bool weighted, long? ignore, bool isDouble, int outputs = 1)
    {
        var t = x.Length == 2 ? Targets2 : TargetsNd[..(int)(x[0] * x.Skip(2).Aggregate(1L, (a, d) => a * d))];
        if (ignore is < 0) t = t.Select((v, i) => i % 3 == 1 ? ignore.Value : v).ToArray(); // out-of-range ignored targets
        (string, object)[] attrs = ignore is { } ii ? [("reduction", reduction), ("ignore_index", ii)] : [("reduction", reduction)];
        return new NodeModel
        {
            Op = op, Inputs = [("x", x)], IndexInputs = { [1] = ([x[0], .. x.Skip(2)], t) }, Attrs = attrs, Double = isDouble, Outputs = outputs,
            FloatConsts = weighted ? new() { [2] = [0.7f, 1.6f, 0.4f] } : [], Opset = 13,
        };
    }

    public static TheoryData<long[], string, bool, long?> Cases()
    {
        var data = new TheoryData<long[], string, bool, long?>();
        foreach (var shape in new[] { new long[] { 2, 3 }, [2, 3, 4], [2, 3, 2, 2] })
            foreach (var reduction in new[] { "none", "sum", "mean" })
                foreach (var weighted in new[] { false, true })
                    foreach (var ignore in new long?[] { null, 1, -5 })
                        data.Add(shape, reduction, weighted, ignore);
        return data;
    }

    [Theory, MemberData(nameof(Cases))]
    public void NegativeLogLikelihoodLoss(long[] x, string reduction, bool weighted, long? ignore) =>
        Model("NegativeLogLikelihoodLoss", x, reduction, weighted, ignore, isDouble: false).Check();

    [Theory, MemberData(nameof(Cases))]
    public void SoftmaxCrossEntropyLoss(long[] x, string reduction, bool weighted, long? ignore) =>
        Model("SoftmaxCrossEntropyLoss", x, reduction, weighted, ignore, isDouble: false).Check();

    /// <summary>Both outputs: the loss and log_prob, each differentiated on its own.</summary>
    [Theory]
    [InlineData("mean", true)] [InlineData("none", false)]
    public void SoftmaxCrossEntropyLossLogProb(string reduction, bool weighted) =>
        Model("SoftmaxCrossEntropyLoss", [2, 3, 4], reduction, weighted, 1, isDouble: false, outputs: 2).Check();

    [Fact]
    public void Float64() 
    {
        Model("NegativeLogLikelihoodLoss", [2, 3, 4], "mean", true, 1, isDouble: true).Check();
        Model("SoftmaxCrossEntropyLoss", [2, 3, 4], "mean", true, 1, isDouble: true).Check();
    }
}
