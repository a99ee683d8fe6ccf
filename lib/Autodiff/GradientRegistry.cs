using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Autodiff;

/// <summary>
/// The one registry of gradient rules, keyed by op type (default domain) or <c>domain.op type</c> (others, e.g.
/// <c>ai.onnx.ml.Normalizer</c>). Rules live by family in Rules/*.cs; each registers itself with <see cref="Rule"/> (all
/// inputs differentiable unless listed) or <see cref="NonDifferentiable"/>.
/// </summary>
public static partial class GradientRegistry
{
    static readonly Dictionary<string, OpGradient> rules = Build();

    public static OpGradient? Find(string opType, string domain = "") =>
        rules.TryGetValue(Domains.OpName(domain, opType), out var r) ? r : null;

    public static IEnumerable<string> OpTypes => rules.Keys.Order();

    static Dictionary<string, OpGradient> Build()
    {
        var d = new Dictionary<string, OpGradient>();
        Elementwise(d);
        Linear(d);
        Shapes(d);
        Reductions(d);
        Network(d);
        Convolution(d);
        MachineLearning(d);
        Quantization(d);
        return d;
    }

    /// <summary>A rule whose gradient flows to every input except those listed.</summary>
    static void Rule(Dictionary<string, OpGradient> d, string op, GradRule rule, params int[] nonDifferentiable) =>
        d.Add(op, new OpGradient(rule, i => !nonDifferentiable.Contains(i)));

    /// <summary>A rule whose gradient flows only to the listed inputs.</summary>
    static void RuleOnly(Dictionary<string, OpGradient> d, string op, GradRule rule, params int[] differentiable) =>
        d.Add(op, new OpGradient(rule, differentiable.Contains));

    /// <summary>Ops whose outputs carry no gradient (shapes, indices, comparisons): they stop the flow.</summary>
    static void NonDifferentiable(Dictionary<string, OpGradient> d, params string[] ops)
    {
        foreach (var op in ops) d.Add(op, new OpGradient(_ => { }, _ => false));
    }
}
