using System.Numerics.Tensors;
using OnnxUnlearn.Runtime;

namespace OnnxUnlearn.Curvature;

/// <summary>The baseline per-parameter scores that selections are compared against (docs/method.md#baseline-selections).</summary>
public static class Scores
{
    /// <summary>Fisher diagonal: mean over samples of the squared per-sample gradient (as in Selective Synaptic Dampening).</summary>
    public static float[] Fisher(ModelSession s, Dataset data, ProgressCallback? progress = null)
    {
        var sum = new float[s.Layout.Size];
        var g = new float[s.Layout.Size];
        for (long r = 0; r < data.Rows; r++)
        {
            s.RunBatch(data.Batch(r, 1, s.FeedTypes), g);
            TensorPrimitives.MultiplyAdd(g, g, sum, sum);
            progress?.Invoke("per-sample gradients", (int)r + 1, (int)data.Rows);
        }
        TensorPrimitives.Multiply(sum, 1f / data.Rows, sum);
        return sum;
    }

    /// <summary>|∇L(D)|: gradient saliency of a dataset (as in SalUn).</summary>
    public static float[] GradientMagnitude(ModelSession s, Dataset data)
    {
        var g = new float[s.Layout.Size];
        s.Run(data, g);
        TensorPrimitives.Abs(g, g);
        return g;
    }

    /// <summary>|θ|.</summary>
    public static float[] Magnitude(ModelSession s)
    {
        var m = new float[s.Layout.Size];
        TensorPrimitives.Abs(s.Theta, m);
        return m;
    }
}
