using Onnx;
using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Autodiff;

/// <summary>
/// Emits standard ONNX nodes into a graph under construction. Gradient rules go through it and never build protobuf by
/// hand. Every node it writes uses the default domain at <see cref="Opset"/> (≥ 15, so CastLike and the input forms of
/// Squeeze/Unsqueeze/ReduceSum are available). Node names start with <paramref name="nodePrefix"/>.
/// </summary>
public sealed class GraphBuilder(long opset, Func<string, bool> nameTaken, string nodePrefix = "grad_")
{
    public long Opset { get; } = opset;
    public List<NodeProto> Nodes { get; } = [];
    public List<TensorProto> Constants { get; } = [];
    readonly Dictionary<string, string> constCache = [];
    readonly HashSet<string> used = [];
    int counter;

    public string Fresh(string hint)
    {
        string name;
        do name = $"{hint}__{counter++}"; while (nameTaken(name) || !used.Add(name));
        return name;
    }

    /// <summary>One node with one output. Attributes: long, float, string, long[], float[], TensorProto.</summary>
    public string Op(string opType, IReadOnlyList<string> inputs, params (string Name, object Value)[] attrs) =>
        OpN(opType, inputs, 1, attrs)[0];

    public string[] OpN(string opType, IReadOnlyList<string> inputs, int outputs, params (string Name, object Value)[] attrs)
    {
        var node = new NodeProto { OpType = opType, Name = Fresh(nodePrefix + opType) };
        node.Input.AddRange(inputs);
        for (int i = 0; i < outputs; i++) node.Output.Add(Fresh(opType.ToLowerInvariant()));
        foreach (var (name, value) in attrs) node.Attribute.Add(Attributes.Make(name, value));
        Nodes.Add(node);
        return node.Output.ToArray();
    }

    /// <summary>
    /// A node of <paramref name="node"/>'s type and attributes (less <paramref name="drop"/>) on other inputs: reruns a
    /// forward op, e.g. to request an optional output or to map indices through it.
    /// </summary>
    public string[] Like(NodeProto node, IReadOnlyList<string> inputs, int outputs = 1, params string[] drop)
    {
        var outs = OpN(node.OpType, inputs, outputs);
        Nodes[^1].Domain = node.Domain;
        Nodes[^1].Attribute.AddRange(node.Attribute.Where(a => !drop.Contains(a.Name)).Select(a => a.Clone()));
        return outs;
    }

    // ---- constants ----

    /// <summary>A 1-D int64 constant (shapes, axes).</summary>
    public string Ints(params long[] values) => Constant(values, scalar: false);

    /// <summary>A rank-0 int64 constant.</summary>
    public string Int(long value) => Constant([value], scalar: true);

    string Constant(long[] values, bool scalar)
    {
        var key = (scalar ? "i:" : "I:") + string.Join(",", values);
        if (constCache.TryGetValue(key, out var name)) return name;
        name = Fresh("const");
        var t = new TensorProto { Name = name, DataType = 7 };
        if (!scalar) t.Dims.Add(values.Length);
        t.Int64Data.AddRange(values);
        Constants.Add(t);
        return constCache[key] = name;
    }

    /// <summary>A rank-0 float constant of the same element type as <paramref name="like"/>.</summary>
    public string Scalar(double value, string like)
    {
        var key = $"f:{value:R}:{like}";
        if (constCache.TryGetValue(key, out var name)) return name;
        var f = FloatConst(value);
        return constCache[key] = Op("CastLike", [f, like]);
    }

    string FloatConst(double value)
    {
        var key = $"F:{value:R}";
        if (constCache.TryGetValue(key, out var name)) return name;
        name = Fresh("const");
        // float64 keeps the constant exact for double graphs; CastLike narrows it.
        var t = new TensorProto { Name = name, DataType = 11 };
        t.DoubleData.Add(value);
        Constants.Add(t);
        return constCache[key] = name;
    }

    // ---- arithmetic ----
    public string Add(string a, string b) => Op("Add", [a, b]);
    public string Sub(string a, string b) => Op("Sub", [a, b]);
    public string Mul(string a, string b) => Op("Mul", [a, b]);
    public string Div(string a, string b) => Op("Div", [a, b]);
    public string Neg(string a) => Op("Neg", [a]);
    public string Sqrt(string a) => Op("Sqrt", [a]);
    public string Exp(string a) => Op("Exp", [a]);
    public string Log(string a) => Op("Log", [a]);
    public string Sigmoid(string a) => Op("Sigmoid", [a]);

    /// <summary>
    /// σ(x) from e = exp(−|x|): e/(1+e) for x &lt; 0, 1/(1+e) otherwise. Keeps float32 relative precision in the tails,
    /// where ONNX Runtime's Sigmoid kernel (a fast approximation) loses it (σ(−16) comes out as 6e-8, not 1.1e-7).
    /// </summary>
    public string StableSigmoid(string x)
    {
        var e = Exp(Neg(Op("Abs", [x])));
        var inv = Div(Scalar(1, x), Add(Scalar(1, x), e));
        return Where(Op("Less", [x, Scalar(0, x)]), Mul(e, inv), inv);
    }
    public string MatMul(string a, string b) => Op("MatMul", [a, b]);
    public string Scale(string a, double s) => s == 1 ? a : Mul(a, Scalar(s, a));
    public string Sum(IReadOnlyList<string> terms) => terms.Count == 1 ? terms[0] : Op("Sum", terms);

    /// <summary>1 where the condition holds, else 0, in the element type of <paramref name="like"/>.</summary>
    public string Mask(string condition, string like) => Op("CastLike", [condition, like]);
    public string Where(string cond, string a, string b) => Op("Where", [cond, a, b]);
    public string ZerosLike(string x) => Mul(x, Scalar(0, x));

    // ---- shapes ----
    public string Shape(string x) => Op("Shape", [x]);
    /// <summary>Extents of axes [start, end) of x as a 1-D int64 tensor (end omitted: to the last axis).</summary>
    public string Shape(string x, long start, long? end = null) =>
        end is { } e ? Op("Shape", [x], ("start", start), ("end", e)) : Op("Shape", [x], ("start", start));
    public string Reshape(string x, string shape) => Op("Reshape", [x, shape]);
    public string Transpose(string x, long[] perm) => Op("Transpose", [x], ("perm", perm));
    public string Unsqueeze(string x, params long[] axes) => Op("Unsqueeze", [x, Ints(axes)]);
    public string Squeeze(string x, params long[] axes) => Op("Squeeze", [x, Ints(axes)]);
    public string Expand(string x, string shape) => Op("Expand", [x, shape]);
    public string Rank(string x) => Op("Size", [Shape(x)]);

    public string ReduceSum(string x, string axes, bool keepDims) =>
        Op("ReduceSum", [x, axes], ("keepdims", keepDims ? 1L : 0L), ("noop_with_empty_axes", 1L));

    public string ReduceSum(string x, long[] axes, bool keepDims) => ReduceSum(x, Ints(axes), keepDims);

    /// <summary>Reduce ops other than ReduceSum take axes as an attribute before opset 18.</summary>
    public string Reduce(string op, string x, long[]? axes, bool keepDims)
    {
        if (op == "ReduceSum" || Opset >= 18)
            return axes is null ? Op(op, [x], ("keepdims", keepDims ? 1L : 0L)) : Op(op, [x, Ints(axes)], ("keepdims", keepDims ? 1L : 0L));
        return axes is null ? Op(op, [x], ("keepdims", keepDims ? 1L : 0L)) : Op(op, [x], ("axes", axes), ("keepdims", keepDims ? 1L : 0L));
    }

    /// <summary>Swaps the last two axes of a tensor of any rank ≥ 2 (rank read at run time via a 1-D permutation trick).</summary>
    public string SwapLast2(string x, int rank) => Transpose(x, SwapPerm(rank));

    /// <summary>The permutation that undoes <paramref name="perm"/>.</summary>
    public static long[] InversePerm(long[] perm)
    {
        var inverse = new long[perm.Length];
        for (int i = 0; i < perm.Length; i++) inverse[perm[i]] = i;
        return inverse;
    }

    /// <summary>Integer indices with negative ones counted from the end: idx + n where idx &lt; 0 (n broadcasts).</summary>
    public string NonNegative(string idx, string n) => Where(Op("Less", [idx, Int(0)]), Add(idx, n), idx);

    public static long[] SwapPerm(int rank)
    {
        var perm = Enumerable.Range(0, rank).Select(i => (long)i).ToArray();
        (perm[rank - 1], perm[rank - 2]) = (perm[rank - 2], perm[rank - 1]);
        return perm;
    }

    /// <summary>
    /// Sums a broadcast gradient back to the shape of <paramref name="x"/> (numpy broadcasting). Shapes are read at run
    /// time: the axes to reduce are those where x, left-padded with ones to g's rank, has extent 1.
    /// </summary>
    public string Unbroadcast(string g, string x)
    {
        var sx = Shape(x);
        var pad = Op("ConstantOfShape", [Op("Sub", [Shape(Shape(g)), Shape(sx)])],
            ("value", new TensorProto { DataType = 7, Dims = { 1 }, Int64Data = { 1 } }));
        var padded = Op("Concat", [pad, sx], ("axis", 0L));
        var axes = Reshape(Op("NonZero", [Op("Equal", [padded, Ints(1)])]), Ints(-1));
        return Reshape(ReduceSum(g, axes, keepDims: true), sx);
    }
}
