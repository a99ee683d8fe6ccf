using System.Numerics.Tensors;
using OnnxUnlearn.Curvature;

namespace OnnxUnlearn.Unlearning;

/// <summary>Why conjugate gradients stopped.</summary>
public enum CgStop
{
    Converged,
    /// <summary>b = 0: the solution is 0.</summary>
    ZeroRightHandSide,
    /// <summary>The iteration cap: the best iterate is returned, usable when it reduced the residual.</summary>
    IterationCap,
    /// <summary>pᵀ(H + λI)p ≤ 0: the damped Hessian is not positive definite along p (more damping helps).</summary>
    NegativeCurvature,
    /// <summary>A Hessian-vector product was NaN or infinite.</summary>
    NonFiniteProduct,
    /// <summary>The residual became NaN or infinite.</summary>
    NonFiniteResidual,
    /// <summary>The residual grew far beyond the best seen (more damping helps).</summary>
    Diverging,
}

/// <param name="StopValue">With <see cref="CgStop.NegativeCurvature"/> pᵀ(H+λI)p; with <see cref="CgStop.Diverging"/> the residual that stopped it.</param>
public sealed record CgResult(float[] Solution, int Iterations, double RelativeResidual, CgStop Stop, bool Usable, double? StopValue = null)
{
    /// <summary>λ of the solve (set by the caller that chose it).</summary>
    public double Damping { get; init; }
}

/// <summary>
/// Conjugate gradients for (A + λI) x = b with A given as a product (docs/method.md#cg-and-damping). Stops on a
/// relative-residual tolerance or an iteration cap; guards against negative curvature (pᵀAp ≤ 0, the damped Hessian is
/// not positive definite along p), NaN/Inf, and divergence (a residual that grows far beyond the best seen): those stops
/// mark the result unusable, so the caller keeps the model as it was and says why. Reaching the iteration cap returns the
/// best iterate.
/// </summary>
public static class ConjugateGradient
{
    public static CgResult Solve(ILinearOperator a, float[] b, double damping, int maxIterations, double tolerance, ProgressCallback? progress = null)
    {
        int n = b.Length;
        var x = new float[n]; var r = (float[])b.Clone(); var p = (float[])b.Clone(); var ap = new float[n];
        var best = new float[n];
        double bNorm = Math.Sqrt(TensorPrimitives.SumOfSquares<float>(b));
        if (bNorm == 0) return new CgResult(x, 0, 0, CgStop.ZeroRightHandSide, true);
        double rr = bNorm * bNorm, bestRel = 1;
        for (int k = 1; k <= maxIterations; k++)
        {
            a.Apply(p, ap);
            if (damping != 0) TensorPrimitives.MultiplyAdd(p, (float)damping, ap, ap);
            double pap = TensorPrimitives.Dot<float>(p, ap);
            if (!double.IsFinite(pap)) return Stopped(best, k - 1, bestRel, CgStop.NonFiniteProduct);
            if (pap <= 0) return Stopped(best, k - 1, bestRel, CgStop.NegativeCurvature, pap);
            double alpha = rr / pap;
            TensorPrimitives.MultiplyAdd(p, (float)alpha, x, x);
            TensorPrimitives.MultiplyAdd(ap, (float)-alpha, r, r);
            double rrNew = TensorPrimitives.SumOfSquares<float>(r);
            double rel = Math.Sqrt(rrNew) / bNorm;
            progress?.Invoke("conjugate gradients", k, maxIterations);
            if (!double.IsFinite(rel)) return Stopped(best, k, bestRel, CgStop.NonFiniteResidual);
            if (rel < bestRel) { bestRel = rel; x.CopyTo(best, 0); }
            if (rel <= tolerance) return new CgResult(best, k, rel, CgStop.Converged, true);
            if (rel > 1e3 * bestRel) return Stopped(best, k, bestRel, CgStop.Diverging, rel);
            double beta = rrNew / rr;
            rr = rrNew;
            TensorPrimitives.MultiplyAdd(p, (float)beta, r, p);
        }
        return new CgResult(best, maxIterations, bestRel, CgStop.IterationCap, bestRel < 1);
    }

    static CgResult Stopped(float[] best, int iterations, double bestRel, CgStop why, double? value = null) =>
        new(best, iterations, bestRel, why, Usable: false, value);
}
