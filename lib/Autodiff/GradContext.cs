using System.Text;
using Onnx;

namespace OnnxUnlearn.Autodiff;

/// <summary>
/// What a gradient rule sees of one forward node: its inputs X(i), outputs Y(i), incoming gradients dY(i), which inputs
/// need a gradient, attributes, constant inputs and measured shapes. A rule reports input gradients with <see cref="Give"/>.
/// </summary>
public sealed class GradContext
{
    readonly Func<string, string?> gradOf;
    readonly Func<string, long[]?> constInts;
    readonly Action<string, string> accumulate;
    readonly HashSet<string> needsGrad;

    internal GradContext(NodeProto node, long opset, GraphBuilder builder, TensorShapes shapes, Func<string, string?> gradOf,
        HashSet<string> needsGrad, Func<string, long[]?> constInts, Action<string, string> accumulate)
    {
        Node = node; Opset = opset; B = builder; Shapes = shapes;
        this.gradOf = gradOf; this.needsGrad = needsGrad; this.constInts = constInts; this.accumulate = accumulate;
    }

    public NodeProto Node { get; }
    /// <summary>Opset the forward node was written for (rules read attributes by it).</summary>
    public long Opset { get; }
    public GraphBuilder B { get; }
    public TensorShapes Shapes { get; }

    public string X(int i) => Node.Input[i];
    public bool HasX(int i) => i < Node.Input.Count && Node.Input[i].Length > 0;
    public string Y(int i = 0) => Node.Output[i];
    public int Inputs => Node.Input.Count;

    /// <summary>Gradient flowing into output i, or null when nothing downstream needs it.</summary>
    public string? GradY(int i) => i < Node.Output.Count && Node.Output[i].Length > 0 ? gradOf(Node.Output[i]) : null;
    /// <summary>Gradient of output 0 (always present when a rule runs for a single-output op).</summary>
    public string dY => GradY(0) ?? B.ZerosLike(Y(0));

    public bool Needs(int i) => HasX(i) && needsGrad.Contains(Node.Input[i]);

    public void Give(int i, string grad)
    {
        if (Needs(i)) accumulate(Node.Input[i], grad);
    }

    public int Rank(string value) => Shapes.Rank(value);
    public long[] Dims(string value) => Shapes[value]?.Dims ?? throw new InvalidOperationException($"no shape for '{value}'");

    /// <summary>
    /// Extent of axis <paramref name="axis"/> (≥ 0) of a value, as a 1-D int64 tensor of length 1: a constant where the
    /// probes found it fixed, read at run time otherwise.
    /// </summary>
    public string Extent(string value, int axis) =>
        Shapes[value] is { } v && v.Dims[axis] >= 0 ? B.Ints(v.Dims[axis]) : B.Shape(value, axis, axis + 1);

    /// <summary>Normalises a possibly negative axis against a rank.</summary>
    public static long Axis(long axis, int rank) => axis < 0 ? axis + rank : axis;

    // ---- attributes ----
    AttributeProto? A(string name) => Node.Attribute.FirstOrDefault(a => a.Name == name);
    public bool HasAttr(string name) => A(name) is not null;
    public long Int(string name, long def) => A(name) is { } a ? a.I : def;
    public float Float(string name, float def) => A(name) is { } a ? a.F : def;
    public long[]? Ints(string name) => A(name)?.Ints.ToArray();
    public float[]? Floats(string name) => A(name)?.Floats.ToArray();
    public string Str(string name, string def) => A(name) is { } a ? Encoding.UTF8.GetString(a.S.Span) : def;

    /// <summary>Values of a constant integer input (initializer or Constant node), or null if computed at run time.</summary>
    public long[]? ConstInts(int i) => HasX(i) ? constInts(X(i)) : null;

    /// <summary>Integer list given as attribute (older opsets) or as constant input (newer ones).</summary>
    public long[]? IntsFromAttrOrInput(string attr, int input) => Ints(attr) ?? ConstInts(input);

    // ---- helpers shared by rules ----

    /// <summary>Sums <paramref name="g"/> (shaped like output <paramref name="outIndex"/>) back to the shape of input i.</summary>
    public string Unbroadcast(string g, int i, int outIndex = 0) => UnbroadcastTo(g, Y(outIndex), X(i));

    /// <summary>Sums <paramref name="g"/>, shaped like value <paramref name="gLike"/>, to the shape of value <paramref name="x"/>.</summary>
    public string UnbroadcastTo(string g, string gLike, string x)
    {
        var gs = Shapes[gLike]; var xs = Shapes[x];
        return gs is null || xs is null ? B.Unbroadcast(g, x) : UnbroadcastTo(g, gs, x, xs);
    }

    /// <summary>As above, with the shapes given: static reduction axes where the probes tell them, run-time ones otherwise.</summary>
    public string UnbroadcastTo(string g, ValueInfo gs, string x, ValueInfo xs)
    {
        int lead = gs.Rank - xs.Rank;
        var axes = new List<long>();
        for (int a = 0; a < gs.Rank; a++)
        {
            if (a < lead) { axes.Add(a); continue; }
            if (xs.SameExtent(a - lead, gs, a)) continue;
            if (xs.Dims[a - lead] == 1) axes.Add(a);
            else return B.Unbroadcast(g, x); // extents that vary independently: decide at run time
        }
        if (axes.Count == 0) return g;
        var summed = B.ReduceSum(g, axes.ToArray(), keepDims: true);
        return lead == 0 ? summed : B.Squeeze(summed, Enumerable.Range(0, lead).Select(a => (long)a).ToArray());
    }
}

/// <summary>A gradient rule: emits the input gradients of one node.</summary>
public delegate void GradRule(GradContext c);

/// <summary>A registry entry: the rule, and which inputs are differentiable (others are shapes, indices, axes, ...).</summary>
public sealed record OpGradient(GradRule Rule, Func<int, bool> Differentiable);
