using System.Diagnostics;
using System.Text.Json;
using OnnxUnlearn.Data;
using OnnxUnlearn.Text;

using OnnxUnlearn.Tests.Cli;

namespace OnnxUnlearn.Tests.Text;

/// <summary>text2npz and exposure as a user runs them: a separate process, exit codes, one-line errors.</summary>
public class TextCliTests
{
    static (int Code, string Out, string Err) Run(params string[] args) => CliRunner.Run(args);

    static void AssertOneLineError(int code, string err, string contains)
    {
        Assert.True(code == 2, $"exit code {code}: {err}");
        Assert.StartsWith("error: ", err);
        Assert.Single(err.Trim().Split('\n'));
        Assert.DoesNotContain("   at ", err);
        Assert.True(err.Contains(contains), err);
    }

    [Fact]
    public void Text2NpzWritesWindowsAndLabels()
    {
        using var dir = new TempDir();
        var b = Bigram.Uniform();
        var vocab = b.SaveVocab(dir.File("vocab.json"));
        const string text = "my pin is 4929 - my pin is 4929 - ok";
        File.WriteAllText(dir.File("t.txt"), text);
        var (code, output, err) = Run("text2npz", dir.File("t.txt"), "--vocab", vocab, "--window", "8", "--stride", "3", "--out", dir.File("all.npz"));
        Assert.True(code == 0, err);
        var all = Npz.Read(dir.File("all.npz"));
        Assert.Equal(["tokens", "label"], all.Keys);
        int n = (text.Length - 9) / 3 + 1;
        Assert.Equal([(long)n, 8], all["tokens"].Shape);
        Assert.Equal(ElementType.Int64, all["label"].Type);
        var tokens = (long[])all["tokens"].Data;
        var labels = (long[])all["label"].Data;
        for (int i = 0; i < n; i++)
            for (int t = 0; t < 8; t++)
            {
                Assert.Equal(Bigram.Id(text[3 * i + t]), tokens[i * 8 + t]);
                Assert.Equal(Bigram.Id(text[3 * i + t + 1]), labels[i * 8 + t]);
            }
        Assert.Contains($"{n} windows of 8 tokens", output);

        (code, output, err) = Run("text2npz", dir.File("t.txt"), "--vocab", vocab, "--window", "8", "--out", dir.File("forget.npz"), "--match", "4929", "--input", "x");
        Assert.True(code == 0, err);
        var forget = Npz.Read(dir.File("forget.npz"));
        Assert.Equal(["x", "label"], forget.Keys);
        // stride 1: each of the two occurrences lies in 9 − 4 + 1 = 6 windows
        Assert.Equal([12L, 8], forget["x"].Shape);
        Assert.Contains("2 occurrence(s)", output);
    }

    [Fact]
    public void ExposureJsonAgreesWithTheLibrary()
    {
        using var dir = new TempDir();
        var b = Bigram.Random(seed: 11, plant: " 49-29", boost: 2.5f);
        var model = b.Save(dir.File("m.onnx"));
        var (code, output, err) = Run("exposure", model, "--vocab", b.SaveVocab(dir.File("v.json")), "--prefix", "my pin is ", "--secret", "49-29", "--json", "--top", "3");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var r = doc.RootElement.GetProperty("result");
        var (rank, _, _) = b.BruteRank("my pin is ", "49-29", "dd-dd");
        Assert.Equal("exact", r.GetProperty("method").GetString());
        Assert.Equal(rank, r.GetProperty("rank").GetDouble());
        Assert.Equal(Math.Log2(1e4) - Math.Log2(rank), r.GetProperty("exposure").GetDouble(), 9);
        Assert.Equal(b.LogLikelihood("my pin is ", "49-29"), r.GetProperty("secretLogLikelihood").GetDouble(), 9);
        Assert.Equal(3, r.GetProperty("best").GetArrayLength());
        Assert.Equal("tokens", doc.RootElement.GetProperty("input").GetString());

        (code, output, err) = Run("exposure", model, "--vocab", dir.File("v.json"), "--prefix", "my pin is ", "--secret", "49-29", "--budget", "0", "--candidates", "2000", "--seed", "4");
        Assert.True(code == 0, err);
        Assert.Contains("(estimated)", output);
        Assert.Contains("skew-normal fit to 2,000 sampled candidates (seed 4)", output);
        Assert.Contains("most likely sampled candidates", output);
    }

    [Fact]
    public void ExposureListsTheTopCandidatesWhenTheSearchRunsOutOfBudget()
    {
        // 10^5 candidates and 20 search expansions: the search completes no candidate, so the most likely sampled ones are
        // listed (the list used to be empty)
        using var dir = new TempDir();
        var b = Bigram.Random(seed: 8);
        var model = b.Save(dir.File("m.onnx"));
        var (code, output, err) = Run("exposure", model, "--vocab", b.SaveVocab(dir.File("v.json")), "--prefix", "my pin is ", "--secret", "12345",
            "--budget", "20", "--candidates", "500", "--top", "3", "--json", "--show-candidates");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var r = doc.RootElement.GetProperty("result");
        Assert.Equal("estimated", r.GetProperty("method").GetString());
        Assert.Equal(20, r.GetProperty("expansions").GetInt64());
        Assert.Equal("samples", r.GetProperty("bestFrom").GetString());
        var best = r.GetProperty("best").EnumerateArray().Select(c => (Text: c.GetProperty("text").GetString()!, Ll: c.GetProperty("logLikelihood").GetDouble())).ToList();
        Assert.Equal(3, best.Count);
        foreach (var (text, ll) in best) Assert.Equal(b.LogLikelihood("my pin is ", text), ll, 9);
        Assert.Equal(best.OrderByDescending(c => c.Ll).ToList(), best);
        Assert.Equal(3, best.Select(c => c.Text).Distinct().Count());
    }

    [Fact]
    public void Errors()
    {
        using var dir = new TempDir();
        var b = Bigram.Random(seed: 1);
        var model = b.Save(dir.File("m.onnx"));
        var vocab = b.SaveVocab(dir.File("v.json"));
        File.WriteAllText(dir.File("t.txt"), "my pin is 4929!");
        File.WriteAllText(dir.File("nodigits.json"), """{"<pad>": 0, " ": 1, "m": 2, "y": 3, "p": 4, "i": 5, "n": 6, "s": 7, "4": 8, "9": 9, "2": 10}""");
        File.WriteAllText(dir.File("dup.json"), """{"a": 1, "b": 1}""");

        var (code, _, err) = Run("text2npz", dir.File("t.txt"), "--vocab", vocab, "--window", "4", "--out", dir.File("o.npz"));
        AssertOneLineError(code, err, "character '!' (U+0021) at position 14 is not in vocabulary");
        Assert.False(File.Exists(dir.File("o.npz")));

        (code, _, err) = Run("text2npz", dir.File("t.txt"), "--vocab", dir.File("dup.json"), "--window", "4", "--out", dir.File("o.npz"));
        AssertOneLineError(code, err, "both have id 1");

        (code, _, err) = Run("exposure", model, "--vocab", vocab, "--prefix", "my pin is ", "--secret", "4929", "--format", "ddd");
        AssertOneLineError(code, err, "--format \"ddd\" has 3 characters but the --secret has 4");
        Assert.DoesNotContain("4929", err);

        (code, _, err) = Run("exposure", model, "--vocab", dir.File("nodigits.json"), "--prefix", "my pin is ", "--secret", "4929");
        AssertOneLineError(code, err, "has no token for candidate characters '0', '1', '3', '5', '6', '7', '8'");

        (code, _, err) = Run("exposure", model, "--vocab", vocab, "--prefix", "my PIN is ", "--secret", "4929");
        AssertOneLineError(code, err, "--prefix: character 'P' (U+0050) at position 3");

        (code, _, err) = Run("exposure", model, "--vocab", vocab, "--prefix", "my pin is ", "--secret", "4929", "--output", "probs");
        AssertOneLineError(code, err, "has no output 'probs'");

        File.WriteAllText(dir.File("small.json"), """{"a": 1, "0": 2, "1": 3, "2": 4, "3": 5, "4": 6, "5": 7, "6": 8, "7": 9, "8": 10, "9": 500}""");
        (code, _, err) = Run("exposure", model, "--vocab", dir.File("small.json"), "--prefix", "a", "--secret", "12");
        AssertOneLineError(code, err, "scores 40 tokens but vocabulary");
    }
}
