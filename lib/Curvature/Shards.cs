using OnnxUnlearn.Runtime;

namespace OnnxUnlearn.Curvature;

/// <summary>
/// Shard K of M: the work is cut into fixed chunks (of probes or data rows; their size does not depend on M) and chunk c
/// belongs to shard c mod M. Every estimate is a combination of per-chunk partial sums taken in chunk order, so the parts
/// of any M merge into what one process computes, bit for bit (docs/method.md#shards).
/// </summary>
public readonly record struct Shard(int Index, int Count)
{
    public static readonly Shard Whole = new(0, 1);

    public bool Holds(int chunk) => chunk % Count == Index;

    /// <summary>The chunks of this shard, ascending, out of <paramref name="chunks"/>.</summary>
    public int[] Of(int chunks) => Enumerable.Range(0, chunks).Where(Holds).ToArray();

    public override string ToString() => $"{Index}/{Count}";

    /// <summary>"K/M" with 0 ≤ K &lt; M.</summary>
    public static Shard Parse(string text)
    {
        var parts = text.Split('/');
        if (parts.Length == 2 && int.TryParse(parts[0], out int k) && int.TryParse(parts[1], out int m) && m >= 1 && k >= 0 && k < m) return new(k, m);
        throw new UserError($"--shard must be K/M with 0 <= K < M (shard K of M, counted from 0, e.g. 0/4), got '{text}'");
    }

    /// <summary>Chunks of <paramref name="size"/> items covering <paramref name="items"/>.</summary>
    public static int Chunks(long items, int size) => (int)((items + size - 1) / size);
}

/// <summary>
/// One chunk of Hutchinson probes: count, mean and sum of squared deviations (Welford, in probe order) of xⱼ = zⱼ ⊙ Hzⱼ,
/// and the sums of its probes in the first and second half of all probes (the stability figure).
/// </summary>
public sealed record ProbeChunk(int Id, int Count, double[] Mean, double[] M2, double[] FirstHalf, double[] SecondHalf);

/// <summary>One chunk of data rows: Σ count·(mean gradient) over the chunk in float64, and its loss sum, labelled count and hits.</summary>
public sealed record RowChunk(int Id, double[] GradientSum, double LossSum, long Count, double Correct);

public static class Chunked
{
    /// <summary>Probes per chunk unless given: small enough that a few chunks make a shard, large enough that a part file stays small.</summary>
    public const int ProbeChunk = 10;
    /// <summary>Data rows per chunk unless given.</summary>
    public const int RowChunk = 256;

    /// <summary>Hutchinson's probes of <paramref name="shard"/>'s chunks (probe j's signs depend only on (seed, j)).</summary>
    public static List<ProbeChunk> Hutchinson(ILinearOperator hvp, int probes, int seed, int chunk, Shard shard, ProgressCallback? progress = null)
    {
        if (probes < 1) throw new SettingError("Probes", $"must be at least 1 for Hutchinson's estimator, got {probes}");
        if (chunk < 1) throw new SettingError("Chunk", $"must be at least 1, got {chunk}");
        int n = hvp.Size, firstHalf = (probes + 1) / 2;
        var ids = shard.Of(Shard.Chunks(probes, chunk));
        int total = ids.Sum(c => Math.Min(chunk, probes - c * chunk)), done = 0;
        var z = new float[n]; var hz = new float[n];
        var result = new List<ProbeChunk>();
        foreach (int c in ids)
        {
            var p = new ProbeChunk(c, Math.Min(chunk, probes - c * chunk), new double[n], new double[n], new double[n], new double[n]);
            for (int t = 0; t < p.Count; t++)
            {
                int j = c * chunk + t;
                Diagonal.Rademacher(Diagonal.ProbeSeed(seed, j), z);
                hvp.Apply(z, hz);
                var half = j < firstHalf ? p.FirstHalf : p.SecondHalf;
                for (int i = 0; i < n; i++)
                {
                    double x = z[i] * hz[i], d = x - p.Mean[i];
                    p.Mean[i] += d / (t + 1);
                    p.M2[i] += d * (x - p.Mean[i]);
                    half[i] += x;
                }
                progress?.Invoke("Hutchinson probes", ++done, total);
            }
            result.Add(p);
        }
        return result;
    }

    /// <summary>
    /// The estimate from all chunks, combined in chunk order: means and squared deviations by Chan's pairwise update, halves
    /// summed; then the same final scaling whoever computed the chunks.
    /// </summary>
    public static DiagonalEstimate Combine(IReadOnlyList<ProbeChunk> chunks, int probes, double stabilityFraction)
    {
        int n = chunks[0].Mean.Length;
        var mean = new double[n]; var m2 = new double[n];
        double[] first = new double[n], second = new double[n];
        long count = 0;
        foreach (var c in chunks.OrderBy(c => c.Id))
        {
            long total = count + c.Count;
            for (int i = 0; i < n; i++)
            {
                double d = c.Mean[i] - mean[i];
                mean[i] += d * c.Count / total;
                m2[i] += c.M2[i] + d * d * count * c.Count / total;
                first[i] += c.FirstHalf[i];
                second[i] += c.SecondHalf[i];
            }
            count = total;
        }
        if (count != probes) throw new InvalidOperationException($"chunks hold {count} probes, not {probes}");
        float[]? se = probes > 1 ? m2.Select(v => (float)Math.Sqrt(v / (probes - 1) / probes)).ToArray() : null;
        return new DiagonalEstimate(mean.Select(x => (float)x).ToArray(), se, probes, probes,
            probes > 1 ? Selection.TopK.Jaccard(first, second, stabilityFraction) : null, stabilityFraction);
    }

    /// <summary>The gradient sums of <paramref name="shard"/>'s chunks of <paramref name="chunk"/> rows.</summary>
    public static List<RowChunk> Gradient(Evaluator model, ParameterVector theta, Dataset data, int chunk, Shard shard, ProgressCallback? progress = null)
    {
        if (chunk < 1) throw new SettingError("Chunk", $"must be at least 1, got {chunk}");
        var ids = shard.Of(Shard.Chunks(data.Rows, chunk));
        var g = new float[model.Layout.Size];
        var result = new List<RowChunk>();
        foreach (int c in ids)
        {
            long start = (long)c * chunk, rows = Math.Min(chunk, data.Rows - start);
            using var part = data.Take(Enumerable.Range(0, (int)rows).Select(i => start + i).ToArray(), $"{data.Source} (rows {start}–{start + rows - 1})");
            // A chunk that is all padding (every label the ignore index) adds nothing; only the whole data set must hold a label.
            if (model.Settings.IgnoreIndex is { } ignore && part.Has("label") && part.Arrays["label"].ToInt64().All(l => l == ignore))
            {
                result.Add(new RowChunk(c, new double[g.Length], 0, 0, 0));
                continue;
            }
            var r = model.Gradient(theta, part, g);
            result.Add(new RowChunk(c, g.Select(x => (double)x * r.Count).ToArray(), r.Loss * r.Count, r.Count, (r.Accuracy ?? 0) * r.Count));
            progress?.Invoke("gradient chunks", result.Count, ids.Length);
        }
        return result;
    }

    /// <summary>Mean gradient and loss from all row chunks, summed in chunk order.</summary>
    public static (float[] Gradient, LossResult Loss) Combine(IReadOnlyList<RowChunk> chunks, bool hasAccuracy)
    {
        int n = chunks[0].GradientSum.Length;
        var sum = new double[n];
        double loss = 0, correct = 0; long count = 0;
        foreach (var c in chunks.OrderBy(c => c.Id))
        {
            for (int i = 0; i < n; i++) sum[i] += c.GradientSum[i];
            loss += c.LossSum; count += c.Count; correct += c.Correct;
        }
        if (count == 0) throw new UserError("the data has no labelled samples (every label is the ignore index)");
        return (sum.Select(x => (float)(x / count)).ToArray(), new LossResult(loss / count, count, hasAccuracy ? correct / count : null));
    }
}
