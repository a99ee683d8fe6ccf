using System.Text.RegularExpressions;
using Onnx;
using OnnxUnlearn.Onnx;
using static OnnxUnlearn.UserError;

namespace OnnxUnlearn.Autodiff;

/// <summary>
/// Which of a model's parameters (<see cref="Parameters.Candidates"/>) are trained: the float ones of rank ≥ 1 on a
/// differentiable path to the chosen output, as the gradient rules see it; the Params/Frozen globs override.
/// </summary>
public static class TrainableParameters
{
    public static List<Parameter> Discover(ModelFile file, string? output = null, IReadOnlyList<string>? include = null, IReadOnlyList<string>? exclude = null)
    {
        var g = file.Graph;
        output ??= Parameters.DefaultOutput(g);
        if (output is not null && !g.Output.Any(o => o.Name == output) && !g.Node.Any(n => n.Output.Contains(output)))
            throw new UserError($"model '{file.Path}' has no output or value named '{output}'; its outputs are: {string.Join(", ", g.Output.Select(o => o.Name))}");
        if (output is not null && ZipMap.Making(g, output) is { } zip) throw ZipMap.NotATensor(zip, output);
        var (differentiable, firstUse) = output is null ? ([], []) : Analyse(g, output);
        var usedAbove = g.Node.SelectMany(n => n.Input).ToHashSet();
        var usedInBodies = BodyUses(g);
        var includeRx = include is { Count: > 0 } ? include.Select(Glob).ToList() : null;
        var excludeRx = exclude?.Select(Glob).ToList() ?? [];

        var dynamicScales = Quantization.DynamicScales(g);
        var result = new List<Parameter>();
        foreach (var (name, storage, t, via) in Parameters.Candidates(g))
        {
            // An int8/uint8 initializer that a DequantizeLinear reads is a quantized weight: W is the parameter.
            var (grid, notQuantized) = storage == ParameterStorage.Initializer ? Quantization.Weight(g, t, file) : (null, null);
            if (!DataTypes.IsFloat(t.DataType) && grid is null && notQuantized is null) continue;
            string? why = notQuantized;
            if (why is null && dynamicScales.Contains(name)) why = "the scale of a dynamically quantized weight (a constant of its grid)";
            if (why is null && t.Dims.Count == 0) why = "rank-0 constant";
            else if (why is null && output is null) why = $"the model has no float output to take a loss of (name one: {Setting("Output")})";
            else if (why is null && !differentiable.Contains(via))
                why = firstUse.TryGetValue(via, out var use) ? $"no differentiable path to '{output}' ({use})"
                    : usedAbove.Contains(via) || storage == ParameterStorage.Attribute ? $"not used on the way to '{output}'"
                    : usedInBodies.TryGetValue(via, out var body) ? $"used only inside the body of {body}; control-flow bodies are not differentiated"
                    : "not used by any node";
            if (includeRx is not null && !includeRx.Any(r => r.IsMatch(name))) why ??= $"not matched by {Setting("Params")}";
            if (excludeRx.Any(r => r.IsMatch(name))) why = $"frozen by {Setting("Frozen")}";
            if (includeRx is not null && includeRx.Any(r => r.IsMatch(name)) && why is "rank-0 constant") why = null;
            result.Add(new Parameter(name, storage, t.DataType, t.Dims.ToArray(), t.IsExternal(), why is null, why) { Branch = file.Inlined.GetValueOrDefault(name), Grid = grid });
        }
        // Weights of If branches not inlined (the condition varies per sample, or no data fixed it) are listed, frozen.
        foreach (var b in Branches.Candidates(g).Where(b => DataTypes.IsFloat(b.Value.DataType)))
            result.Add(new Parameter(b.Name, b.Storage, b.Value.DataType, b.Value.Dims.ToArray(), b.Value.IsExternal(), false,
                $"inside {b.Branch}, not inlined: its condition varies per sample, or no data decided it (inspect --data)")
            { Branch = b.Branch });
        return result;
    }

    /// <summary>Values from which <paramref name="output"/> can be reached through differentiable input slots, and each value's first non-differentiable use.</summary>
    static (HashSet<string>, Dictionary<string, string>) Analyse(GraphProto g, string output)
    {
        var reach = new HashSet<string> { output };
        var firstUse = new Dictionary<string, string>();
        var computed = g.Node.Where(n => n.OpType != "Constant").SelectMany(n => n.Output).ToHashSet();
        for (int n = g.Node.Count - 1; n >= 0; n--)
        {
            var node = g.Node[n];
            if (!node.Output.Any(reach.Contains)) continue;
            // A branch or loop body that reads a computed value puts whatever it depends on on the path to the output (the
            // gradient then stops there with a clear error); a weight its body reads directly stays a body weight, frozen.
            if (ControlFlow.Is(node)) reach.UnionWith(ControlFlow.OuterReads(node).Where(computed.Contains));
            // Only a linear classifier's scores depend differentiably on its coefficients; its labels are integers.
            if (LinearModels.Is(node) && !reach.Contains(LinearModels.ScoresOutput(node)))
                firstUse[LinearModels.ScoresOutput(node)] = $"output '{node.Output[0]}' of {node.OpType} '{node.Name}' holds integer labels; take the loss of its scores output: {Setting("Output", $"'{LinearModels.ScoresOutput(node)}'")}";
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

    /// <summary>Values read inside If/Loop/Scan bodies (at any depth), each with the top-level node whose body reads it.</summary>
    static Dictionary<string, string> BodyUses(GraphProto g)
    {
        var uses = new Dictionary<string, string>();
        void Walk(GraphProto body, string owner)
        {
            foreach (var n in body.Node)
            {
                foreach (var x in n.Input) if (x.Length > 0) uses.TryAdd(x, owner);
                foreach (var a in n.Attribute) foreach (var sub in a.Graphs.Prepend(a.G).OfType<GraphProto>()) Walk(sub, owner);
            }
        }
        foreach (var n in g.Node)
            foreach (var a in n.Attribute)
                foreach (var sub in a.Graphs.Prepend(a.G).OfType<GraphProto>()) Walk(sub, $"{n.OpType} '{(n.Name.Length > 0 ? n.Name : n.Output.FirstOrDefault())}'");
        return uses;
    }

    static Regex Glob(string pattern) =>
        new("^" + Regex.Escape(pattern).Replace(@"\*", ".*").Replace(@"\?", ".") + "$", RegexOptions.CultureInvariant);
}
