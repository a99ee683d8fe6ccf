using OnnxUnlearn.Selection;

namespace OnnxUnlearn.Curvature;

/// <summary>An estimate of diag(H) with its per-entry standard error and, for Hutchinson, the stability of its top-k set.</summary>
public sealed record DiagonalEstimate(float[] Values, float[]? StandardError, int Probes, int HvpCount, double? TopKOverlap, double StabilityFraction);

/// <summary>Progress of a long computation: what, how far.</summary>
public delegate void ProgressCallback(string what, int done, int total);

public enum DiagonalEstimator { DiagPlusPlus, Hutchinson }

/// <summary>Estimators of diag(H) from Hessian-vector products (docs/method.md#diag-plus-plus).</summary>
public static class Diagonal
{
    /// <summary>diag(H) from a budget of Hessian-vector products with the chosen estimator.</summary>
    public static DiagonalEstimate Estimate(ILinearOperator hvp, DiagonalEstimator estimator, int hvps, int seed, double stabilityFraction = 0.05, ProgressCallback? progress = null, int chunk = Chunked.ProbeChunk) =>
        estimator == DiagonalEstimator.Hutchinson
            ? Hutchinson(hvp, hvps, seed, stabilityFraction, progress, chunk)
            : DiagPlusPlus(hvp, hvps, seed, stabilityFraction, progress);

    /// <summary>
    /// Hutchinson's estimator with Rademacher probes: diag(H) ≈ mean_j z_j ⊙ H z_j. Probe j's signs come from a generator
    /// seeded with (seed, j), so results depend only on the seed. Stability: overlap (Jaccard) of the top-k sets (k = a
    /// <paramref name="stabilityFraction"/> of the elements) estimated from the first and second half of the probes.
    /// The probes are summed in fixed chunks of <paramref name="chunk"/>, combined in chunk order, so that shards of them
    /// computed elsewhere merge into this very result (<see cref="Chunked"/>).
    /// </summary>
    public static DiagonalEstimate Hutchinson(ILinearOperator hvp, int probes, int seed, double stabilityFraction = 0.05, ProgressCallback? progress = null, int chunk = Chunked.ProbeChunk) =>
        Chunked.Combine(Chunked.Hutchinson(hvp, probes, seed, chunk, Shard.Whole, progress), probes, stabilityFraction);

    /// <summary>
    /// Diag++ (Baston and Nakatsukasa, 2022): a third of the HVP budget sketches the range of H (Q = orth(H S), S
    /// Rademacher), a third gives diag(QQᵀH) exactly (row sums of Q ⊙ HQ), and the last third estimates the remainder
    /// diag((I − QQᵀ)H) with Hutchinson. Network Hessians have fast-decaying spectra, so the large entries that top-k
    /// selection cares about are captured by the sketch instead of being drowned in Hutchinson's Σ_{j≠i} H_ij² variance.
    /// Standard errors and the halves' stability figure refer to the Hutchinson part.
    /// </summary>
    public static DiagonalEstimate DiagPlusPlus(ILinearOperator hvp, int hvps, int seed, double stabilityFraction = 0.05, ProgressCallback? progress = null)
    {
        if (hvps < 3) throw new SettingError("Probes", $"must be at least 3 for Diag++ (a sketch, its exact part and a remainder), got {hvps}");
        int n = hvp.Size, k = Math.Min(hvps / 3, n), done = 0;
        var v = new float[n]; var hv = new float[n];
        // Sketch: columns of Q span H·S, orthonormalised by modified Gram-Schmidt (twice, for float stability).
        var q = new List<double[]>();
        for (int j = 0; j < k; j++)
        {
            Rademacher(ProbeSeed(seed, -1 - j), v);
            hvp.Apply(v, hv);
            done++; // not inside progress?.Invoke(…): a null callback would skip the count and overspend the budget
            progress?.Invoke("Diag++ Hessian-vector products", done, hvps);
            var col = hv.Select(x => (double)x).ToArray();
            for (int pass = 0; pass < 2; pass++)
                foreach (var b in q) { double dot = Dot(b, col); for (int i = 0; i < n; i++) col[i] -= dot * b[i]; }
            double norm = Math.Sqrt(Dot(col, col));
            if (norm > 1e-12) { for (int i = 0; i < n; i++) col[i] /= norm; q.Add(col); }
        }
        var low = new double[n];
        foreach (var b in q)
        {
            for (int i = 0; i < n; i++) v[i] = (float)b[i];
            hvp.Apply(v, hv);
            done++;
            progress?.Invoke("Diag++ Hessian-vector products", done, hvps);
            for (int i = 0; i < n; i++) low[i] += b[i] * hv[i];
        }
        int m = hvps - done;
        var moments = new ProbeMoments(n, m);
        var r = new double[n]; var x = new double[n];
        for (int j = 0; j < m; j++)
        {
            Rademacher(ProbeSeed(seed, j), v);
            hvp.Apply(v, hv);
            done++;
            progress?.Invoke("Diag++ Hessian-vector products", done, hvps);
            for (int i = 0; i < n; i++) r[i] = hv[i];
            foreach (var b in q) { double dot = Dot(b, r); for (int i = 0; i < n; i++) r[i] -= dot * b[i]; } // (I − QQᵀ)Hz
            for (int i = 0; i < n; i++) x[i] = v[i] * r[i];
            moments.Add(j, x);
        }
        var values = low.Zip(moments.MeanValues, (a, b) => (float)(a + b)).ToArray();
        double? overlap = m > 1 ? TopK.Jaccard(low.Zip(moments.Halves[0], (a, b) => a + b).ToArray(), low.Zip(moments.Halves[1], (a, b) => a + b).ToArray(), stabilityFraction) : null;
        return new DiagonalEstimate(values, moments.StandardError(), m, done, overlap, stabilityFraction);
    }

    /// <summary>
    /// Running mean and variance (Welford) of Diag++'s per-probe estimates xⱼ = zⱼ ⊙ (I − QQᵀ)H zⱼ, and the means of the
    /// first and second half of the probes, for the stability figure.
    /// </summary>
    sealed class ProbeMoments(int n, int probes)
    {
        readonly double[] mean = new double[n], m2 = new double[n];
        public double[][] Halves { get; } = [new double[n], new double[n]];
        readonly int firstHalf = (probes + 1) / 2;

        public void Add(int j, ReadOnlySpan<double> x)
        {
            bool first = j < firstHalf;
            var half = Halves[first ? 0 : 1];
            double weight = Math.Max(1, first ? firstHalf : probes - firstHalf);
            for (int i = 0; i < n; i++)
            {
                double d = x[i] - mean[i];
                mean[i] += d / (j + 1);
                m2[i] += d * (x[i] - mean[i]);
                half[i] += x[i] / weight;
            }
        }

        public double[] MeanValues => mean;
        public float[] Mean() => mean.Select(x => (float)x).ToArray();
        public float[]? StandardError() => probes > 1 ? m2.Select(v => (float)Math.Sqrt(v / (probes - 1) / probes)).ToArray() : null;
    }

    /// <summary>A Rademacher vector (±1 with equal odds) from a generator seeded with <paramref name="seed"/>.</summary>
    internal static void Rademacher(int seed, float[] z)
    {
        var rng = new Random(seed);
        for (int i = 0; i < z.Length; i++) z[i] = rng.Next(2) == 0 ? -1f : 1f;
    }

    static double Dot(double[] a, double[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }

    /// <summary>
    /// The seed of probe j: a fixed mix (splitmix64) of (seed, j). Not HashCode.Combine, which is randomised per process
    /// and made the probes, and so every Hessian selection, differ from run to run.
    /// </summary>
    public static int ProbeSeed(int seed, int j)
    {
        ulong z = unchecked(((ulong)(uint)seed << 32 | (uint)j) + 0x9E3779B97F4A7C15UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return (int)(z ^ (z >> 31));
    }

    /// <summary>Exact diagonal: H_ii = e_iᵀ H e_i, one Hessian-vector product per element.</summary>
    public static DiagonalEstimate Exact(ILinearOperator hvp, ProgressCallback? progress = null)
    {
        int n = hvp.Size;
        var e = new float[n]; var h = new float[n]; var diag = new float[n];
        for (int i = 0; i < n; i++)
        {
            e[i] = 1; hvp.Apply(e, h); e[i] = 0;
            diag[i] = h[i];
            progress?.Invoke("exact diagonal", i + 1, n);
        }
        return new DiagonalEstimate(diag, null, 0, n, null, 0);
    }
}
