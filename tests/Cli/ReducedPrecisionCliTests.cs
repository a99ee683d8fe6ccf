using System.Globalization;
using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Tests.Cli;

/// <summary>The CLI on float16 and bfloat16 models (issue 15): inspect, eval, unlearn.</summary>
public class ReducedPrecisionCliTests
{
    static string Fp16(string name) => Fixtures.File("fp16_cnn", name);

    [Fact]
    public void InspectListsTheFloat16WeightsAsTrainable()
    {
        var (code, stdout, err) = CliRunner.Run("inspect", Fp16("model.onnx"));
        Assert.True(code == 0, err);
        var rows = stdout.Split('\n').Where(l => l.Contains("│ float16 │")).Select(l => l.Split('│', StringSplitOptions.TrimEntries)).ToList();
        Assert.Equal(20, rows.Count(r => r[1] is not ("input" or "output"))); // 14 weights, 6 BatchNormalization running statistics
        Assert.Equal(14, rows.Count(r => r[^2] == "yes"));
        Assert.Contains(rows, r => r[1] == "conv.weight" && r[^2] == "yes");
        Assert.Contains("trainable elements: 1,010 in 14 tensors", stdout);
        Assert.DoesNotContain("not used on the way", stdout);
    }

    /// <summary>
    /// unlearn on the float16 CNN: the written model loads and runs in ONNX Runtime (float16 logits); only the changed elements'
    /// 2 bytes differ; selected elements the update moved are either changed or counted as rounded away; the report's after
    /// figures (the model as stored) are what eval measures on the written model; the report says which forward it used.
    /// </summary>
    [Theory]
    [InlineData("auto", null)] // iterative steps: every selected element moves by more than half a float16 ulp
    [InlineData("1", "3e-5")] // a small step: most selected elements' updates round away
    public void UnlearnWritesAFloat16ModelWhoseFiguresTheReportGives(string steps, string? tau)
    {
        using var dir = new TempDir();
        string[] args = ["unlearn", Fp16("model.onnx"), "--train", Fp16("data.npz"), "--forget", Fp16("forget.npz"), "--corrected", Fp16("corrected.npz"),
            "--out", dir.File("new.onnx"), "--report", dir.File("report.json"), "--steps", steps, .. tau is null ? Array.Empty<string>() : ["--tau", tau]];
        var (code, stdout, err) = CliRunner.Run(args);
        Assert.True(code == 0, err + stdout);
        var json = File.ReadAllText(dir.File("report.json"));
        ReportSchema.AssertValid(json);
        var r = JsonDocument.Parse(json).RootElement;
        Assert.Equal("float32 artifact (float16 widened)", r.GetProperty("gradientForward").GetString());
        var after = r.GetProperty("after").GetProperty("corrected");
        Assert.Equal("float16 as stored", after.GetProperty("forward").GetString());
        Assert.Equal("float16 as stored", r.GetProperty("before").GetProperty("forget").GetProperty("forward").GetString());

        long selected = r.GetProperty("selectedElements").GetInt64(), cancelled = r.GetProperty("roundingCancelled").GetInt64();
        var written = r.GetProperty("written");
        long changed = written.GetProperty("elementsChanged").GetInt64(), bytes = written.GetProperty("bytesChanged").GetInt64();
        Assert.Contains($"{cancelled:N0} of {selected:N0} selected elements unchanged", stdout);
        var diff = ModelDiff.Compare(Fp16("model.onnx"), dir.File("new.onnx"));
        Assert.False(diff.OtherBytesDiffer);
        Assert.Equal(changed, diff.Parameters.Sum(p => p.ElementsDiffering));
        Assert.InRange(bytes, changed, 2 * changed);
        // Every selected element moves in float32 here (τ > 0, no zero gradient differences): it is changed or rounded away.
        Assert.Equal(selected, changed + cancelled);
        if (tau is null) Assert.Equal(0, cancelled);
        else Assert.True(cancelled > selected / 2, $"{cancelled} of {selected} rounded away");

        // eval of the written model gives the report's after figure (same forward, same stored values).
        var (evalCode, evalOut, evalErr) = CliRunner.Run("eval", dir.File("new.onnx"), "--data", Fp16("corrected.npz"), "--json");
        Assert.True(evalCode == 0, evalErr);
        var e = JsonDocument.Parse(evalOut).RootElement;
        Assert.Equal(after.GetProperty("loss").GetDouble(), e.GetProperty("loss").GetDouble());
        Assert.Equal("float16 as stored", e.GetProperty("forward").GetString());

        // The written model runs as a float16 model.
        using var session = new InferenceSession(dir.File("new.onnx"));
        using var x = OrtValue.CreateTensorValueFromMemory(new Float16[2 * 64], [2, 1, 8, 8]);
        using var outputs = session.Run(new RunOptions(), ["x"], [x], ["logits"]);
        Assert.Equal(TensorElementType.Float16, outputs[0].GetTensorTypeAndShape().ElementDataType);
        Assert.All(outputs[0].GetTensorDataAsSpan<Float16>().ToArray(), v => Assert.True(float.IsFinite((float)v)));
    }

    /// <summary>predict reads float16 logits: all 64 digits right (the fixture's accuracy, as eval gives it).</summary>
    [Fact]
    public void PredictReadsFloat16Outputs()
    {
        using var dir = new TempDir();
        var (code, stdout, err) = CliRunner.Run("predict", Fp16("model.onnx"), "--data", Fp16("data.npz"), "--out", dir.File("p.npz"));
        Assert.True(code == 0, err);
        Assert.Contains("64 predictions written", stdout);
        Assert.Contains("accuracy 100.00 %", stdout);
    }

    [Fact]
    public void EvalSaysTheForward()
    {
        var (code, stdout, err) = CliRunner.Run("eval", Fixtures.File("bf16_mlp", "model.onnx"), "--data", Fixtures.File("bf16_mlp", "data.npz"));
        Assert.True(code == 0, err);
        Assert.EndsWith("over 64 labelled elements (bfloat16 as stored)", stdout.Trim());
        var loss = double.Parse(stdout.Split(' ')[1].TrimEnd(','), CultureInfo.InvariantCulture);
        Assert.Equal(0.11606, loss, 1e-5); // testdata/bf16_mlp/reference.npz: 0.1160598 (float64)
    }
}
