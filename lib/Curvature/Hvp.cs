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
/// Networks with kinks (ReLU, max pooling, clipping) would add a third error that no step avoids: a dense direction
/// crosses kinks at any ε, and each crossing adds a jump divided by ε. Their products therefore run on the session's
/// twin with decisions frozen at θ (<see cref="ModelSession.FreezeDecisions"/>), whose gradient is smooth around θ and
/// equal to the true one at θ: the product is the Hessian of θ's linear piece, what autograd's double backward computes.
/// </summary>
public sealed class Hvp(ModelSession session, Dataset data)
{
    public double RelativeStep { get; init; } = 1e-3;
    readonly ModelSession smooth = session.FreezeDecisions(data);
    readonly float[] theta0 = (float[])session.Theta.Clone();
    readonly float[] gPlus = new float[session.Layout.Size];
    readonly float[] gMinus = new float[session.Layout.Size];
    readonly double thetaRms = Math.Sqrt(TensorPrimitives.SumOfSquares<float>(session.Theta) / Math.Max(1, session.Theta.Length));

    public ModelSession Session => session;
    public int Size => session.Layout.Size;

    /// <summary>Writes H·v into <paramref name="hv"/>; costs two gradient evaluations over the dataset.</summary>
    public void Apply(ReadOnlySpan<float> v, Span<float> hv)
    {
        float maxAbs = TensorPrimitives.MaxMagnitude(v);
        if (maxAbs == 0) { hv.Clear(); return; }
        float eps = (float)(RelativeStep * Math.Max(thetaRms, 1e-3) / Math.Abs(maxAbs));
        var theta = session.Theta;
        TensorPrimitives.MultiplyAdd(v, eps, theta0, theta);
        smooth.Run(data, gPlus);
        TensorPrimitives.MultiplyAdd(v, -eps, theta0, theta);
        smooth.Run(data, gMinus);
        theta0.CopyTo(theta, 0);
        TensorPrimitives.Subtract(gPlus, gMinus, hv);
        TensorPrimitives.Multiply(hv, 1f / (2 * eps), hv);
    }
}
