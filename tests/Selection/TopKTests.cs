using OnnxUnlearn.Onnx;
using OnnxUnlearn.Selection;

namespace OnnxUnlearn.Tests.Selection;

public class TopKTests
{
    [Fact]
    public void NaNIsNeverSelectedLargestFirst() => Assert.Equal([2], TopK.Indices([1, double.NaN, 3, 2], 1));

    [Fact]
    public void NaNIsNeverSelectedSmallestFirst() => Assert.Equal([0], TopK.Indices([1, double.NaN, 3, 2], 1, largest: false));

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AllNaNSelectsNothing(bool largest) => Assert.Empty(TopK.Indices([double.NaN, double.NaN, double.NaN], 2, largest));

    [Theory]
    [InlineData(true, new[] { 0, 2, 3 })]
    [InlineData(false, new[] { 0, 2, 3 })]
    public void FewerNonNaNThanKSelectsOnlyThose(bool largest, int[] expected) =>
        Assert.Equal(expected, TopK.Indices([1, double.NaN, 3, 2, double.NaN], 4, largest));

    [Fact]
    public void TiesGoToTheLowerIndex()
    {
        double[] scores = [5, 7, 5, 7, 5];
        Assert.Equal([1, 3], TopK.Indices(scores, 2));
        Assert.Equal([0, 1, 3], TopK.Indices(scores, 3));
        Assert.Equal([0, 2], TopK.Indices(scores, 2, largest: false));
        Assert.Equal([0, 2, 4], TopK.Indices(scores, 3, largest: false));
    }

    [Fact]
    public void InfinitiesRankAsNumbersAndTheResultIsAscendingByIndex()
    {
        double[] scores = [0, double.PositiveInfinity, -1, double.NegativeInfinity, double.NaN, 4];
        Assert.Equal([1, 5], TopK.Indices(scores, 2));
        Assert.Equal([2, 3], TopK.Indices(scores, 2, largest: false));
    }

    [Fact]
    public void FloatScoresRankLikeDoubles() =>
        Assert.Equal([2, 3], TopK.Indices([1f, float.NaN, 3f, 2f], 2));

    [Fact]
    public void KIsClampedToTheScores()
    {
        Assert.Empty(TopK.Indices([1, 2], 0));
        Assert.Empty(TopK.Indices([1, 2], -3));
        Assert.Equal([0, 1], TopK.Indices([1, 2], 5));
    }

    [Fact]
    public void JaccardCountsTheUnionOfSetsShortenedByNaN()
    {
        // top-2 of a: {2, 3}; of b: {2} (its only non-NaN score): 1 shared of 2 in the union.
        double[] a = [1, 0, 3, 2], b = [double.NaN, double.NaN, 3, double.NaN];
        Assert.Equal(0.5, TopK.Jaccard(a, b, 0.5));
        Assert.Equal(1.0, TopK.Jaccard(a, a, 0.5));
        // {2, 3} against {0, 1}: nothing shared.
        Assert.Equal(0.0, TopK.Jaccard(a, [4, 5, 0, 0], 0.5));
    }

    [Fact]
    public void JaccardOfTwoEmptySetsIsOne() =>
        Assert.Equal(1.0, TopK.Jaccard([double.NaN, double.NaN], [double.NaN, double.NaN], 0.5));

    static ParameterLayout Layout(params long[] sizes) => new(sizes.Select((n, i) =>
        new Parameter($"t{i}", ParameterStorage.Initializer, DataTypes.Float, [n], false, true, null)).ToList());

    [Fact]
    public void MasksByScoreSkipsNaNGloballyAndPerTensor()
    {
        var layout = Layout(4, 4);
        float[] scores = [1, float.NaN, 3, 2, float.NaN, float.NaN, float.NaN, 9];
        Assert.Equal([2, 7], Masks.ByScore(scores, 2, layout, perTensor: false));
        Assert.Equal([0, 2, 3, 7], Masks.ByScore(scores, 4, layout, perTensor: false, largest: false));
        // A share of 4/8 is 2 of each tensor: t1 has only one non-NaN score, so it gives one.
        Assert.Equal([2, 3, 7], Masks.ByScore(scores, 4, layout, perTensor: true));
        Assert.Equal([0, 3, 7], Masks.ByScore(scores, 4, layout, perTensor: true, largest: false));
    }
}
