using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Tests.Cli;

/// <summary>The CLI on the QDQ model qdq_mlp (issue 15, point 2): inspect, unlearn, and an update below one quantization step.</summary>
public class QuantizedCliTests
{
    static string Qdq(string name) => Fixtures.File("qdq_mlp", name);

    [Fact]
    public void InspectListsTheQuantizedWeightsAsTrainable()
    {
        var (code, stdout, err) = CliRunner.Run("inspect", Qdq("model.onnx"));
        Assert.True(code == 0, err);
        var rows = stdout.Split('\n').Select(l => l.Split('│', StringSplitOptions.TrimEntries)).Where(r => r.Length > 3).ToList();
        Assert.Contains(rows, r => r[1] == "fc1.weight_quantized" && r[2] == "int8" && r[^2] == "yes");
        Assert.Contains(rows, r => r[1] == "fc2.weight_quantized" && r[2] == "uint8" && r[^2] == "yes");
        Assert.Contains("trainable elements: 2,410 in 4 tensors", stdout);
        Assert.DoesNotContain("no gradient rule", stdout + err);
    }

    /// <summary>
    /// (d) unlearn writes a model that loads and runs in ONNX Runtime; only integer bytes of the selected weights differ, one
    /// per element that moved by at least one quantization step (the report's quantizedMoved); every selected element moves
    /// in float32, so it is changed or counted as rounded away; eval of the written model gives the report's after figure.
    /// </summary>
    [Fact]
    public void UnlearnWritesAQuantizedModelWhoseFiguresTheReportGives()
    {
        using var dir = new TempDir();
        var (code, stdout, err) = CliRunner.Run("unlearn", Qdq("model.onnx"), "--train", Qdq("data.npz"), "--forget", Qdq("forget.npz"),
            "--corrected", Qdq("corrected.npz"), "--out", dir.File("new.onnx"), "--report", dir.File("report.json"));
        Assert.True(code == 0, err + stdout);
        var json = File.ReadAllText(dir.File("report.json"));
        ReportSchema.AssertValid(json);
        var r = JsonDocument.Parse(json).RootElement;
        Assert.Equal("float32 artifact (quantized weights dequantized, quantizers straight through)", r.GetProperty("gradientForward").GetString());
        var after = r.GetProperty("after").GetProperty("corrected");
        Assert.Equal("float32+uint8+int8 as stored", after.GetProperty("forward").GetString());
        long selected = r.GetProperty("selectedElements").GetInt64(), cancelled = r.GetProperty("roundingCancelled").GetInt64();
        long moved = r.GetProperty("quantizedMoved").GetInt64();
        var written = r.GetProperty("written");
        long changed = written.GetProperty("elementsChanged").GetInt64(), bytes = written.GetProperty("bytesChanged").GetInt64();
        var perTensor = r.GetProperty("selectedPerTensor");
        Assert.Equal(selected, perTensor.GetProperty("fc1.weight_quantized").GetInt64() + perTensor.GetProperty("fc2.weight_quantized").GetInt64());
        Assert.True(moved > 0);
        Assert.Equal((moved, moved), (changed, bytes)); // only quantized weights selected here: one byte per moved element
        Assert.Equal(selected, changed + cancelled);
        Assert.Contains($"{moved:N0} quantized elements moved by at least one quantization step", stdout);
        var diff = ModelDiff.Compare(Qdq("model.onnx"), dir.File("new.onnx"));
        Assert.False(diff.OtherBytesDiffer);
        Assert.Equal(changed, diff.Parameters.Sum(p => p.ElementsDiffering));
        Assert.All(diff.Parameters, p => Assert.EndsWith("_quantized", p.Name));

        var (evalCode, evalOut, evalErr) = CliRunner.Run("eval", dir.File("new.onnx"), "--data", Qdq("corrected.npz"), "--json");
        Assert.True(evalCode == 0, evalErr);
        Assert.Equal(after.GetProperty("loss").GetDouble(), JsonDocument.Parse(evalOut).RootElement.GetProperty("loss").GetDouble());

        using var session = new InferenceSession(dir.File("new.onnx"));
        using var x = OrtValue.CreateTensorValueFromMemory(Enumerable.Range(0, 2 * 64).Select(i => i % 17 / 16f).ToArray(), [2, 64]);
        using var outputs = session.Run(new RunOptions(), ["x"], [x], ["logits"]);
        Assert.All(outputs[0].GetTensorDataAsSpan<float>().ToArray(), v => Assert.True(float.IsFinite(v)));
    }

    /// <summary>A tiny update (one step, τ = 1e-9) moves no weight by a quantization step: exit 4, said plainly, nothing written.</summary>
    [Fact]
    public void AnUpdateBelowOneQuantizationStepIsNoChange()
    {
        using var dir = new TempDir();
        var (code, stdout, err) = CliRunner.Run("unlearn", Qdq("model.onnx"), "--train", Qdq("data.npz"), "--forget", Qdq("forget.npz"),
            "--corrected", Qdq("corrected.npz"), "--out", dir.File("new.onnx"), "--report", dir.File("report.json"), "--steps", "1", "--tau", "1e-9");
        Assert.True(code == 4, err + stdout);
        Assert.Contains("below one quantization step", stdout + err);
        Assert.False(File.Exists(dir.File("new.onnx")));
        var r = JsonDocument.Parse(File.ReadAllText(dir.File("report.json"))).RootElement;
        Assert.Equal(0, r.GetProperty("quantizedMoved").GetInt64());
        Assert.Equal("below-storage-resolution", r.GetProperty("noChange").GetString());
    }

    static string Dynq(string name) => Fixtures.File("dynq_mlp", name);

    [Fact]
    public void InspectListsTheDynamicallyQuantizedWeightsAsTrainable()
    {
        var (code, stdout, err) = CliRunner.Run("inspect", Dynq("model.onnx"));
        Assert.True(code == 0, err);
        var rows = stdout.Split('\n').Select(l => l.Split('│', StringSplitOptions.TrimEntries)).Where(r => r.Length > 3).ToList();
        Assert.Contains(rows, r => r[1] == "fc1.weight_quantized" && r[2] == "int8" && r[^2] == "yes");
        Assert.Contains(rows, r => r[1] == "fc2.weight_quantized" && r[2] == "uint8" && r[^2] == "yes");
        Assert.Contains(rows, r => r[1] == "fc1.weight_scale" && r[^2].StartsWith("no: the scale of a dynamically quantized weight"));
        Assert.Contains("trainable elements: 2,410 in 4 tensors", stdout);
        Assert.DoesNotContain("no gradient rule", stdout + err);
    }

    /// <summary>
    /// unlearn on the dynamically quantized model (ONNX Runtime's MatMulInteger form): the written model loads and runs in
    /// ONNX Runtime, differs only in integer bytes of the weights (one per moved element) and the selected float biases, and
    /// eval of it gives the report's after figure.
    /// </summary>
    [Fact]
    public void UnlearnWritesADynamicallyQuantizedModelThatRuns()
    {
        using var dir = new TempDir();
        var (code, stdout, err) = CliRunner.Run("unlearn", Dynq("model.onnx"), "--train", Dynq("data.npz"), "--forget", Dynq("forget.npz"),
            "--corrected", Dynq("corrected.npz"), "--out", dir.File("new.onnx"), "--report", dir.File("report.json"));
        Assert.True(code == 0, err + stdout);
        var json = File.ReadAllText(dir.File("report.json"));
        ReportSchema.AssertValid(json);
        var r = JsonDocument.Parse(json).RootElement;
        long moved = r.GetProperty("quantizedMoved").GetInt64();
        Assert.True(moved > 0);
        var diff = ModelDiff.Compare(Dynq("model.onnx"), dir.File("new.onnx"));
        Assert.False(diff.OtherBytesDiffer);
        Assert.Equal(moved, diff.Parameters.Where(p => p.Name.EndsWith("_quantized")).Sum(p => p.ElementsDiffering));
        var after = r.GetProperty("after").GetProperty("corrected");
        var (evalCode, evalOut, evalErr) = CliRunner.Run("eval", dir.File("new.onnx"), "--data", Dynq("corrected.npz"), "--json");
        Assert.True(evalCode == 0, evalErr);
        Assert.Equal(after.GetProperty("loss").GetDouble(), JsonDocument.Parse(evalOut).RootElement.GetProperty("loss").GetDouble());
        using var session = new InferenceSession(dir.File("new.onnx"));
        using var x = OrtValue.CreateTensorValueFromMemory(Enumerable.Range(0, 2 * 64).Select(i => i % 17 / 16f).ToArray(), [2, 64]);
        using var outputs = session.Run(new RunOptions(), ["x"], [x], ["logits"]);
        Assert.All(outputs[0].GetTensorDataAsSpan<float>().ToArray(), v => Assert.True(float.IsFinite(v)));
    }
}
