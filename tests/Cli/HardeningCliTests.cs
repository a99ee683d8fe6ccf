using System.Runtime.InteropServices;
using Google.Protobuf;
using OnnxUnlearn.Data;
using static OnnxUnlearn.Tests.Data.HostileFiles;

namespace OnnxUnlearn.Tests.Cli;

/// <summary>
/// The hostile-input pass, run as a user runs the CLI: every case ends with exit code 2 and one line on stderr, never a
/// stack trace, never ONNX Runtime's own log lines, never a raw control character from a model; hostile data files are
/// refused before they are decompressed (peak resident memory measured).
/// </summary>
public class HardeningCliTests
{
    static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);
    static string Mlp(string f) => Fixtures.File("mlp", f);

    static CliResult Run(params string[] args) => CliProcess.Run(Timeout, null, args);

    /// <summary>Exit 2 with exactly one "error: " line, no stack trace, no ONNX Runtime log line, no control character.</summary>
    static string OneLineRefusal(CliResult r)
    {
        Assert.True(r.Code == 2, $"exit {r.Code}: {r.Err}");
        var lines = r.Err.TrimEnd('\n').Split('\n');
        Assert.True(lines.Length == 1, "stderr should be one line:\n" + r.Err);
        Assert.StartsWith("error: ", lines[0]);
        Assert.DoesNotContain("   at ", r.Err);
        Assert.DoesNotContain("onnxruntime", r.Err);
        Assert.False(lines[0].Any(c => char.IsControl(c)), "control character in: " + lines[0]);
        return lines[0];
    }

    static string WriteModel(TempDir dir, string name, Action<global::Onnx.ModelProto> change)
    {
        var m = global::Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(Mlp("model.onnx")));
        change(m);
        File.WriteAllBytes(dir.File(name), m.ToByteArray());
        return dir.File(name);
    }

    static string WriteData(TempDir dir, string name, Func<Dictionary<string, NdArray>, Dictionary<string, NdArray>> change, string from = "data.npz")
    {
        Npz.Write(dir.File(name), change(Npz.Read(Mlp(from))));
        return dir.File(name);
    }

    static Dictionary<string, NdArray> Label(Dictionary<string, NdArray> d, int row, long value)
    {
        var l = d["label"].ToInt64();
        l[row] = value;
        d["label"] = NdArray.FromInt64(l, l.Length);
        return d;
    }

    static Dictionary<string, NdArray> X(Dictionary<string, NdArray> d, int flat, float value)
    {
        var x = (float[])d["x"].Data.Clone();
        x[flat] = value;
        d["x"] = NdArray.FromFloat(x, d["x"].Shape);
        return d;
    }

    [Fact]
    public void InspectOfATensorWithDims2To63Minus1()
    {
        using var dir = new TempDir();
        var model = WriteModel(dir, "huge.onnx", m =>
        {
            var b = m.Graph.Initializer.First(t => t.Name == "fc2.bias");
            b.Dims.Clear(); b.Dims.Add(long.MaxValue);
        });
        Assert.Contains("tensor 'fc2.bias'", OneLineRefusal(Run("inspect", model)));
        Assert.Contains("tensor 'fc2.bias'", OneLineRefusal(Run("eval", model, "--data", Mlp("data.npz"))));
    }

    [Fact]
    public void GradOnAGraphInputWithoutAType()
    {
        using var dir = new TempDir();
        var model = WriteModel(dir, "untyped.onnx", m => m.Graph.Input[0].Type = null);
        Assert.Contains("input 'x' of", OneLineRefusal(Run("grad", model, "--data", Mlp("data.npz"), "--out", dir.File("g.npz"))));
    }

    [Fact]
    public void AnNpzWhoseHeaderClaims16GB()
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("huge.npz"), Zip(Stored("x.npy", NpyHeader("<f8", Array.MaxLength, 1)), Stored("label.npy", NpyHeader("<i8", Array.MaxLength))));
        var line = OneLineRefusal(CliProcess.Run(Timeout, null, "eval", Mlp("model.onnx"), "--data", dir.File("huge.npz")));
        Assert.Contains("key 'x'", line);
        Assert.Contains("16 GiB", line);
    }

    [Fact]
    public void ABombIsRefusedWithoutBeingDecompressed()
    {
        using var dir = new TempDir();
        // 1 MB declaring 1 GiB, honestly: refused where less memory is available (a 256 MiB GC heap limit), before decompressing.
        File.WriteAllBytes(dir.File("bomb.npz"), Bomb);
        var limited = new Dictionary<string, string> { ["DOTNET_GCHeapHardLimit"] = "0x10000000" };
        var r = CliProcess.Run(Timeout, limited, "eval", Mlp("model.onnx"), "--data", dir.File("bomb.npz"));
        Assert.Contains("memory is available", OneLineRefusal(r));
        Assert.True(r.PeakRssKiB is > 0 and < 200_000, $"peak RSS {r.PeakRssKiB} KiB");

        // The hostile-input pass's file (1 MB, 'x' declaring 1 GiB, 'label' truncated): refused from the headers, no limit needed.
        File.WriteAllBytes(dir.File("lying.npz"), Zip(Deflated("x.npy", NpyHeader("<f4", 1 << 22, 64), zeros: 1L << 30), Stored("label.npy", NpyHeader("<i8", 1 << 22))));
        r = CliProcess.Run(Timeout, null, "eval", Mlp("model.onnx"), "--data", dir.File("lying.npz"));
        Assert.Contains("key 'label'", OneLineRefusal(r));
        Assert.True(r.PeakRssKiB is > 0 and < 200_000, $"peak RSS {r.PeakRssKiB} KiB");
    }

    [Theory]
    [InlineData(3, -1, "holds -1 at row 3, outside the 10 classes [0, 10)")]
    [InlineData(5, 10, "holds 10 at row 5, outside the 10 classes [0, 10)")]
    public void LabelsOutsideTheClassesNeverReachOnnxRuntime(int row, long value, string message)
    {
        using var dir = new TempDir();
        var data = WriteData(dir, "bad.npz", d => Label(d, row, value));
        var line = OneLineRefusal(Run("eval", Mlp("model.onnx"), "--data", data));
        Assert.Contains(message, line);
        Assert.Contains($"--ignore-index {value}", line);
    }

    [Fact]
    public void BoolAndFloatLabelsAreRefusedNamingTheDtype()
    {
        using var dir = new TempDir();
        var asBool = WriteData(dir, "bool.npz", d => { d["label"] = NdArray.FromBool(d["label"].ToInt64().Select(v => v > 4).ToArray(), 64); return d; });
        Assert.Contains("array 'label' has dtype bool", OneLineRefusal(Run("eval", Mlp("model.onnx"), "--data", asBool)));
        var asFloat = WriteData(dir, "float.npz", d => { d["label"] = NdArray.FromFloat(d["label"].ToFloat(), 64); return d; });
        Assert.Contains("array 'label' has dtype float32", OneLineRefusal(Run("grad", Mlp("model.onnx"), "--data", asFloat, "--out", dir.File("g.npz"))));
    }

    [Fact]
    public void NonFiniteInputsAreRefusedUnlessAllowed()
    {
        using var dir = new TempDir();
        var data = WriteData(dir, "nan.npz", d => X(d, 2 * 64 + 7, float.NaN));
        var line = OneLineRefusal(Run("eval", Mlp("model.onnx"), "--data", data));
        Assert.Contains("array 'x'", line);
        Assert.Contains("holds NaN at row 2, column 7", line);
        Assert.Contains("--allow-nonfinite", line);
        var allowed = Run("eval", Mlp("model.onnx"), "--data", data, "--allow-nonfinite");
        Assert.True(allowed.Code == 0, allowed.Err);
        Assert.Contains("loss NaN", allowed.Out);
    }

    [Fact]
    public void UnlearnWithNonFiniteOrBadLabelsWritesNothing()
    {
        using var dir = new TempDir();
        var forget = WriteData(dir, "forget.npz", d => X(d, 4 * 64 + 3, float.PositiveInfinity), from: "forget.npz");
        var corrected = WriteData(dir, "corrected.npz", d => Label(d, 1, -3), from: "corrected.npz");
        var train = WriteData(dir, "train.npz", d => X(d, 63 * 64, float.NaN));
        foreach (var (args, message) in new[]
        {
            (new[] { "--train", Mlp("data.npz"), "--forget", forget }, "holds +Inf at row 4, column 3"),
            (new[] { "--train", train, "--forget", Mlp("forget.npz") }, "holds NaN at row 63, column 0"),
            (new[] { "--train", Mlp("data.npz"), "--forget", Mlp("forget.npz"), "--corrected", corrected }, "holds -3 at row 1, outside the 10 classes"),
        })
        {
            var line = OneLineRefusal(Run(["unlearn", Mlp("model.onnx"), .. args, "--out", dir.File("new.onnx")]));
            Assert.Contains(message, line);
            Assert.False(File.Exists(dir.File("new.onnx")));
        }
    }

    [Fact]
    public void OnnxRuntimeLogLinesAppearOnlyWithVerbose()
    {
        // A token beyond the embedding's 16 rows: ONNX Runtime's Gather fails (and logs it) while probing shapes.
        using var dir = new TempDir();
        var d = Npz.Read(Fixtures.File("transformer", "data.npz"));
        var tokens = d["tokens"].ToInt64();
        tokens[19] = 99;
        d["tokens"] = NdArray.FromInt64(tokens, 64, 8);
        Npz.Write(dir.File("tokens.npz"), d);
        var args = new[] { "eval", Fixtures.File("transformer", "model.onnx"), "--data", dir.File("tokens.npz") };
        Assert.Contains("Gather", OneLineRefusal(Run(args)));

        var verbose = Run([.. args, "--verbose"]);
        Assert.Equal(2, verbose.Code);
        var lines = verbose.Err.TrimEnd('\n').Split('\n');
        Assert.Contains(lines, l => l.StartsWith("onnxruntime error: ") && l.Contains("Gather"));
        Assert.StartsWith("error: ", lines[^1]);
        Assert.DoesNotContain('\u001b', verbose.Err);
    }

    [Fact]
    public void ControlCharactersInModelNamesAreEscaped()
    {
        using var dir = new TempDir();
        const string name = "lo\tgi\nts\u001b[31m";
        var model = WriteModel(dir, "names.onnx", m =>
        {
            var old = m.Graph.Output[0].Name;
            m.Graph.Output[0].Name = name;
            foreach (var n in m.Graph.Node) for (int i = 0; i < n.Output.Count; i++) if (n.Output[i] == old) n.Output[i] = name;
        });
        var line = OneLineRefusal(Run("eval", model, "--data", Mlp("data.npz"), "--output", "nope"));
        Assert.Contains(@"lo\tgi\nts\u001b[31m", line);
    }

    [DllImport("libc", SetLastError = true)]
    static extern int kill(int pid, int signal);

    /// <summary>
    /// SIGTERM and SIGINT caught inside the write-back (a temporary data file exists in the output folder) leave no
    /// temporary file and no output model behind: the handler removes what the write had created before the process ends
    /// with the signal's exit code. The data file is padded to 1 GiB so that its copy is a window the signal can hit even on a
    /// loaded machine; a run whose write finished before the signal landed is retried (up to 12 runs).
    /// </summary>
    [Theory]
    [InlineData(15)] // SIGTERM
    [InlineData(2)]  // SIGINT
    public async Task ASignalDuringWriteBackLeavesNoTemporaryFile(int signal)
    {
        using var dir = new TempDir();
        foreach (var f in new[] { "model.onnx", "model.onnx.data", "data.npz" }) File.Copy(Fixtures.File("mlp_external", f), dir.File(f));
        using (var s = File.OpenWrite(dir.File("model.onnx.data"))) s.SetLength(s.Length + (1L << 30));
        var rows = Npz.Read(dir.File("data.npz"));
        Npz.Write(dir.File("forget.npz"), rows.ToDictionary(kv => kv.Key, kv => kv.Value.TakeRows([0, 1, 2, 3])));
        var corrected = Label(Npz.Read(dir.File("forget.npz")), 0, (rows["label"].ToInt64()[0] + 1) % 10);
        Npz.Write(dir.File("corrected.npz"), corrected);
        var outDir = Directory.CreateDirectory(dir.File("out")).FullName;

        int caught = 0;
        for (int attempt = 0; attempt < 12 && caught == 0; attempt++)
        {
            using var p = CliProcess.Start(null, null, "unlearn", dir.File("model.onnx"), "--train", dir.File("data.npz"), "--forget", dir.File("forget.npz"),
                "--corrected", dir.File("corrected.npz"), "--out", Path.Combine(outDir, "new.onnx"), "--quiet");
            var stderr = p.StandardError.ReadToEndAsync();
            var stdout = p.StandardOutput.ReadToEndAsync();
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (!p.HasExited && clock.Elapsed < Timeout && Directory.GetFiles(outDir, "*.tmp").Length == 0) Thread.Sleep(2);
            if (!p.HasExited) Assert.Equal(0, kill(p.Id, signal));
            Assert.True(p.WaitForExit(Timeout), "the process did not end after the signal");
            Assert.Empty(Directory.GetFiles(outDir, "*.tmp"));
            if (p.ExitCode == 128 + signal)
            {
                caught++;
                Assert.False(File.Exists(Path.Combine(outDir, "new.onnx")), "a model was written although the write was interrupted");
            }
            else
            {
                Assert.True(p.ExitCode == 0, $"exit {p.ExitCode}: {await stderr}");
                foreach (var f in Directory.GetFiles(outDir)) File.Delete(f);
            }
        }
        Assert.True(caught == 1, "no signal landed inside the write in 12 runs");
    }
}
