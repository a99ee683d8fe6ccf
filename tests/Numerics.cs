namespace OnnxUnlearn.Tests;

/// <summary>The error measures that tests hold against their tolerances, summed in double.</summary>
public static class Numerics
{
    /// <summary>‖actual − expected‖₂ / ‖expected‖₂.</summary>
    public static double RelativeL2(IReadOnlyList<double> expected, IReadOnlyList<float> actual) =>
        Math.Sqrt(SquaredDistance(expected, actual) / expected.Sum(e => e * e));

    public static double RelativeL2(IReadOnlyList<float> expected, IReadOnlyList<float> actual) =>
        RelativeL2(expected.Select(e => (double)e).ToArray(), actual);

    /// <summary>‖actual − expected‖₂.</summary>
    public static double L2Distance(IReadOnlyList<double> expected, IReadOnlyList<float> actual) => Math.Sqrt(SquaredDistance(expected, actual));

    public static double L2Norm(IReadOnlyList<double> x) => Math.Sqrt(x.Sum(e => e * e));

    static double SquaredDistance(IReadOnlyList<double> expected, IReadOnlyList<float> actual)
    {
        // Zip would drop the tail of the longer one and measure a shorter error.
        if (expected.Count != actual.Count) throw new ArgumentException($"{actual.Count} values against {expected.Count} expected");
        return expected.Zip(actual, (e, a) => (e - a) * (e - a)).Sum();
    }
}
