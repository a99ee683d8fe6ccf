using Onnx;
using OnnxUnlearn.Onnx;
using static OnnxUnlearn.UserError;

namespace OnnxUnlearn.Autodiff;

/// <summary>
/// Reverse-mode differentiation of a graph: walks the nodes that lie between the values to differentiate and the seeded
/// output in reverse order, calls each op's rule from <see cref="GradientRegistry"/>, and sums the contributions of every
/// use of a value (a tensor feeding many nodes gets the sum of all its uses' gradients).
/// </summary>
public static class Backprop
{
    /// <returns>The gradient value name for each of <paramref name="wrt"/>, or null where the output does not depend on it.</returns>
    public static Dictionary<string, string?> Build(GraphProto graph, long opset, GraphBuilder b, TensorShapes shapes,
        IReadOnlyDictionary<string, string> seeds, IReadOnlyCollection<string> wrt, Func<string, long[]?> constInts)
    {
        var (active, requires) = Active(graph, opset, seeds.Keys, wrt, _ => false);

        var contributions = new Dictionary<string, List<string>>();
        var summed = new Dictionary<string, string>();
        foreach (var (value, grad) in seeds) contributions[value] = [grad];
        string? GradOf(string value)
        {
            if (summed.TryGetValue(value, out var s)) return s;
            if (!contributions.TryGetValue(value, out var list)) return null;
            return summed[value] = b.Sum(list);
        }
        void Accumulate(string value, string grad)
        {
            if (summed.ContainsKey(value)) throw new InvalidOperationException($"gradient of '{value}' used before all contributions arrived: graph not topologically sorted");
            if (!contributions.TryGetValue(value, out var list)) contributions[value] = list = [];
            list.Add(grad);
        }

        for (int n = active.Count - 1; n >= 0; n--)
        {
            var node = active[n];
            if (!node.Output.Any(o => contributions.ContainsKey(o))) continue;
            var ctx = new GradContext(node, opset, b, shapes, GradOf, requires, constInts, Accumulate);
            GradientRegistry.Find(node.OpType, node.Domain)!.Rule(ctx);
        }
        return wrt.ToDictionary(w => w, GradOf);
    }

    /// <summary>
    /// The nodes between <paramref name="wrt"/> and <paramref name="outputs"/> (in graph order) and the values that depend
    /// differentiably on <paramref name="wrt"/>. Refuses control flow and ops without a rule on that path, naming them;
    /// <paramref name="lowered"/> says which rule-less ops a later stage rewrites into ones with rules (for a check made
    /// before that rewrite).
    /// </summary>
    public static (List<NodeProto> Active, HashSet<string> Requires) Active(GraphProto graph, long opset, IEnumerable<string> outputs,
        IReadOnlyCollection<string> wrt, Func<NodeProto, bool> lowered)
    {
        var nodes = graph.Node;
        // What each node reads: its inputs, and for If/Loop/Scan also the outer values its bodies read by name.
        var outerReads = nodes.Where(ControlFlow.Is).ToDictionary(n => n, ControlFlow.OuterReads);
        IEnumerable<string> Reads(NodeProto n) => outerReads.TryGetValue(n, out var r) ? n.Input.Concat(r) : n.Input;
        HashSet<string> Requires(IEnumerable<string> from)
        {
            // Forward: values that depend differentiably on `from`.
            var requires = new HashSet<string>(from);
            foreach (var node in nodes)
            {
                var entry = GradientRegistry.Find(node.OpType, node.Domain);
                bool flows = node.Input.Select((x, i) => (x, i)).Any(p => requires.Contains(p.x) && (entry is null || entry.Differentiable(p.i)))
                    || outerReads.TryGetValue(node, out var r) && r.Any(requires.Contains);
                if (flows) foreach (var o in node.Output) if (o.Length > 0) requires.Add(o);
            }
            return requires;
        }
        var requires = Requires(wrt);
        // Backward: values the seeded outputs depend on.
        var reaches = new HashSet<string>(outputs);
        for (int n = nodes.Count - 1; n >= 0; n--)
            if (nodes[n].Output.Any(reaches.Contains))
                foreach (var x in Reads(nodes[n])) if (x.Length > 0) reaches.Add(x);

        var active = nodes.Where(n => n.Output.Any(o => requires.Contains(o) && reaches.Contains(o))).ToList();
        if (active.FirstOrDefault(ControlFlow.Is) is { } branch)
            throw ControlFlow.OnLossPath(branch, opset, wrt.Where(w => Requires([w]).Overlaps(branch.Output)).ToList());
        var missing = active.Where(n => GradientRegistry.Find(n.OpType, n.Domain) is null && !lowered(n)).ToList();
        if (missing.Count > 0)
            throw new UserError("no gradient rule for " + string.Join("; ", missing.Select(n => Describe(n, opset))) +
                $". These ops lie between the trainable parameters and the loss; freeze the parameters before them ({Setting("Frozen")}) or file an issue asking for the rule.");
        return (active, requires);
    }

    public static string Describe(NodeProto n, long opset) =>
        $"op '{Domains.OpName(n.Domain, n.OpType)}' (node '{(n.Name.Length > 0 ? n.Name : n.Output.FirstOrDefault())}', opset {opset})";
}
