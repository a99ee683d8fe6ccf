using Google.Protobuf;

namespace OnnxUnlearn.Tests.Cli;

/// <summary>
/// Commands that build a gradient graph say what the model alone rules out before they read any data: the data files
/// named here do not exist, so an error about the model proves the data was never opened.
/// </summary>
public class PreflightTests
{
    const string Absent = "/nonexistent/data.npz";

    static string Model(TempDir dir, Action<global::Onnx.ModelProto> change)
    {
        var m = global::Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.File("mlp", "model.onnx")));
        change(m);
        File.WriteAllBytes(dir.File("model.onnx"), m.ToByteArray());
        return dir.File("model.onnx");
    }

    /// <summary>The hidden Relu replaced by an op of a domain with no rules: it lies between fc1's weights and the loss.</summary>
    static void Unknown(global::Onnx.ModelProto m)
    {
        m.OpsetImport.Add(new global::Onnx.OperatorSetIdProto { Domain = "com.example", Version = 1 });
        var relu = m.Graph.Node.First(n => n.OpType == "Relu");
        relu.OpType = "Swish"; relu.Domain = "com.example";
    }

    static string Refusal((int Code, string Out, string Err) r)
    {
        Assert.True(r.Code == 2, $"exit {r.Code}: {r.Err}");
        Assert.DoesNotContain("nonexistent", r.Err);
        return r.Err;
    }

    [Fact]
    public void AnOpWithoutARuleIsReportedBeforeTheDataIsRead()
    {
        using var dir = new TempDir();
        var model = Model(dir, Unknown);
        Assert.Contains("no gradient rule for op 'com.example.Swish'", Refusal(CliRunner.Run("grad", model, "--data", Absent, "--out", dir.File("g.npz"))));
        Assert.Contains("no gradient rule for op 'com.example.Swish'", Refusal(CliRunner.Run("sharpness", model, "--data", Absent, "--out", dir.File("s.npz"))));
        Assert.Contains("no gradient rule for op 'com.example.Swish'", Refusal(CliRunner.Run("unlearn", model, "--train", Absent, "--forget", Absent, "--out", dir.File("new.onnx"))));
        Assert.Contains("no gradient rule for op 'com.example.Swish'", Refusal(CliRunner.Run("artifacts", model, "--data", Absent, "--out", dir.File("art"))));
        // Only parameters before the op reach it: freezing them leaves fc2, whose path has rules; the data is then read.
        Assert.Contains("nonexistent", CliRunner.Run("grad", model, "--data", Absent, "--out", dir.File("g.npz"), "--frozen", "fc1.*").Err);
    }

    [Fact]
    public void NoTrainableParametersIsReportedBeforeTheDataIsRead()
    {
        using var dir = new TempDir();
        var model = Model(dir, _ => { });
        Assert.Contains("has no trainable parameters for output 'logits'", Refusal(CliRunner.Run("grad", model, "--data", Absent, "--out", dir.File("g.npz"), "--frozen", "*")));
    }
}
