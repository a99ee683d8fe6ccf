using OnnxUnlearn.Curvature;
using OnnxUnlearn.Runtime;
using OnnxUnlearn.Unlearning;

namespace OnnxUnlearn.Tests.Selection;

/// <summary>
/// <c>--select newton</c> ranks Δg²/(H⁺ + λ), λ = mean H⁺, with H the same Diag++ estimate <c>--select hessian</c> ranks and
/// Δg = (|Z̃|·∇L(Z̃) − |Z|·∇L(Z))/n: recomputed here from the evaluator's gradients and the estimator, element by element.
/// </summary>
public class NewtonSelectionTests
{
    [Fact]
    public void RanksTheDampedNewtonDecrement()
    {
        using var train = Dataset.Load(Fixtures.File("mlp", "data.npz"));
        using var forget = Dataset.Load(Fixtures.File("mlp", "forget.npz"));
        using var corrected = Dataset.Load(Fixtures.File("mlp", "corrected.npz"));
        using var model = Evaluator.Open(Fixtures.File("mlp", "model.onnx"), new LossSettings(), train);
        var theta = model.ReadParameters();
        var options = new UnlearnOptions { Select = SelectionKind.Newton, Steps = 1, Probes = 20, Seed = 3 };
        var result = Unlearner.Run(model, theta, train, forget, corrected, options);

        int size = model.Layout.Size;
        var gf = new float[size]; var gc = new float[size];
        model.Gradient(theta, forget, gf);
        model.Gradient(theta, corrected, gc);
        var h = Scores.Compute(ScoreKind.Hessian, model, theta, train, new ScoreOptions { Probes = 20, Seed = 3 }).Values;
        double lambda = h.Average(v => Math.Max((double)v, 0));
        Assert.True(lambda > 0);
        var expected = Enumerable.Range(0, size).Select(i =>
        {
            double dg = (corrected.Rows * (double)gc[i] - forget.Rows * (double)gf[i]) / train.Rows;
            return dg * dg / (Math.Max(h[i], 0) + lambda);
        }).ToArray();
        double scale = expected.Max();
        Assert.All(Enumerable.Range(0, size), i => Assert.True(Math.Abs(result.Scores![i] - expected[i]) <= 1e-4 * scale, $"element {i}: {result.Scores[i]} vs {expected[i]}"));
        // the selection is the top 5 % of those scores
        int k = (int)Math.Round(0.05 * size);
        Assert.Equal(k, result.Selected.Length);
        double threshold = result.Selected.Min(i => result.Scores![i]);
        Assert.Equal(k, result.Scores!.Count(s => s >= threshold));
    }
}
