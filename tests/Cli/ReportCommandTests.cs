using System.Buffers.Binary;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using OnnxUnlearn.Cli.Reports;
using SkiaSharp;

namespace OnnxUnlearn.Tests.Cli;

/// <summary>A real report: the README's first command run on the shipped MLP fixture, once for the class.</summary>
public sealed class UnlearnReportFixture : IDisposable
{
    public TempDir Dir { get; } = new();
    public string Json => Dir.File("R.json");
    public JsonElement Root { get; }

    public UnlearnReportFixture()
    {
        var (code, _, err) = CliRunner.Run("unlearn", Fixtures.File("mlp", "model.onnx"), "--train", Fixtures.File("mlp", "data.npz"),
            "--forget", Fixtures.File("mlp", "forget.npz"), "--corrected", Fixtures.File("mlp", "corrected.npz"), "--out", Dir.File("X.onnx"), "--report", Json);
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(File.ReadAllText(Json));
        Root = doc.RootElement.Clone();
    }

    public void Dispose() => Dir.Dispose();
}

/// <summary><c>report</c>: the JSON report of unlearn as Markdown (+ PNG files) or one self-contained HTML file.</summary>
public class ReportCommandTests(UnlearnReportFixture real) : IClassFixture<UnlearnReportFixture>
{
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;
    static string G6(double v) => v.ToString("G6", Inv);
    static string Pct(double v) => (v * 100).ToString("F2", Inv) + " %";

    /// <summary>A PNG: the signature, an IHDR chunk first with a nonzero width and height, and Skia decodes it to that size.</summary>
    static (int Width, int Height) AssertPng(byte[] png)
    {
        Assert.True(png.Length > 100, $"PNG of {png.Length} bytes");
        Assert.Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A }, png[..8]);
        Assert.Equal(13, BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(8)));
        Assert.Equal("IHDR", System.Text.Encoding.ASCII.GetString(png, 12, 4));
        int w = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(16)), h = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(20));
        Assert.True(w > 0 && h > 0, $"{w}×{h}");
        using var bitmap = SKBitmap.Decode(png);
        Assert.NotNull(bitmap);
        Assert.Equal((w, h), (bitmap.Width, bitmap.Height));
        // not a blank canvas: some pixels differ from the corner's
        var corner = bitmap.GetPixel(0, 0);
        Assert.Contains(Enumerable.Range(0, h).SelectMany(y => Enumerable.Range(0, w).Where(x => (x + y) % 7 == 0).Select(x => bitmap.GetPixel(x, y))), p => p != corner);
        return (w, h);
    }

    static string[] Written(string stdout)
    {
        using var doc = JsonDocument.Parse(stdout);
        return doc.RootElement.GetProperty("written").EnumerateArray().Select(e => e.GetString()!).ToArray();
    }

    /// <summary>The rows of the Markdown table under a "## heading" (without the header and the alignment row).</summary>
    static string[] TableRows(string markdown, string heading)
    {
        var lines = markdown.Split('\n').Select(l => l.TrimEnd('\r')).ToArray();
        int at = Array.FindIndex(lines, l => l.StartsWith("## " + heading));
        Assert.True(at >= 0, $"no section '{heading}'");
        return lines.Skip(at + 1).SkipWhile(l => !l.StartsWith('|')).TakeWhile(l => l.StartsWith('|')).Skip(2).ToArray();
    }

    static string[] Cells(string row) => row.Trim().Trim('|').Split(" | ").Select(c => c.Trim()).ToArray();

    [Fact]
    public void MarkdownOfARealReportHasItsNumbersEveryStepAndTheFigures()
    {
        using var dir = new TempDir();
        var md = dir.File("R.md");
        var (code, stdout, err) = CliRunner.Run("report", real.Json, "--out", md, "--json");
        Assert.True(code == 0, err);
        var r = real.Root;
        bool histogram = r.TryGetProperty("scoreHistogram", out _);
        var expected = new List<string> { dir.File("R.selected.png") };
        if (histogram) expected.Add(dir.File("R.scores.png"));
        expected.Add(md);
        Assert.Equal(expected, Written(stdout));
        if (!histogram) Assert.False(File.Exists(dir.File("R.scores.png")));
        var text = File.ReadAllText(md);

        // header
        Assert.Contains("**Outcome: " + r.GetProperty("outcome").GetString() + "**", text);
        Assert.Contains("| input sha256 | `" + r.GetProperty("inputSha256").GetString() + "` |", text);
        Assert.Contains("| output sha256 | `" + r.GetProperty("outputSha256").GetString() + "` |", text);
        Assert.Contains("| input model | `" + r.GetProperty("inputModel").GetString() + "` |", text);
        Assert.Contains("| tool | " + r.GetProperty("tool").GetString() + " |", text);
        Assert.Contains("| seed | " + r.GetProperty("seed").GetInt32() + " |", text);
        var settings = TableRows(text, "Settings").Select(row => Cells(row)[0]).ToArray();
        Assert.Equal(r.GetProperty("settings").EnumerateObject().Select(p => p.Name), settings);

        // before / after: one row per set, the JSON's numbers
        var sets = TableRows(text, "Before and after");
        var before = r.GetProperty("before").EnumerateObject().ToArray();
        Assert.Equal(before.Length, sets.Length);
        foreach (var (set, row) in before.Zip(sets))
        {
            var a = r.GetProperty("after").GetProperty(set.Name);
            var b = set.Value;
            Assert.Equal(new[] { set.Name, b.GetProperty("samples").GetInt64().ToString(Inv), G6(b.GetProperty("loss").GetDouble()), G6(a.GetProperty("loss").GetDouble()),
                Pct(b.GetProperty("accuracy").GetDouble()), Pct(a.GetProperty("accuracy").GetDouble()) }, Cells(row));
        }

        // one row per step, in order, with the step's numbers
        var steps = r.GetProperty("steps").EnumerateArray().ToArray();
        Assert.True(steps.Length > 1);
        var rows = TableRows(text, "Steps");
        Assert.Equal(steps.Length, rows.Length);
        foreach (var (s, row) in steps.Zip(rows))
        {
            var c = Cells(row);
            Assert.Equal(s.GetProperty("step").GetInt32().ToString(Inv), c[0]);
            Assert.Equal(G6(s.GetProperty("tau").GetDouble()), c[1]);
            Assert.Equal(G6(s.GetProperty("objective").GetDouble()), c[2]);
            Assert.Equal(G6(s.GetProperty("retainLoss").GetDouble()), c[3]);
            Assert.Equal(G6(s.GetProperty("updateNorm").GetDouble()), c[4]);
            Assert.Equal(s.GetProperty("gradientEvaluations").GetInt64().ToString("N0", Inv), c[5]);
            Assert.StartsWith(s.GetProperty("outcome").GetString()!, c[6]);
        }

        // selection: every tensor, and the figure referenced next to the document
        var selected = TableRows(text, "Selection per tensor");
        Assert.Equal(r.GetProperty("selectedPerTensor").EnumerateObject().Select(p => $"`{p.Name}`"), selected.Select(row => Cells(row)[0]));
        Assert.Contains("](R.selected.png)", text);
        AssertPng(File.ReadAllBytes(dir.File("R.selected.png")));
        Assert.DoesNotContain("<script", text, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void HtmlIsOneSelfContainedFileWithTheFiguresEmbedded()
    {
        using var dir = new TempDir();
        var html = dir.File("R.html");
        var (code, stdout, err) = CliRunner.Run("report", real.Json, "--out", html, "--json");
        Assert.True(code == 0, err);
        Assert.Equal([html], Written(stdout));
        Assert.Equal(["R.html"], Directory.GetFiles(dir.Path).Select(Path.GetFileName));
        var text = File.ReadAllText(html);
        Assert.StartsWith("<!DOCTYPE html>", text);
        Assert.DoesNotContain("<script", text, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("<link", text, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotMatch(@"(src|href)=""(?!data:)", text);
        var images = Regex.Matches(text, @"src=""data:image/png;base64,([A-Za-z0-9+/=]+)""");
        Assert.Equal(real.Root.TryGetProperty("scoreHistogram", out _) ? 2 : 1, images.Count);
        foreach (Match m in images)
        {
            var (w, h) = AssertPng(Convert.FromBase64String(m.Groups[1].Value));
            Assert.Contains($"width=\"{w}\" height=\"{h}\" src=\"data:image/png;base64,{m.Groups[1].Value}\"", text);
        }
        var forget = real.Root.GetProperty("before").GetProperty("forget");
        Assert.Contains($"<td class=\"num\">{G6(forget.GetProperty("loss").GetDouble())}</td>", text);
        Assert.Contains($"<td class=\"num\">{G6(real.Root.GetProperty("after").GetProperty("forget").GetProperty("loss").GetDouble())}</td>", text);
        Assert.Contains(real.Root.GetProperty("outputSha256").GetString()!, text);
        Assert.Equal(real.Root.GetProperty("steps").GetArrayLength(), Regex.Matches(text, @"<tr><td class=""num"">\d+</td><td class=""num"">").Count);
    }

    const string Secret = "4929 5173 0826 3307", Prefix = "my credit card number is ";

    /// <summary>A report with every part a real run may not have: tensorElements, scoreHistogram, missed targets, an exposure (with an old report's secret and prefix).</summary>
    static string HandWritten(string outcome = "target-missed", string histogram = """{ "score": "hessian", "edges": [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1], "counts": [12000, 9000, 5000, 2500, 1200, 280, 20], "threshold": 2.5e-4 }""") => $$"""
        {
          "tool": "onnx-unlearn 0.1.0",
          "inputModel": "models/lstm.onnx", "inputSha256": "{{new string('a', 64)}}",
          "outputModel": "out/forgot.onnx", "outputSha256": "{{new string('b', 64)}}",
          "written": { "elementsChanged": 1500, "bytesChanged": 5210, "tensors": 4 },
          "settings": { "train": "train.npz", "select": "Hessian", "order": "largest", "fraction": 0.05, "params": ["lstm.*", "fc.*"], "prefix": "{{Prefix}}", "vocab": { "path": "v.json", "secret": "{{Secret}}" } },
          "seed": 7,
          "selectedElements": 1500, "trainableElements": 30000,
          "selectedPerTensor": { "embed.weight": 100, "lstm.weight_ih_l0": 900, "lstm.weight_hh_l0": 450, "fc.weight": 50, "fc.bias": 0 },
          "tensorElements": { "embed.weight": 2000, "lstm.weight_ih_l0": 12000, "lstm.weight_hh_l0": 12000, "fc.weight": 3900, "fc.bias": 100 },
          "scoreHistogram": {{histogram}},
          "gradientDifferenceNorm": 0.5, "updateNorm": 0.8,
          "before": { "forget": { "loss": 0.0123, "accuracy": 0.997, "samples": 512 }, "test": { "loss": 1.4567, "accuracy": 0.61, "samples": 2048 } },
          "after": { "forget": { "loss": 2.345, "accuracy": 0.41, "samples": 512 }, "test": { "loss": 1.5012, "accuracy": 0.6, "samples": 2048 } },
          "steps": [
            { "step": 0, "tau": 0, "objective": -0.5, "retainLoss": 1.2, "updateNorm": 0, "gradientEvaluations": 60, "outcome": "start", "exposure": 53.15 },
            { "step": 1, "tau": 0.25, "objective": -0.9, "retainLoss": 1.21, "updateNorm": 0.7, "gradientEvaluations": 63, "outcome": "accepted", "exposure": 30.5 },
            { "step": 2, "tau": 0.125, "objective": -0.95, "retainLoss": 1.22, "updateNorm": 0.8, "gradientEvaluations": 66, "outcome": "cg-failed", "cg": "negative-curvature" }
          ],
          "exposure": { "before": { "bits": 53.15, "method": "exact", "rank": 1, "secretLogLikelihood": -3.2 }, "after": { "bits": 8.73, "method": "estimate", "rank": 21000, "secretLogLikelihood": -40.1 },
                        "target": 2, "reached": false, "prefix": "{{Prefix}}", "secret": "{{Secret}}" },
          "gradientEvaluations": 66, "seconds": 27.3,
          "outcome": "{{outcome}}",
          "missed": [ { "target": "exposure", "wanted": 2, "reached": 8.73 }, { "target": "accuracy", "wanted": 0.9, "reached": null } ],
          "aKeyOfALaterVersion": { "anything": [1, 2, 3] }
        }
        """;

    [Fact]
    public void HandWrittenReportShowsMissedTargetsSharesTheHistogramAndNeverTheSecret()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("H.json"), HandWritten());
        var (code, stdout, err) = CliRunner.Run("report", dir.File("H.json"), "--out", dir.File("H.md"), "--json");
        Assert.True(code == 0, err);
        Assert.Equal([dir.File("H.selected.png"), dir.File("H.scores.png"), dir.File("H.md")], Written(stdout));
        var md = File.ReadAllText(dir.File("H.md"));
        Assert.Contains("**Outcome: target-missed**", md);
        Assert.Contains("| exposure | 2.00 bits | 8.73 bits |", md);
        Assert.Contains("| accuracy | 90.00 % | n/a |", md);
        Assert.Contains("| written | 1,500 elements changed, 5,210 bytes differ, in 4 tensor(s) |", md);
        Assert.Contains("| selected elements | 1,500 of 30,000 trainable (5.00 %) |", md);
        // share = selected / elements, per tensor
        Assert.Equal(["| `embed.weight` | 100 | 2,000 | 5.00 % |", "| `lstm.weight_ih_l0` | 900 | 12,000 | 7.50 % |", "| `lstm.weight_hh_l0` | 450 | 12,000 | 3.75 % |",
            "| `fc.weight` | 50 | 3,900 | 1.28 % |", "| `fc.bias` | 0 | 100 | 0.00 % |"], TableRows(md, "Selection per tensor"));
        // the steps carry an exposure column, and CG's stop
        var steps = TableRows(md, "Steps");
        Assert.Equal(3, steps.Length);
        Assert.Equal(["0", "0", "-0.5", "1.2", "0", "60", "start", "53.15"], Cells(steps[0]));
        Assert.Equal(["2", "0.125", "-0.95", "1.22", "0.8", "66", "cg-failed (CG: negative-curvature)", "–"], Cells(steps[2]));
        Assert.Equal(["| exposure (bits) | 53.15 | 8.73 |", "| method | exact | estimate |", "| rank | 1 | 21000 |"], TableRows(md, "Exposure"));
        Assert.Contains("target: below 2 bits — NOT reached.", md);
        Assert.Contains("hessian scores of 30,000 elements in 7 bins", md);
        Assert.Contains("selection starts at 0.00025", md);
        Assert.Contains("](H.scores.png)", md);
        AssertPng(File.ReadAllBytes(dir.File("H.selected.png")));
        AssertPng(File.ReadAllBytes(dir.File("H.scores.png")));
        // the settings: every key but the secret's and its prefix's, objects without them at any depth
        Assert.Equal(["train", "select", "order", "fraction", "params", "vocab"], TableRows(md, "Settings").Select(r => Cells(r)[0]));
        Assert.Contains("| vocab | `{\"path\":\"v.json\"}` |", md);

        (code, _, err) = CliRunner.Run("report", dir.File("H.json"), "--out", dir.File("H.html"));
        Assert.True(code == 0, err);
        var html = File.ReadAllText(dir.File("H.html"));
        Assert.Equal(2, Regex.Matches(html, "data:image/png;base64,").Count);
        Assert.DoesNotContain("<script", html, StringComparison.OrdinalIgnoreCase);
        foreach (var text in new[] { md, html })
        {
            Assert.DoesNotContain(Secret, text);
            Assert.DoesNotContain("4929", text);
            Assert.DoesNotContain(Prefix.Trim(), text);
            Assert.DoesNotContain("credit card", text);
        }
    }

    [Fact]
    public void NoChangeReportWithoutAfterShowsDashes()
    {
        using var dir = new TempDir();
        var json = """
            { "inputModel": "m.onnx", "outcome": "no-change", "seed": 0, "settings": { "update": "SecondOrder" },
              "selectedPerTensor": { "w": 3 },
              "cg": { "iterations": 4, "relativeResidual": 0.5, "stop": "negative-curvature", "damping": 1000, "stopValue": -2.5 },
              "before": { "forget": { "loss": 0.25, "accuracy": 1, "samples": 6 } } }
            """;
        File.WriteAllText(dir.File("N.json"), json);
        var (code, stdout, err) = CliRunner.Run("report", dir.File("N.json"), "--out", dir.File("N.md"));
        Assert.True(code == 0, err);
        Assert.Contains("wrote " + dir.File("N.md"), stdout);
        var md = File.ReadAllText(dir.File("N.md"));
        Assert.Contains("**Outcome: no-change**", md);
        Assert.Equal(["| forget | 6 | 0.25 | – | 100.00 % | – |"], TableRows(md, "Before and after"));
        Assert.Contains("Nothing was measured after", md);
        Assert.Contains("| output model | – (none written) |", md);
        Assert.Contains("| conjugate gradients | 4 iterations, λ = 1000, relative residual 0.5, stop: negative-curvature (-2.5) |", md);
        Assert.DoesNotContain("## Steps", md);
        Assert.DoesNotContain("## Scores", md);
        Assert.False(File.Exists(dir.File("N.scores.png")));
        AssertPng(File.ReadAllBytes(dir.File("N.selected.png")));
    }

    [Fact]
    public void NoPlotsWritesTheDocumentAlone()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("H.json"), HandWritten());
        var (code, stdout, err) = CliRunner.Run("report", dir.File("H.json"), "--out", dir.File("H.md"), "--no-plots", "--json");
        Assert.True(code == 0, err);
        Assert.Equal([dir.File("H.md")], Written(stdout));
        Assert.DoesNotContain(".png", File.ReadAllText(dir.File("H.md")));
    }

    [Theory]
    [InlineData("missing", ".md")]
    [InlineData("not json", ".md")]
    [InlineData("not a report", ".html")]
    [InlineData("bad histogram", ".md")]
    [InlineData("descending edges", ".md")]
    [InlineData("wrong type", ".html")]
    [InlineData("valid", ".pdf")]
    [InlineData("valid", "/no/such/folder/R.md")]
    public void BadReportOrOutputIsOneLineAndExitCode2(string report, string output)
    {
        using var dir = new TempDir();
        var path = dir.File("R.json");
        string? content = report switch
        {
            "missing" => null,
            "not json" => "{ \"outcome\": ",
            "not a report" => "{ \"name\": \"model\" }",
            "bad histogram" => HandWritten(histogram: """{ "edges": [0, 1, 2], "counts": [1, 2, 3] }"""),
            "descending edges" => HandWritten(histogram: """{ "edges": [0, 2, 1], "counts": [1, 2] }"""),
            "wrong type" => HandWritten().Replace("\"loss\": 0.0123", "\"loss\": \"low\""),
            _ => HandWritten(),
        };
        if (content is not null) File.WriteAllText(path, content);
        var outPath = output.StartsWith('/') ? output : dir.File("R" + output);
        var (code, _, err) = CliRunner.Run("report", path, "--out", outPath);
        Assert.Equal(2, code);
        Assert.StartsWith("error: ", err);
        Assert.Single(err.Trim().Split('\n'));
        Assert.DoesNotContain("   at ", err);
        Assert.Equal(content is null ? [] : ["R.json"], Directory.GetFiles(dir.Path).Select(Path.GetFileName));
        if (report is "bad histogram") Assert.Contains("scoreHistogram.edges must hold 4 edges for 3 counts", err);
        if (report is "wrong type") Assert.Contains("before.forget.loss must be a number", err);
    }

    [Fact]
    public void CountAxisIsLogarithmicOnlyWhenCountsSpanMoreThan100Times()
    {
        Assert.False(ReportPlots.LogCounts([1, 0, 100]));
        Assert.True(ReportPlots.LogCounts([1, 0, 101]));
        Assert.True(ReportPlots.LogScores([1e-6, 1e-3]));
        Assert.False(ReportPlots.LogScores([-1, 1e3]));
        // a linear histogram (no threshold) renders too
        AssertPng(ReportPlots.ScoreHistogram("fisher", [0, 1, 2, 3], [5, 9, 4], null, smallest: false));
    }
}
