using System.Numerics.Tensors;
using OnnxUnlearn.Runtime;

namespace OnnxUnlearn.Curvature;

/// <summary>
/// Hessian-vector products of the mean loss over a dataset by central differences of the gradient graph:
/// Hv ≈ (∇L(θ + εv) − ∇L(θ − εv)) / 2ε. θ is shifted in place in the session's parameter buffer (no rebuild, no copy of
/// the model) and restored exactly afterwards.
///
/// Step: ε = c · rms(θ) / max|vᵢ|, so the coordinate that moves most moves by c · rms(θ) (c = <see cref="RelativeStep"/>,
/// default 1e-3). In float32 the rounding error of the difference grows like 1/ε and the truncation error like ε².
/// Networks with kinks (ReLU, max pooling, clipping) add a third error: a step that crosses a kink measures a jump, not
/// a derivative. For those models the gradient graph also returns a fingerprint of its decisions (<see cref="Autodiff.KinkPattern"/>);
/// when θ + εv or θ − εv leaves θ's linear piece, ε shrinks tenfold, up to <see cref="MaxShrinks"/> times, so the product
/// approximates the Hessian of θ's piece — what autograd's double backward computes.
/// </summary>
public sealed class Hvp(ModelSession session, Dataset data)
{
    public double RelativeStep { get; init; } = 1e-3;
    public int MaxShrinks { get; init; } = 3;
    /// <summary>Products whose step had to shrink to stay inside a linear piece (diagnostics).</summary>
    public int Shrunk { get; private set; }
    long[]? pattern0;
    readonly float[] theta0 = (float[])session.Theta.Clone();
    readonly float[] gPlus = new float[session.Layout.Size];
    readonly float[] gMinus = new float[session.Layout.Size];
    readonly double thetaRms = Math.Sqrt(TensorPrimitives.SumOfSquares<float>(session.Theta) / Math.Max(1, session.Theta.Length));

    public ModelSession Session => session;
    public int Size => session.Layout.Size;

    bool Same(long[]? pattern) => pattern0 is null || pattern is null || pattern.AsSpan().SequenceEqual(pattern0);

    /// <summary>Writes H·v into <paramref name="hv"/>; costs two gradient evaluations over the dataset.</summary>
    public void Apply(ReadOnlySpan<float> v, Span<float> hv)
    {
        float maxAbs = TensorPrimitives.MaxMagnitude(v);
        if (maxAbs == 0) { hv.Clear(); return; }
        float eps = (float)(RelativeStep * Math.Max(thetaRms, 1e-3) / Math.Abs(maxAbs));
        var theta = session.Theta;
        if (session.Artifact.HasPattern && pattern0 is null) { session.Run(data, gPlus); pattern0 = session.Pattern; }
        for (int shrink = 0; ; shrink++, eps /= 10)
        {
            TensorPrimitives.MultiplyAdd(v, eps, theta0, theta);
            session.Run(data, gPlus);
            bool same = Same(session.Pattern);
            TensorPrimitives.MultiplyAdd(v, -eps, theta0, theta);
            session.Run(data, gMinus);
            same &= Same(session.Pattern);
            if (same || shrink == MaxShrinks) { if (shrink > 0) Shrunk++; break; }
        }
        theta0.CopyTo(theta, 0);
        TensorPrimitives.Subtract(gPlus, gMinus, hv);
        TensorPrimitives.Multiply(hv, 1f / (2 * eps), hv);
    }
}
