using System.Text.Json;
using System.Text.RegularExpressions;
using OnnxUnlearn.Data;

namespace OnnxUnlearn.Tests.Cli;

/// <summary>What every command shares: --json documents, --request and --quiet in its help, usage errors, piped output.</summary>
public class CliConventionTests
{
    static (int Code, string Out, string Err) Run(params string[] args) => CliRunner.Run(args);

    public static TheoryData<string> Commands => new() { "inspect", "artifacts", "grad", "eval", "predict", "unlearn", "sharpness", "select", "merge", "text2npz", "exposure" };

    [Theory]
    [MemberData(nameof(Commands))]
    public void EveryCommandsHelpListsTheSharedOptions(string command)
    {
        var (code, output, err) = Run(command, "--help");
        Assert.True(code == 0, err);
        foreach (var option in new[] { "--request", "--quiet", "--json" })
            Assert.Single(Regex.Matches(output, $@"^\s+(-\S+, )*{option}\b", RegexOptions.Multiline)); // listed once, as an option
        Assert.Contains("--request <FILE>", output);
    }

    [Fact]
    public void SharpnessHelpNamesTheStandardErrorKeysAsWritten()
    {
        var (_, output, _) = Run("sharpness", "--help");
        Assert.Contains("'stderr/<name>'", output);
        Assert.DoesNotContain("<name>/stderr", output);
    }

    [Theory]
    [InlineData("unknown option '--bogus'", "inspect", "{mlp}", "--bogus")]
    [InlineData("unknown option '--fractoin' (did you mean '--fraction'?)", "select", "--scores", "s.npz", "--out", "m.npz", "--fractoin", "0.1")]
    [InlineData("option '--train' is required", "unlearn", "{mlp}", "--forget", "{mlp-data}")]
    [InlineData("'abc'", "sharpness", "{mlp}", "--data", "{mlp-data}", "--out", "h.npz", "--probes", "abc")]
    [InlineData("unexpected argument 'extra'", "eval", "{mlp}", "extra", "--data", "{mlp-data}")]
    public void UsageErrorsExitWith2AndOneLineThatPointsToTheHelp(string problem, params string[] args)
    {
        var real = args.Select(a => a switch { "{mlp}" => Fixtures.File("mlp", "model.onnx"), "{mlp-data}" => Fixtures.File("mlp", "data.npz"), _ => a }).ToArray();
        var (code, output, err) = Run(real);
        Assert.Equal(2, code);
        Assert.Equal("", output); // no help dump
        Assert.Single(err.Trim().Split('\n'));
        Assert.StartsWith("error: ", err);
        Assert.True(err.Contains(problem), err);
        Assert.EndsWith($"see 'onnx-unlearn {args[0]} --help'", err.Trim());
    }

    [Fact]
    public void HelpAndVersionStillExitWith0()
    {
        var (code, output, _) = Run("unlearn", "--help");
        Assert.Equal(0, code);
        Assert.Contains("Usage:", output);
        (code, output, _) = Run("--version");
        Assert.Equal(0, code);
        Assert.Matches(@"^\d+\.\d+\.\d+", output);
        (code, _, var err) = Run("selec");
        Assert.Equal(2, code);
        Assert.Contains("unknown command 'selec' (did you mean 'select'?)", err);
    }

    [Fact]
    public void PipedOutputIsNotWrapped()
    {
        using var dir = new TempDir();
        // the README's first command; CliRunner redirects stdout
        var (code, output, err) = Run("unlearn", Fixtures.File("mlp", "model.onnx"), "--train", Fixtures.File("mlp", "data.npz"), "--forget", Fixtures.File("mlp", "forget.npz"),
            "--corrected", Fixtures.File("mlp", "corrected.npz"), "--out", dir.File("new.onnx"), "--report", dir.File("report.json"));
        Assert.True(code == 0, err);
        var lines = output.Split('\n');
        Assert.Contains(lines, l => Regex.IsMatch(l, @"τ = \d+(\.\d+)?"));
        Assert.DoesNotContain(lines, l => l.TrimEnd().EndsWith('=') || l.TrimEnd().EndsWith("τ ="));
        Assert.Contains(lines, l => l.TrimEnd().Length > 80);
        // a table row is one line: all six cells between its seven rules
        var row = Assert.Single(lines, l => l.StartsWith("│ forget"));
        Assert.Equal(7, row.Count(ch => ch == '│'));
        Assert.Equal(2, Regex.Matches(row, "%").Count);
    }

    [Fact]
    public void QuietPrintsNothingButJsonAndErrors()
    {
        using var dir = new TempDir();
        var mlp = Fixtures.File("mlp", "model.onnx");
        var data = Fixtures.File("mlp", "data.npz");
        string[][] commands =
        [
            ["inspect", mlp],
            ["eval", mlp, "--data", data],
            ["grad", mlp, "--data", data, "--out", dir.File("g.npz")],
            ["sharpness", mlp, "--data", data, "--out", dir.File("h.npz"), "--probes", "30"], // a table, and a stability warning on stderr
            ["select", "--scores", dir.File("h.npz"), "--out", dir.File("m.npz")],
            ["unlearn", mlp, "--train", data, "--forget", Fixtures.File("mlp", "forget.npz"), "--out", dir.File("new.onnx"), "--steps", "1"],
        ];
        foreach (var args in commands)
        {
            var (code, output, err) = Run([.. args, "--quiet"]);
            Assert.True(code == 0, $"{args[0]}: {err}");
            Assert.True(output == "", $"{args[0]} --quiet printed: {output}");
            (code, output, err) = Run([.. args, "-q", "--json"]);
            Assert.True(code == 0, $"{args[0]}: {err}");
            using var doc = JsonDocument.Parse(output); // one document, nothing else
        }
        Assert.True(File.Exists(dir.File("m.npz")));
        var (c, o, e) = Run("grad", mlp, "--data", "/nonexistent/d.npz", "--out", dir.File("g.npz"), "--quiet");
        Assert.Equal(2, c);
        Assert.Equal("", o);
        Assert.StartsWith("error: ", e);
    }

    [Fact]
    public void SelectJsonCountsWhatTheMaskHolds()
    {
        using var dir = new TempDir();
        var (code, _, err) = Run("sharpness", Fixtures.File("mlp", "model.onnx"), "--data", Fixtures.File("mlp", "data.npz"), "--out", dir.File("h.npz"), "--probes", "30", "--estimator", "hutchinson");
        Assert.True(code == 0, err);
        (code, var output, err) = Run("select", "--scores", dir.File("h.npz"), "--fraction", "0.02", "--per-tensor", "--out", dir.File("m.npz"), "--json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        var mask = Npz.Read(dir.File("m.npz"));
        Assert.Equal(mask.Values.Sum(a => a.Length), root.GetProperty("elements").GetInt32());
        Assert.Equal(mask.Values.Sum(a => a.ToFloat().Count(v => v != 0)), root.GetProperty("selected").GetInt32());
        Assert.True(root.GetProperty("perTensor").GetBoolean());
        Assert.Equal("score", root.GetProperty("mask").GetString());
        var tensors = root.GetProperty("tensors").EnumerateArray().ToList();
        Assert.Equal(mask.Keys, tensors.Select(t => t.GetProperty("name").GetString()));
        foreach (var t in tensors)
        {
            var m = mask[t.GetProperty("name").GetString()!];
            int nonzero = m.ToFloat().Count(v => v != 0);
            Assert.Equal(nonzero, t.GetProperty("selected").GetInt32());
            Assert.Equal(m.Length, t.GetProperty("elements").GetInt64());
            Assert.Equal(nonzero / (double)m.Length, t.GetProperty("share").GetDouble(), 12);
        }
    }

    [Fact]
    public void GradJsonGivesTheNormsOfWhatItWrote()
    {
        using var dir = new TempDir();
        var (code, output, err) = Run("grad", Fixtures.File("logreg", "model.onnx"), "--data", Fixtures.File("logreg", "data.npz"), "--out", dir.File("g.npz"), "--json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        var g = Npz.Read(dir.File("g.npz"));
        static double Norm(NdArray a) => Math.Sqrt(a.ToFloat().Sum(v => (double)v * v));
        Assert.Equal(Math.Sqrt(g.Values.Sum(a => Norm(a) * Norm(a))), root.GetProperty("norm").GetDouble(), 9);
        Assert.Equal(650, root.GetProperty("elements").GetInt32());
        Assert.Equal(64, root.GetProperty("count").GetInt64());
        Assert.True(root.GetProperty("loss").GetDouble() > 0);
        foreach (var t in root.GetProperty("tensors").EnumerateArray())
        {
            var a = g[t.GetProperty("name").GetString()!];
            Assert.Equal(a.Shape, t.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()));
            Assert.Equal(Norm(a), t.GetProperty("norm").GetDouble(), 9);
        }
        // the same loss as eval
        (_, output, _) = Run("eval", Fixtures.File("logreg", "model.onnx"), "--data", Fixtures.File("logreg", "data.npz"), "--json");
        using var eval = JsonDocument.Parse(output);
        Assert.Equal(eval.RootElement.GetProperty("loss").GetDouble(), root.GetProperty("loss").GetDouble(), 12);
    }

    [Fact]
    public void ArtifactsJsonDescribesTheFilesWritten()
    {
        using var dir = new TempDir();
        var (code, output, err) = Run("artifacts", Fixtures.File("charlstm", "model.onnx"), "--data", Fixtures.File("charlstm", "data.npz"), "--out", dir.File("a"), "--json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        var artifact = global::Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(root.GetProperty("gradient").GetString()!));
        Assert.Equal(artifact.Graph.Node.Count, root.GetProperty("nodes").GetInt32());
        using var manifest = JsonDocument.Parse(File.ReadAllText(root.GetProperty("manifest").GetString()!));
        var parameters = manifest.RootElement.GetProperty("inputs").GetProperty("parameters");
        Assert.Equal(parameters.GetArrayLength(), root.GetProperty("trainableTensors").GetInt32());
        Assert.Equal(parameters.EnumerateArray().Sum(p => p.GetProperty("shape").EnumerateArray().Aggregate(1L, (n, d) => n * d.GetInt64())), root.GetProperty("trainableElements").GetInt64());
        var unrolled = Assert.Single(root.GetProperty("unrolled").EnumerateArray().ToList());
        Assert.Equal("LSTM", unrolled.GetProperty("op").GetString());
        Assert.Equal(manifest.RootElement.GetProperty("unrolled").GetProperty("nodes")[0].GetProperty("sequenceLength").GetInt64(), unrolled.GetProperty("sequenceLength").GetInt64());
    }

    [Fact]
    public void Text2NpzJsonCountsTheWindowsWritten()
    {
        using var dir = new TempDir();
        var vocab = Text.Bigram.Uniform().SaveVocab(dir.File("vocab.json"));
        File.WriteAllText(dir.File("t.txt"), "my pin is 4929 - my pin is 4929 - ok");
        var (code, output, err) = Run("text2npz", dir.File("t.txt"), "--vocab", vocab, "--window", "8", "--match", "4929", "--out", dir.File("f.npz"), "--json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        var f = Npz.Read(dir.File("f.npz"));
        Assert.Equal(f["tokens"].Shape[0], root.GetProperty("windows").GetInt32());
        Assert.Equal(8, root.GetProperty("window").GetInt32());
        Assert.Equal(1, root.GetProperty("stride").GetInt32());
        Assert.Equal("tokens", root.GetProperty("input").GetString());
        Assert.Equal(2, root.GetProperty("occurrences").GetInt32());
        (code, output, err) = Run("text2npz", dir.File("t.txt"), "--vocab", vocab, "--window", "8", "--out", dir.File("all.npz"), "--json");
        Assert.True(code == 0, err);
        using var all = JsonDocument.Parse(output);
        Assert.Equal(Npz.Read(dir.File("all.npz"))["label"].Shape[0], all.RootElement.GetProperty("windows").GetInt32());
        Assert.False(all.RootElement.TryGetProperty("occurrences", out _)); // only with --match
    }

    [Fact]
    public void SharpnessWarnsWhenTheProbeHalvesDisagree()
    {
        using var dir = new TempDir();
        // 4 HVPs on the MLP: the halves' top-5 % sets overlap ~0.15
        var (code, output, err) = Run("sharpness", Fixtures.File("mlp", "model.onnx"), "--data", Fixtures.File("mlp", "data.npz"), "--out", dir.File("h.npz"), "--probes", "4", "--json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        double overlap = doc.RootElement.GetProperty("topKOverlap").GetDouble();
        Assert.True(overlap < 0.5, $"overlap {overlap}");
        Assert.Contains($"warning: the top-5 % sets of the two probe halves overlap only {overlap:F2} (Jaccard); the selection is unstable: raise --probes (now 4)", err);
        // 60 HVPs: stable (overlap ~0.67), no warning
        (code, output, err) = Run("sharpness", Fixtures.File("mlp", "model.onnx"), "--data", Fixtures.File("mlp", "data.npz"), "--out", dir.File("h.npz"), "--probes", "60", "--json");
        Assert.True(code == 0, err);
        using var stable = JsonDocument.Parse(output);
        Assert.True(stable.RootElement.GetProperty("topKOverlap").GetDouble() >= 0.5);
        Assert.DoesNotContain("warning", err);
    }
}

public class ToolPackageTests
{
    /// <summary>
    /// The tool carries ONNX Runtime's natives for desktop and server platforms only (the package was 187 MB with the
    /// iOS and Android archives, 48 MB without): its deps.json, which the package's is made from, names no others.
    /// </summary>
    [Fact]
    public void ToolCarriesDesktopAndServerNativesOnly()
    {
        using var deps = JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "onnx-unlearn.deps.json")));
        var natives = deps.RootElement.GetProperty("targets").EnumerateObject().SelectMany(t => t.Value.EnumerateObject())
            .Where(p => p.Value.TryGetProperty("runtimeTargets", out _))
            .SelectMany(p => p.Value.GetProperty("runtimeTargets").EnumerateObject()).ToList();
        // "osx": Skia's universal macOS library, which serves osx-arm64
        Assert.Equal(["linux-arm64", "linux-x64", "osx", "osx-arm64", "win-x64"], natives.Select(n => n.Value.GetProperty("rid").GetString()).Distinct().Order());
        Assert.DoesNotContain(natives, n => n.Name.EndsWith(".lib"));
        Assert.DoesNotContain(natives, n => n.Name.Contains("HarfBuzz", StringComparison.OrdinalIgnoreCase));
    }
}
