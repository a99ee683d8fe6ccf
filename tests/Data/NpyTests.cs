using System.Buffers.Binary;
using OnnxUnlearn.Tests;
using System.IO.Compression;
using System.Text;
using OnnxUnlearn.Data;

namespace OnnxUnlearn.Tests.Data;

public class NpyTests
{
    public static TheoryData<NdArray> OneOfEachType() => new()
    {
        NdArray.FromFloat([1.5f, -0f, float.NaN, float.MaxValue, 1e-45f, -7.25f], 2, 3),
        NdArray.FromDouble([double.Epsilon, -1e300, 0.1], 3),
        NdArray.FromInt64([long.MinValue, long.MaxValue, 0, -1], 2, 1, 2),
        NdArray.FromInt32([int.MinValue, int.MaxValue], 2),
        NdArray.FromUInt8([0, 1, 254, 255], 4, 1),
        NdArray.FromBool([true, false, false, true, true, false], 3, 2),
        NdArray.FromDouble([42.5]),
        NdArray.FromFloat([], 0, 5),
    };

    [Theory]
    [MemberData(nameof(OneOfEachType))]
    public void RoundTripsEveryType(NdArray a)
    {
        var ms = new MemoryStream();
        Npy.Write(ms, a);
        Assert.Equal(0, HeaderEnd(ms.ToArray()) % 64);
        ms.Position = 0;
        var back = Npy.Read(ms, "mem.npy");
        Assert.Equal(a.Type, back.Type);
        Assert.Equal(a.Shape, back.Shape);
        Assert.Equal(a.Data, back.Data);
    }

    [Fact]
    public void WritesNumpyHeaderLayout()
    {
        var ms = new MemoryStream();
        Npy.Write(ms, NdArray.FromFloat([1f, 2f, 3f, 4f, 5f, 6f], 2, 3));
        byte[] bytes = ms.ToArray();

        Assert.Equal(Magic, bytes[..6]);
        Assert.Equal(1, bytes[6]);
        Assert.Equal(0, bytes[7]);
        int headerLength = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(8));
        Assert.Equal(0, (10 + headerLength) % 64);
        string header = Encoding.Latin1.GetString(bytes, 10, headerLength);
        Assert.Equal("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", header.TrimEnd(' ', '\n'));
        Assert.EndsWith(" \n", header);
        Assert.Equal(10 + headerLength + 6 * 4, bytes.Length);
        Assert.Equal(6f, BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(10 + headerLength + 20)));
    }

    /// <summary>numpy.savez stores members uncompressed, so each must equal what we write for the same array.</summary>
    [Fact]
    public void WriteMatchesNumpyBytesExactly()
    {
        using var zip = ZipFile.OpenRead(Fixtures.Npy("stored.npz"));
        Assert.Equal(7, zip.Entries.Count);
        foreach (var entry in zip.Entries)
        {
            var numpyBytes = new MemoryStream();
            using (var s = entry.Open()) s.CopyTo(numpyBytes);
            numpyBytes.Position = 0;
            var ours = new MemoryStream();
            Npy.Write(ours, Npy.Read(numpyBytes, entry.FullName));
            Assert.True(numpyBytes.ToArray().AsSpan().SequenceEqual(ours.ToArray()), $"{entry.FullName} differs from numpy's bytes");
        }
    }

    [Fact]
    public void ReadsVersion2Header()
    {
        using var f = File.OpenRead(Fixtures.Npy("v2.npy"));
        var a = Npy.Read(f, "v2.npy");
        Assert.Equal(ElementType.Int32, a.Type);
        Assert.Equal([2L, 2L], a.Shape);
        Assert.Equal([1, 2, 3, 4], (int[])a.Data);
    }

    [Fact]
    public void ReadsVersion3Utf8Header()
    {
        byte[] bytes = WithHeader(3, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", [.. BitConverter.GetBytes(-9L), .. BitConverter.GetBytes(70L)]);
        var a = Npy.Read(new MemoryStream(bytes), "v3.npy");
        Assert.Equal([2L], a.Shape);
        Assert.Equal([-9L, 70L], (long[])a.Data);
    }

    [Fact]
    public void AcceptsLittleEndianByteDescr()
    {
        byte[] bytes = WithHeader(1, "{'descr': '<u1', 'fortran_order': False, 'shape': (3,), }", [9, 8, 7]);
        Assert.Equal([9, 8, 7], (byte[])Npy.Read(new MemoryStream(bytes), "u1.npy").Data);
    }

    [Theory]
    [InlineData("fortran.npy", "np.ascontiguousarray")]
    [InlineData("bigendian.npy", "astype('<f4')")]
    [InlineData("object.npy", "object")]
    public void RejectsUnsupportedNumpyFiles(string file, string hint)
    {
        using var f = File.OpenRead(Fixtures.Npy(file));
        var e = Assert.Throws<UserError>(() => Npy.Read(f, file));
        Assert.Contains(file, e.Message);
        Assert.Contains(hint, e.Message);
    }

    [Theory]
    [InlineData("<c8")]
    [InlineData(">f2")]
    [InlineData("<U5")]
    public void RejectsUnsupportedDtypeByName(string descr)
    {
        byte[] bytes = WithHeader(1, $"{{'descr': '{descr}', 'fortran_order': False, 'shape': (1,), }}", new byte[16]);
        var e = Assert.Throws<UserError>(() => Npy.Read(new MemoryStream(bytes), "odd.npy"));
        Assert.Contains("odd.npy", e.Message);
        Assert.Contains($"'{descr}' is not supported", e.Message);
    }

    [Fact]
    public void ReadsFloat16WidenedToFloat32()
    {
        // 1.0 = 0x3C00, -2.0 = 0xC000, 65504 = 0x7BFF (largest float16), 2^-24 = 0x0001 (smallest subnormal): all exact in float32.
        byte[] bytes = WithHeader(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 2), }", [0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B, 0x01, 0x00]);
        var a = Npy.Read(new MemoryStream(bytes), "half.npy");
        Assert.Equal(ElementType.Float32, a.Type);
        Assert.Equal([2L, 2], a.Shape);
        Assert.Equal([1f, -2f, 65504f, MathF.Pow(2, -24)], (float[])a.Data);
    }

    [Fact]
    public void RejectsTruncatedFloat16Data()
    {
        byte[] bytes = WithHeader(1, "{'descr': '<f2', 'fortran_order': False, 'shape': (3,), }", [0x00, 0x3C, 0x00, 0xC0]);
        var e = Assert.Throws<UserError>(() => Npy.Read(new MemoryStream(bytes), "half.npy"));
        Assert.Contains("half.npy: file is truncated: shape (3) needs 6 data bytes but only 4", e.Message);
    }

    [Fact]
    public void RejectsStructuredDtype()
    {
        byte[] bytes = WithHeader(1, "{'descr': [('x', '<f4')], 'fortran_order': False, 'shape': (1,), }", new byte[4]);
        var e = Assert.Throws<UserError>(() => Npy.Read(new MemoryStream(bytes), "rec.npy"));
        Assert.Contains("rec.npy: structured", e.Message);
    }

    [Fact]
    public void RejectsTruncatedData()
    {
        var ms = new MemoryStream();
        Npy.Write(ms, NdArray.FromInt64([1, 2, 3], 3));
        byte[] cut = ms.ToArray()[..^4];
        var e = Assert.Throws<UserError>(() => Npy.Read(new MemoryStream(cut), "cut.npy"));
        Assert.Contains("cut.npy: file is truncated", e.Message);
        Assert.Contains("needs 24 data bytes but only 20", e.Message);
    }

    [Fact]
    public void RejectsTruncatedDataOnUnseekableStream()
    {
        var ms = new MemoryStream();
        Npy.Write(ms, NdArray.FromInt64([1, 2, 3], 3));
        var unseekable = new DeflateStream(new MemoryStream(Deflate(ms.ToArray()[..^4])), CompressionMode.Decompress);
        var e = Assert.Throws<UserError>(() => Npy.Read(unseekable, "cut.npy"));
        Assert.Contains("needs 24 data bytes but only 20", e.Message);
    }

    [Fact]
    public void RejectsTruncatedHeader()
    {
        var ms = new MemoryStream();
        Npy.Write(ms, NdArray.FromInt32([1], 1));
        var e = Assert.Throws<UserError>(() => Npy.Read(new MemoryStream(ms.ToArray()[..30]), "short.npy"));
        Assert.Contains("short.npy: file is truncated inside the .npy header", e.Message);
    }

    [Fact]
    public void RejectsBadMagic()
    {
        var e = Assert.Throws<UserError>(() => Npy.Read(new MemoryStream("x,y\n1,2\n"u8.ToArray()), "data.csv"));
        Assert.Contains("data.csv: not a .npy array", e.Message);
    }

    [Fact]
    public void RejectsUnknownVersion()
    {
        byte[] bytes = WithHeader(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", new byte[4]);
        bytes[6] = 4;
        var e = Assert.Throws<UserError>(() => Npy.Read(new MemoryStream(bytes), "v4.npy"));
        Assert.Contains("v4.npy: .npy format version 4.0", e.Message);
    }

    [Fact]
    public void RejectsShapeTooLargeForDotNet()
    {
        byte[] bytes = WithHeader(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 100000), }", []);
        var e = Assert.Throws<UserError>(() => Npy.Read(new MemoryStream(bytes), "huge.npy"));
        Assert.Contains("huge.npy: array of shape (100000, 100000, 100000)", e.Message);
    }

    private static readonly byte[] Magic = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    /// <summary>Byte offset where the data starts.</summary>
    private static int HeaderEnd(byte[] npy) => npy[6] == 1
        ? 10 + BinaryPrimitives.ReadUInt16LittleEndian(npy.AsSpan(8))
        : 12 + (int)BinaryPrimitives.ReadUInt32LittleEndian(npy.AsSpan(8));

    /// <summary>A hand-built .npy file; versions 2 and 3 use a 4-byte header length.</summary>
    private static byte[] WithHeader(byte major, string dict, byte[] data)
    {
        byte[] header = Encoding.UTF8.GetBytes(dict + "\n");
        byte[] length = major == 1 ? BitConverter.GetBytes((ushort)header.Length) : BitConverter.GetBytes((uint)header.Length);
        return [.. Magic, major, 0, .. length, .. header, .. data];
    }

    private static byte[] Deflate(byte[] data)
    {
        var ms = new MemoryStream();
        using (var d = new DeflateStream(ms, CompressionLevel.Fastest)) d.Write(data);
        return ms.ToArray();
    }
}
