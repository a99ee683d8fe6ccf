using Onnx;
using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Autodiff;

/// <summary>
/// Frozen decisions: rewrites a forward graph so that every piecewise-linear op whose input depends on the parameters
/// (ReLU, max pooling, clipping, ...) takes its decisions (which units are on, which element a pool picks, which side
/// of a bound) from a reference copy of the graph evaluated at fixed parameters θ_ref (inputs <c>NAME__ref</c>), and
/// is otherwise a polynomial of its live inputs. At θ = θ_ref the graph computes exactly what the original computes;
/// around θ_ref it is smooth, the continuation of θ_ref's linear piece. Finite differences of its gradient therefore
/// measure the Hessian of that piece (what autograd's double backward gives) instead of jumps across kinks, which a
/// dense direction crosses at any step size.
/// </summary>
public static class FrozenDecisions
{
    public const string Suffix = "__ref";
    public static string RefInput(string parameter) => parameter + Suffix;

    /// <summary>Output 0 of <paramref name="n"/> as a smooth function of its live inputs; <paramref name="r"/>(i) is input i
    /// at θ_ref (empty for an omitted input), <paramref name="yRef"/> output 0 at θ_ref.</summary>
    delegate string Freeze(GraphBuilder b, NodeProto n, Func<int, string> r, string yRef, TensorShapes shapes);

    static readonly Dictionary<string, Freeze> Rules = new()
    {
        ["Relu"] = (b, n, r, _, _) => b.Mul(n.Input[0], b.Mask(Positive(b, r(0)), n.Input[0])),
        ["LeakyRelu"] = (b, n, r, _, _) => b.Mul(n.Input[0], b.Where(Positive(b, r(0)), b.Scalar(1, n.Input[0]), b.Scalar(Attr(n, "alpha", 0.01f), n.Input[0]))),
        ["PRelu"] = (b, n, r, _, _) => b.Where(Positive(b, r(0)), n.Input[0], b.Mul(n.Input[1], n.Input[0])),
        ["ThresholdedRelu"] = (b, n, r, _, _) => b.Mul(n.Input[0], b.Mask(b.Op("Greater", [r(0), b.Scalar(Attr(n, "alpha", 1f), r(0))]), n.Input[0])),
        ["Abs"] = (b, n, r, _, _) => b.Mul(n.Input[0], b.Op("Sign", [r(0)])),
        // Pass-through where the reference lies within the bounds, equality included (Clip passes values equal to a bound);
        // elsewhere the reference's clipped value, a constant.
        ["Clip"] = (b, n, r, yRef, _) =>
        {
            var inside = new List<string>();
            if (n.Input.Count > 1 && n.Input[1].Length > 0) inside.Add(b.Op("GreaterOrEqual", [r(0), r(1)]));
            if (n.Input.Count > 2 && n.Input[2].Length > 0) inside.Add(b.Op("LessOrEqual", [r(0), r(2)]));
            return inside.Count == 0 ? b.Op("Identity", [n.Input[0]]) : b.Where(inside.Aggregate((p, q) => b.Op("And", [p, q])), n.Input[0], yRef);
        },
        ["HardSigmoid"] = (b, n, r, yRef, _) => HardSigmoid(b, n.Input[0], r(0), yRef, Attr(n, "alpha", 0.2f), Attr(n, "beta", 0.5f)),
        // x·hardsigmoid(x) with α = 1/6, β = 1/2
        ["HardSwish"] = (b, n, r, _, _) => b.Mul(n.Input[0], HardSigmoid(b, n.Input[0], r(0), b.Op("HardSigmoid", [r(0)], ("alpha", 1f / 6), ("beta", 0.5f)), 1.0 / 6, 0.5)),
        // The live input's elements at the positions the reference pool picked (ONNX Runtime's indices are flat over N, C and space).
        ["MaxPool"] = (b, n, r, _, shapes) =>
        {
            var at = b.Like(n, [r(0)], 2, "storage_order")[1];
            if (shapes[n.Output[0]] is { } y) shapes.Declare(at, y with { ElementType = DataTypes.Int64 });
            return b.Op("Gather", [Reshaped(b, shapes, n.Input[0], [-1], d => [Product(d)]), at]);
        },
        ["GlobalMaxPool"] = (b, n, r, yRef, shapes) =>
        {   // per (n, c) plane, the element at the reference's (first) argmax
            var at = b.Op("ArgMax", [b.Reshape(r(0), b.Ints(0, 0, -1))], ("axis", 2L), ("keepdims", 1L));
            var planes = Reshaped(b, shapes, n.Input[0], [0, 0, -1], d => [d[0], d[1], Product(d[2..])]);
            return b.Reshape(b.Op("GatherElements", [planes, at], ("axis", 2L)), b.Shape(yRef));
        },
        ["Max"] = Select,
        ["Min"] = Select,
    };

    /// <summary>Max/Min: Σᵢ Xᵢ ⊙ maskᵢ, maskᵢ marking where input i is the first whose reference equals the reference output.</summary>
    static string Select(GraphBuilder b, NodeProto n, Func<int, string> r, string yRef, TensorShapes shapes)
    {
        string? taken = null;
        var terms = new List<string>();
        for (int i = 0; i < n.Input.Count; i++)
        {
            var hit = b.Op("Equal", [r(i), yRef]);
            var mine = taken is null ? hit : b.Op("And", [hit, b.Op("Not", [taken])]);
            terms.Add(b.Mul(n.Input[i], b.Mask(mine, n.Input[i])));
            taken = taken is null ? hit : b.Op("Or", [taken, hit]);
        }
        return b.Sum(terms);
    }

    /// <summary>αx + β where the reference's αx + β lies inside (0, 1), else the reference's output (0 or 1).</summary>
    static string HardSigmoid(GraphBuilder b, string x, string xRef, string yRef, double alpha, double beta)
    {
        var z = b.Add(b.Scale(xRef, alpha), b.Scalar(beta, xRef));
        var inside = b.Op("And", [b.Op("Greater", [z, b.Scalar(0, z)]), b.Op("Less", [z, b.Scalar(1, z)])]);
        return b.Where(inside, b.Add(b.Scale(x, alpha), b.Scalar(beta, x)), yRef);
    }

    static string Positive(GraphBuilder b, string x) => b.Op("Greater", [x, b.Scalar(0, x)]);
    static float Attr(NodeProto n, string name, float def) => n.Attribute.FirstOrDefault(a => a.Name == name)?.F ?? def;
    static long Product(long[] dims) => dims.Any(d => d < 0) ? -1 : dims.Aggregate(1L, (a, d) => a * d);

    /// <summary>A reshape of x whose shape is declared for the gradient rules (Gather needs ranks).</summary>
    static string Reshaped(GraphBuilder b, TensorShapes shapes, string x, long[] shape, Func<long[], long[]> dims)
    {
        var y = b.Reshape(x, b.Ints(shape));
        if (shapes[x] is { } v) shapes.Declare(y, new ValueInfo(v.ElementType, dims(v.Dims), v.Observed.Select(dims).ToArray()));
        return y;
    }

    /// <summary>Nodes with an input that depends on the parameters, in graph order.</summary>
    static IEnumerable<NodeProto> Varying(IEnumerable<NodeProto> nodes, IEnumerable<string> parameters)
    {
        var varies = parameters.ToHashSet();
        foreach (var n in nodes)
            if (n.Input.Any(varies.Contains)) { varies.UnionWith(n.Output.Where(o => o.Length > 0)); yield return n; }
    }

    /// <summary>The graph has a decision that depends on the parameters: its gradient has kinks.</summary>
    public static bool HasDecisions(IEnumerable<NodeProto> nodes, IEnumerable<string> parameters) =>
        Varying(nodes, parameters).Any(n => Rules.ContainsKey(n.OpType));

    /// <summary>
    /// Rewrites <paramref name="g"/> in place: the parameter-dependent part is copied with every value renamed NAME__ref
    /// and the parameters read from NAME__ref inputs (only what the decisions need is kept), and each decision node is
    /// replaced by its frozen form under the same output names. New values' shapes go into <paramref name="shapes"/>.
    /// </summary>
    /// <returns>The parameters whose reference input the graph now reads (none: the graph has no decisions, unchanged).</returns>
    public static List<string> Apply(GraphProto g, GraphBuilder b, TensorShapes shapes, IReadOnlyCollection<string> parameters)
    {
        var refOf = parameters.ToDictionary(p => p, RefInput);
        var varying = Varying(g.Node, parameters).ToHashSet();
        // Each reference copy goes just before the node(s) that replace its original, so the graph stays topologically
        // sorted: a copy reads earlier copies and values made before its original.
        List<(NodeProto? Copy, List<NodeProto> Nodes)> steps = [];
        foreach (var n in g.Node)
        {
            if (!varying.Contains(n)) { steps.Add((null, [n])); continue; }
            var copy = n.Clone();
            if (copy.Name.Length > 0) copy.Name += Suffix; // unnamed nodes stay unnamed: "__ref" twice would clash
            List<NodeProto> nodes = [];
            steps.Add((copy, nodes));
            for (int i = 0; i < copy.Input.Count; i++) if (refOf.TryGetValue(copy.Input[i], out var r)) copy.Input[i] = r;
            for (int k = 0; k < copy.Output.Count; k++)
                if (copy.Output[k].Length > 0)
                {
                    var name = refOf[n.Output[k]] = copy.Output[k] + Suffix;
                    if (shapes[copy.Output[k]] is { } info) shapes.Declare(name, info);
                    copy.Output[k] = name;
                }
            if (!Rules.TryGetValue(n.OpType, out var freeze)) { nodes.Add(n); continue; }
            int mark = b.Nodes.Count;
            var y = freeze(b, n, i => i < n.Input.Count ? refOf.GetValueOrDefault(n.Input[i], n.Input[i]) : "", refOf[n.Output[0]], shapes);
            // The frozen value takes the original output's name, so consumers are unchanged; further outputs (MaxPool's
            // Indices) are the reference's.
            var producer = b.Nodes.Skip(mark).First(m => m.Output.Contains(y));
            producer.Output[producer.Output.IndexOf(y)] = n.Output[0];
            for (int k = 1; k < n.Output.Count; k++) if (n.Output[k].Length > 0) b.Nodes.Add(new NodeProto { OpType = "Identity", Name = n.Output[k] + "_frozen", Input = { refOf[n.Output[k]] }, Output = { n.Output[k] } });
            nodes.AddRange(b.Nodes.Skip(mark));
            b.Nodes.RemoveRange(mark, b.Nodes.Count - mark);
        }
        // Keep the reference nodes that the frozen ones read, directly or not.
        var needed = steps.SelectMany(s => s.Nodes).SelectMany(n => n.Input).ToHashSet();
        var kept = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        for (int i = steps.Count - 1; i >= 0; i--)
            if (steps[i].Copy is { } copy && copy.Output.Any(needed.Contains)) { kept.Add(copy); needed.UnionWith(copy.Input); }
        g.Node.Clear();
        foreach (var (copy, nodes) in steps)
        {
            if (copy is not null && kept.Contains(copy)) g.Node.Add(copy);
            g.Node.AddRange(nodes);
        }
        return parameters.Where(p => needed.Contains(RefInput(p))).ToList();
    }
}
