using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using OnnxUnlearn.Unlearning;

namespace OnnxUnlearn.Tests.Cli;

/// <summary>What a model registry gates on: the exit code, the model at --out (or its absence) and the report.</summary>
public class OutcomeTests
{
    static string Mlp(string name) => Fixtures.File("mlp", name);
    static string Canary(string name) => Fixtures.File(Path.Combine("experiments", "canary"), name);

    static (int Code, string Out, string Err, JsonElement Report) Unlearn(TempDir dir, params string[] extra)
    {
        string[] args = ["unlearn", Mlp("model.onnx"), "--train", Mlp("data.npz"), "--forget", Mlp("forget.npz"), "--corrected", Mlp("corrected.npz"),
            "--out", dir.File("new.onnx"), "--report", dir.File("report.json"), .. extra];
        var (code, stdout, err) = CliRunner.Run(args);
        var json = File.ReadAllText(dir.File("report.json"));
        ReportSchema.AssertValid(json);
        return (code, stdout, err, JsonDocument.Parse(json).RootElement.Clone());
    }

    [Fact]
    public void AMissedTargetExits3AndWritesNoModelUnlessAskedTo()
    {
        using var dir = new TempDir();
        var (code, _, err, r) = Unlearn(dir, "--require-accuracy", "0.999");
        Assert.Equal(3, code);
        Assert.False(File.Exists(dir.File("new.onnx")), "a missed target must not leave a model at --out");
        Assert.Equal("target-missed", r.GetProperty("outcome").GetString());
        Assert.False(r.TryGetProperty("outputModel", out _));
        var missed = Assert.Single(r.GetProperty("missed").EnumerateArray());
        Assert.Equal("accuracy", missed.GetProperty("target").GetString());
        Assert.Equal(0.999, missed.GetProperty("wanted").GetDouble());
        Assert.Equal(r.GetProperty("after").GetProperty("corrected").GetProperty("accuracy").GetDouble(), missed.GetProperty("reached").GetDouble());
        Assert.Contains("no model written", err);

        var (again, _, _, written) = Unlearn(dir, "--require-accuracy", "0.999", "--write-on-miss");
        Assert.Equal(3, again);
        Assert.Equal(Report.Sha256(dir.File("new.onnx")), written.GetProperty("outputSha256").GetString());
        Assert.Equal("target-missed", written.GetProperty("outcome").GetString());
    }

    [Fact]
    public void AnUpdateBelowTheStoredResolutionIsNoChangeAndExit4()
    {
        using var dir = new TempDir();
        // θ − 1e-30·Δg rounds back to θ in float32: nothing the user would get differs
        var (code, _, err, r) = Unlearn(dir, "--steps", "1", "--tau", "1e-30");
        Assert.Equal(4, code);
        Assert.False(File.Exists(dir.File("new.onnx")));
        Assert.Equal("no-change", r.GetProperty("outcome").GetString());
        Assert.Equal("below-storage-resolution", r.GetProperty("noChange").GetString());
        Assert.Equal(0, r.GetProperty("written").GetProperty("elementsChanged").GetInt64());
        Assert.Contains("smaller than one step of the model's stored number format", err);
    }

    [Fact]
    public void ConjugateGradientsThatStopBeforeAnyDirectionAreNoChange()
    {
        using var dir = new TempDir();
        var (code, _, _) = CliRunner.Run("unlearn", Canary("lstm/canary.onnx"), "--train", Canary("train.npz"), "--forget", Canary("forget.npz"),
            "--corrected", Canary("corrected.npz"), "--select", "magnitude", "--update", "second-order", "--steps", "1", "--train-size", "6441",
            "--damping", "1e-3", "--out", dir.File("new.onnx"), "--report", dir.File("report.json"));
        Assert.Equal(4, code);
        Assert.False(File.Exists(dir.File("new.onnx")));
        ReportSchema.AssertValid(File.ReadAllText(dir.File("report.json")));
        var r = JsonDocument.Parse(File.ReadAllText(dir.File("report.json"))).RootElement;
        Assert.Equal("cg-stopped", r.GetProperty("noChange").GetString());
        Assert.Equal("negative-curvature", r.GetProperty("cg").GetProperty("stop").GetString());
    }

    [Fact]
    public void TheReportIsAnAuditRecord()
    {
        using var dir = new TempDir();
        // a path with ".." is recorded normalised and absolute
        var model = Path.Combine(Path.GetDirectoryName(Mlp("model.onnx"))!, "..", "mlp", "model.onnx");
        var before = DateTime.UtcNow;
        var (code, _, err) = CliRunner.Run("unlearn", model, "--train", Mlp("data.npz"), "--forget", Mlp("forget.npz"), "--corrected", Mlp("corrected.npz"),
            "--out", dir.File("new.onnx"), "--report", dir.File("report.json"));
        Assert.True(code == 0, err);
        ReportSchema.AssertValid(File.ReadAllText(dir.File("report.json")));
        var r = JsonDocument.Parse(File.ReadAllText(dir.File("report.json"))).RootElement;
        Assert.Equal(Path.GetFullPath(Mlp("model.onnx")), r.GetProperty("inputModel").GetString());
        Assert.Equal(Report.Sha256(Mlp("model.onnx")), r.GetProperty("inputSha256").GetString());
        Assert.Matches("^[0-9a-f]{40}$|^unknown$", r.GetProperty("commit").GetString());
        Assert.StartsWith("onnx-unlearn ", r.GetProperty("tool").GetString());
        var env = r.GetProperty("environment");
        Assert.Equal("1.32.0", env.GetProperty("onnxRuntime").GetString());
        Assert.Equal(1, env.GetProperty("threads").GetInt32());
        Assert.Equal(Environment.ProcessorCount, env.GetProperty("logicalCores").GetInt32());
        Assert.False(string.IsNullOrWhiteSpace(env.GetProperty("cpu").GetString()));
        var (started, ended) = (r.GetProperty("startedUtc").GetDateTime(), r.GetProperty("endedUtc").GetDateTime());
        Assert.True(before.AddSeconds(-1) <= started && started <= ended && ended <= DateTime.UtcNow.AddSeconds(1), $"{started:O} .. {ended:O}");
        foreach (var (name, file) in new[] { ("train", "data.npz"), ("forget", "forget.npz"), ("corrected", "corrected.npz") })
        {
            var d = r.GetProperty("data").GetProperty(name);
            Assert.Equal(Mlp(file), d.GetProperty("path").GetString());
            Assert.Equal(Report.Sha256(Mlp(file)), d.GetProperty("sha256").GetString());
            Assert.Equal(OnnxUnlearn.Data.Npz.Read(Mlp(file))["label"].Rows, d.GetProperty("rows").GetInt64());
        }
        // every setting resolved: no nulls anywhere in the record
        Assert.DoesNotContain("null", File.ReadAllText(dir.File("report.json")));
        var settings = r.GetProperty("settings");
        Assert.Equal(0.05, settings.GetProperty("fraction").GetDouble());
        Assert.Equal(r.GetProperty("selectedElements").GetInt32(), settings.GetProperty("count").GetInt32());
        Assert.Equal("auto", settings.GetProperty("steps").GetString());
        Assert.Equal(30, settings.GetProperty("maxSteps").GetInt32());
        Assert.Equal("cauchy", settings.GetProperty("tau").GetString());
        Assert.Equal(0, r.GetProperty("seed").GetInt32());
        // what the selection saw: per-tensor sizes and the scores' distribution
        Assert.Equal(2410, r.GetProperty("tensorElements").EnumerateObject().Sum(p => p.Value.GetInt64()));
        var hist = r.GetProperty("scoreHistogram");
        Assert.Equal("hessian", hist.GetProperty("score").GetString());
        Assert.Equal(hist.GetProperty("counts").GetArrayLength() + 1, hist.GetProperty("edges").GetArrayLength());
        Assert.True(hist.GetProperty("counts").EnumerateArray().Sum(c => c.GetInt64()) + hist.GetProperty("nonFinite").GetInt64() <= 2410);
    }

    [Fact]
    public void TheSecretIsNeverWrittenAndTheAuditKeyVerifiesIt()
    {
        using var dir = new TempDir();
        const string secret = "4929 5173 0826 3307", prefix = "my credit card number is ";
        File.WriteAllText(dir.File("secret.txt"), secret + "\n");
        File.WriteAllBytes(dir.File("key"), Enumerable.Range(0, 32).Select(i => (byte)(i * 7 + 1)).ToArray());
        var (code, stdout, err) = CliRunner.Run("unlearn", Canary("lstm/canary.onnx"), "--train", Canary("train.npz"), "--forget", Canary("forget.npz"),
            "--corrected", Canary("corrected.npz"), "--train-size", "6441", "--select", "last-layer", "--steps", "1",
            "--vocab", Canary("vocab.json"), "--prefix", prefix, "--secret-file", dir.File("secret.txt"), "--exposure-budget", "2000", "--candidates", "500",
            "--audit-key-file", dir.File("key"), "--out", dir.File("new.onnx"), "--report", dir.File("report.json"), "--json");
        Assert.True(code is 0 or 3 or 4, err);
        var report = File.ReadAllText(dir.File("report.json"));
        ReportSchema.AssertValid(report);
        foreach (var (what, text) in new[] { ("stdout", stdout), ("stderr", err), ("report", report), ("files", string.Join("\n", Directory.GetFiles(dir.Path))) })
        {
            Assert.DoesNotContain(secret, text);
            Assert.DoesNotContain(secret.Replace(" ", ""), text);
            Assert.DoesNotContain("4929", text.Replace(dir.Path, ""));
            Assert.DoesNotContain(prefix.Trim(), text);
        }
        var e = JsonDocument.Parse(report).RootElement.GetProperty("exposure");
        var key = File.ReadAllBytes(dir.File("key"));
        Assert.Equal(Convert.ToHexStringLower(HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(secret))), e.GetProperty("secretHmacSha256").GetString());
        Assert.Equal(Convert.ToHexStringLower(HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(prefix))), e.GetProperty("prefixHmacSha256").GetString());
        Assert.True(e.GetProperty("before").GetProperty("bits").GetDouble() > 40);

        // without a key, no digest at all (a plain hash of a 16-digit number is brute-forced in minutes)
        var (_, _, _) = CliRunner.Run("unlearn", Canary("lstm/canary.onnx"), "--train", Canary("train.npz"), "--forget", Canary("forget.npz"),
            "--corrected", Canary("corrected.npz"), "--train-size", "6441", "--select", "last-layer", "--steps", "1",
            "--vocab", Canary("vocab.json"), "--prefix", prefix, "--secret-file", dir.File("secret.txt"), "--exposure-budget", "2000", "--candidates", "500",
            "--report", dir.File("nokey.json"));
        var plain = JsonDocument.Parse(File.ReadAllText(dir.File("nokey.json"))).RootElement.GetProperty("exposure");
        Assert.False(plain.TryGetProperty("secretHmacSha256", out _));
        Assert.False(plain.TryGetProperty("prefixHmacSha256", out _));
    }

    [Fact]
    public void ExposureMasksTheCandidatesUnlessAsked()
    {
        const string secret = "4929 5173 0826 3307";
        string[] args = ["exposure", Canary("lstm/canary.onnx"), "--vocab", Canary("vocab.json"), "--prefix", "my credit card number is ", "--secret", secret,
            "--format", "dddd dddd dddd dddd", "--budget", "2000", "--candidates", "500", "--top", "3"];
        var (code, stdout, err) = CliRunner.Run(args);
        Assert.True(code == 0, err);
        Assert.DoesNotContain("4929", stdout);
        Assert.Contains("**** **** **** **** (secret)", stdout); // the memorised secret is the top candidate, masked
        var (shown, revealed, _) = CliRunner.Run([.. args, "--show-candidates"]);
        Assert.Equal(0, shown);
        Assert.Contains($"{secret} (secret)", revealed);
    }
}
