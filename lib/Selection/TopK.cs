namespace OnnxUnlearn.Selection;

/// <summary>
/// Top-k index sets with deterministic tie-breaking (equal scores: lower flat index first). NaN scores have no rank and
/// are never selected, whichever the order: with fewer than k other scores, the set holds only those.
/// </summary>
public static class TopK
{
    /// <summary>Indices of the k largest (or smallest) non-NaN scores, ascending by index; fewer than k where fewer are not NaN.</summary>
    public static int[] Indices(ReadOnlySpan<float> scores, int k, bool largest = true) => Indices(scores.ToArray().Select(x => (double)x).ToArray(), k, largest);

    public static int[] Indices(double[] scores, int k, bool largest = true)
    {
        // Dropped before ranking: a NaN compares as neither larger nor smaller, so no key could place it last in both orders.
        var order = Enumerable.Range(0, scores.Length).Where(i => !double.IsNaN(scores[i])).ToArray();
        k = Math.Clamp(k, 0, order.Length);
        // Array.Sort is unstable: the index breaks ties.
        Array.Sort(order, (i, j) =>
        {
            int c = largest ? scores[j].CompareTo(scores[i]) : scores[i].CompareTo(scores[j]);
            return c != 0 ? c : i.CompareTo(j);
        });
        var chosen = order[..k];
        Array.Sort(chosen);
        return chosen;
    }

    /// <summary>
    /// Jaccard overlap |A ∩ B| / |A ∪ B| of the top-(fraction·n) sets of two score vectors. NaN scores are in neither set;
    /// two empty sets (all scores NaN) count as identical (1).
    /// </summary>
    public static double Jaccard(double[] a, double[] b, double fraction)
    {
        int k = Math.Max(1, (int)Math.Round(fraction * a.Length));
        var sa = Indices(a, k).ToHashSet();
        var sb = Indices(b, k);
        int both = sb.Count(sa.Contains);
        // The sets may be smaller than k (NaN scores), so the union is counted, not taken as 2k − both.
        int union = sa.Count + sb.Length - both;
        return union == 0 ? 1 : both / (double)union;
    }
}
