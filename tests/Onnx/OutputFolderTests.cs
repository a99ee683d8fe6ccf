using System.Diagnostics;
using Onnx;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Tests.Cli;
using static OnnxUnlearn.Tests.Onnx.TestModels;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxUnlearn.Tests.Onnx;

/// <summary>
/// The write-back's output folder: files another model owns are never overwritten, filesystem errors are one-line user
/// errors naming the file, and temporary files never outlive a write (stale ones of dead writers are cleaned up).
/// </summary>
public class OutputFolderTests
{
    static readonly Dictionary<string, TensorPatch> Patch = new() { ["W"] = new([0, 5], [2.5f, -4f]) };

    /// <summary>W and B in <c>model.onnx.data</c> next to <c>model.onnx</c> in <paramref name="folder"/>, scaled by <paramref name="scale"/>.</summary>
    static string CreateModel(string folder, float scale = 1, string name = "model.onnx")
    {
        Directory.CreateDirectory(folder);
        var dataName = "model.onnx.data";
        File.WriteAllBytes(Path.Combine(folder, dataName), [.. W.Concat(B).Select(v => v * scale).SelectMany(BitConverter.GetBytes)]);
        TensorProto External(string tensor, long[] dims, long offset)
        {
            var t = new TensorProto { Name = tensor, DataType = (int)DataType.Float, Dims = { dims }, DataLocation = TensorProto.Types.DataLocation.External };
            t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = dataName });
            t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString() });
            return t;
        }
        return Save(MatMulAdd(External("W", [3, 2], 0), External("B", [2], 24)), Path.Combine(folder, name));
    }

    static string[] Temps(string folder) => Directory.GetFiles(folder, "*.tmp", new EnumerationOptions { AttributesToSkip = 0, RecurseSubdirectories = true });

    [Fact]
    public void RefusesToOverwriteAnotherModelsDataFile()
    {
        using var dir = new TempDir();
        var input = CreateModel(dir.File("in"));
        CreateModel(dir.File("shared"), scale: 3, name: "other.onnx"); // shared/other.onnx uses shared/model.onnx.data
        var theirs = File.ReadAllBytes(dir.File("shared/model.onnx.data"));

        var e = Assert.Throws<UserError>(() => WeightPatch.Write(input, dir.File("shared/new.onnx"), Patch));
        Assert.Contains(dir.File("shared/model.onnx.data"), e.Message);
        Assert.Contains("other.onnx", e.Message);
        Assert.Contains("another folder", e.Message);
        // A job's writer checks its output before the job starts.
        Assert.Equal(e.Message, Assert.Throws<UserError>(() => new FileModelWriter(input, dir.File("shared/new.onnx"))).Message);
        Assert.Equal(theirs, File.ReadAllBytes(dir.File("shared/model.onnx.data")));
        Assert.False(File.Exists(dir.File("shared/new.onnx")));
        Assert.Empty(Temps(dir.Path));

        // Through the CLI's write-back too (the mlp fixture's data file is model.onnx.data as well).
        Directory.CreateDirectory(dir.File("cli"));
        File.Copy(dir.File("shared/other.onnx"), dir.File("cli/other.onnx"));
        File.Copy(dir.File("shared/model.onnx.data"), dir.File("cli/model.onnx.data"));
        var (code, _, err) = CliRunner.Run("unlearn", Fixtures.File("mlp_external", "model.onnx"), "--train", Fixtures.File("mlp", "data.npz"),
            "--forget", Fixtures.File("mlp", "forget.npz"), "--corrected", Fixtures.File("mlp", "corrected.npz"), "--select", "all", "--steps", "1", "--out", dir.File("cli/new.onnx"));
        Assert.True(code == 2, err);
        var line = Assert.Single(err.TrimEnd('\n').Split('\n'));
        Assert.Contains("other.onnx", line);
        Assert.Equal(theirs, File.ReadAllBytes(dir.File("cli/model.onnx.data")));
        Assert.False(File.Exists(dir.File("cli/new.onnx")));
        Assert.Empty(Temps(dir.Path));
    }

    [Fact]
    public void RefusesADataFileTheOutputModelDoesNotOwn()
    {
        using var dir = new TempDir();
        var input = CreateModel(dir.File("in"));
        Directory.CreateDirectory(dir.File("out"));
        File.WriteAllText(dir.File("out/model.onnx.data"), "someone's file");

        var e = Assert.Throws<UserError>(() => WeightPatch.Write(input, dir.File("out/new.onnx"), Patch));
        Assert.Contains(dir.File("out/model.onnx.data"), e.Message);
        Assert.Contains("another folder", e.Message);
        Assert.Equal("someone's file", File.ReadAllText(dir.File("out/model.onnx.data")));
    }

    [Fact]
    public void RewritesItsOwnOutput()
    {
        using var dir = new TempDir();
        var input = CreateModel(dir.File("in"));
        WeightPatch.Write(input, dir.File("out/new.onnx"), Patch);
        var second = new Dictionary<string, TensorPatch> { ["W"] = new([1], [8f]) };
        WeightPatch.Write(input, dir.File("out/new.onnx"), second); // the same output again: its own data file may be replaced
        var file = ModelFile.Load(dir.File("out/new.onnx"));
        Assert.Equal(8f, file.Graph.Initializer.Single(t => t.Name == "W").ReadFloats(file)[1]);
        Assert.Equal(W[0], file.Graph.Initializer.Single(t => t.Name == "W").ReadFloats(file)[0]); // from the input, not the first output
        Assert.Empty(Temps(dir.Path));

        // A second output in the same folder would take the first one's data file: refused, naming it.
        var e = Assert.Throws<UserError>(() => WeightPatch.Write(input, dir.File("out/third.onnx"), Patch));
        Assert.Contains("new.onnx", e.Message);
    }

    [Fact]
    public void RefusesADataFolderThatIsASymlinkOutOfTheOutputFolder()
    {
        using var dir = new TempDir();
        var folder = dir.File("in");
        Directory.CreateDirectory(Path.Combine(folder, "data"));
        var input = CreateModel(folder);
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(input));
        foreach (var t in model.Graph.Initializer) t.ExternalData.Single(e => e.Key == "location").Value = "data/w.bin";
        File.Move(Path.Combine(folder, "model.onnx.data"), Path.Combine(folder, "data/w.bin"));
        Save(model, input);
        Directory.CreateDirectory(dir.File("elsewhere"));
        Directory.CreateDirectory(dir.File("out"));
        Directory.CreateSymbolicLink(dir.File("out/data"), dir.File("elsewhere"));

        var e = Assert.Throws<UserError>(() => WeightPatch.Write(input, dir.File("out/model.onnx"), Patch));
        Assert.Contains("symlink", e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(dir.File("elsewhere")));
    }

    [Fact]
    public void AnOutputWhoseParentIsAFileIsAUserError()
    {
        using var dir = new TempDir();
        var input = CreateModel(dir.File("in"));
        File.WriteAllText(dir.File("file"), "");
        var e = Assert.Throws<UserError>(() => WeightPatch.Write(input, dir.File("file/sub/new.onnx"), Patch));
        Assert.Contains(dir.File("file"), e.Message);
        Assert.Contains("is a file", e.Message);
        var (code, _, err) = CliRunner.Run("unlearn", Fixtures.File("mlp_external", "model.onnx"), "--train", Fixtures.File("mlp", "data.npz"),
            "--forget", Fixtures.File("mlp", "forget.npz"), "--corrected", Fixtures.File("mlp", "corrected.npz"), "--select", "all", "--steps", "1", "--out", dir.File("file/new.onnx"));
        Assert.True(code == 2, err);
        Assert.Single(err.TrimEnd('\n').Split('\n'));
        Assert.Contains(dir.File("file"), err);
    }

    [Fact]
    public void AReadOnlyFolderIsAUserErrorNamingTheFile()
    {
        using var dir = new TempDir();
        var input = CreateModel(dir.File("in"));
        if (!OperatingSystem.IsWindows() && !Environment.IsPrivilegedProcess) // root ignores permissions
        {
            Directory.CreateDirectory(dir.File("ro"));
            File.SetUnixFileMode(dir.File("ro"), UnixFileMode.UserRead | UnixFileMode.UserExecute);
            try
            {
                var e = Assert.Throws<UserError>(() => WeightPatch.Write(input, dir.File("ro/new.onnx"), Patch));
                Assert.Contains("cannot write", e.Message);
                Assert.Contains(dir.File("ro/model.onnx.data"), e.Message);
                Assert.Empty(Directory.GetFileSystemEntries(dir.File("ro")));
            }
            finally { File.SetUnixFileMode(dir.File("ro"), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute); }
        }
        // A read-only file system, for root too: sysfs refuses new files.
        if (OperatingSystem.IsLinux() && Directory.Exists("/sys/kernel") && !File.Exists("/sys/kernel/model.onnx.data"))
        {
            var e = Assert.Throws<UserError>(() => WeightPatch.Write(input, "/sys/kernel/new.onnx", Patch));
            Assert.StartsWith("cannot write '/sys/kernel/model.onnx.data'", e.Message);
            Assert.DoesNotContain('\n', e.Message);
            var report = Assert.Throws<UserError>(() => AtomicFile.Write("/sys/kernel/report.json", s => s.WriteByte(1)));
            Assert.StartsWith("cannot write '/sys/kernel/report.json'", report.Message);
        }
        Assert.DoesNotContain(AtomicFile.LiveTemps(), t => t.StartsWith(dir.Path, StringComparison.Ordinal) || t.StartsWith("/sys/", StringComparison.Ordinal));
    }

    [Fact]
    public void TempFilesAreNamedForTheToolAndRemovedOnFailure()
    {
        using var dir = new TempDir();
        string? seen = null;
        Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(dir.File("r.json"), s =>
        {
            s.WriteByte(1);
            seen = Assert.Single(AtomicFile.LiveTemps(), t => t.StartsWith(dir.Path, StringComparison.Ordinal));
            throw new InvalidOperationException("boom");
        }));
        Assert.Matches($@"^\.r\.json\.onnx-unlearn\.{Environment.ProcessId}\.[0-9a-f]{{16}}\.tmp$", Path.GetFileName(seen));
        Assert.False(File.Exists(seen));
        Assert.False(File.Exists(dir.File("r.json")));
        Assert.DoesNotContain(seen, AtomicFile.LiveTemps());
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));
    }

    [Fact]
    public void StaleTempsOfDeadWritersAreRemovedByTheNextWrite()
    {
        using var dir = new TempDir();
        var input = CreateModel(dir.File("in"));
        Directory.CreateDirectory(dir.File("out"));
        int dead;
        using (var p = Process.Start(new ProcessStartInfo("dotnet", "--version") { RedirectStandardOutput = true })!)
        {
            p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            dead = p.Id;
        }
        var stale = dir.File($"out/.model.onnx.data.onnx-unlearn.{dead}.0123456789abcdef.tmp");
        var live = dir.File($"out/.model.onnx.data.onnx-unlearn.{Environment.ProcessId}.fedcba9876543210.tmp");
        var foreign = dir.File("out/.model.onnx.data.1234.tmp"); // not the tool's naming: not ours to remove
        foreach (var f in new[] { stale, live, foreign }) File.WriteAllText(f, "partial");

        WeightPatch.Write(input, dir.File("out/model.onnx"), Patch);

        Assert.False(File.Exists(stale));
        Assert.True(File.Exists(live));
        Assert.True(File.Exists(foreign));
        Assert.Equal(["model.onnx", "model.onnx.data"], Directory.GetFiles(dir.File("out")).Select(Path.GetFileName)
            .Where(n => !n!.StartsWith('.')).Order());

        // AtomicFile.Write (reports, artifacts) cleans up the same way.
        var stale2 = dir.File($"out/.r.json.onnx-unlearn.{dead}.00000000000000aa.tmp");
        File.WriteAllText(stale2, "partial");
        AtomicFile.Write(dir.File("out/r.json"), s => s.WriteByte(1));
        Assert.False(File.Exists(stale2));
        Assert.True(File.Exists(live));
    }
}
