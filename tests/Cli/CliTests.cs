using System.Diagnostics;
using System.Text.Json;
using OnnxUnlearn.Data;

namespace OnnxUnlearn.Tests.Cli;

/// <summary>The CLI as a user runs it: a separate process, exit codes, stdout/stderr.</summary>
public class CliTests
{
    static (int Code, string Out, string Err) Run(params string[] args) => CliRunner.Run(args);

    [Fact]
    public void InspectJsonIsStable()
    {
        var (code, output, _) = Run("inspect", Fixtures.File("cnn", "model.onnx"), "--json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        Assert.Equal(13, root.GetProperty("opsets").GetProperty("ai.onnx").GetInt32());
        Assert.Equal(1010, root.GetProperty("trainableElements").GetInt64());
        Assert.Equal("x", root.GetProperty("inputs")[0].GetProperty("name").GetString());
        var running = root.GetProperty("parameters").EnumerateArray().First(p => p.GetProperty("name").GetString() == "bn.running_mean");
        Assert.False(running.GetProperty("trainable").GetBoolean());
    }

    [Theory]
    [InlineData("inspect", "/nonexistent/model.onnx")]
    [InlineData("grad", "{mlp}", "--data", "{cnn-data}", "--out", "/tmp/never.npz")]
    [InlineData("grad", "{mlp}", "--data", "/nonexistent/d.npz", "--out", "/tmp/never.npz")]
    [InlineData("unlearn", "{mlp}", "--train", "{mlp-data}", "--forget", "{mlp-data}", "--corrected", "{forget}", "--out", "/tmp/never.onnx")]
    [InlineData("unlearn", "{mlp}", "--train", "{mlp-data}", "--forget", "{forget}", "--select", "bogus")]
    [InlineData("grad", "{mlp}", "--data", "{mlp-data}", "--out", "/tmp/never.npz", "--loss", "hinge")]
    public void BadInputExitsWithCode2AndOneLine(params string[] args)
    {
        var real = args.Select(a => a switch
        {
            "{mlp}" => Fixtures.File("mlp", "model.onnx"), "{mlp-data}" => Fixtures.File("mlp", "data.npz"),
            "{cnn-data}" => Fixtures.File("cnn", "data.npz"), "{forget}" => Fixtures.File("mlp", "forget.npz"), _ => a,
        }).ToArray();
        var (code, _, err) = Run(real);
        Assert.Equal(2, code);
        Assert.StartsWith("error: ", err);
        Assert.Single(err.Trim().Split('\n'));
        Assert.DoesNotContain("   at ", err);
    }

    [Fact]
    public void GradWritesTheGradientOfTheMeanLoss()
    {
        using var dir = new TempDir();
        var (code, output, err) = Run("grad", Fixtures.File("logreg", "model.onnx"), "--data", Fixtures.File("logreg", "data.npz"), "--out", dir.File("g.npz"), "--batch-size", "10");
        Assert.True(code == 0, err);
        Assert.Contains("loss", output);
        var g = Npz.Read(dir.File("g.npz"));
        var reference = Npz.Read(Fixtures.File("logreg", "reference.npz"));
        var expected = reference["grad/fc.weight"].ToDouble();
        var actual = g["fc.weight"].ToFloat();
        double err2 = Numerics.RelativeL2(expected, actual);
        Assert.True(err2 < 1e-4, $"relative error {err2}");
    }

    [Fact]
    public void UnlearnWritesModelAndReportAndKeepsTheInput()
    {
        using var dir = new TempDir();
        var input = Fixtures.File("mlp", "model.onnx");
        var hash = OnnxUnlearn.Unlearning.Report.Sha256(input);
        var (code, _, err) = Run("unlearn", input, "--train", Fixtures.File("mlp", "data.npz"), "--forget", Fixtures.File("mlp", "forget.npz"),
            "--corrected", Fixtures.File("mlp", "corrected.npz"), "--out", dir.File("new.onnx"), "--report", dir.File("r.json"), "--seed", "3");
        Assert.True(code == 0, err);
        Assert.Equal(hash, OnnxUnlearn.Unlearning.Report.Sha256(input));
        using var doc = JsonDocument.Parse(File.ReadAllText(dir.File("r.json")));
        Assert.Equal(3, doc.RootElement.GetProperty("seed").GetInt32());
        Assert.Equal(OnnxUnlearn.Unlearning.Report.Sha256(dir.File("new.onnx")), doc.RootElement.GetProperty("outputSha256").GetString());
        Assert.True(doc.RootElement.GetProperty("after").GetProperty("corrected").GetProperty("loss").GetDouble()
            < doc.RootElement.GetProperty("before").GetProperty("corrected").GetProperty("loss").GetDouble());
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp"));
    }

    [Fact]
    public void RequireAccuracyMissedExitsWith3()
    {
        using var dir = new TempDir();
        var (code, _, err) = Run("unlearn", Fixtures.File("mlp", "model.onnx"), "--train", Fixtures.File("mlp", "data.npz"), "--forget", Fixtures.File("mlp", "forget.npz"),
            "--corrected", Fixtures.File("mlp", "corrected.npz"), "--out", dir.File("new.onnx"), "--require-accuracy", "0.999");
        Assert.Equal(3, code);
        Assert.Contains("target not met", err);
    }

    [Fact]
    public void SharpnessIsReproducibleAcrossProcessesForASeed()
    {
        using var dir = new TempDir();
        foreach (var name in new[] { "a.npz", "b.npz" })
        {
            var (code, _, err) = Run("sharpness", Fixtures.File("mlp", "model.onnx"), "--data", Fixtures.File("mlp", "data.npz"), "--out", dir.File(name), "--probes", "12", "--seed", "3", "--threads", "1");
            Assert.True(code == 0, err);
        }
        var (a, b) = (Npz.Read(dir.File("a.npz")), Npz.Read(dir.File("b.npz")));
        Assert.Equal(a.Keys, b.Keys);
        foreach (var key in a.Keys) Assert.Equal(a[key].ToFloat(), b[key].ToFloat());
    }

    [Fact]
    public void SharpnessAndSelectProduceScoresAndMasks()
    {
        using var dir = new TempDir();
        var (code, output, err) = Run("sharpness", Fixtures.File("logreg", "model.onnx"), "--data", Fixtures.File("logreg", "data.npz"), "--out", dir.File("h.npz"), "--probes", "20", "--estimator", "hutchinson", "--json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        Assert.Equal(20, doc.RootElement.GetProperty("probes").GetInt32());
        var h = Npz.Read(dir.File("h.npz"));
        Assert.Equal([10L, 64], h["fc.weight"].Shape);
        Assert.True(h.ContainsKey("stderr/fc.weight"));
        (code, _, err) = Run("select", "--scores", dir.File("h.npz"), "--count", "65", "--out", dir.File("m.npz"));
        Assert.True(code == 0, err);
        var m = Npz.Read(dir.File("m.npz"));
        Assert.Equal(65, m.Values.Sum(a => a.ToFloat().Sum()));
    }
}

public class RequestAndDeletionTests
{
    static (int Code, string Out, string Err) Run(params string[] args) => CliRunner.Run(args);

    [Fact]
    public void RequestManifestRoundTripsIntoTheReport()
    {
        using var dir = new TempDir();
        File.Copy(Fixtures.File("mlp", "forget.npz"), dir.File("z.npz"));
        File.WriteAllText(dir.File("request.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["model"] = Fixtures.File("mlp", "model.onnx"), ["train"] = Fixtures.File("mlp", "data.npz"), ["forget"] = "z.npz",
            ["out"] = "new.onnx", ["report"] = "report.json", ["fraction"] = 0.1, ["seed"] = 5, ["select"] = "random", ["perTensor"] = true,
        }));
        var (code, _, err) = Run("unlearn", "--request", dir.File("request.json"), "--seed", "6");
        Assert.True(code == 0, err);
        using var report = JsonDocument.Parse(File.ReadAllText(dir.File("report.json")));
        var r = report.RootElement;
        Assert.Equal(6, r.GetProperty("seed").GetInt32()); // the command line wins
        Assert.Equal(0.1, r.GetProperty("settings").GetProperty("fraction").GetDouble());
        Assert.Equal("Random", r.GetProperty("settings").GetProperty("select").GetString());
        Assert.True(r.GetProperty("settings").GetProperty("perTensor").GetBoolean());
        Assert.Equal(dir.File("z.npz"), r.GetProperty("data").GetProperty("forget").GetProperty("path").GetString());
        Assert.Equal(OnnxUnlearn.Unlearning.Report.Sha256(dir.File("new.onnx")), r.GetProperty("outputSha256").GetString());
        // deletion (no corrected set): the forget loss rises
        Assert.True(r.GetProperty("after").GetProperty("forget").GetProperty("loss").GetDouble() > r.GetProperty("before").GetProperty("forget").GetProperty("loss").GetDouble());
        Assert.False(r.GetProperty("after").TryGetProperty("corrected", out _));
    }

    [Fact]
    public void OpsWithoutAGradientRuleAreNamedWithNodeAndOpset()
    {
        // A float tensor feeding an op without a rule (Trilu) on the way to the output: clear error naming op, node and opset.
        var m = new global::Onnx.ModelProto { IrVersion = 8, OpsetImport = { new global::Onnx.OperatorSetIdProto { Version = 17 } }, Graph = new global::Onnx.GraphProto { Name = "g" } };
        var g = m.Graph;
        g.Input.Add(new global::Onnx.ValueInfoProto { Name = "x", Type = new global::Onnx.TypeProto { TensorType = new global::Onnx.TypeProto.Types.Tensor { ElemType = 1, Shape = new global::Onnx.TensorShapeProto { Dim = { new global::Onnx.TensorShapeProto.Types.Dimension { DimParam = "N" }, new global::Onnx.TensorShapeProto.Types.Dimension { DimValue = 2 }, new global::Onnx.TensorShapeProto.Types.Dimension { DimValue = 2 } } } } } });
        g.Initializer.Add(new global::Onnx.TensorProto { Name = "w", DataType = 1, Dims = { 2, 2 }, FloatData = { 1, 0, 0, 1 } });
        g.Node.Add(new global::Onnx.NodeProto { OpType = "MatMul", Name = "mm", Input = { "x", "w" }, Output = { "h" } });
        g.Node.Add(new global::Onnx.NodeProto { OpType = "Trilu", Name = "the_trilu", Input = { "h" }, Output = { "t" } });
        g.Node.Add(new global::Onnx.NodeProto { OpType = "Det", Name = "the_det", Input = { "t" }, Output = { "d" } });
        g.Node.Add(new global::Onnx.NodeProto { OpType = "Unsqueeze", Name = "u", Input = { "d", "axes" }, Output = { "y" } });
        g.Initializer.Add(new global::Onnx.TensorProto { Name = "axes", DataType = 7, Dims = { 1 }, Int64Data = { 1 } });
        g.Output.Add(new global::Onnx.ValueInfoProto { Name = "y" });
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("det.onnx"), Google.Protobuf.MessageExtensions.ToByteArray(m));
        OnnxUnlearn.Data.Npz.Write(dir.File("d.npz"), new Dictionary<string, OnnxUnlearn.Data.NdArray>
        {
            ["x"] = OnnxUnlearn.Data.NdArray.FromFloat([1, 2, 3, 4, 2, 0, 0, 2], 2, 2, 2), ["label"] = OnnxUnlearn.Data.NdArray.FromFloat([1, 2], 2, 1),
        });
        var (code, _, err) = Run("grad", dir.File("det.onnx"), "--data", dir.File("d.npz"), "--loss", "mse", "--out", dir.File("g.npz"));
        Assert.Equal(2, code);
        Assert.Contains("no gradient rule for op 'Trilu' (node 'the_trilu', opset 17)", err);
        var (code2, output, _) = Run("inspect", dir.File("det.onnx"), "--json");
        Assert.Equal(0, code2);
        Assert.Contains("\"op\": \"Trilu\"", output);
    }
}
