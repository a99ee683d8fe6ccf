using System.Diagnostics;
using System.Security.Cryptography;
using Google.Protobuf;
using Onnx;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Tests.Cli;
using static OnnxUnlearn.Tests.Onnx.TestModels;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxUnlearn.Tests.Onnx;

/// <summary>
/// Hostile models, each built in a temp folder: every one is refused by the loader, by <c>inspect</c> (exit 2, one line) and
/// by the write-back, with a message naming the model file, the tensor, the location and the fix; the input is never changed.
/// </summary>
public class HostileModelTests
{
    const long WBytes = 24, BBytes = 8; // W [3, 2] and B [2], float32, back to back in data.bin

    static TensorProto External(string name, long[] dims, string location, string offset, string? length = null)
    {
        var t = new TensorProto { Name = name, DataType = (int)DataType.Float, Dims = { dims }, DataLocation = TensorProto.Types.DataLocation.External };
        t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
        t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset });
        if (length is not null) t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = length });
        return t;
    }

    static byte[] Data() => [.. W.SelectMany(BitConverter.GetBytes), .. B.SelectMany(BitConverter.GetBytes)];

    /// <summary>What a case puts in the model and what its refusal must say.</summary>
    sealed record Attack(string Model, string Tensor, string? Location, string Problem);

    /// <summary>
    /// dir/model/{model.onnx, data.bin, sub/} next to dir/outside/secret.bin (a copy of the data: a hostile model reading it
    /// would load without complaint) and dir/outside/data.bin.
    /// </summary>
    static Attack Build(TempDir dir, string attack)
    {
        var folder = dir.File("model");
        Directory.CreateDirectory(Path.Combine(folder, "sub"));
        Directory.CreateDirectory(dir.File("outside"));
        File.WriteAllBytes(Path.Combine(folder, "data.bin"), Data());
        File.WriteAllBytes(dir.File("outside/secret.bin"), Data());
        File.WriteAllBytes(dir.File("outside/data.bin"), Data());
        string? location = "data.bin"; string offset = "0";
        string? length = null;
        var w = (TensorProto?)null;
        var b = External("B", [2], "data.bin", WBytes.ToString());
        var tensor = "W";
        string problem;
        switch (attack)
        {
            case "traversal": location = "../outside/secret.bin"; problem = "escapes the model's folder"; break;
            case "absolute": location = dir.File("outside/secret.bin"); problem = "absolute external data location"; break;
            case "nested-traversal": location = "sub/../../outside/secret.bin"; problem = "escapes the model's folder"; break;
            case "symlinked-file":
                File.CreateSymbolicLink(Path.Combine(folder, "link.bin"), dir.File("outside/secret.bin"));
                location = "link.bin"; problem = "symlink"; break;
            case "symlinked-folder":
                Directory.CreateSymbolicLink(Path.Combine(folder, "linked"), dir.File("outside"));
                location = "linked/data.bin"; problem = "symlink"; break;
            case "hardlink":
                HardLink(dir.File("outside/secret.bin"), Path.Combine(folder, "hard.bin"));
                location = "hard.bin"; problem = "2 hard links"; break;
            case "offset-past-end": offset = "100"; problem = "has only 32 bytes"; break;
            case "length-mismatch": length = "20"; problem = "declares 20 bytes"; break;
            case "negative-offset": offset = "-4"; problem = "not a non-negative integer"; break;
            case "missing-file": location = "missing.bin"; problem = "does not exist"; break;
            case "folder": location = "sub"; problem = "is a folder"; break;
            case "overlap": // B reads bytes 16..24, the end of W
                b = External("B", [2], "data.bin", "16");
                tensor = "B"; problem = "overlap bytes 0..24 of tensor 'W'"; break;
            case "raw-too-short":
                w = new TensorProto { Name = "W", DataType = (int)DataType.Float, Dims = { 3, 2 }, RawData = ByteString.CopyFrom(new byte[20]) };
                location = null; problem = "holds 20 bytes of raw_data but its shape [3, 2] and type float32 need 24"; break;
            case "huge-dims":
                w = new TensorProto { Name = "W", DataType = (int)DataType.Float, Dims = { long.MaxValue }, RawData = ByteString.CopyFrom(new byte[24]) };
                location = null; problem = "more than 1125899906842624 elements"; break;
            case "overflowing-dims": // 2^40 · 2^40 overflows nothing on its own, but the product is 2^80
                w = new TensorProto { Name = "W", DataType = (int)DataType.Float, Dims = { 1L << 40, 1L << 40 }, RawData = ByteString.CopyFrom(new byte[24]) };
                location = null; problem = "more than 1125899906842624 elements"; break;
            case "negative-dims":
                w = new TensorProto { Name = "W", DataType = (int)DataType.Float, Dims = { -3, 2 }, RawData = ByteString.CopyFrom(new byte[24]) };
                location = null; problem = "negative dimension -3"; break;
            default: throw new ArgumentException(attack);
        }
        w ??= External("W", [3, 2], location!, offset, length);
        var model = Save(MatMulAdd(w, b), Path.Combine(folder, "model.onnx"));
        return new Attack(model, tensor, location, problem);
    }

    static void HardLink(string existing, string link)
    {
        using var p = Process.Start(new ProcessStartInfo("ln", [existing, link]) { RedirectStandardError = true })!;
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
    }

    public static TheoryData<string> Attacks =>
    [
        "traversal", "absolute", "nested-traversal", "symlinked-file", "symlinked-folder", "hardlink", "offset-past-end",
        "length-mismatch", "negative-offset", "missing-file", "folder", "overlap", "raw-too-short", "huge-dims", "overflowing-dims",
        "negative-dims",
    ];

    static void AssertNames(Attack a, string message)
    {
        Assert.DoesNotContain('\n', message);
        Assert.Contains($"tensor '{a.Tensor}'", message);
        Assert.Contains(a.Model, message);
        if (a.Location is { } location) Assert.Contains($"'{location}'", message);
        Assert.Contains(a.Problem, message);
        Assert.Matches("; [a-z]", message); // and then the fix
    }

    static Dictionary<string, string> Hashes(string folder) =>
        Directory.GetFiles(folder, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 })
            .Where(f => new FileInfo(f).LinkTarget is null)
            .ToDictionary(f => Path.GetRelativePath(folder, f), f => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f))));

    [Theory]
    [MemberData(nameof(Attacks))]
    public void TheLoaderRefusesIt(string attack)
    {
        if (attack == "hardlink" && OperatingSystem.IsWindows()) return;
        using var dir = new TempDir();
        var a = Build(dir, attack);
        AssertNames(a, Assert.Throws<UserError>(() => ModelFile.Load(a.Model)).Message);
    }

    [Theory]
    [MemberData(nameof(Attacks))]
    public void InspectExitsWith2AndOneLine(string attack)
    {
        if (attack == "hardlink" && OperatingSystem.IsWindows()) return;
        using var dir = new TempDir();
        var a = Build(dir, attack);
        var (code, stdout, stderr) = CliRunner.Run("inspect", a.Model);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        var line = Assert.Single(stderr.TrimEnd('\n').Split('\n'));
        Assert.StartsWith("error: ", line);
        AssertNames(a, line);
        Assert.DoesNotContain("AllowLinks", line); // settings are named as flags
    }

    [Theory]
    [MemberData(nameof(Attacks))]
    public void TheWriteBackRefusesItAndWritesNothing(string attack)
    {
        if (attack == "hardlink" && OperatingSystem.IsWindows()) return;
        using var dir = new TempDir();
        var a = Build(dir, attack);
        var before = Hashes(dir.Path);
        var patch = new Dictionary<string, TensorPatch> { ["B"] = new([0], [9f]) };
        AssertNames(a, Assert.Throws<UserError>(() => WeightPatch.Write(a.Model, dir.File("out/model.onnx"), patch)).Message);
        AssertNames(a, Assert.Throws<UserError>(() => WeightPatch.Measure(a.Model, patch)).Message);
        AssertNames(a, Assert.Throws<UserError>(() => new FileModelWriter(a.Model, dir.File("out/model.onnx")).Write(patch)).Message);
        Assert.False(Directory.Exists(dir.File("out")));
        Assert.Equal(before, Hashes(dir.Path));
    }

    [Fact]
    public void UnlearnExitsWith2OnAHostileModel()
    {
        using var dir = new TempDir();
        // The mlp fixture with its data moved out of the folder and reached through "../".
        var folder = dir.File("model");
        Directory.CreateDirectory(folder);
        File.Copy(Fixtures.File("mlp_external", "model.onnx.data"), dir.File("model.onnx.data"));
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.File("mlp_external", "model.onnx")));
        foreach (var t in model.Graph.Initializer.Where(t => t.IsExternal()))
            t.ExternalData.Single(e => e.Key == "location").Value = "../model.onnx.data";
        var input = Save(model, Path.Combine(folder, "model.onnx"));
        var (code, _, err) = CliRunner.Run("unlearn", input, "--train", Fixtures.File("mlp_external", "data.npz"),
            "--forget", Fixtures.File("mlp_external", "data.npz"), "--out", dir.File("out/new.onnx"));
        Assert.Equal(2, code);
        var line = Assert.Single(err.TrimEnd('\n').Split('\n'));
        Assert.Contains("escapes the model's folder", line);
        Assert.Contains("'../model.onnx.data'", line);
        Assert.False(Directory.Exists(dir.File("out")));
    }

    [Theory]
    [InlineData("symlinked-file")]
    [InlineData("symlinked-folder")]
    [InlineData("hardlink")]
    public void LinksAreFollowedWhenAllowed(string attack)
    {
        if (attack == "hardlink" && OperatingSystem.IsWindows()) return;
        using var dir = new TempDir();
        var a = Build(dir, attack);
        var allow = new ExternalDataPolicy { AllowLinks = true };

        // Refused by default, with the setting that allows it named in the library's and the CLI's words.
        Assert.Contains("AllowLinks", Assert.Throws<UserError>(() => ModelFile.Load(a.Model)).Message);
        Assert.Contains("--allow-links", CliRunner.Run("inspect", a.Model).Err);

        var file = ModelFile.Load(a.Model, allow);
        Assert.Equal(W, file.Graph.Initializer.Single(t => t.Name == "W").ReadFloats(file));
        var (code, stdout, stderr) = CliRunner.Run("inspect", a.Model, "--allow-links", "--json");
        Assert.True(code == 0, stderr);
        Assert.Contains("\"external\"", stdout);

        var before = Hashes(dir.File("outside"));
        var patch = new Dictionary<string, TensorPatch> { ["W"] = new([1], [7f]) };
        WeightPatch.Write(a.Model, dir.File("out/model.onnx"), patch, policy: allow);
        Assert.Equal(before, Hashes(dir.File("outside"))); // the link's target is read, never written
        var written = ModelFile.Load(dir.File("out/model.onnx")); // a plain copy: strict is fine
        Assert.Equal(7f, written.Graph.Initializer.Single(t => t.Name == "W").ReadFloats(written)[1]);
        Assert.Equal(W, file.Graph.Initializer.Single(t => t.Name == "W").ReadFloats(file));
        Assert.Equal(2, Run(dir.File("out/model.onnx"), X).Length); // ONNX Runtime refuses the linked input itself; the copy runs
    }

    [Theory]
    [InlineData("traversal")]
    [InlineData("absolute")]
    [InlineData("nested-traversal")]
    public void AllowingLinksStillRefusesPathsOutOfTheFolder(string attack)
    {
        using var dir = new TempDir();
        var a = Build(dir, attack);
        AssertNames(a, Assert.Throws<UserError>(() => ModelFile.Load(a.Model, new ExternalDataPolicy { AllowLinks = true })).Message);
        Assert.Equal(2, CliRunner.Run("inspect", a.Model, "--allow-links").Code);
    }

    [Fact]
    public void InspectNoVerifyListsWithoutChecking()
    {
        using var dir = new TempDir();
        var a = Build(dir, "absolute");
        var (code, stdout, stderr) = CliRunner.Run("inspect", a.Model, "--no-verify", "--json");
        Assert.True(code == 0, stderr);
        Assert.Contains("\"W\"", stdout);
    }

    [Fact]
    public void AFifoIsNotADataFile()
    {
        if (OperatingSystem.IsWindows()) return;
        using var dir = new TempDir();
        var a = Build(dir, "missing-file");
        using (var p = Process.Start("mkfifo", [Path.Combine(dir.File("model"), "missing.bin")])) p.WaitForExit();
        var e = Assert.Throws<UserError>(() => ModelFile.Load(a.Model));
        Assert.Contains("not a regular file", e.Message);
    }

    [Fact]
    public void TheTensorApiChecksShapesItself()
    {
        var huge = new TensorProto { Name = "h", DataType = (int)DataType.Float, Dims = { long.MaxValue, 2 } };
        Assert.Contains("tensor 'h'", Assert.Throws<UserError>(() => huge.ElementCount()).Message);
        var shortRaw = new TensorProto { Name = "s", DataType = (int)DataType.Float, Dims = { 3 }, RawData = ByteString.CopyFrom(new byte[8]) };
        Assert.Contains("holds 8 bytes of raw_data", Assert.Throws<UserError>(() => shortRaw.ReadFloats("")).Message);
        var few = new TensorProto { Name = "f", DataType = (int)DataType.Float, Dims = { 3 }, FloatData = { 1f, 2f } };
        Assert.Contains("holds 2 values", Assert.Throws<UserError>(() => few.ReadFloats("")).Message);
        var none = new TensorProto { Name = "n", DataType = (int)DataType.Int64, Dims = { 2 } };
        Assert.Contains("holds no values", Assert.Throws<UserError>(() => none.ReadInt64s("")).Message);
        var zero = new TensorProto { Name = "z", DataType = (int)DataType.Float, Dims = { 0, 5 } };
        Assert.Empty(zero.ReadFloats(""));
    }
}

public class FileStatusTests
{
    [Fact]
    public void CountsHardLinksAndTellsRegularFiles()
    {
        if (OperatingSystem.IsWindows())
        {
            Assert.Null(FileStatus.Of(Environment.ProcessPath!));
            return;
        }
        using var dir = new TempDir();
        File.WriteAllText(dir.File("a"), "x");
        Assert.Equal(new FileStatus(1, true), FileStatus.Of(dir.File("a")));
        Assert.False(FileStatus.Of(dir.Path)!.Value.IsRegular);
        using (var p = Process.Start("ln", [dir.File("a"), dir.File("b")])) p.WaitForExit();
        Assert.Equal(new FileStatus(2, true), FileStatus.Of(dir.File("b")));
        File.CreateSymbolicLink(dir.File("c"), dir.File("a"));
        Assert.Equal(new FileStatus(2, true), FileStatus.Of(dir.File("c"))); // the link's target
        if (OperatingSystem.IsLinux() && File.Exists("/lib/x86_64-linux-gnu/libc.so.6")) Assert.True(FileStatus.Native);
    }
}
