using OnnxUnlearn.Text;

namespace OnnxUnlearn.Tests.Text;

public class SkewNormalTests
{
    [Theory]
    [InlineData(0.0, 1.0)]
    [InlineData(0.5, 0.4795001221869535)]
    [InlineData(1.0, 0.15729920705028513)]
    [InlineData(2.0, 0.004677734981047266)]
    [InlineData(3.0, 2.209049699858544e-05)]
    [InlineData(6.0, 2.1519736712498913e-17)]
    [InlineData(-1.0, 1.8427007929497148)]
    public void ErfcMatchesReferenceValues(double x, double expected) =>
        Assert.Equal(1, SkewNormal.Erfc(x) / expected, 12);

    [Fact]
    public void LogNormalCdfFarInTheTail()
    {
        // log Φ(-40) = -804.608442013754... (asymptotic series), where Φ itself underflows
        Assert.Equal(-804.60844201375, SkewNormal.LogNormalCdf(-40), 8);
        Assert.Equal(Math.Log(0.5), SkewNormal.LogNormalCdf(0), 14);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(1.0)]
    [InlineData(-3.0)]
    [InlineData(8.0)]
    public void MassBelowTheLocationIsAHalfMinusArctanOverPi(double alpha)
    {
        // P(X ≤ ξ) = 1/2 − arctan(α)/π for SN(ξ, ω, α)
        var d = new SkewNormal(2, 3, alpha);
        Assert.Equal(0.5 - Math.Atan(alpha) / Math.PI, d.Cdf(2), 9);
    }

    [Theory]
    [InlineData(-2.0)]
    [InlineData(1.5)]
    [InlineData(5.0)]
    public void ShapeZeroIsTheNormal(double x) =>
        Assert.Equal(0.5 * SkewNormal.Erfc((x - 1) / 2 / Math.Sqrt(2)), new SkewNormal(1, 2, 0).Survival(x), 10);

    [Theory]
    [InlineData(4.0)]
    [InlineData(-4.0)]
    public void SurvivalIntegratesTheDensity(double alpha)
    {
        // compare with the trapezoid rule over the density 2/ω φ(z) Φ(αz) on a wide grid
        var d = new SkewNormal(-1, 0.5, alpha);
        foreach (var x in new[] { -2.5, -1.2, -0.5, 0.0, 1.0 })
        {
            const int n = 100_000;
            double h = 10.0 / n, sum = 0;
            for (int i = 0; i <= n; i++)
            {
                double z = (x + i * h + 1) / 0.5;
                double f = 2 / 0.5 * Math.Exp(-z * z / 2) / Math.Sqrt(2 * Math.PI) * SkewNormal.NormalCdf(alpha * z);
                sum += (i == 0 || i == n ? 0.5 : 1) * h * f;
            }
            Assert.Equal(sum, d.Survival(x), 6);
        }
    }

    [Fact]
    public void DeepTailsKeepTheirLogarithm()
    {
        var normal = new SkewNormal(0, 1, 0);
        // log Φc(40) = log Φ(−40)
        Assert.Equal(SkewNormal.LogNormalCdf(-40), normal.LogSurvival(40), 6);
        var left = new SkewNormal(0, 1, -5);
        Assert.True(double.IsFinite(left.LogSurvival(30)) && left.LogSurvival(30) < -1000);
    }

    [Fact]
    public void MomentFitRecoversASkewNormal()
    {
        // draws from SN(ξ=3, ω=2, α=4) by the representation X = ξ + ω(δ|U| + √(1−δ²)V)
        var rng = new Random(1);
        double alpha = 4, delta = alpha / Math.Sqrt(1 + alpha * alpha);
        double Normal() => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
        var xs = Enumerable.Range(0, 200_000).Select(_ => 3 + 2 * (delta * Math.Abs(Normal()) + Math.Sqrt(1 - delta * delta) * Normal())).ToList();
        var fit = SkewNormal.FitMoments(xs, out var mean, out var sd, out var skew)!;
        Assert.Equal(3, fit.Location, 1);
        Assert.Equal(2, fit.Scale, 1);
        Assert.InRange(fit.Shape, 3, 5.5);
        Assert.Equal(mean, fit.Mean, 9);
        Assert.Equal(sd, fit.StdDev, 9);
        Assert.Null(SkewNormal.FitMoments([1.0, 1.0, 1.0], out _, out _, out _));
    }
}
