using System.Numerics.Tensors;
using OnnxUnlearn.Runtime;

namespace OnnxUnlearn.Curvature;

/// <summary>A symmetric linear operator on parameter-space vectors: H·v, H_SS·v, (H + λI)·v.</summary>
public interface ILinearOperator
{
    int Size { get; }
    void Apply(ReadOnlySpan<float> v, Span<float> result);
}

/// <summary>
/// Hessian-vector products of the mean loss over a dataset by central differences of the gradient graph:
/// Hv ≈ (∇L(θ + εv) − ∇L(θ − εv)) / 2ε (docs/method.md#hvp). θ is an argument and is never written: θ ± εv go to a
/// scratch vector of this object's own.
///
/// Step: ε = c · rms(θ) / max|vᵢ|, so the coordinate that moves most moves by c · rms(θ) (c = <see cref="RelativeStep"/>,
/// default 1e-3). In float32 the rounding error of the difference grows like 1/ε and the truncation error like ε².
/// Networks with kinks (ReLU, max pooling, clipping) would add a third error that no step avoids: a dense direction
/// crosses kinks at any ε, and each crossing adds a jump divided by ε. Their products therefore use the gradient with
/// decisions frozen at θ (<see cref="Evaluator.SmoothGradient"/>), which is smooth around θ and equal to the true one at
/// θ: the product is the Hessian of θ's linear piece, what autograd's double backward computes.
/// </summary>
public sealed class Hvp(Evaluator model, Dataset data)
{
    public double RelativeStep { get; init; } = 1e-3;
    public int Size => model.Layout.Size;
    public Evaluator Model => model;
    readonly float[] gPlus = new float[model.Layout.Size];
    readonly float[] gMinus = new float[model.Layout.Size];
    readonly ParameterVector shifted = new(model.Layout);

    /// <summary>Writes H(θ)·v into <paramref name="hv"/>; costs two gradient evaluations over the dataset.</summary>
    public void Apply(ParameterVector theta, ReadOnlySpan<float> v, Span<float> hv)
    {
        float maxAbs = TensorPrimitives.MaxMagnitude(v);
        if (maxAbs == 0) { hv.Clear(); return; }
        float eps = (float)(RelativeStep * Math.Max(theta.Rms(), 1e-3) / Math.Abs(maxAbs));
        TensorPrimitives.MultiplyAdd(v, eps, theta.Span, shifted.Span);
        model.SmoothGradient(shifted, theta, data, gPlus);
        TensorPrimitives.MultiplyAdd(v, -eps, theta.Span, shifted.Span);
        model.SmoothGradient(shifted, theta, data, gMinus);
        TensorPrimitives.Subtract(gPlus, gMinus, hv);
        TensorPrimitives.Multiply(hv, 1f / (2 * eps), hv);
    }

    /// <summary>v ↦ H(θ)·v as an operator, for estimators and solvers (θ must not change while it is in use).</summary>
    public ILinearOperator At(ParameterVector theta) => new AtTheta(this, theta);

    sealed class AtTheta(Hvp hvp, ParameterVector theta) : ILinearOperator
    {
        public int Size => hvp.Size;
        public void Apply(ReadOnlySpan<float> v, Span<float> result) => hvp.Apply(theta, v, result);
    }
}
