using System.Numerics.Tensors;

namespace OnnxUnlearn.Unlearning;

public sealed record CgResult(float[] Solution, int Iterations, double RelativeResidual, string Stop, bool Usable)
{
    /// <summary>λ of the solve (set by the caller that chose it).</summary>
    public double Damping { get; init; }
}

/// <summary>
/// Conjugate gradients for (A + λI) x = b with A given as a product. Stops on a relative-residual tolerance or an
/// iteration cap; guards against negative curvature (pᵀAp ≤ 0, the damped Hessian is not positive definite along p),
/// NaN/Inf, and divergence (a residual that grows far beyond the best seen): those stops mark the result unusable, so the
/// caller keeps the model as it was and explains why. Reaching the iteration cap returns the best iterate.
/// </summary>
public static class ConjugateGradient
{
    public static CgResult Solve(Action<float[], float[]> multiply, float[] b, double damping, int maxIterations, double tolerance,
        Curvature.ProgressCallback? progress = null)
    {
        int n = b.Length;
        var x = new float[n]; var r = (float[])b.Clone(); var p = (float[])b.Clone(); var ap = new float[n];
        var best = new float[n];
        double bNorm = Math.Sqrt(TensorPrimitives.SumOfSquares<float>(b));
        if (bNorm == 0) return new CgResult(x, 0, 0, "right-hand side is zero", true);
        double rr = bNorm * bNorm, bestRel = 1;
        for (int k = 1; k <= maxIterations; k++)
        {
            multiply(p, ap);
            if (damping != 0) TensorPrimitives.MultiplyAdd(p, (float)damping, ap, ap);
            double pap = TensorPrimitives.Dot<float>(p, ap);
            if (!double.IsFinite(pap)) return Stopped(best, k - 1, bestRel, "Hessian-vector product was NaN/Inf");
            if (pap <= 0) return Stopped(best, k - 1, bestRel, $"negative curvature (pᵀ(H+λI)p = {pap:E3}); raise --damping");
            double alpha = rr / pap;
            TensorPrimitives.MultiplyAdd(p, (float)alpha, x, x);
            TensorPrimitives.MultiplyAdd(ap, (float)-alpha, r, r);
            double rrNew = TensorPrimitives.SumOfSquares<float>(r);
            double rel = Math.Sqrt(rrNew) / bNorm;
            progress?.Invoke("conjugate gradients", k, maxIterations);
            if (!double.IsFinite(rel)) return Stopped(best, k, bestRel, "residual became NaN/Inf");
            if (rel < bestRel) { bestRel = rel; x.CopyTo(best, 0); }
            if (rel <= tolerance) return new CgResult(best, k, rel, "converged", true);
            if (rel > 1e3 * bestRel) return Stopped(best, k, bestRel, $"diverging (residual {rel:E2} vs best {bestRel:E2}); raise --damping");
            double beta = rrNew / rr;
            rr = rrNew;
            TensorPrimitives.MultiplyAdd(p, (float)beta, r, p);
        }
        return new CgResult(best, maxIterations, bestRel, "iteration cap reached", bestRel < 1);
    }

    static CgResult Stopped(float[] best, int iterations, double bestRel, string why) =>
        new(best, iterations, bestRel, why, Usable: false);
}
