using Google.Protobuf;
using OnnxUnlearn.Tests;
using Onnx;
using OnnxUnlearn.Data;
using OnnxUnlearn.Tests.Corpus;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxUnlearn.Tests.Data;

public class TensorFileTests
{
    private static TensorProto Proto(DataType type, long[] dims, string name = "t")
    {
        var t = new TensorProto { Name = name, DataType = (int)type };
        t.Dims.AddRange(dims);
        return t;
    }

    private static TensorProto Raw(DataType type, long[] dims, params byte[] raw)
    {
        var t = Proto(type, dims);
        t.RawData = ByteString.CopyFrom(raw);
        return t;
    }

    public static TheoryData<NdArray> OneOfEachType() => new()
    {
        NdArray.FromFloat([1.5f, -0f, float.NegativeInfinity, 3e-40f, 7f, -1e20f], 3, 2),
        NdArray.FromDouble([Math.PI, -1e-300], 2),
        NdArray.FromInt64([long.MinValue, 12, long.MaxValue], 1, 3),
        NdArray.FromInt32([-7, int.MaxValue], 2),
        NdArray.FromUInt8([0, 200, 255], 3),
        NdArray.FromBool([false, true, true], 3),
        NdArray.FromFloat([2.5f]),
    };

    [Theory]
    [MemberData(nameof(OneOfEachType))]
    public void RoundTripsEveryTypeThroughAFile(NdArray a)
    {
        using var dir = new TempDir();
        string path = dir.File("input_0.pb");
        TensorFile.Write(path, "input", a);
        var (name, back) = TensorFile.Read(path);
        Assert.Equal("input", name);
        Assert.Equal(a.Type, back.Type);
        Assert.Equal(a.Shape, back.Shape);
        Assert.Equal(a.Data, back.Data);
    }

    [Fact]
    public void WritesRawDataLikeNumpyHelper()
    {
        var t = TensorFile.ToTensorProto("w", NdArray.FromFloat([1f, -2f], 2, 1));
        Assert.Equal("w", t.Name);
        Assert.Equal((int)DataType.Float, t.DataType);
        Assert.Equal([2L, 1L], t.Dims);
        Assert.Empty(t.FloatData);
        Assert.Equal(new byte[] { 0, 0, 0x80, 0x3F, 0, 0, 0, 0xC0 }, t.RawData.ToByteArray());
        Assert.Equal((int)DataType.Bool, TensorFile.ToTensorProto("m", NdArray.FromBool([true], 1)).DataType);
    }

    [Fact]
    public void ReadsFloatFromRawDataAndFromFloatData()
    {
        var raw = Raw(DataType.Float, [2, 2], [0, 0, 0x80, 0x3F, 0, 0, 0, 0xC0, 0, 0, 0, 0, 0, 0, 0x20, 0x41]);
        var typed = Proto(DataType.Float, [2, 2]);
        typed.FloatData.Add([1f, -2f, 0f, 10f]);
        foreach (var t in new[] { raw, typed })
        {
            var a = TensorFile.ToNdArray(t);
            Assert.Equal(ElementType.Float32, a.Type);
            Assert.Equal([2L, 2L], a.Shape);
            Assert.Equal([1f, -2f, 0f, 10f], (float[])a.Data);
        }
    }

    [Fact]
    public void ReadsTypedFields()
    {
        var i64 = Proto(DataType.Int64, [3]);
        i64.Int64Data.Add([-1, 1L << 50, 3]);
        Assert.Equal([-1L, 1L << 50, 3L], (long[])TensorFile.ToNdArray(i64).Data);

        var f64 = Proto(DataType.Double, [2]);
        f64.DoubleData.Add([0.1, -8.0]);
        Assert.Equal([0.1, -8.0], (double[])TensorFile.ToNdArray(f64).Data);

        var i32 = Proto(DataType.Int32, [2]);
        i32.Int32Data.Add([int.MinValue, 4]);
        Assert.Equal([int.MinValue, 4], (int[])TensorFile.ToNdArray(i32).Data);

        // uint8 and bool sit one per entry in int32_data.
        var u8 = Proto(DataType.Uint8, [3]);
        u8.Int32Data.Add([0, 17, 255]);
        Assert.Equal([0, 17, 255], (byte[])TensorFile.ToNdArray(u8).Data);

        var b = Proto(DataType.Bool, [3]);
        b.Int32Data.Add([1, 0, 1]);
        Assert.Equal([true, false, true], (bool[])TensorFile.ToNdArray(b).Data);
    }

    [Fact]
    public void ReadsInt64AndBoolFromRawData()
    {
        var i64 = TensorFile.ToNdArray(Raw(DataType.Int64, [1], [0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]));
        Assert.Equal([-2L], (long[])i64.Data);
        var b = TensorFile.ToNdArray(Raw(DataType.Bool, [3], [1, 0, 1]));
        Assert.Equal([true, false, true], (bool[])b.Data);
    }

    [Fact]
    public void WidensNarrowIntegersToInt32()
    {
        var i8 = TensorFile.ToNdArray(Raw(DataType.Int8, [3], [0xFF, 0x80, 0x7F]));
        Assert.Equal(ElementType.Int32, i8.Type);
        Assert.Equal([-1, -128, 127], (int[])i8.Data);
        Assert.Equal([-2, 256], (int[])TensorFile.ToNdArray(Raw(DataType.Int16, [2], [0xFE, 0xFF, 0x00, 0x01])).Data);
        Assert.Equal([65535, 1], (int[])TensorFile.ToNdArray(Raw(DataType.Uint16, [2], [0xFF, 0xFF, 0x01, 0x00])).Data);

        var typed = Proto(DataType.Int8, [2]);
        typed.Int32Data.Add([-5, 6]);
        Assert.Equal([-5, 6], (int[])TensorFile.ToNdArray(typed).Data);
    }

    // 0x3C00 = 1.0, 0xC000 = -2.0, 0x3555 = 0.25 * (1 + 341/1024), 0x0001 = 2^-24 (smallest subnormal), 0x7C00 = +inf.
    private static readonly ushort[] HalfBits = [0x3C00, 0xC000, 0x3555, 0x0001, 0x7C00, 0xFBFF];
    private static readonly float[] HalfValues = [1f, -2f, 0.333251953125f, 5.9604644775390625e-8f, float.PositiveInfinity, -65504f];

    [Fact]
    public void ConvertsFloat16FromRawDataAndInt32Data()
    {
        var raw = Raw(DataType.Float16, [2, 3], [.. HalfBits.SelectMany(BitConverter.GetBytes)]);
        var typed = Proto(DataType.Float16, [2, 3]);
        typed.Int32Data.Add(HalfBits.Select(b => (int)b));
        foreach (var t in new[] { raw, typed })
        {
            var a = TensorFile.ToNdArray(t);
            Assert.Equal(ElementType.Float32, a.Type);
            Assert.Equal([2L, 3L], a.Shape);
            Assert.Equal(HalfValues, (float[])a.Data);
        }
    }

    // bfloat16 is the top half of a float32: 0x3F80 = 1.0, 0xC000 = -2.0, 0x4049 = 2 * (1 + 0x49/128) = 3.140625,
    // 0x0080 = 2^-126 (smallest normal), 0xFF80 = -inf.
    private static readonly ushort[] BfloatBits = [0x3F80, 0xC000, 0x4049, 0x0080, 0xFF80];
    private static readonly float[] BfloatValues = [1f, -2f, 3.140625f, 1.17549435e-38f, float.NegativeInfinity];

    [Fact]
    public void ConvertsBfloat16FromRawDataAndInt32Data()
    {
        var raw = Raw(DataType.Bfloat16, [5], [.. BfloatBits.SelectMany(BitConverter.GetBytes)]);
        var typed = Proto(DataType.Bfloat16, [5]);
        typed.Int32Data.Add(BfloatBits.Select(b => (int)b));
        foreach (var t in new[] { raw, typed })
            Assert.Equal(BfloatValues, (float[])TensorFile.ToNdArray(t).Data);
    }

    [Fact]
    public void ExternalDataIsAUserErrorNamingFileAndTensor()
    {
        using var dir = new TempDir();
        string path = dir.File("weights.pb");
        var t = Proto(DataType.Float, [4], "fc.weight");
        t.DataLocation = TensorProto.Types.DataLocation.External;
        t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "weights.bin" });
        File.WriteAllBytes(path, t.ToByteArray());
        var e = Assert.Throws<UserError>(() => TensorFile.Read(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("tensor 'fc.weight' uses external data; load it through the model loader", e.Message);
    }

    [Theory]
    [InlineData(DataType.String, "String")]
    [InlineData(DataType.Complex64, "Complex64")]
    [InlineData(DataType.Uint64, "Uint64")]
    public void UnsupportedTypesAreUserErrors(DataType type, string typeName)
    {
        var t = Proto(type, [1], "odd");
        var e = Assert.Throws<UserError>(() => TensorFile.ToNdArray(t));
        Assert.Contains("tensor 'odd'", e.Message);
        Assert.Contains($"element type {typeName}", e.Message);
    }

    [Fact]
    public void ValueCountMismatchIsAUserError()
    {
        var typed = Proto(DataType.Float, [2, 2], "x");
        typed.FloatData.Add([1f, 2f, 3f]);
        Assert.Contains("tensor 'x' holds 3 values but its dims need 4", Assert.Throws<UserError>(() => TensorFile.ToNdArray(typed)).Message);

        var raw = Raw(DataType.Int32, [2], 1, 0, 0, 0);
        Assert.Contains("4 bytes of raw_data but its dims need 8", Assert.Throws<UserError>(() => TensorFile.ToNdArray(raw)).Message);

        var half = Raw(DataType.Float16, [2], 0, 0x3C);
        Assert.Contains("2 bytes of raw_data but its dims need 4", Assert.Throws<UserError>(() => TensorFile.ToNdArray(half)).Message);
    }

    [Fact]
    public void NegativeDimIsAUserError()
    {
        var e = Assert.Throws<UserError>(() => TensorFile.ToNdArray(Proto(DataType.Float, [-1], "neg")));
        Assert.Contains("tensor 'neg' has invalid or too large dims (-1)", e.Message);
    }

    [Fact]
    public void MissingAndGarbageFilesAreUserErrors()
    {
        using var dir = new TempDir();
        string missing = dir.File("missing.pb");
        Assert.Contains(missing, Assert.Throws<UserError>(() => TensorFile.Read(missing)).Message);

        string garbage = dir.File("garbage.pb");
        File.WriteAllBytes(garbage, [0xFF, 0xFF, 0xFF]);
        var e = Assert.Throws<UserError>(() => TensorFile.Read(garbage));
        Assert.Contains(garbage, e.Message);
        Assert.Contains("not a serialized ONNX TensorProto", e.Message);
    }

    [CorpusFact]
    public void ReadsOnnxCorpusAddTest()
    {
        string set = Path.Combine(OnnxCorpus.Root, "node", "test_add", "test_data_set_0");
        var (name, x) = TensorFile.Read(Path.Combine(set, "input_0.pb"));
        var (_, y) = TensorFile.Read(Path.Combine(set, "input_1.pb"));
        var (_, sum) = TensorFile.Read(Path.Combine(set, "output_0.pb"));
        Assert.Equal("x", name);
        Assert.Equal(ElementType.Float32, x.Type);
        Assert.Equal([3L, 4L, 5L], x.Shape);
        float[] xs = (float[])x.Data, ys = (float[])y.Data;
        Assert.Equal(xs.Zip(ys, (a, b) => a + b), (float[])sum.Data);
    }

    [CorpusFact]
    public void ReadsOnnxCorpusFloat16AsTheCastOutput()
    {
        string set = Path.Combine(OnnxCorpus.Root, "node", "test_cast_FLOAT16_to_FLOAT", "test_data_set_0");
        var (_, half) = TensorFile.Read(Path.Combine(set, "input_0.pb"));
        var (_, expected) = TensorFile.Read(Path.Combine(set, "output_0.pb"));
        Assert.Equal([3L, 4L], half.Shape);
        Assert.Equal((float[])expected.Data, (float[])half.Data);
    }
}
