using System.Text.RegularExpressions;
using Onnx;
using OnnxUnlearn.Autodiff;

namespace OnnxUnlearn.Onnx;

public enum ParameterStorage { Initializer, Constant }

/// <summary>A float tensor of the model that could be trained, and whether it is (with the reason when not).</summary>
public sealed record Parameter(string Name, ParameterStorage Storage, int DataType, long[] Shape, bool External, bool Trainable, string? WhyNot)
{
    public long Elements => Shape.Aggregate(1L, (a, d) => a * d);
}

/// <summary>
/// The one notion of "parameter" used by every command: float initializers and float Constant-node tensors. Trainable by
/// default when of rank ≥ 1 and on a differentiable path to the chosen output; <c>--params</c>/<c>--frozen</c> globs override.
/// </summary>
public static class Parameters
{
    public static List<Parameter> Discover(ModelFile file, string? output = null, IReadOnlyList<string>? include = null, IReadOnlyList<string>? exclude = null)
    {
        var g = file.Graph;
        output ??= g.Output.FirstOrDefault()?.Name ?? throw new UserError($"model '{file.Path}' has no outputs");
        if (!g.Output.Any(o => o.Name == output) && !g.Node.Any(n => n.Output.Contains(output)))
            throw new UserError($"model '{file.Path}' has no output or value named '{output}'; its outputs are: {string.Join(", ", g.Output.Select(o => o.Name))}");
        var (differentiable, firstUse) = Analyse(g, output);
        var includeRx = include is { Count: > 0 } ? include.Select(Glob).ToList() : null;
        var excludeRx = exclude?.Select(Glob).ToList() ?? [];

        var result = new List<Parameter>();
        void Add(string name, ParameterStorage storage, TensorProto t)
        {
            if (!DataTypes.IsFloat(t.DataType)) return;
            string? why = null;
            if (t.Dims.Count == 0) why = "rank-0 constant";
            else if (!differentiable.Contains(name))
                why = firstUse.TryGetValue(name, out var use) ? $"no differentiable path to '{output}' ({use})" : $"not used on the way to '{output}'";
            if (includeRx is not null && !includeRx.Any(r => r.IsMatch(name))) why ??= "not matched by --params";
            if (excludeRx.Any(r => r.IsMatch(name))) why = "frozen by --frozen";
            if (includeRx is not null && includeRx.Any(r => r.IsMatch(name)) && why is "rank-0 constant") why = null;
            result.Add(new Parameter(name, storage, t.DataType, t.Dims.ToArray(), t.IsExternal(), why is null, why));
        }
        foreach (var t in g.Initializer) Add(t.Name, ParameterStorage.Initializer, t);
        foreach (var n in g.Node)
            if (n.OpType == "Constant" && n.Domain is "" or "ai.onnx" && n.Attribute.FirstOrDefault(a => a.Name == "value")?.T is { } t)
                Add(n.Output[0], ParameterStorage.Constant, t);
        return result;
    }

    /// <summary>Values from which <paramref name="output"/> can be reached through differentiable input slots, and each value's first non-differentiable use.</summary>
    static (HashSet<string>, Dictionary<string, string>) Analyse(GraphProto g, string output)
    {
        var reach = new HashSet<string> { output };
        var firstUse = new Dictionary<string, string>();
        for (int n = g.Node.Count - 1; n >= 0; n--)
        {
            var node = g.Node[n];
            if (!node.Output.Any(reach.Contains)) continue;
            var entry = GradientRegistry.Find(node.OpType, node.Domain);
            for (int i = 0; i < node.Input.Count; i++)
            {
                var x = node.Input[i];
                if (x.Length == 0) continue;
                if (entry is null || entry.Differentiable(i)) reach.Add(x);
                else firstUse[x] = node.OpType == "BatchNormalization" && i >= 3 ? "BatchNormalization running statistic" : $"input {i} of {node.OpType} '{node.Name}' is not differentiable";
            }
        }
        return (reach, firstUse);
    }

    static Regex Glob(string pattern) =>
        new("^" + Regex.Escape(pattern).Replace(@"\*", ".*").Replace(@"\?", ".") + "$", RegexOptions.CultureInvariant);
}
