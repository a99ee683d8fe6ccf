using System.Security.Cryptography;
using System.Runtime.InteropServices;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;

namespace OnnxUnlearn.Text;

/// <summary>
/// Exposure of a secret in the model an evaluator was compiled from, as it would be written with new parameter values:
/// the selected elements are patched into a copy in a temporary folder by the same surgical write-back as the output
/// model (<see cref="WeightPatch"/>, over the evaluator's layout), and that copy is loaded and measured. So the figure is
/// of the bytes a user would get, not assumed from a loss. Results are cached per parameter values.
/// </summary>
public sealed class ExposureProbe(Evaluator model, Vocabulary vocab, ExposureOptions options, string? input = null, string? output = null, int batchRows = 256)
{
    readonly Dictionary<string, ExposureResult> cache = [];

    public ExposureOptions Options => options;

    /// <summary>The exposure in the model file as it is.</summary>
    public ExposureResult Original() => Measure(model.File.Path, vocab, options, input, output, batchRows, model.Settings.Threads, model.File.Policy);

    /// <summary>The exposure with the <paramref name="selected"/> elements of the layout set to their values in <paramref name="theta"/>.</summary>
    public ExposureResult At(int[] selected, ReadOnlySpan<float> theta)
    {
        var values = new float[selected.Length];
        for (int k = 0; k < selected.Length; k++) values[k] = theta[selected[k]];
        string key = Hash(MemoryMarshal.AsBytes(values.AsSpan())) + Hash(MemoryMarshal.AsBytes(selected.AsSpan()));
        if (cache.TryGetValue(key, out var hit)) return hit;
        var dir = Directory.CreateTempSubdirectory("onnx-unlearn-exposure-");
        try
        {
            string copy = Path.Combine(dir.FullName, Path.GetFileName(model.File.Path));
            WeightPatch.Write(model.File.Path, copy, model.Layout.Patches(selected, theta), policy: model.File.Policy);
            return cache[key] = Measure(copy, vocab, options, input, output, batchRows, model.Settings.Threads);
        }
        finally { dir.Delete(recursive: true); }
    }

    static string Hash(ReadOnlySpan<byte> bytes) => Convert.ToHexString(SHA256.HashData(bytes));

    /// <summary>The exposure of a secret in a model file.</summary>
    public static ExposureResult Measure(string path, Vocabulary vocab, ExposureOptions options, string? input = null, string? output = null, int batchRows = 256, int threads = 1, ExternalDataPolicy? policy = null)
    {
        using var m = OnnxNextTokenModel.Open(path, vocab, input, output, batchRows, threads, policy);
        return Exposure.Measure(m, vocab, options);
    }
}
