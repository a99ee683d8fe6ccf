using System.Text.Json;
using OnnxUnlearn.Unlearning;

namespace OnnxUnlearn.Tests.SampleApps;

/// <summary>samples/InMemoryUnlearn: the public API from streams and arrays gives what the file-based job gives.</summary>
public class InMemorySampleTests
{
    [Fact]
    public void TheSampleWritesTheSameModelAsTheFileBasedJobAndAReport()
    {
        using var dir = new TempDir();
        string F(string name) => Fixtures.File("mlp", name);
        int code = InMemoryUnlearn.Program.Main([F("model.onnx"), F("data.npz"), F("forget.npz"), F("corrected.npz"), dir.File("new.onnx"), dir.File("report.json")]);
        Assert.Equal(0, code);

        var expected = UnlearnJob.Run(new UnlearnRequest(F("model.onnx"), F("data.npz"), F("forget.npz"), F("corrected.npz"), null, dir.File("job.onnx")),
            new OnnxUnlearn.Runtime.LossSettings(), new UnlearnOptions());
        Assert.Equal(UnlearnOutcome.Updated, expected.Outcome);
        Assert.Equal(File.ReadAllBytes(dir.File("job.onnx")), File.ReadAllBytes(dir.File("new.onnx")));

        using var doc = JsonDocument.Parse(File.ReadAllText(dir.File("report.json")));
        var r = doc.RootElement;
        Assert.Equal("updated", r.GetProperty("outcome").GetString());
        Assert.Equal(expected.InputSha256, r.GetProperty("inputSha256").GetString());
        Assert.Equal(expected.OutputSha256, r.GetProperty("outputSha256").GetString());
        Assert.Equal(expected.SelectedElements, r.GetProperty("selectedElements").GetInt32());
        Assert.Equal(expected.Written!.BytesChanged, r.GetProperty("written").GetProperty("bytesChanged").GetInt64());
        Assert.True(expected.Written.BytesChanged > 0);
        Assert.Equal(expected.After!["corrected"].Loss, r.GetProperty("after").GetProperty("corrected").GetProperty("loss").GetDouble());
    }

    [Fact]
    public void BadInputIsOneLineAndExitCode2()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("model.onnx"), "not a model");
        string F(string name) => Fixtures.File("mlp", name);
        var err = new StringWriter();
        var saved = Console.Error;
        Console.SetError(err);
        try { Assert.Equal(2, InMemoryUnlearn.Program.Main([dir.File("model.onnx"), F("data.npz"), F("forget.npz"), F("corrected.npz"), dir.File("new.onnx"), dir.File("r.json")])); }
        finally { Console.SetError(saved); }
        Assert.StartsWith("error: 'model.onnx' is not", err.ToString());
        Assert.Single(err.ToString().TrimEnd().Split('\n'));
    }
}
