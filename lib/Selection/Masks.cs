using Onnx;
using OnnxUnlearn.Onnx;
using static OnnxUnlearn.UserError;

namespace OnnxUnlearn.Selection;

/// <summary>Which parameter elements an update may change: a sorted list of flat indices over a <see cref="ParameterLayout"/>.</summary>
public static class Masks
{
    /// <summary>The share of elements selected when neither a fraction nor a count is given.</summary>
    public const double DefaultFraction = 0.05;

    /// <summary>k from a fraction or a count of <paramref name="n"/> elements (exactly one must be given).</summary>
    public static int Count(double? fraction, long? count, int n)
    {
        if (fraction is not null && count is not null) throw new UserError($"give either {Setting("Fraction")} or {Setting("Count")}, not both");
        if (fraction is { } f) return f is > 0 and <= 1 ? Math.Max(1, (int)Math.Round(f * n)) : throw new SettingError("Fraction", $"must lie in (0, 1], got {f}");
        if (count is { } c) return c >= 1 ? (int)Math.Min(c, n) : throw new SettingError("Count", $"must be at least 1, got {c}");
        return Math.Max(1, (int)Math.Round(DefaultFraction * n));
    }

    /// <summary>
    /// Top-k by score over all elements, or the top share of each tensor (<paramref name="perTensor"/>). NaN scores are
    /// never selected (<see cref="TopK"/>), so the result holds fewer than k indices where fewer scores are not NaN:
    /// callers count the returned indices, not k.
    /// </summary>
    public static int[] ByScore(float[] scores, int k, ParameterLayout layout, bool perTensor, bool largest = true)
    {
        if (!perTensor) return TopK.Indices(scores, k, largest);
        double share = k / (double)layout.Size;
        var result = new List<int>();
        for (int t = 0; t < layout.Count; t++)
        {
            var slice = layout.Of(scores.AsSpan(), t);
            int kt = Math.Max(slice.Length > 0 ? 1 : 0, (int)Math.Round(share * slice.Length));
            result.AddRange(TopK.Indices(slice, kt, largest).Select(i => i + layout.Offset(t)));
        }
        return result.ToArray();
    }

    public static int[] All(ParameterLayout layout) => Enumerable.Range(0, layout.Size).ToArray();

    /// <summary>k elements uniformly at random (seeded).</summary>
    public static int[] Random(ParameterLayout layout, int k, int seed) => Choose(layout.Size, k, seed);

    /// <summary>k of the indices 0..n−1 uniformly at random (seeded), ascending: random masks and data samples alike.</summary>
    public static int[] Choose(int n, int k, int seed)
    {
        var idx = Enumerable.Range(0, n).ToArray();
        new System.Random(seed).Shuffle(idx);
        var chosen = idx[..Math.Min(k, idx.Length)];
        Array.Sort(chosen);
        return chosen;
    }

    /// <summary>
    /// Every element of the trainable tensors that feed the last Gemm/MatMul/Conv before the output, plus those feeding
    /// the nodes between it and the output (a bias Add, say).
    /// </summary>
    public static int[] LastLayer(ParameterLayout layout, GraphProto g, string output)
    {
        var producer = new Dictionary<string, NodeProto>();
        var index = new Dictionary<NodeProto, int>(ReferenceEqualityComparer.Instance);
        for (int i = 0; i < g.Node.Count; i++) { index[g.Node[i]] = i; foreach (var o in g.Node[i].Output) producer[o] = g.Node[i]; }
        var chosen = new HashSet<string>();
        var frontier = new Stack<string>([output]);
        var seen = new HashSet<string>();
        while (frontier.Count > 0)
        {
            var v = frontier.Pop();
            if (!seen.Add(v) || !producer.TryGetValue(v, out var node)) continue;
            foreach (var x in node.Input) if (layout.Contains(x)) chosen.Add(x);
            if (LinearModels.Is(node))
            {   // a linear ai.onnx.ml node is a layer whose weights are its attributes
                foreach (var (name, _) in LinearModels.Tensors(node, index[node])) if (layout.Contains(name)) chosen.Add(name);
                continue;
            }
            if (node.OpType is "Gemm" or "MatMul" or "Conv" or "ConvTranspose" && node.Input.Any(layout.Contains)) continue;
            foreach (var x in node.Input) if (x.Length > 0 && !layout.Contains(x)) frontier.Push(x);
        }
        if (chosen.Count == 0) throw new UserError($"found no trainable Gemm/MatMul/Conv before output '{output}' for the last-layer selection");
        return Enumerable.Range(0, layout.Count).Where(t => chosen.Contains(layout.Parameters[t].Name))
            .SelectMany(t => Enumerable.Range(layout.Offset(t), (int)layout.Parameters[t].Elements)).ToArray();
    }

    /// <summary>How many selected elements each tensor holds.</summary>
    public static Dictionary<string, int> PerTensor(ParameterLayout layout, IEnumerable<int> indices)
    {
        var counts = layout.Parameters.ToDictionary(p => p.Name, _ => 0);
        foreach (var i in indices) counts[layout.Parameters[layout.Locate(i).Tensor].Name]++;
        return counts;
    }

    /// <summary>0/1 float vector of a selection (for masked products).</summary>
    public static float[] Dense(int[] indices, int size)
    {
        var m = new float[size];
        foreach (var i in indices) m[i] = 1;
        return m;
    }
}
