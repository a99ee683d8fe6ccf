using System.IO.Compression;
using OnnxUnlearn.Tests;
using OnnxUnlearn.Data;

namespace OnnxUnlearn.Tests.Data;

public class NpzTests
{
    [Theory]
    [InlineData("stored.npz")]
    [InlineData("compressed.npz")]
    public void ReadsNumpyArchives(string file)
    {
        var arrays = Npz.Read(Fixtures.Npy(file));
        Assert.Equal(["f32", "f64", "i64", "i32", "u8", "b", "scalar"], arrays.Keys);

        Assert.Equal(ElementType.Float32, arrays["f32"].Type);
        Assert.Equal([2L, 3L], arrays["f32"].Shape);
        Assert.Equal([1.5f, -2f, 3.25f, 0f, 1e-3f, -7.5f], (float[])arrays["f32"].Data);

        Assert.Equal(ElementType.Float64, arrays["f64"].Type);
        Assert.Equal([3L], arrays["f64"].Shape);
        Assert.Equal([0.1, -2.5, 1e300], (double[])arrays["f64"].Data);

        Assert.Equal(ElementType.Int64, arrays["i64"].Type);
        Assert.Equal([2L, 2L], arrays["i64"].Shape);
        Assert.Equal([-(1L << 40), 0L, 7L, 1L << 62], (long[])arrays["i64"].Data);

        Assert.Equal(ElementType.Int32, arrays["i32"].Type);
        Assert.Equal([-5, 0, int.MaxValue], (int[])arrays["i32"].Data);

        Assert.Equal(ElementType.UInt8, arrays["u8"].Type);
        Assert.Equal([1L, 3L], arrays["u8"].Shape);
        Assert.Equal([0, 128, 255], (byte[])arrays["u8"].Data);

        Assert.Equal(ElementType.Bool, arrays["b"].Type);
        Assert.Equal([true, false, true, true], (bool[])arrays["b"].Data);

        Assert.Equal(ElementType.Float64, arrays["scalar"].Type);
        Assert.Empty(arrays["scalar"].Shape);
        Assert.Equal([42.5], (double[])arrays["scalar"].Data);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void RoundTripsInGivenOrder(bool compress)
    {
        using var dir = new TempDir();
        string path = dir.File("out.npz");
        var arrays = new Dictionary<string, NdArray>
        {
            ["z_last_alphabetically"] = NdArray.FromFloat([.. Enumerable.Repeat(0.25f, 1000)], 10, 100),
            ["labels"] = NdArray.FromInt64([3, 1, 4], 3),
            ["mask"] = NdArray.FromBool([true, false], 2),
            ["count"] = NdArray.FromInt32([7]),
        };
        Npz.Write(path, arrays, compress);

        var back = Npz.Read(path);
        Assert.Equal(arrays.Keys, back.Keys);
        foreach (var (key, a) in arrays)
        {
            Assert.Equal(a.Type, back[key].Type);
            Assert.Equal(a.Shape, back[key].Shape);
            Assert.Equal(a.Data, back[key].Data);
        }

        using var zip = ZipFile.OpenRead(path);
        var entry = zip.GetEntry("z_last_alphabetically.npy")!;
        // Stored members (numpy.savez) keep their size; deflated ones (savez_compressed) shrink.
        if (compress) Assert.True(entry.CompressedLength < entry.Length / 4);
        else Assert.Equal(entry.Length, entry.CompressedLength);
    }

    [Fact]
    public void OverwritesAtomicallyWithoutLeavingTempFiles()
    {
        using var dir = new TempDir();
        string path = dir.File("data.npz");
        File.WriteAllText(path, "old contents");
        Npz.Write(path, new Dictionary<string, NdArray> { ["x"] = NdArray.FromUInt8([5], 1) });
        Assert.Equal([5], (byte[])Npz.Read(path)["x"].Data);
        Assert.Equal([path], Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void MissingFileIsAUserError()
    {
        using var dir = new TempDir();
        string path = dir.File("absent.npz");
        var e = Assert.Throws<UserError>(() => Npz.Read(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("not found", e.Message);
    }

    [Fact]
    public void MissingOutputFolderIsAUserError()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "no-such-folder", "out.npz");
        var e = Assert.Throws<UserError>(() => Npz.Write(path, new Dictionary<string, NdArray>()));
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void NonZipIsAUserError()
    {
        using var dir = new TempDir();
        string path = dir.File("text.npz");
        File.WriteAllText(path, "this is not a zip archive, just some text");
        var e = Assert.Throws<UserError>(() => Npz.Read(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("not a valid .npz", e.Message);
    }

    /// <summary>Writes a zip archive whose one member <paramref name="entry"/> holds <paramref name="text"/>; returns <paramref name="path"/>.</summary>
    static string ZipWithText(string path, string entry, string text)
    {
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        using var w = new StreamWriter(zip.CreateEntry(entry).Open());
        w.Write(text);
        return path;
    }

    [Fact]
    public void NonNpyMemberIsAUserError()
    {
        using var dir = new TempDir();
        string path = ZipWithText(dir.File("odd.npz"), "readme.txt", "hello");
        var e = Assert.Throws<UserError>(() => Npz.Read(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("'readme.txt'", e.Message);
    }

    [Fact]
    public void BadMemberErrorNamesPathAndKey()
    {
        using var dir = new TempDir();
        string path = ZipWithText(dir.File("bad.npz"), "weights.npy", "not numpy");
        var e = Assert.Throws<UserError>(() => Npz.Read(path));
        Assert.Contains($"{path} (key 'weights')", e.Message);
        Assert.Contains("not a .npy array", e.Message);
    }

    [Fact]
    public void CorruptCompressedMemberIsAUserError()
    {
        using var dir = new TempDir();
        string path = dir.File("corrupt.npz");
        Npz.Write(path, new Dictionary<string, NdArray> { ["x"] = NdArray.FromFloat([.. Enumerable.Range(0, 4000).Select(i => (float)i)], 4000) }, compress: true);
        byte[] bytes = File.ReadAllBytes(path);
        // Scramble the middle of the deflate stream; the zip directory at the end stays intact.
        for (int i = 200; i < 600; i++) bytes[i] ^= 0x5A;
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<UserError>(() => Npz.Read(path));
        Assert.Contains($"{path} (key 'x')", e.Message);
    }
}
