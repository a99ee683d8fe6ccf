namespace OnnxUnlearn.Text;

/// <summary>
/// The skew-normal distribution SN(ξ, ω, α): density (2/ω) φ(z) Φ(αz) with z = (x − ξ)/ω. Carlini et al. (The Secret
/// Sharer) fit it to the log-likelihoods of random candidates to extrapolate a secret's rank beyond what sampling sees.
/// Tails are integrated numerically from the density (positive integrands only), so tiny tail probabilities keep their
/// relative precision; <see cref="LogSurvival"/> returns them as logarithms.
/// </summary>
public sealed record SkewNormal(double Location, double Scale, double Shape)
{
    /// <summary>δ = α / √(1 + α²).</summary>
    public double Delta => Shape / Math.Sqrt(1 + Shape * Shape);
    public double Mean => Location + Scale * Delta * Math.Sqrt(2 / Math.PI);
    public double StdDev => Scale * Math.Sqrt(1 - 2 * Delta * Delta / Math.PI);

    /// <summary>The largest |skewness| a skew-normal reaches (α → ∞) is 0.9953; sample skewness is clamped just below.</summary>
    public const double MaxSkewness = 0.99;

    /// <summary>
    /// Method-of-moments fit: sample mean, standard deviation and skewness (g₁ = m₃ / m₂^{3/2}) matched to the
    /// distribution's. |g₁| is clamped to <see cref="MaxSkewness"/>. Returns null when the values do not vary.
    /// </summary>
    public static SkewNormal? FitMoments(IReadOnlyList<double> values, out double mean, out double stdDev, out double skewness)
    {
        int n = values.Count;
        if (n < 3) throw new ArgumentException("A skew-normal fit needs at least 3 values.", nameof(values));
        mean = values.Average();
        double m2 = 0, m3 = 0;
        foreach (var v in values) { double d = v - mean; m2 += d * d; m3 += d * d * d; }
        m2 /= n; m3 /= n;
        stdDev = Math.Sqrt(m2 * n / (n - 1));
        if (m2 <= 1e-300 || stdDev <= 1e-12 * Math.Max(1, Math.Abs(mean))) { skewness = 0; return null; }
        skewness = m3 / Math.Pow(m2, 1.5);
        double g = Math.Clamp(skewness, -MaxSkewness, MaxSkewness);
        double a = Math.Pow(Math.Abs(g), 2.0 / 3), b = Math.Pow((4 - Math.PI) / 2, 2.0 / 3);
        double delta = Math.Sign(g) * Math.Sqrt(Math.PI / 2 * a / (a + b));
        double shape = delta / Math.Sqrt(1 - delta * delta);
        double scale = stdDev / Math.Sqrt(1 - 2 * delta * delta / Math.PI);
        double location = mean - scale * delta * Math.Sqrt(2 / Math.PI);
        return new SkewNormal(location, scale, shape);
    }

    /// <summary>log P(X > x).</summary>
    public double LogSurvival(double x)
    {
        double z = (x - Location) / Scale;
        if (z > 0) return Math.Log(2) + LogTail(z, Shape, right: true);
        return Math.Log(Math.Max(0, 1 - 2 * Math.Exp(LogTail(z, Shape, right: false))));
    }

    public double Survival(double x) => Math.Exp(LogSurvival(x));

    public double Cdf(double x) => -double.ExpM1(LogSurvival(x));

    /// <summary>
    /// log ∫ φ(t)Φ(αt) dt over t ≥ z (right) or t ≤ z (left). With t = z ± u the integrand is φ(z)Φ(αz) times
    /// exp(∓zu − u²/2)·Φ(α(z ± u))/Φ(αz), which starts at 1 and decays on a scale of at most 1: composite Simpson
    /// (4096 intervals) over 50 times the steepest scale, with the factor φ(z)Φ(αz) kept as a logarithm so deep tails do not underflow.
    /// </summary>
    static double LogTail(double z, double alpha, bool right)
    {
        double sign = right ? 1 : -1, start = LogNormalCdf(alpha * z);
        // decay rates: |z| from the exponential, and where Φ falls away from z, |α|·(φ/Φ)(αz) at first and Gaussian width 1/|α|
        double falling = sign * alpha < 0 ? Math.Abs(alpha) * Math.Max(1, Math.Exp(LogPhi(alpha * z) - start)) : 0;
        double steepest = Math.Max(1, Math.Max(Math.Abs(z), falling));
        double upper = Math.Min(12, 50 / steepest);
        const int intervals = 4096;
        double h = upper / intervals, sum = 0;
        for (int i = 0; i <= intervals; i++)
        {
            double u = i * h;
            double f = Math.Exp(-sign * z * u - u * u / 2 + LogNormalCdf(alpha * (z + sign * u)) - start);
            sum += f * (i == 0 || i == intervals ? 1 : i % 2 == 1 ? 4 : 2);
        }
        return LogPhi(z) + start + Math.Log(sum * h / 3);
    }

    static double LogPhi(double z) => -z * z / 2 - 0.5 * Math.Log(2 * Math.PI);

    /// <summary>Standard normal CDF Φ(x).</summary>
    public static double NormalCdf(double x) => 0.5 * Erfc(-x / Math.Sqrt(2));

    /// <summary>log Φ(x), accurate far into the lower tail.</summary>
    public static double LogNormalCdf(double x)
    {
        double y = -x / Math.Sqrt(2);
        if (y >= 2) return -Math.Log(2) + LogErfc(y);
        return Math.Log(0.5 * Erfc(y));
    }

    /// <summary>
    /// Complementary error function: the series erf(x) = (2/√π) e^{−x²} Σ 2ⁿx^{2n+1}/(2n+1)!! below 2, the continued
    /// fraction √π e^{x²} erfc(x) = 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))) from 2 on (relative error ~1e-15).
    /// </summary>
    public static double Erfc(double x)
    {
        if (double.IsNaN(x)) return double.NaN;
        if (x < 0) return 2 - Erfc(-x);
        if (x < 2) return 1 - Erf(x);
        return Math.Exp(LogErfc(x));
    }

    static double Erf(double x)
    {
        double term = x, sum = x;
        for (int n = 1; n < 200 && Math.Abs(term) > 1e-17 * Math.Abs(sum); n++)
        {
            term *= 2 * x * x / (2 * n + 1);
            sum += term;
        }
        return 2 / Math.Sqrt(Math.PI) * Math.Exp(-x * x) * sum;
    }

    /// <summary>log erfc(x) for x ≥ 2 from the continued fraction (no underflow).</summary>
    static double LogErfc(double x)
    {
        double t = x;
        for (int n = 100; n >= 1; n--) t = x + n / 2.0 / t;
        return -x * x - Math.Log(t) - 0.5 * Math.Log(Math.PI);
    }
}
