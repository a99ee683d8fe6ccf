using OnnxUnlearn.Selection;

namespace OnnxUnlearn.Curvature;

/// <summary>An estimate of diag(H) with its per-entry standard error and, for Hutchinson, the stability of its top-k set.</summary>
public sealed record DiagonalEstimate(float[] Values, float[]? StandardError, int Probes, int HvpCount, double? TopKOverlap, double StabilityFraction);

/// <summary>Progress of a long computation: what, how far.</summary>
public delegate void ProgressCallback(string what, int done, int total);

public enum DiagonalEstimator { DiagPlusPlus, Hutchinson }

public static class Diagonal
{
    /// <summary>diag(H) from a budget of Hessian-vector products with the chosen estimator.</summary>
    public static DiagonalEstimate Estimate(Hvp hvp, DiagonalEstimator estimator, int hvps, int seed, double stabilityFraction = 0.05, ProgressCallback? progress = null) =>
        estimator == DiagonalEstimator.Hutchinson
            ? Hutchinson(hvp, hvps, seed, stabilityFraction, progress)
            : DiagPlusPlus(hvp, hvps, seed, stabilityFraction, progress);

    /// <summary>
    /// Hutchinson's estimator with Rademacher probes: diag(H) ≈ mean_j z_j ⊙ H z_j. Probe j's signs come from a generator
    /// seeded with (seed, j), so results depend only on the seed. Stability: overlap (Jaccard) of the top-k sets (k = a
    /// <paramref name="stabilityFraction"/> of the elements) estimated from the first and second half of the probes.
    /// </summary>
    public static DiagonalEstimate Hutchinson(Hvp hvp, int probes, int seed, double stabilityFraction = 0.05, ProgressCallback? progress = null)
    {
        if (probes < 1) throw new UserError("--probes must be at least 1");
        int n = hvp.Size;
        var z = new float[n]; var hz = new float[n];
        var mean = new double[n]; var m2 = new double[n];
        var halves = new[] { new double[n], new double[n] };
        for (int j = 0; j < probes; j++)
        {
            var rng = new Random(ProbeSeed(seed, j));
            for (int i = 0; i < n; i++) z[i] = rng.Next(2) == 0 ? -1f : 1f;
            hvp.Apply(z, hz);
            var half = halves[j < (probes + 1) / 2 ? 0 : 1];
            for (int i = 0; i < n; i++)
            {   // Welford's running mean and variance of the per-probe estimates
                double x = z[i] * hz[i], d = x - mean[i];
                mean[i] += d / (j + 1);
                m2[i] += d * (x - mean[i]);
                half[i] += x;
            }
            progress?.Invoke("Hutchinson probes", j + 1, probes);
        }
        var values = mean.Select(x => (float)x).ToArray();
        float[]? se = probes > 1 ? m2.Select(v => (float)Math.Sqrt(v / (probes - 1) / probes)).ToArray() : null;
        double? overlap = probes > 1 ? TopK.Jaccard(halves[0], halves[1], stabilityFraction) : null;
        return new DiagonalEstimate(values, se, probes, probes, overlap, stabilityFraction);
    }

    /// <summary>
    /// Diag++ (Baston and Nakatsukasa, 2022): a third of the HVP budget sketches the range of H (Q = orth(H S), S
    /// Rademacher), a third gives diag(QQᵀH) exactly (row sums of Q ⊙ HQ), and the last third estimates the remainder
    /// diag((I − QQᵀ)H) with Hutchinson. Network Hessians have fast-decaying spectra, so the large entries that top-k
    /// selection cares about are captured by the sketch instead of being drowned in Hutchinson's Σ_{j≠i} H_ij² variance.
    /// Standard errors and the halves' stability figure refer to the Hutchinson part.
    /// </summary>
    public static DiagonalEstimate DiagPlusPlus(Hvp hvp, int hvps, int seed, double stabilityFraction = 0.05, ProgressCallback? progress = null)
    {
        if (hvps < 3) throw new UserError("Diag++ needs at least 3 Hessian-vector products (--probes 3)");
        int n = hvp.Size, k = Math.Min(hvps / 3, n), done = 0;
        var v = new float[n]; var hv = new float[n];
        // Sketch: columns of Q span H·S, orthonormalised by modified Gram-Schmidt (twice, for float stability).
        var q = new List<double[]>();
        for (int j = 0; j < k; j++)
        {
            var rng = new Random(ProbeSeed(seed, -1 - j));
            for (int i = 0; i < n; i++) v[i] = rng.Next(2) == 0 ? -1f : 1f;
            hvp.Apply(v, hv);
            progress?.Invoke("Diag++ Hessian-vector products", ++done, hvps);
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
            progress?.Invoke("Diag++ Hessian-vector products", ++done, hvps);
            for (int i = 0; i < n; i++) low[i] += b[i] * hv[i];
        }
        int m = hvps - done;
        var mean = new double[n]; var m2 = new double[n];
        var halves = new[] { new double[n], new double[n] };
        var r = new double[n];
        for (int j = 0; j < m; j++)
        {
            var rng = new Random(ProbeSeed(seed, j));
            for (int i = 0; i < n; i++) v[i] = rng.Next(2) == 0 ? -1f : 1f;
            hvp.Apply(v, hv);
            progress?.Invoke("Diag++ Hessian-vector products", ++done, hvps);
            for (int i = 0; i < n; i++) r[i] = hv[i];
            foreach (var b in q) { double dot = Dot(b, r); for (int i = 0; i < n; i++) r[i] -= dot * b[i]; } // (I − QQᵀ)Hz
            var half = halves[j < (m + 1) / 2 ? 0 : 1];
            for (int i = 0; i < n; i++)
            {
                double x = v[i] * r[i], d = x - mean[i];
                mean[i] += d / (j + 1);
                m2[i] += d * (x - mean[i]);
                half[i] += x / Math.Max(1, j < (m + 1) / 2 ? (m + 1) / 2 : m - (m + 1) / 2);
            }
        }
        var values = low.Zip(mean, (a, b) => (float)(a + b)).ToArray();
        float[]? se = m > 1 ? m2.Select(x => (float)Math.Sqrt(x / (m - 1) / m)).ToArray() : null;
        double? overlap = m > 1 ? TopK.Jaccard(low.Zip(halves[0], (a, b) => a + b).ToArray(), low.Zip(halves[1], (a, b) => a + b).ToArray(), stabilityFraction) : null;
        return new DiagonalEstimate(values, se, m, done, overlap, stabilityFraction);
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
    public static DiagonalEstimate Exact(Hvp hvp, ProgressCallback? progress = null)
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
