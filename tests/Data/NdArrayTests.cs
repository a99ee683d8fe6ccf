using OnnxUnlearn.Data;

namespace OnnxUnlearn.Tests.Data;

public class NdArrayTests
{
    private static NdArray Grid() => NdArray.FromInt32([0, 1, 10, 11, 20, 21, 30, 31], 4, 2);

    [Fact]
    public void FactoryRejectsShapeThatDoesNotMatchData()
    {
        Assert.Throws<ArgumentException>(() => NdArray.FromFloat([1f, 2f, 3f], 2, 2));
        Assert.Throws<ArgumentException>(() => NdArray.FromFloat([], -1));
    }

    [Fact]
    public void ScalarHasOneElementAndNoRows()
    {
        var a = NdArray.FromDouble([4.5]);
        Assert.Empty(a.Shape);
        Assert.Equal(1, a.Length);
        Assert.Throws<InvalidOperationException>(() => a.Rows);
    }

    [Fact]
    public void SliceRowsCopiesWholeRows()
    {
        var a = Grid();
        var s = a.SliceRows(1, 2);
        Assert.Equal([2L, 2L], s.Shape);
        Assert.Equal([10, 11, 20, 21], (int[])s.Data);
        ((int[])s.Data)[0] = -1;
        Assert.Equal(10, ((int[])a.Data)[2]);
        Assert.Equal(0, a.SliceRows(4, 0).Rows);
        Assert.Throws<ArgumentOutOfRangeException>(() => a.SliceRows(3, 2));
    }

    [Fact]
    public void TakeRowsGathersInGivenOrder()
    {
        var t = Grid().TakeRows([3, 0, 3]);
        Assert.Equal([3L, 2L], t.Shape);
        Assert.Equal([30, 31, 0, 1, 30, 31], (int[])t.Data);
        Assert.Throws<ArgumentOutOfRangeException>(() => Grid().TakeRows([4]));
    }

    [Fact]
    public void ConcatRowsJoinsAlongAxisZero()
    {
        var a = NdArray.FromFloat([1, 2, 3], 1, 3);
        var b = NdArray.FromFloat([4, 5, 6, 7, 8, 9], 2, 3);
        var c = NdArray.ConcatRows([a, b]);
        Assert.Equal([3L, 3L], c.Shape);
        Assert.Equal([1f, 2, 3, 4, 5, 6, 7, 8, 9], (float[])c.Data);
        Assert.Throws<ArgumentException>(() => NdArray.ConcatRows([a, NdArray.FromFloat([1, 2], 1, 2)]));
        Assert.Throws<ArgumentException>(() => NdArray.ConcatRows([a, NdArray.FromDouble([1, 2, 3], 1, 3)]));
    }

    [Fact]
    public void ConversionsCoverEveryType()
    {
        Assert.Equal([1f, 0f, 1f], NdArray.FromBool([true, false, true], 3).ToFloat());
        Assert.Equal([255f, 7f], NdArray.FromUInt8([255, 7], 2).ToFloat());
        Assert.Equal([-3.0, 1e12], NdArray.FromInt64([-3, 1_000_000_000_000], 2).ToDouble());
        Assert.Equal([0.5, -2.0], NdArray.FromFloat([0.5f, -2f], 2).ToDouble());
        Assert.Equal([2L, -7L], NdArray.FromDouble([2.0, -7.0], 2).ToInt64());
        Assert.Equal([int.MinValue, 5L], NdArray.FromInt32([int.MinValue, 5], 2).ToInt64());
    }

    [Fact]
    public void ToInt64RejectsFractionalValues()
    {
        Assert.Throws<InvalidOperationException>(() => NdArray.FromFloat([1f, 2.5f], 2).ToInt64());
        Assert.Throws<InvalidOperationException>(() => NdArray.FromDouble([1e19], 1).ToInt64());
    }

    [Fact]
    public void ToFloatReturnsACopy()
    {
        var a = NdArray.FromFloat([1f], 1);
        a.ToFloat()[0] = 9f;
        Assert.Equal(1f, ((float[])a.Data)[0]);
    }
}
