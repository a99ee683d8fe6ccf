namespace OnnxUnlearn.Selection;

/// <summary>Top-k index sets with deterministic tie-breaking (equal scores: lower flat index first).</summary>
public static class TopK
{
    /// <summary>Indices of the k largest (or smallest) scores, ascending by index.</summary>
    public static int[] Indices(ReadOnlySpan<float> scores, int k, bool largest = true) => Indices(scores.ToArray().Select(x => (double)x).ToArray(), k, largest);

    public static int[] Indices(double[] scores, int k, bool largest = true)
    {
        k = Math.Clamp(k, 0, scores.Length);
        var order = Enumerable.Range(0, scores.Length).ToArray();
        // NaN scores never get selected.
        var keys = scores.Select(s => double.IsNaN(s) ? double.NegativeInfinity : largest ? -s : s).ToArray();
        if (!largest) for (int i = 0; i < keys.Length; i++) if (double.IsNaN(scores[i])) keys[i] = double.PositiveInfinity;
        Array.Sort(keys, order); // unstable: break ties below
        var pairs = order.Select((idx, pos) => (Key: keys[pos], Index: idx)).OrderBy(p => p.Key).ThenBy(p => p.Index).Take(k).Select(p => p.Index).ToArray();
        Array.Sort(pairs);
        return pairs;
    }

    /// <summary>Jaccard overlap |A ∩ B| / |A ∪ B| of the top-(fraction·n) sets of two score vectors.</summary>
    public static double Jaccard(double[] a, double[] b, double fraction)
    {
        int k = Math.Max(1, (int)Math.Round(fraction * a.Length));
        var sa = Indices(a, k).ToHashSet();
        var sb = Indices(b, k);
        int both = sb.Count(sa.Contains);
        return both / (double)(2 * k - both);
    }
}
