using System.Text.Json;

namespace OnnxUnlearn.Tests.Cli;

/// <summary>
/// <c>eval --target-class</c> against the attack success PyTorch measured when it trained the backdoored digits CNN and its
/// retrained twin (testdata/experiments/meta.json): the share of triggered test images of classes other than 0 predicted as 0.
/// </summary>
public class AttackSuccessTests
{
    static string Experiment(string f) => Path.Combine(Fixtures.Root, "experiments", "cnn", f);

    static double Meta(string model) => JsonDocument.Parse(File.ReadAllText(Path.Combine(Fixtures.Root, "experiments", "meta.json")))
        .RootElement.GetProperty("models").GetProperty("cnn/backdoor").GetProperty(model).GetProperty("attack_success_rate").GetDouble();

    [Theory]
    [InlineData("poisoned")]  // 97.5 %
    [InlineData("retrained")] // 0.2 %
    public void MatchesPyTorch(string model)
    {
        var (code, stdout, stderr) = CliRunner.Run("eval", Experiment($"backdoor/{model}.onnx"), "--data", Experiment("triggered_test.npz"), "--target-class", "0", "--json");
        Assert.True(code == 0, stderr);
        Assert.Equal(Meta(model), JsonDocument.Parse(stdout).RootElement.GetProperty("attackSuccess").GetDouble(), 12);
    }

    [Fact]
    public void AbsentWithoutTheOptionAndRefusedWithoutLabelsOfOtherClasses()
    {
        var (_, stdout, _) = CliRunner.Run("eval", Experiment("backdoor/poisoned.onnx"), "--data", Experiment("triggered_test.npz"), "--json");
        Assert.False(JsonDocument.Parse(stdout).RootElement.TryGetProperty("attackSuccess", out _));
        using var dir = new TempDir();
        var d = OnnxUnlearn.Data.Npz.Read(Experiment("triggered_test.npz"));
        var rows = d["label"].ToInt64().Select((l, i) => (l, i)).Where(p => p.l == 3).Select(p => (long)p.i).ToArray();
        OnnxUnlearn.Data.Npz.Write(dir.File("threes.npz"), d.ToDictionary(kv => kv.Key, kv => kv.Value.TakeRows(rows)));
        var (code, _, err) = CliRunner.Run("eval", Experiment("backdoor/poisoned.onnx"), "--data", dir.File("threes.npz"), "--target-class", "3");
        Assert.Equal(2, code);
        Assert.Contains("every sample of", err);
    }
}
