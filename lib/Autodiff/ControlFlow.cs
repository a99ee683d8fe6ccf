using Onnx;
using static OnnxUnlearn.UserError;

namespace OnnxUnlearn.Autodiff;

/// <summary>
/// Nodes with subgraph bodies (If, Loop, Scan). Their bodies read outer values by name, not through the node's inputs,
/// so a dependency walk over inputs alone would miss that a parameter reaches the loss through a branch and silently
/// drop that part of its gradient. No gradient rule exists for them: such a path is an error that says so.
/// </summary>
public static class ControlFlow
{
    public static bool Is(NodeProto n) => n.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0);

    /// <summary>Values a node's bodies (at any depth) read from the enclosing scopes.</summary>
    public static HashSet<string> OuterReads(NodeProto n)
    {
        var reads = new HashSet<string>();
        foreach (var body in Bodies(n)) Collect(body, [], reads);
        return reads;
    }

    static IEnumerable<GraphProto> Bodies(NodeProto n) =>
        n.Attribute.SelectMany(a => a.Graphs.Prepend(a.G)).OfType<GraphProto>();

    static void Collect(GraphProto g, HashSet<string> defined, HashSet<string> reads)
    {
        // A body sees its own inputs, initializers and earlier outputs, then the enclosing scopes.
        var scope = new HashSet<string>(defined);
        scope.UnionWith(g.Input.Select(i => i.Name));
        scope.UnionWith(g.Initializer.Select(t => t.Name));
        foreach (var node in g.Node)
        {
            foreach (var x in node.Input) if (x.Length > 0 && !scope.Contains(x)) reads.Add(x);
            foreach (var body in Bodies(node)) Collect(body, scope, reads);
            scope.UnionWith(node.Output.Where(o => o.Length > 0));
        }
        foreach (var o in g.Output) if (!scope.Contains(o.Name)) reads.Add(o.Name);
    }

    /// <summary>The user error for control flow on the path from <paramref name="parameters"/> to the loss.</summary>
    public static UserError OnLossPath(NodeProto n, long opset, IReadOnlyCollection<string> parameters)
    {
        var names = string.Join(", ", parameters.Take(5).Select(p => $"'{p}'")) + (parameters.Count > 5 ? $" and {parameters.Count - 5} more" : "");
        return new UserError(
            $"{Backprop.Describe(n, opset)} is control flow on the path from trainable parameters ({names}) to the loss; " +
            $"control flow (If/Loop/Scan) on the loss path is not differentiable by this tool. Export the model without it " +
            $"(e.g. torch.onnx.export with fixed input shapes, so that branches are resolved and loops unrolled), or freeze " +
            $"the parameters that reach it ({Setting("Frozen")}).");
    }
}
