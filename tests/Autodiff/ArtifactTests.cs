using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using OnnxUnlearn.Data;

namespace OnnxUnlearn.Tests.Autodiff;

/// <summary>The saved training artifact runs on stock ONNX Runtime by itself, parameters optional.</summary>
public class ArtifactTests
{
    [Fact]
    public void SavedArtifactRunsOnPlainOnnxRuntimeWithDefaultParameters()
    {
        using var dir = new TempDir();
        var psi = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "onnx-unlearn.dll"), "artifacts", Fixtures.File("mlp_external", "model.onnx"), "--out", dir.Path })
            psi.ArgumentList.Add(a);
        using (var p = System.Diagnostics.Process.Start(psi)!) { p.WaitForExit(); Assert.Equal(0, p.ExitCode); }

        using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Path, "manifest.json")));
        Assert.Equal("label", manifest.RootElement.GetProperty("inputs").GetProperty("label").GetString());
        using var session = new InferenceSession(Path.Combine(dir.Path, "gradient.onnx"));
        Assert.DoesNotContain(session.InputMetadata.Keys, k => k.Contains("com.microsoft"));
        var data = Npz.Read(Fixtures.File("mlp_external", "data.npz"));
        using var x = OrtValue.CreateTensorValueFromMemory(data["x"].ToFloat(), data["x"].Shape);
        using var y = OrtValue.CreateTensorValueFromMemory(data["label"].ToInt64(), data["label"].Shape);
        using var results = session.Run(new RunOptions(), ["x", "label"], [x, y], ["loss", "grad/fc1.weight"]);
        var reference = Npz.Read(Fixtures.File("mlp_external", "reference.npz"));
        Assert.Equal(reference["loss"].ToDouble()[0], results[0].GetTensorDataAsSpan<float>()[0], 1e-5);
        var expected = reference["grad/fc1.weight"].ToDouble();
        var actual = results[1].GetTensorDataAsSpan<float>().ToArray();
        double err = Math.Sqrt(expected.Zip(actual, (e, a) => (e - a) * (e - a)).Sum() / expected.Sum(e => e * e));
        Assert.True(err < 1e-4, $"relative error {err:E2}");
    }
}
