using OnnxUnlearn.Data;
using OnnxUnlearn.Runtime;
using static OnnxUnlearn.Tests.Data.HostileFiles;

namespace OnnxUnlearn.Tests.Data;

/// <summary>
/// Data files that lie about their sizes are refused from their headers, before any data is decompressed or allocated
/// (measured with the allocation counter of the reading thread); a declared size is never exceeded.
/// </summary>
public class HostileNpzTests
{
    const long MiB = 1 << 20;

    static (UserError Error, long Allocated) Refused(byte[] npz)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<UserError>(() => Npz.Read(new MemoryStream(npz), "hostile.npz"));
        return (e, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void AMemberWhoseHeaderClaimsMoreThanTheArchiveDeclaresIsRefusedBeforeDecompressing()
    {
        // The .npy header claims 1 GiB, the archive declares (and holds) 1 KiB of it.
        var header = NpyHeader("<f4", 1 << 22, 64);
        var (e, allocated) = Refused(Zip(Deflated("x.npy", header, zeros: 1024 - header.Length)));
        Assert.Contains("key 'x'", e.Message);
        Assert.Contains("declares the member as 1 KiB (1024 bytes) uncompressed", e.Message);
        Assert.Contains("1 GiB", e.Message);
        Assert.True(allocated < 8 * MiB, $"allocated {allocated} bytes");
    }

    [Fact]
    public void AHugeDeclaredShapeIsRefusedByTheLimitWithoutAllocating()
    {
        // (2^31 - 57,) float64: 16 GiB, declared honestly by the archive (Zip64) but far beyond DataLimits.MaxBytes.
        var header = NpyHeader("<f8", Array.MaxLength);
        long size = header.Length + 8L * Array.MaxLength;
        var (e, allocated) = Refused(Zip(Stored("x.npy", header, declared: size)));
        Assert.Contains("key 'x' of shape (2147483591) would take 16 GiB", e.Message);
        Assert.Contains("more than the 8 GiB (8589934592 bytes) a data file may hold", e.Message);
        Assert.True(allocated < 8 * MiB, $"allocated {allocated} bytes");

        // The same header as a plain .npy on a stream that cannot tell its length.
        var npy = new UnseekableStream(header);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e2 = Assert.Throws<UserError>(() => Npy.Read(npy, "huge.npy"));
        Assert.Contains("huge.npy: array of shape (2147483591) would take 16 GiB", e2.Message);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 8 * MiB);
    }

    [Fact]
    public void ArraysTogetherBeyondTheLimitAreRefusedBeforeAnyIsRead()
    {
        var saved = DataLimits.MaxBytes;
        try
        {
            DataLimits.MaxBytes = 1 << 20;
            var a = NpyHeader("<f4", 128, 1024); // 512 KiB each, 1 MiB + 512 KiB together
            var (e, allocated) = Refused(Zip(Deflated("a.npy", a, zeros: 512 << 10), Deflated("b.npy", a, zeros: 512 << 10), Deflated("c.npy", a, zeros: 512 << 10)));
            Assert.Contains("its 3 arrays ('a' (128, 1024), 'b' (128, 1024), 'c' (128, 1024)) would take 1.5 MiB", e.Message);
            Assert.True(allocated < 512 << 10, $"allocated {allocated} bytes");
        }
        finally { DataLimits.MaxBytes = saved; }
    }

    [Fact]
    public void ATruncatedMemberIsRefusedBeforeTheLargeOnesBeforeItAreDecompressed()
    {
        // The hostile-input pass's file: 'x' holds 256 MiB of zeros (1 MB deflated), 'label' only its header. Both
        // headers are checked first, so 'x' is never decompressed.
        var (e, allocated) = Refused(Zip(Deflated("x.npy", NpyHeader("<f4", 1 << 20, 64), zeros: 256 * MiB), Stored("label.npy", NpyHeader("<i8", 1 << 20))));
        Assert.Contains("key 'label'", e.Message);
        Assert.Contains("8 MiB", e.Message);
        Assert.True(allocated < 8 * MiB, $"allocated {allocated} bytes");
    }

    [Fact]
    public void SamplesDisagreeingAcrossArraysAreRefusedFromTheHeaders()
    {
        using var dir = new TempDir();
        var path = dir.File("rows.npz");
        File.WriteAllBytes(path, Zip(Deflated("x.npy", NpyHeader("<f4", 1 << 20, 64), zeros: 256 * MiB), Deflated("label.npy", NpyHeader("<i8", 10), zeros: 80)));
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<UserError>(() => Dataset.Load(path));
        Assert.Contains("arrays disagree on the number of samples ('x': 1048576, 'label': 10)", e.Message);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 8 * MiB);
    }

    [Fact]
    public void AWrongShapeForTheModelIsRefusedFromTheHeaders()
    {
        using var dir = new TempDir();
        var path = dir.File("wide.npz");
        File.WriteAllBytes(path, Zip(Deflated("x.npy", NpyHeader("<f4", 1 << 16, 1024), zeros: 256 * MiB), Deflated("label.npy", NpyHeader("<i8", 1 << 16), zeros: 8 << 16)));
        var model = OnnxUnlearn.Onnx.ModelFile.Load(Fixtures.File("mlp", "model.onnx"));
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<UserError>(() => Dataset.Load(path, model.Graph.Input, model.Path));
        Assert.Contains("array 'x' has shape (65536, 1024) but model", e.Message);
        Assert.Contains("expects [?, 64]", e.Message);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 8 * MiB);
    }

    [Fact]
    public void AMemberHoldingMoreThanDeclaredIsReadOnlyAsFarAsDeclared()
    {
        // 'x' declares 4 floats; its deflated data goes on with 64 MiB of zeros the archive never declared.
        var x = NpyHeader("<f4", 2, 2).Concat(new float[] { 1, 2, 3, 4 }.SelectMany(BitConverter.GetBytes)).ToArray();
        var npz = Zip(Deflated("x.npy", x, zeros: 64 * MiB, declared: x.Length));
        long before = GC.GetAllocatedBytesForCurrentThread();
        var arrays = Npz.Read(new MemoryStream(npz), "longer.npz");
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 8 * MiB);
        Assert.Equal([1f, 2, 3, 4], (float[])arrays["x"].Data);
    }

    [Fact]
    public void AnHonestBombIsRefusedByTheMemoryAvailable()
    {
        // 1 GiB declared in 1 MB: refused before decompressing where less memory is available (DataLimits.MaxBytes stands in
        // for a smaller machine here; the CLI test runs it under a GC heap limit).
        var saved = DataLimits.MaxBytes;
        try
        {
            DataLimits.MaxBytes = 256 * MiB;
            Assert.InRange(Bomb.Length, 500_000, 2_000_000);
            var (e, allocated) = Refused(Bomb);
            Assert.Contains("would take 1 GiB", e.Message);
            Assert.True(allocated < 8 * MiB, $"allocated {allocated} bytes");
        }
        finally { DataLimits.MaxBytes = saved; }
    }

    [Fact]
    public void NamesFromTheArchiveAreEscapedInMessages()
    {
        var e = Assert.Throws<UserError>(() => Npz.Read(new MemoryStream(Zip(Stored("a\tb\n\u001b[31m.txt", [1, 2, 3]))), "names.npz"));
        Assert.Contains(@"member 'a\tb\n\u001b[31m.txt' is not a .npy array", e.Message);
        Assert.DoesNotContain('\u001b', e.Message);
    }

    [Fact]
    public void AFolderGivenForAFileIsAUserError()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<UserError>(() => Npz.Read(dir.Path));
        Assert.Contains(dir.Path, e.Message);
    }

    sealed class UnseekableStream(byte[] bytes) : MemoryStream(bytes)
    {
        public override bool CanSeek => false;
        public override long Length => throw new NotSupportedException();
    }
}

/// <summary>Names from a model or data file are escaped in messages: they cannot break the line or drive the terminal.</summary>
public class EscapeTests
{
    [Theory]
    [InlineData("logits", "logits")]
    [InlineData("lo\tgi\nts\r", @"lo\tgi\nts\r")]
    [InlineData("\u001b[31mred", @"\u001b[31mred")]
    [InlineData("nul\0del\u007fc1\u0085", @"nul\u0000del\u007fc1\u0085")]
    [InlineData("rtl\u202eoverride\u200b", @"rtl\u202eoverride\u200b")]
    [InlineData("line\u2028sep", @"line\u2028sep")]
    [InlineData("emoji \U0001F600 ok, é, 中文, back\\slash", "emoji \U0001F600 ok, é, 中文, back\\slash")]
    [InlineData("\u2039Frozen\u203a", @"\u2039Frozen\u203a")]
    public void ControlAndFormatCharactersAreEscaped(string name, string escaped)
    {
        Assert.Equal(escaped, UserError.Escape(name));
        Assert.Equal("'" + escaped + "'", UserError.Quote(name));
    }

    [Fact]
    public void LoneSurrogatesAreEscapedAndPairsKept()
    {
        // Built here: test data passed through xunit's discovery would not keep a lone surrogate.
        Assert.Equal("lone \\ud800 and \\udc00, a pair \U0001F600", UserError.Escape("lone " + '\ud800' + " and " + '\udc00' + ", a pair \U0001F600"));
    }

    [Fact]
    public void EveryMessageIsOneLineWithSettingsStillRendered()
    {
        var e = new UserError($"output 'a\nb' is wrong; set {UserError.Setting("Output")} and name {UserError.Quote("\u2039Loss\u203a")}");
        Assert.Equal(@"output 'a\nb' is wrong; set Output and name '\u2039Loss\u203a'", e.Message);
        Assert.Equal(@"output 'a\nb' is wrong; set --output and name '\u2039Loss\u203a'", e.Render((s, _) => "--" + s.ToLowerInvariant()));
    }
}
