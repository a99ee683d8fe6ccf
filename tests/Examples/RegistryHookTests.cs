using System.Diagnostics;
using System.Text.Json;
using OnnxUnlearn.Unlearning;

namespace OnnxUnlearn.Tests.Examples;

/// <summary>examples/registry/hook.sh end to end on an MLflow-style version folder made from the mlp fixture.</summary>
public class RegistryHookTests
{
    static readonly string Hook = Path.Combine(Fixtures.Root, "..", "examples", "registry", "hook.sh");

    /// <summary>registry/model/1 (MLmodel + model.onnx) and a request whose data lie beside it.</summary>
    static (string Version, string Request) Registry(TempDir dir, Dictionary<string, object> request)
    {
        var version = dir.File("registry/model/1");
        Directory.CreateDirectory(version);
        File.Copy(Fixtures.File("mlp", "model.onnx"), Path.Combine(version, "model.onnx"));
        File.WriteAllText(Path.Combine(version, "MLmodel"), """
            artifact_path: model
            flavors:
              onnx:
                code: null
                data: model.onnx
                onnx_version: 1.12.0
              python_function:
                data: model.onnx
                loader_module: mlflow.onnx
            model_uuid: 0f8fad5bd9cb469fa165a8d4a5c3b8e2
            utc_time_created: '2026-11-01 10:00:00.000000'
            """);
        Directory.CreateDirectory(dir.File("requests/data"));
        foreach (var f in new[] { "data.npz", "forget.npz", "corrected.npz" }) File.Copy(Fixtures.File("mlp", f), dir.File("requests/data/" + f));
        var path = dir.File("requests/delete.json");
        File.WriteAllText(path, JsonSerializer.Serialize(new Dictionary<string, object>
            { ["train"] = "data/data.npz", ["forget"] = "data/forget.npz", ["corrected"] = "data/corrected.npz" }.Concat(request).ToDictionary()));
        return (version, path);
    }

    static (int Code, string Out, string Err) RunHook(params string[] args)
    {
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Hook);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["ONNX_UNLEARN"] = "dotnet " + Path.Combine(AppContext.BaseDirectory, "onnx-unlearn.dll");
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr);
    }

    [Fact]
    public void AnEffectiveUpdateBecomesTheNextVersion()
    {
        using var dir = new TempDir();
        var (version, request) = Registry(dir, []);
        var next = dir.File("registry/model/2");
        var (code, stdout, err) = RunHook(version, request, next);
        Assert.True(code == 0, err);
        Assert.Contains("accepted", stdout);
        var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(next, "report.json"))).RootElement;
        Assert.Equal("updated", report.GetProperty("outcome").GetString());
        Assert.Equal(Report.Sha256(Path.Combine(next, "model.onnx")), report.GetProperty("outputSha256").GetString());
        Assert.Equal(Report.Sha256(Path.Combine(version, "model.onnx")), report.GetProperty("inputSha256").GetString());
        Assert.NotEqual(File.ReadAllBytes(Path.Combine(version, "model.onnx")), File.ReadAllBytes(Path.Combine(next, "model.onnx")));
        var mlmodel = File.ReadAllText(Path.Combine(next, "MLmodel"));
        Assert.Contains("    data: model.onnx", mlmodel);
        Assert.DoesNotContain("0f8fad5bd9cb469fa165a8d4a5c3b8e2", mlmodel); // a new version gets a new uuid
        Assert.Contains("unlearned_from: " + Path.GetFullPath(version), mlmodel);
        Assert.Contains("updated", File.ReadAllText(Path.Combine(next, "report.md")));
        Assert.Equal(["MLmodel", "model.onnx", "report.json", "report.md"], Directory.GetFiles(next).Select(Path.GetFileName).Where(f => !f!.EndsWith(".png")).Order());
    }

    [Fact]
    public void AMissedTargetIsRejectedWithTheReportsForAReviewer()
    {
        using var dir = new TempDir();
        var (version, request) = Registry(dir, new() { ["requireAccuracy"] = 0.999 });
        var next = dir.File("registry/model/2");
        var (code, _, err) = RunHook(version, request, next);
        Assert.Equal(1, code);
        Assert.Contains("rejected (a stated target was missed)", err);
        Assert.False(Directory.Exists(next));
        var rejected = next + ".rejected";
        Assert.False(File.Exists(Path.Combine(rejected, "model.onnx")));
        var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(rejected, "report.json"))).RootElement;
        Assert.Equal("accuracy", report.GetProperty("missed")[0].GetProperty("target").GetString());
        Assert.True(File.Exists(Path.Combine(rejected, "report.md")));
        Assert.Empty(Directory.GetDirectories(dir.File("registry/model"), "*.staging.*"));
    }

    [Fact]
    public void BadInputIsExit2AndWritesNothing()
    {
        using var dir = new TempDir();
        var (version, request) = Registry(dir, []);
        File.WriteAllText(Path.Combine(version, "MLmodel"), "flavors:\n  sklearn:\n    pickled_model: model.pkl\n");
        var (code, _, err) = RunHook(version, request, dir.File("registry/model/2"));
        Assert.Equal(2, code);
        Assert.Contains("has no ONNX flavour", err);
        Assert.Equal(["1"], Directory.GetDirectories(dir.File("registry/model")).Select(Path.GetFileName));
    }
}
