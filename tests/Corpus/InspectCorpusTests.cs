using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Onnx;
using Xunit.Abstractions;

namespace OnnxUnlearn.Tests.Corpus;

/// <summary>
/// <c>inspect</c> (<see cref="ModelSummary.Of"/>) succeeds on every model of the ONNX backend test corpus, test data
/// or not: whatever a model holds, listing its inputs, ops and parameters must not crash. Only a <see cref="UserError"/>
/// (a model file that is not a valid ONNX model) may stop it, and none is expected in the corpus.
/// </summary>
public class InspectCorpusTests(ITestOutputHelper output)
{
    [Fact]
    public void InspectSucceedsOnEveryCorpusModel()
    {
        if (Fixtures.Corpus is not { } root) { output.WriteLine("ONNX test corpus not installed (/usr/share/libonnx-testdata); nothing to check"); return; }
        var models = CorpusCase.Suites.Select(s => Path.Combine(root, s)).Where(Directory.Exists)
            .SelectMany(d => Directory.EnumerateFiles(d, "model.onnx", SearchOption.AllDirectories)).Order(StringComparer.Ordinal).ToList();
        int inspected = 0, parameters = 0, trainable = 0;
        var refused = new List<string>();
        foreach (var path in models)
        {
            try
            {
                var s = ModelSummary.Of(ModelFile.Load(path));
                inspected++;
                parameters += s.Parameters.Count;
                trainable += s.Parameters.Count(p => p.Trainable);
            }
            catch (UserError e) { refused.Add($"{Path.GetRelativePath(root, path)}: {e.Message}"); }
        }
        output.WriteLine($"inspect over the ONNX test corpus: {inspected} of {models.Count} models inspected ({parameters} parameter tensors, {trainable} trainable by default)");
        foreach (var r in refused) output.WriteLine("  refused " + r);
        Assert.NotEmpty(models);
        Assert.Empty(refused);
    }
}
