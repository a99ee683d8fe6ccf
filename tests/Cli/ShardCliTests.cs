using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace OnnxUnlearn.Tests.Cli;

/// <summary>
/// Sharded sharpness and grad as the manifests of deploy/ run them: M processes given their index by environment variable
/// (JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID) through deploy/shard.sh, parts on a shared folder, then merge; the merged
/// file must be the one-process file byte for byte. Wrong merges are refused in one line.
/// </summary>
public class ShardCliTests
{
    static readonly string Model = Fixtures.File("mlp", "model.onnx"), Data = Fixtures.File("mlp", "data.npz");
    static readonly string Deploy = Path.Combine(Directory.GetParent(Fixtures.Root)!.FullName, "deploy");
    static readonly string Tool = "dotnet " + Path.Combine(AppContext.BaseDirectory, "onnx-unlearn.dll");

    static string[] Sharpness(int seed = 2) => ["sharpness", Model, "--data", Data, "--estimator", "hutchinson", "--probes", "12", "--chunk", "3", "--seed", seed.ToString()];
    static string[] Grad() => ["grad", Model, "--data", Data, "--chunk", "10"];

    /// <summary>bash SCRIPT ARGS with the given environment, several at once (as a scheduler starts its tasks).</summary>
    static (int Code, string Out, string Err)[] Bash(IEnumerable<(string Script, string[] Args, Dictionary<string, string> Env)> runs)
    {
        var started = runs.Select(r =>
        {
            var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
            psi.ArgumentList.Add(r.Script);
            foreach (var a in r.Args) psi.ArgumentList.Add(a);
            psi.Environment["NO_COLOR"] = "1";
            psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
            foreach (var (k, v) in r.Env) psi.Environment[k] = v;
            var p = Process.Start(psi)!;
            return (p, Out: p.StandardOutput.ReadToEndAsync(), Err: p.StandardError.ReadToEndAsync());
        }).ToList();
        return started.Select(s =>
        {
            if (!s.p.WaitForExit(TimeSpan.FromMinutes(5))) { s.p.Kill(entireProcessTree: true); throw new TimeoutException("a shard ran past 5 minutes"); }
            s.p.WaitForExit();
            return (s.p.ExitCode, s.Out.Result, s.Err.Result);
        }).ToArray();
    }

    static (int Code, string Out, string Err) Bash(string script, Dictionary<string, string> env, params string[] args) => Bash([(script, args, env)])[0];

    [Theory]
    [InlineData("kubernetes", "sharpness", 1)]
    [InlineData("kubernetes", "sharpness", 2)]
    [InlineData("kubernetes", "sharpness", 3)]
    [InlineData("kubernetes", "sharpness", 5)] // 4 chunks of probes: shard 4/5 holds none
    [InlineData("slurm", "sharpness", 3)]
    [InlineData("kubernetes", "grad", 2)]
    [InlineData("slurm", "grad", 1)]
    [InlineData("slurm", "grad", 3)]
    public void ShardsRunAsTheManifestsRunThemMergeIntoTheOneProcessFile(string scheduler, string command, int shards)
    {
        using var dir = new TempDir();
        var args = command == "sharpness" ? Sharpness() : Grad();
        var (code, _, err) = CliRunner.Run([.. args, "--out", dir.File("whole.npz")]);
        Assert.True(code == 0, err);
        string parts = dir.File("parts"), merged = dir.File("merged.npz");
        (int Code, string Out, string Err)[] ran;
        if (scheduler == "kubernetes")
        {
            // the Jobs' containers: envFrom the params ConfigMap, JOB_COMPLETION_INDEX from the Indexed Job
            Dictionary<string, string> Env(int? index)
            {
                var env = new Dictionary<string, string> { ["SHARDS"] = shards.ToString(), ["ARGS"] = string.Join(" ", args), ["PARTS"] = parts, ["OUT"] = merged, ["ONNX_UNLEARN"] = Tool };
                if (index is { } k) env["JOB_COMPLETION_INDEX"] = k.ToString();
                return env;
            }
            var script = Path.Combine(Deploy, "shard.sh");
            ran = Bash(Enumerable.Range(0, shards).Select(k => (script, new[] { "part" }, Env(k))));
            ran = [.. ran, Bash(script, Env(null), "merge")];
        }
        else
        {
            // the sbatch scripts, with a params.env of this run beside them; sbatch sets SLURM_ARRAY_TASK_ID, submit.sh ONNX_UNLEARN_DEPLOY
            string deploy = dir.File("deploy");
            Directory.CreateDirectory(Path.Combine(deploy, "slurm"));
            File.Copy(Path.Combine(Deploy, "shard.sh"), Path.Combine(deploy, "shard.sh"));
            foreach (var f in new[] { "shards.sbatch", "merge.sbatch" }) File.Copy(Path.Combine(Deploy, "slurm", f), Path.Combine(deploy, "slurm", f));
            File.WriteAllText(Path.Combine(deploy, "slurm", "params.env"), $"SHARDS={shards}\nARGS=\"{string.Join(" ", args)}\"\nPARTS={parts}\nOUT={merged}\nONNX_UNLEARN=\"{Tool}\"\n");
            var env = (int? k) => k is null ? new Dictionary<string, string> { ["ONNX_UNLEARN_DEPLOY"] = deploy }
                : new Dictionary<string, string> { ["ONNX_UNLEARN_DEPLOY"] = deploy, ["SLURM_ARRAY_TASK_ID"] = k.ToString()! };
            ran = Bash(Enumerable.Range(0, shards).Select(k => (Path.Combine(deploy, "slurm", "shards.sbatch"), Array.Empty<string>(), env(k))));
            ran = [.. ran, Bash(Path.Combine(deploy, "slurm", "merge.sbatch"), env(null))];
        }
        foreach (var r in ran) Assert.True(r.Code == 0, r.Err);
        Assert.Equal(Enumerable.Range(0, shards).Select(k => $"part-{k}-of-{shards}.npz"), Directory.GetFiles(parts).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal(File.ReadAllBytes(dir.File("whole.npz")), File.ReadAllBytes(merged));
    }

    /// <summary>Writes shard K/M of sharpness (or the given arguments) to FILE.</summary>
    static string Part(TempDir dir, string name, string shard, params string[] args)
    {
        var (code, _, err) = CliRunner.Run([.. args.Length > 0 ? args : Sharpness(), "--shard", shard, "--out", dir.File(name)]);
        Assert.True(code == 0, err);
        return dir.File(name);
    }

    static string Refused(params string[] args)
    {
        var (code, _, err) = CliRunner.Run(args);
        Assert.Equal(2, code);
        Assert.Single(err.TrimEnd().Split('\n'));
        return err;
    }

    [Fact]
    public void WrongMergesAreRefusedNamingWhatDiffers()
    {
        using var dir = new TempDir();
        string a = Part(dir, "a.npz", "0/2"), b = Part(dir, "b.npz", "1/2");
        string seed = Part(dir, "seed.npz", "1/2", Sharpness(seed: 3));
        string other = Part(dir, "other.npz", "1/2", ["sharpness", Fixtures.File("logreg", "model.onnx"), "--data", Fixtures.File("logreg", "data.npz"), "--estimator", "hutchinson", "--probes", "12", "--chunk", "3", "--seed", "2"]);
        string data = Part(dir, "data.npz", "1/2", ["sharpness", Model, "--data", Fixtures.File("mlp", "forget.npz"), "--estimator", "hutchinson", "--probes", "12", "--chunk", "3", "--seed", "2"]);
        string three = Part(dir, "three.npz", "1/3");
        string grad = Part(dir, "grad.npz", "1/2", Grad());
        string Merge(params string[] parts) => Refused(["merge", .. parts, "--out", dir.File("m.npz")]);
        Assert.Contains("--seed: 3 vs 2", Merge(a, seed));
        Assert.Contains("in model (sha256)", Merge(a, other));
        Assert.Contains("in data (sha256)", Merge(a, data));
        Assert.Contains("in shard count", Merge(a, three));
        Assert.Contains("in command: grad vs sharpness", Merge(a, grad));
        Assert.Contains("chunks 1, 3 of 4 missing: add the part of shard 1/2", Merge(a));
        File.Copy(a, dir.File("a-again.npz"));
        Assert.Contains("chunk 0 is in both", Merge(a, b, dir.File("a-again.npz")));
        Assert.False(File.Exists(dir.File("m.npz")));
        CliRunner.Run([.. Sharpness(), "--out", dir.File("plain.npz")]);
        Assert.Contains("is not a part file", Merge(dir.File("plain.npz")));
    }

    /// <summary>The model hash covers its external data: a part computed on other weights behind the same .onnx is refused.</summary>
    [Fact]
    public void PartsOfOtherExternalWeightsAreRefused()
    {
        using var dir = new TempDir();
        foreach (var copy in new[] { "a", "b" })
        {
            Directory.CreateDirectory(dir.File(copy));
            foreach (var f in new[] { "model.onnx", "model.onnx.data" }) File.Copy(Fixtures.File("mlp_external", f), dir.File($"{copy}/{f}"));
        }
        var bytes = File.ReadAllBytes(dir.File("b/model.onnx.data"));
        bytes[0] ^= 1; // one weight differs in its lowest bit
        File.WriteAllBytes(dir.File("b/model.onnx.data"), bytes);
        string[] Grad(string copy) => ["grad", dir.File($"{copy}/model.onnx"), "--data", Fixtures.File("mlp", "data.npz"), "--chunk", "16"];
        string a = Part(dir, "a.npz", "0/2", Grad("a")), b = Part(dir, "b.npz", "1/2", Grad("b")), a1 = Part(dir, "a1.npz", "1/2", Grad("a"));
        Assert.Contains("in model (sha256)", Refused(["merge", a, b, "--out", dir.File("m.npz")]));
        Assert.Equal(0, CliRunner.Run(["merge", a, a1, "--out", dir.File("m.npz")]).Code);
    }

    [Fact]
    public void ShardsOfDiagPlusPlusAndMalformedShardsAreRefused()
    {
        using var dir = new TempDir();
        Assert.Contains("add --estimator hutchinson", Refused("sharpness", Model, "--data", Data, "--shard", "0/2", "--out", dir.File("p.npz")));
        Assert.Contains("add --estimator hutchinson", Refused("sharpness", Model, "--data", Data, "--estimator", "hutchinson", "--score", "fisher", "--shard", "0/2", "--out", dir.File("p.npz")));
        Assert.Contains("--shard must be K/M", Refused([.. Grad(), "--shard", "2/2", "--out", dir.File("p.npz")]));
        Assert.Contains("neither is set", Bash(Path.Combine(Deploy, "shard.sh"), new() { ["SHARDS"] = "2", ["ARGS"] = "grad" }, "part").Err);
    }

    [Fact]
    public void UnlearnWithMergedScoresWritesTheModelItsOwnEstimateWrites()
    {
        // sharpness's defaults (--chunk 10, --step 1e-3) are unlearn's: the merged estimate is the one unlearn computes on --train
        using var dir = new TempDir();
        string[] estimate = ["sharpness", Model, "--data", Data, "--estimator", "hutchinson", "--probes", "30", "--seed", "4"];
        string[] parts = [Part(dir, "p0.npz", "0/2", estimate), Part(dir, "p1.npz", "1/2", estimate)];
        Assert.Equal(0, CliRunner.Run(["merge", .. parts, "--out", dir.File("h.npz")]).Code);
        string[] request = ["unlearn", Model, "--train", Data, "--forget", Fixtures.File("mlp", "forget.npz"), "--corrected", Fixtures.File("mlp", "corrected.npz"), "--steps", "1"];
        var own = CliRunner.Run([.. request, "--estimator", "hutchinson", "--probes", "30", "--seed", "4", "--out", dir.File("own.onnx")]);
        var given = CliRunner.Run([.. request, "--scores", dir.File("h.npz"), "--out", dir.File("given.onnx"), "--report", dir.File("report.json")]);
        Assert.True(own.Code == 0, own.Err);
        Assert.True(given.Code == 0, given.Err);
        Assert.Equal(File.ReadAllBytes(dir.File("own.onnx")), File.ReadAllBytes(dir.File("given.onnx")));
        var settings = JsonDocument.Parse(File.ReadAllText(dir.File("report.json"))).RootElement.GetProperty("settings");
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(dir.File("h.npz")))), settings.GetProperty("scoresSha256").GetString());
        Assert.Equal(Path.GetFullPath(dir.File("h.npz")), settings.GetProperty("scores").GetString());
        Assert.Contains("--mask and --scores", Refused([.. request, "--scores", dir.File("h.npz"), "--mask", dir.File("h.npz")]));
        Assert.Contains("drop --select random or --scores", Refused([.. request, "--scores", dir.File("h.npz"), "--select", "random"]));
        Assert.Contains("has no entry 'fc1.weight'", Refused([.. request, "--scores", parts[0]]));
    }

    static string Text(params string[] path) => File.ReadAllText(Path.Combine([Deploy, .. path]));
    static int Number(string text, string pattern) => int.Parse(Regex.Match(text, pattern, RegexOptions.Multiline) is { Success: true } m ? m.Groups[1].Value : throw new Xunit.Sdk.XunitException($"no match for {pattern}"));

    [Fact]
    public void KubernetesManifestsRunAnIndexedJobOfShardsAndAMergeOnOneVolume()
    {
        string shardsJob = Text("kubernetes", "shards-job.yaml"), mergeJob = Text("kubernetes", "merge-job.yaml"), pvc = Text("kubernetes", "pvc.yaml");
        string kustomization = Text("kubernetes", "kustomization.yaml"), parameters = Text("kubernetes", "params.env");
        int shards = Number(parameters, @"^SHARDS=(\d+)$");
        Assert.Matches(@"(?m)^  completionMode: Indexed$", shardsJob);
        Assert.Equal(shards, Number(shardsJob, @"^  completions: (\d+)$"));
        Assert.Equal(shards, Number(shardsJob, @"^  parallelism: (\d+)$"));
        Assert.Contains("fieldPath: metadata.annotations['batch.kubernetes.io/job-completion-index']", shardsJob);
        Assert.Matches(@"- name: JOB_COMPLETION_INDEX", shardsJob);
        Assert.Contains("command: [\"/opt/onnx-unlearn/deploy/shard.sh\", \"part\"]", shardsJob);
        Assert.Contains("command: [\"/opt/onnx-unlearn/deploy/shard.sh\", \"merge\"]", mergeJob);
        Assert.Contains("COPY deploy/shard.sh /opt/onnx-unlearn/deploy/shard.sh", Text("Dockerfile"));
        // one volume, shared: the claim both Jobs mount is the one pvc.yaml makes, mountable on many nodes
        string claim = Regex.Match(pvc, @"(?m)^  name: (\S+)$").Groups[1].Value;
        Assert.Equal("onnx-unlearn-work", claim);
        Assert.Contains("ReadWriteMany", pvc);
        foreach (var job in new[] { shardsJob, mergeJob })
        {
            Assert.Contains($"claimName: {claim}", job);
            Assert.Contains("mountPath: /work", job);
            Assert.Contains("name: onnx-unlearn-shards", job); // the ConfigMap kustomize generates from params.env
            Assert.Matches(@"(?m)^\s+image: onnx-unlearn$", job); // the name kustomization.yaml's images: replaces
        }
        Assert.Contains("- name: onnx-unlearn-shards\n    envs:\n      - params.env", kustomization);
        Assert.Contains("images:\n  - name: onnx-unlearn\n    newName:", kustomization);
        foreach (var resource in Regex.Matches(kustomization, @"(?m)^  - (\S+\.yaml)$").Select(m => m.Groups[1].Value).DefaultIfEmpty("none"))
            Assert.True(File.Exists(Path.Combine(Deploy, "kubernetes", resource)), $"kustomization.yaml lists {resource}, which is not in deploy/kubernetes");
        Assert.Equal(3, Regex.Matches(kustomization, @"(?m)^  - (\S+\.yaml)$").Count);
        foreach (var key in new[] { "ARGS", "PARTS", "OUT", "ONNX_UNLEARN" }) Assert.Matches($"(?m)^{key}=", parameters);
    }

    [Fact]
    public void SlurmScriptsRunAnArrayJobAndAMergeAfterIt()
    {
        string shardsJob = Text("slurm", "shards.sbatch"), merge = Text("slurm", "merge.sbatch"), submit = Text("slurm", "submit.sh");
        int shards = Number(Text("slurm", "params.env"), @"^SHARDS=(\d+)$");
        Assert.Equal(shards - 1, Number(shardsJob, @"^#SBATCH --array=0-(\d+)$"));
        Assert.Contains("--array=\"0-$((SHARDS - 1))\"", submit);
        Assert.Contains("sbatch --dependency=afterok:\"${jobs%%;*}\"", submit);
        Assert.Contains("exec \"$here/shard.sh\" part", shardsJob);
        Assert.Contains("exec \"$here/shard.sh\" merge", merge);
        foreach (var script in new[] { "shard.sh", "slurm/shards.sbatch", "slurm/merge.sbatch", "slurm/submit.sh" })
        {
            var r = Bash("-n", new(), Path.Combine(Deploy, script)); // syntax only
            Assert.True(r.Code == 0, $"{script}: {r.Err}");
        }
    }
}
