using System.Text.RegularExpressions;
using Onnx;
using OnnxUnlearn.Autodiff;
using static OnnxUnlearn.UserError;

namespace OnnxUnlearn.Onnx;

/// <summary>Where a parameter's values live: an initializer, a Constant node's value, or a float-list attribute of an ai.onnx.ml linear node.</summary>
public enum ParameterStorage { Initializer, Constant, Attribute }

/// <summary>A float tensor of the model that could be trained, and whether it is (with the reason when not).</summary>
public sealed record Parameter(string Name, ParameterStorage Storage, int DataType, long[] Shape, bool External, bool Trainable, string? WhyNot)
{
    public long Elements => Shape.Aggregate(1L, (a, d) => a * d);
}

/// <summary>A tensor that may be a parameter: its name, storage, value and the graph value whose path to the output decides trainability.</summary>
public sealed record ParameterCandidate(string Name, ParameterStorage Storage, TensorProto Tensor, string Via);

/// <summary>
/// The one notion of "parameter" used by every command: float initializers, float Constant-node tensors (<c>value</c>,
/// <c>value_float(s)</c>: paddle2onnx keeps every weight there) and the coefficients/intercepts of ai.onnx.ml
/// LinearClassifier/LinearRegressor nodes. Trainable by default when of rank ≥ 1 and on a differentiable path to the
/// chosen output; <c>--params</c>/<c>--frozen</c> globs override.
/// </summary>
public static class Parameters
{
    public static List<Parameter> Discover(ModelFile file, string? output = null, IReadOnlyList<string>? include = null, IReadOnlyList<string>? exclude = null)
    {
        var g = file.Graph;
        output ??= DefaultOutput(g);
        if (output is not null && !g.Output.Any(o => o.Name == output) && !g.Node.Any(n => n.Output.Contains(output)))
            throw new UserError($"model '{file.Path}' has no output or value named '{output}'; its outputs are: {string.Join(", ", g.Output.Select(o => o.Name))}");
        if (output is not null && ZipMap.Making(g, output) is { } zip) throw ZipMap.NotATensor(zip, output);
        var (differentiable, firstUse) = output is null ? ([], []) : Analyse(g, output);
        var usedAbove = g.Node.SelectMany(n => n.Input).ToHashSet();
        var usedInBodies = BodyUses(g);
        var includeRx = include is { Count: > 0 } ? include.Select(Glob).ToList() : null;
        var excludeRx = exclude?.Select(Glob).ToList() ?? [];

        var result = new List<Parameter>();
        foreach (var (name, storage, t, via) in Candidates(g))
        {
            if (!DataTypes.IsFloat(t.DataType)) continue;
            string? why = null;
            if (t.Dims.Count == 0) why = "rank-0 constant";
            else if (output is null) why = $"the model has no float output to take a loss of (name one: {Setting("Output")})";
            else if (!differentiable.Contains(via))
                why = firstUse.TryGetValue(via, out var use) ? $"no differentiable path to '{output}' ({use})"
                    : usedAbove.Contains(via) || storage == ParameterStorage.Attribute ? $"not used on the way to '{output}'"
                    : usedInBodies.TryGetValue(via, out var body) ? $"used only inside the body of {body}; control-flow bodies are not differentiated"
                    : "not used by any node";
            if (includeRx is not null && !includeRx.Any(r => r.IsMatch(name))) why ??= $"not matched by {Setting("Params")}";
            if (excludeRx.Any(r => r.IsMatch(name))) why = $"frozen by {Setting("Frozen")}";
            if (includeRx is not null && includeRx.Any(r => r.IsMatch(name)) && why is "rank-0 constant") why = null;
            result.Add(new Parameter(name, storage, t.DataType, t.Dims.ToArray(), t.IsExternal(), why is null, why));
        }
        return result;
    }

    /// <summary>Every tensor of the top-level graph that may be a parameter (float or not), in graph order.</summary>
    public static IEnumerable<ParameterCandidate> Candidates(GraphProto g)
    {
        foreach (var t in g.Initializer) yield return new(t.Name, ParameterStorage.Initializer, t, t.Name);
        for (int i = 0; i < g.Node.Count; i++)
        {
            var n = g.Node[i];
            if (n.OpType == "Constant" && n.Domain is "" or "ai.onnx" && n.Output.Count > 0 && n.ConstantValue() is { } t)
                yield return new(n.Output[0], ParameterStorage.Constant, t, n.Output[0]);
            else if (LinearModels.Is(n))
                foreach (var (name, tensor) in LinearModels.Tensors(n, i)) yield return new(name, ParameterStorage.Attribute, tensor, LinearModels.ScoresOutput(n));
        }
    }

    /// <summary>A Constant node's value as a tensor: <c>value</c>, or <c>value_float</c> (rank 0) / <c>value_floats</c> (rank 1) as float32.</summary>
    public static TensorProto? ConstantValue(this NodeProto n)
    {
        foreach (var a in n.Attribute)
            switch (a.Name)
            {
                case "value" when a.T is not null: return a.T;
                case "value_float": return new TensorProto { DataType = DataTypes.Float, FloatData = { a.F } };
                case "value_floats": return new TensorProto { DataType = DataTypes.Float, Dims = { a.Floats.Count }, FloatData = { a.Floats } };
            }
        return null;
    }

    /// <summary>
    /// The output a loss is taken of by default: the first graph output that is (or may be, when undeclared) a float
    /// tensor. Classifiers list their integer labels first (LinearClassifier: labels, then scores). An output made by a
    /// ZipMap (skl2onnx's default for classifiers: a sequence of maps) stands for the probability tensor the ZipMap reads.
    /// Null when there is none.
    /// </summary>
    public static string? DefaultOutput(GraphProto g)
    {
        foreach (var o in g.Output)
        {
            if (ZipMap.Making(g, o.Name) is { } zip) return zip.Input[0];
            if (o.Type is null || o.Type.ValueCase == TypeProto.ValueOneofCase.None || o.Type.TensorType is { } t && (t.ElemType == 0 || DataTypes.IsFloat(t.ElemType)))
                return o.Name;
        }
        return null;
    }

    /// <summary>The chosen output, or the default one; a user error naming the outputs when there is no float output.</summary>
    public static string OutputOrDefault(ModelFile file, string? output)
    {
        var g = file.Graph;
        if (output is not null) return ZipMap.Making(g, output) is { } zip ? throw ZipMap.NotATensor(zip, output) : output;
        if (g.Output.Count == 0) throw new UserError($"model '{file.Path}' has no outputs");
        return DefaultOutput(g) ?? throw new UserError(
            $"model '{file.Path}' has no float output to take a loss of (the default is the first float output); its outputs are " +
            string.Join(", ", g.Output.Select(o => $"'{o.Name}' ({TypeName(o)})")) + $". Name a float value of the graph ({Setting("Output")})");
    }

    static string TypeName(global::Onnx.ValueInfoProto v) => DataTypes.Describe(v.Type);

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
