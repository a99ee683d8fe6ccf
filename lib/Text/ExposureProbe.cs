using System.Runtime.InteropServices;
using System.Security.Cryptography;
using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Text;

/// <summary>
/// Exposure of a secret in a model as it would be written with new parameter values: the selected elements are patched
/// into a copy in a temporary folder (the same surgical write-back as the output model), and the copy is measured. So
/// the figure is measured on the model a user would get, not assumed from a loss. Results are cached per parameter values.
/// </summary>
public sealed class ExposureProbe(string modelPath, Vocabulary vocab, ExposureOptions options, string? input = null, string? output = null, int batchRows = 256, int threads = 1)
{
    readonly Dictionary<string, ExposureResult> cache = [];

    public ExposureOptions Options => options;

    /// <summary>The exposure in the model file as it is.</summary>
    public ExposureResult Original() => Measure(modelPath);

    /// <summary>The exposure with the <paramref name="selected"/> elements of <paramref name="layout"/> set to their values in <paramref name="theta"/>.</summary>
    public ExposureResult At(ParameterLayout layout, int[] selected, ReadOnlySpan<float> theta)
    {
        var values = new float[selected.Length];
        for (int k = 0; k < selected.Length; k++) values[k] = theta[selected[k]];
        string key = Hash(MemoryMarshal.AsBytes(values.AsSpan())) + Hash(MemoryMarshal.AsBytes(selected.AsSpan()));
        if (cache.TryGetValue(key, out var hit)) return hit;
        var dir = Directory.CreateTempSubdirectory("onnx-unlearn-exposure-");
        try
        {
            string copy = Path.Combine(dir.FullName, Path.GetFileName(modelPath));
            WeightPatch.Write(modelPath, copy, layout.Patches(selected, theta));
            return cache[key] = Measure(copy);
        }
        finally { dir.Delete(recursive: true); }
    }

    static string Hash(ReadOnlySpan<byte> bytes) => Convert.ToHexString(SHA256.HashData(bytes));

    ExposureResult Measure(string path)
    {
        using var m = OnnxNextTokenModel.Open(path, vocab, input, output, batchRows, threads);
        return Exposure.Measure(m, vocab, options);
    }
}
