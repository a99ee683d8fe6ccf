using System.Numerics.Tensors;
using OnnxUnlearn.Runtime;

namespace OnnxUnlearn.Curvature;

/// <summary>Per-element scores that selections rank: the Hessian diagonal and the baselines it is measured against.</summary>
public enum ScoreKind
{
    /// <summary>diag ∇²L, estimated from finite-difference HVPs (docs/method.md#diag-plus-plus).</summary>
    Hessian,
    /// <summary>Mean squared per-sample gradient.</summary>
    Fisher,
    /// <summary>|∇L| — in unlearning, |Δg|, the gradient of the unlearning objective.</summary>
    Gradient,
    /// <summary>|θ|.</summary>
    Magnitude,
}

/// <summary>How a Hessian score is estimated.</summary>
public sealed record ScoreOptions
{
    /// <summary>Hessian-vector products spent on the estimate.</summary>
    public int Probes { get; init; } = 60;
    public DiagonalEstimator Estimator { get; init; } = DiagonalEstimator.DiagPlusPlus;
    /// <summary>One HVP per element instead of an estimate.</summary>
    public bool Exact { get; init; }
    public int Seed { get; init; }
    /// <summary>Share of elements whose top-k set the stability between probe halves refers to.</summary>
    public double StabilityFraction { get; init; } = 0.05;
    /// <summary>Relative finite-difference step c of the HVPs.</summary>
    public double RelativeStep { get; init; } = 1e-3;
    /// <summary>Hutchinson probes per chunk: the fixed summation order that shards merge into (<see cref="Chunked"/>).</summary>
    public int Chunk { get; init; } = Chunked.ProbeChunk;
}

/// <summary>The baseline per-parameter scores that selections are compared against (docs/method.md#baseline-selections), and the one dispatch over all scores.</summary>
public static class Scores
{
    /// <summary>
    /// The score of every trainable element at θ on <paramref name="data"/>. <paramref name="gradient"/>, when given, is
    /// the gradient the <see cref="ScoreKind.Gradient"/> score takes the magnitude of (Δg in unlearning); otherwise ∇L(data).
    /// </summary>
    public static DiagonalEstimate Compute(ScoreKind kind, Evaluator model, ParameterVector theta, Dataset data, ScoreOptions options,
        ProgressCallback? progress = null, float[]? gradient = null) => kind switch
    {
        ScoreKind.Hessian when options.Exact => Diagonal.Exact(new Hvp(model, data) { RelativeStep = options.RelativeStep }.At(theta), progress),
        ScoreKind.Hessian => Diagonal.Estimate(new Hvp(model, data) { RelativeStep = options.RelativeStep }.At(theta), options.Estimator, options.Probes,
            options.Seed, options.StabilityFraction, progress, options.Chunk),
        ScoreKind.Fisher => Plain(Fisher(model, theta, data, progress)),
        ScoreKind.Gradient => Plain(gradient is null ? GradientMagnitude(model, theta, data) : Abs(gradient)),
        ScoreKind.Magnitude => Plain(Magnitude(theta)),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    static DiagonalEstimate Plain(float[] values) => new(values, null, 0, 0, null, 0);

    /// <summary>Fisher diagonal: mean over samples of the squared per-sample gradient (as in Selective Synaptic Dampening).</summary>
    public static float[] Fisher(Evaluator model, ParameterVector theta, Dataset data, ProgressCallback? progress = null)
    {
        var sum = new float[model.Layout.Size];
        var g = new float[model.Layout.Size];
        for (long r = 0; r < data.Rows; r++)
        {
            model.GradientBatch(theta, data.Batch(r, 1, model.FeedTypes), g);
            TensorPrimitives.MultiplyAdd(g, g, sum, sum);
            progress?.Invoke("per-sample gradients", (int)r + 1, (int)data.Rows);
        }
        TensorPrimitives.Multiply(sum, 1f / data.Rows, sum);
        return sum;
    }

    /// <summary>|∇L(D)|: gradient saliency of a dataset (as in SalUn).</summary>
    public static float[] GradientMagnitude(Evaluator model, ParameterVector theta, Dataset data)
    {
        var g = new float[model.Layout.Size];
        model.Gradient(theta, data, g);
        TensorPrimitives.Abs(g, g);
        return g;
    }

    /// <summary>|θ|.</summary>
    public static float[] Magnitude(ParameterVector theta) => Abs(theta.Span);

    static float[] Abs(ReadOnlySpan<float> v) { var a = new float[v.Length]; TensorPrimitives.Abs(v, a); return a; }
}
