using Onnx;

namespace OnnxUnlearn.Onnx;

/// <summary>
/// What can be known about a graph's values without running it: element type and rank (from graph inputs, outputs,
/// value_info, initializers, Constant nodes and a light forward pass over common ops written at the target opset), and
/// the values of constants. Lookups fall through to the enclosing graph (subgraphs see outer values). Unknown is
/// <c>0</c> for a type and <c>-1</c> for a rank.
/// </summary>
internal sealed class GraphFacts
{
    readonly GraphFacts? outer;
    readonly Dictionary<string, (int Type, int Rank)> info = [];
    readonly Dictionary<string, TensorProto> constants = [];

    public GraphFacts(GraphProto g, GraphFacts? outer)
    {
        this.outer = outer;
        foreach (var v in g.Input.Concat(g.ValueInfo).Concat(g.Output)) Declare(v);
        foreach (var t in g.Initializer)
        {
            info[t.Name] = (t.DataType, t.Dims.Count);
            if (!t.IsExternal()) constants[t.Name] = t;
        }
        // A name declared here hides the same name outside.
        foreach (var v in g.Input) if (!info.ContainsKey(v.Name)) info[v.Name] = (0, -1);
    }

    void Declare(global::Onnx.ValueInfoProto v)
    {
        if (v.Type?.TensorType is not { } t) return;
        info[v.Name] = (t.ElemType, t.Shape is null ? -1 : t.Shape.Dim.Count);
    }

    public int Type(string name) =>
        name.Length == 0 ? 0 : info.TryGetValue(name, out var v) ? v.Type : outer?.Type(name) ?? 0;

    public int Rank(string name) =>
        name.Length == 0 ? -1 : info.TryGetValue(name, out var v) ? v.Rank : outer?.Rank(name) ?? -1;

    /// <summary>The tensor behind an initializer or Constant node, or null.</summary>
    public TensorProto? Constant(string name)
    {
        if (name.Length == 0) return null;
        if (constants.TryGetValue(name, out var t)) return t;
        return info.ContainsKey(name) ? null : outer?.Constant(name);
    }

    public long[]? Ints(string name) =>
        Constant(name) is { } t && !DataTypes.IsFloat(t.DataType) && t.DataType != DataTypes.String ? t.ReadInt64s("") : null;

    public float[]? Floats(string name) =>
        Constant(name) is { } t && DataTypes.IsFloat(t.DataType) ? t.ReadFloats("") : null;

    void Set(string name, int type, int rank)
    {
        if (name.Length == 0) return;
        var (t0, r0) = info.TryGetValue(name, out var v) ? v : (0, -1);
        info[name] = (t0 != 0 ? t0 : type, r0 >= 0 ? r0 : rank);
    }

    static readonly HashSet<string> SameAsFirst =
    [
        "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Ceil", "Celu", "Clip", "Cos", "Cosh", "Elu", "Erf", "Exp",
        "Floor", "HardSigmoid", "HardSwish", "Hardmax", "Identity", "LeakyRelu", "Log", "LogSoftmax", "Mish", "Neg", "PRelu",
        "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin", "Sinh", "Softmax", "Softplus", "Softsign", "Sqrt",
        "Tan", "Tanh", "ThresholdedRelu", "Shrink", "BatchNormalization", "InstanceNormalization", "LRN", "LpNormalization",
        "MeanVarianceNormalization", "Dropout", "CumSum", "Trilu", "DepthToSpace", "SpaceToDepth", "Pad", "Tile", "Conv",
        "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "Resize",
        "Transpose", "Slice", "ReverseSequence", "ScatterElements", "ScatterND", "Split", "Concat", "TopK", "LayerNormalization",
    ];
    static readonly HashSet<string> Broadcasting = ["Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean", "BitShift"];
    static readonly HashSet<string> Comparisons = ["Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor"];

    /// <summary>Learns what it can about the outputs of <paramref name="n"/>, a node already written at the target opset.</summary>
    public void Infer(NodeProto n)
    {
        if (!Domains.IsDefault(n.Domain)) return;
        string x = n.Input.Count > 0 ? n.Input[0] : "";
        int rx = Rank(x), tx = Type(x);
        long AttrInt(string name, long dflt) => n.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.I : dflt;
        int MaxRank(IEnumerable<string> inputs)
        {
            int r = 0;
            foreach (var i in inputs) { int ri = Rank(i); if (ri < 0) return -1; r = Math.Max(r, ri); }
            return r;
        }
        void All(int type, int rank) { foreach (var o in n.Output) Set(o, type, rank); }
        void First(int type, int rank) { if (n.Output.Count > 0) Set(n.Output[0], type, rank); }

        var op = n.OpType;
        if (op == "Constant") { InferConstant(n); return; }
        if (SameAsFirst.Contains(op))
        {
            First(tx, rx);
            if (op == "TopK" && n.Output.Count > 1) Set(n.Output[1], DataTypes.Int64, rx);
            if (op == "Split") All(tx, rx);
            if (op == "MaxPool" && n.Output.Count > 1) Set(n.Output[1], DataTypes.Int64, rx);
            if (op == "Dropout" && n.Output.Count > 1) Set(n.Output[1], DataTypes.Bool, rx);
            return;
        }
        if (Broadcasting.Contains(op)) { First(tx, MaxRank(n.Input)); return; }
        if (Comparisons.Contains(op)) { First(DataTypes.Bool, MaxRank(n.Input)); return; }
        switch (op)
        {
            case "Not": First(DataTypes.Bool, rx); break;
            case "IsNaN" or "IsInf": First(DataTypes.Bool, rx); break;
            case "Cast": First((int)AttrInt("to", 0), rx); break;
            case "CastLike": First(Type(n.Input[1]), rx); break;
            case "Where": First(Type(n.Input[1]), MaxRank(n.Input)); break;
            case "Gemm": First(tx, 2); break;
            case "Flatten": First(tx, 2); break;
            case "Shape": First(DataTypes.Int64, 1); break;
            case "Size": First(DataTypes.Int64, 0); break;
            case "NonZero": First(DataTypes.Int64, 2); break;
            case "Range": First(tx, 1); break;
            case "MatMul":
            {
                int ry = Rank(n.Input[1]);
                First(tx, rx < 0 || ry < 0 ? -1 : rx == 1 && ry == 1 ? 0 : rx == 1 ? ry - 1 : ry == 1 ? rx - 1 : Math.Max(rx, ry));
                break;
            }
            case "Reshape": First(tx, Ints(n.Input[1]) is { } s ? s.Length : -1); break;
            case "Expand": First(tx, Ints(n.Input[1]) is { } e && rx >= 0 ? Math.Max(rx, e.Length) : -1); break;
            case "Unsqueeze": First(tx, Ints(n.Input.ElementAtOrDefault(1) ?? "") is { } ua && rx >= 0 ? rx + ua.Length : -1); break;
            case "Squeeze": First(tx, Ints(n.Input.ElementAtOrDefault(1) ?? "") is { } sa && rx >= 0 ? rx - sa.Length : -1); break;
            case "Gather": First(tx, rx >= 0 && Rank(n.Input[1]) is var ri and >= 0 ? rx + ri - 1 : -1); break;
            case "GatherElements": First(tx, Rank(n.Input[1])); break;
            case "ArgMax" or "ArgMin": First(DataTypes.Int64, AttrInt("keepdims", 1) != 0 ? rx : rx < 0 ? -1 : rx - 1); break;
            case "ConstantOfShape":
            {
                var value = n.Attribute.FirstOrDefault(a => a.Name == "value")?.T;
                var shape = Ints(n.Input[0]);
                First(value?.DataType ?? DataTypes.Float, shape?.Length ?? -1);
                break;
            }
            default:
                if (op.StartsWith("Reduce"))
                {
                    if (AttrInt("keepdims", 1) != 0) { First(tx, rx); break; }
                    long[]? axes = n.Input.Count > 1 && n.Input[1].Length > 0 ? Ints(n.Input[1])
                        : n.Attribute.FirstOrDefault(a => a.Name == "axes") is { } aa ? aa.Ints.ToArray() : [];
                    if (axes is { Length: 0 } && n.Input.Count > 1 && n.Input[1].Length > 0) axes = null;
                    First(tx, axes is null || rx < 0 ? -1 : axes.Length == 0 ? (AttrInt("noop_with_empty_axes", 0) != 0 ? rx : 0) : rx - axes.Distinct().Count());
                }
                break;
        }
    }

    void InferConstant(NodeProto n)
    {
        if (n.Output.Count == 0) return;
        var name = n.Output[0];
        if (n.ConstantValue() is not { } t) return;
        Set(name, t.DataType, t.Dims.Count);
        if (!t.IsExternal()) constants[name] = t;
    }
}
