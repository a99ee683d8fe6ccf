using OnnxUnlearn.Curvature;
using OnnxUnlearn.Data;
using OnnxUnlearn.Runtime;
using Xunit.Abstractions;

namespace OnnxUnlearn.Tests.Curvature;

/// <summary>Finite-difference curvature against exact Hessians from PyTorch (float64 autograd).</summary>
public class CurvatureTests(ITestOutputHelper log)
{
    static (Evaluator, Dataset, Dictionary<string, NdArray>) Open(string fixture)
    {
        var data = Dataset.Load(Fixtures.File(fixture, "data.npz"));
        return (Evaluator.Open(Fixtures.File(fixture, "model.onnx"), new LossSettings(), data), data, Npz.Read(Fixtures.File(fixture, "reference.npz")));
    }

    /// <summary>H·v at the model's stored θ.</summary>
    static ILinearOperator Hessian(Evaluator s, Dataset data) => new Hvp(s, data).At(s.ReadParameters());

    [Fact]
    public void ProbeSeedsAreFixedAcrossProcesses()
    {
        // Fixed values (not HashCode.Combine, which is seeded per process): a Hutchinson selection must be reproducible from --seed.
        Assert.Equal(2065550767, Diagonal.ProbeSeed(0, 0));
        Assert.Equal(-1996333887, Diagonal.ProbeSeed(0, 1));
        Assert.Equal(-1538687896, Diagonal.ProbeSeed(7, 3));
        Assert.Equal(1000, Enumerable.Range(0, 1000).Select(j => Diagonal.ProbeSeed(0, j)).Distinct().Count());
    }

    [Fact]
    public void HvpMatchesClosedFormLogisticRegressionHessian()
    {
        var (s, data, reference) = Open("logreg");
        using var _ = s; using var __ = data;
        var h = reference["hessian_full"].ToDouble();
        int n = s.Layout.Size;
        Assert.Equal(650, n);
        var hvp = Hessian(s, data);
        var rng = new Random(3);
        for (int trial = 0; trial < 3; trial++)
        {
            var v = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            var hv = new float[n];
            hvp.Apply(v, hv);
            var exact = Enumerable.Range(0, n).Select(i => Enumerable.Range(0, n).Sum(j => h[i * n + j] * v[j])).ToArray();
            double err = Numerics.RelativeL2(exact, hv);
            log.WriteLine($"logreg HVP relative L2 error: {err:E2}");
            Assert.True(err < 1e-3, $"HVP relative error {err:E2}");
        }
    }

    [Theory]
    [InlineData("mlp")]
    [InlineData("cnn")]
    public void FrozenDecisionsKeepLossAndGradientAtTheReference(string fixture)
    {
        var (s, data, _) = Open(fixture);
        using var _s = s; using var _d = data;
        Assert.True(s.HasDecisions);
        var frozen = s.Artifact(ArtifactKind.FrozenDecisions);
        Assert.NotSame(s.Artifact(), frozen);
        Assert.NotEmpty(frozen.ReferenceInputs);
        var theta = s.ReadParameters();
        var (g, gf) = (new float[s.Layout.Size], new float[s.Layout.Size]);
        double loss = s.Gradient(theta, data, g).Loss, lossFrozen = s.SmoothGradient(theta, theta, data, gf).Loss;
        double err = Numerics.RelativeL2(g, gf);
        log.WriteLine($"{fixture}: loss {loss} vs frozen {lossFrozen}, gradient relative L2 difference {err:E2}");
        Assert.Equal(loss, lossFrozen, 1e-6);
        Assert.True(err < 1e-5, $"{fixture}: frozen gradient differs by {err:E2}");
        Assert.Same(frozen, s.Artifact(ArtifactKind.FrozenDecisions)); // built once, reused by every HVP of the evaluator
    }

    [Theory]
    [InlineData("logreg")]
    [InlineData("mlp")]
    [InlineData("cnn")]
    [InlineData("transformer")]
    public void ExactDiagonalMatchesPyTorch(string fixture)
    {
        var (s, data, reference) = Open(fixture);
        using var _ = s; using var __ = data;
        var d = Diagonal.Exact(Hessian(s, data));
        var expected = s.Layout.Parameters.SelectMany(p => reference["hdiag/" + p.Name].ToDouble()).ToArray();
        double err = Numerics.RelativeL2(expected, d.Values);
        log.WriteLine($"{fixture}: exact diagonal relative L2 error {err:E2} over {expected.Length} elements ({d.HvpCount} HVPs)");
        Assert.True(err <= 2e-2, $"{fixture}: relative L2 error {err:E2}");
    }

    [Theory]
    [InlineData("logreg")]
    [InlineData("mlp")]
    [InlineData("cnn")]
    [InlineData("transformer")]
    public void HutchinsonWith200ProbesRanksLikeTheExactDiagonal(string fixture)
    {
        var (s, data, reference) = Open(fixture);
        using var _ = s; using var __ = data;
        var est = Diagonal.DiagPlusPlus(Hessian(s, data), hvps: 200, seed: 11);
        var plain = Diagonal.Hutchinson(Hessian(s, data), probes: 200, seed: 11);
        log.WriteLine($"{fixture}: plain Hutchinson: Spearman {Spearman(s.Layout.Parameters.SelectMany(p => reference["hdiag/" + p.Name].ToDouble()).ToArray(), plain.Values.Select(v => (double)v).ToArray()):F3}");
        var exact = s.Layout.Parameters.SelectMany(p => reference["hdiag/" + p.Name].ToDouble()).ToArray();
        var estimate = est.Values.Select(v => (double)v).ToArray();
        double rho = Spearman(exact, estimate);
        double overlap = OnnxUnlearn.Selection.TopK.Jaccard(exact, estimate, 0.05);
        log.WriteLine($"{fixture}: Spearman {rho:F3}, top-5 % Jaccard {overlap:F3}, halves' Jaccard {est.TopKOverlap:F3}");
        Assert.True(rho >= 0.8, $"{fixture}: Spearman {rho:F3}");
        Assert.True(overlap >= 0.5, $"{fixture}: top-5 % overlap {overlap:F3}");
        Assert.All(est.StandardError!, se => Assert.True(se >= 0));
    }

    [Theory]
    [InlineData(DiagonalEstimator.DiagPlusPlus)]
    [InlineData(DiagonalEstimator.Hutchinson)]
    public void EstimatorsSpendExactlyTheirBudgetWithOrWithoutProgress(DiagonalEstimator estimator)
    {
        var (s, data, _) = Open("mlp");
        using var _s = s; using var _d = data;
        var h = new CountingOperator(Hessian(s, data));
        var quiet = Diagonal.Estimate(h, estimator, 30, seed: 2);
        Assert.Equal(30, h.Products);
        Assert.Equal(30, quiet.HvpCount);
        int reported = 0;
        var shown = Diagonal.Estimate(h, estimator, 30, seed: 2, progress: (_, done, _) => reported = done);
        Assert.Equal(60, h.Products);
        Assert.Equal(30, reported);
        Assert.Equal(quiet.Values, shown.Values);
    }

    sealed class CountingOperator(ILinearOperator inner) : ILinearOperator
    {
        public int Products { get; private set; }
        public int Size => inner.Size;
        public void Apply(ReadOnlySpan<float> v, Span<float> result) { Products++; inner.Apply(v, result); }
    }

    [Fact]
    public void HutchinsonIsDeterministicForASeed()
    {
        var (s, data, _) = Open("mlp");
        using var _s = s; using var _d = data;
        var a = Diagonal.Hutchinson(Hessian(s, data), 5, seed: 4).Values;
        var b = Diagonal.Hutchinson(Hessian(s, data), 5, seed: 4).Values;
        var c = Diagonal.Hutchinson(Hessian(s, data), 5, seed: 5).Values;
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
    }

    static double Spearman(double[] x, double[] y)
    {
        static double[] Ranks(double[] v)
        {
            var order = Enumerable.Range(0, v.Length).OrderBy(i => v[i]).ToArray();
            var r = new double[v.Length];
            for (int i = 0; i < order.Length;)
            {   // ties share their mean rank
                int j = i;
                while (j + 1 < order.Length && v[order[j + 1]] == v[order[i]]) j++;
                for (int k = i; k <= j; k++) r[order[k]] = (i + j) / 2.0;
                i = j + 1;
            }
            return r;
        }
        var (rx, ry) = (Ranks(x), Ranks(y));
        double mx = rx.Average(), my = ry.Average();
        double cov = rx.Zip(ry, (a, b) => (a - mx) * (b - my)).Sum();
        return cov / Math.Sqrt(rx.Sum(a => (a - mx) * (a - mx)) * ry.Sum(b => (b - my) * (b - my)));
    }
}
