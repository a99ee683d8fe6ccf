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
    /// <summary>Debian's libonnx-testdata 1.12 holds 1072 models: just below, so that a corpus read as (nearly) empty fails.</summary>
    const int MinModels = 1070;

    [CorpusFact]
    public void InspectSucceedsOnEveryCorpusModel()
    {
        var root = OnnxCorpus.Root;
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
        Assert.True(models.Count >= MinModels, $"only {models.Count} corpus models found, expected at least {MinModels}");
        Assert.Empty(refused);
    }
}
