using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.OnnxRuntime;
using OnnxUnlearn.Data;

namespace OnnxUnlearn.Runtime;

/// <summary>
/// Samples for a model: arrays keyed by graph input name (axis 0 = samples) plus <c>label</c>. Batches are turned into
/// OrtValues once and reused, since curvature estimation evaluates the same data many times.
/// </summary>
public sealed class Dataset : IDisposable
{
    public string Source { get; }
    public IReadOnlyDictionary<string, NdArray> Arrays { get; }
    public long Rows { get; }
    readonly Dictionary<(long, long), Dictionary<string, OrtValue>> batches = [];

    public Dataset(IReadOnlyDictionary<string, NdArray> arrays, string source)
    {
        Source = source;
        Arrays = arrays;
        if (arrays.Count == 0) throw new UserError($"'{source}' holds no arrays");
        var rows = arrays.Select(kv => (kv.Key, Rows: kv.Value.Shape.Length == 0 ? -1 : kv.Value.Rows)).ToList();
        if (rows.Any(r => r.Rows < 0)) throw new UserError($"'{source}': array '{rows.First(r => r.Rows < 0).Key}' is a scalar; every array needs samples on axis 0");
        if (rows.Select(r => r.Rows).Distinct().Count() > 1)
            throw new UserError($"'{source}': arrays disagree on the number of samples ({string.Join(", ", rows.Select(r => $"{r.Key}: {r.Rows}"))}); axis 0 must be the sample axis of every array");
        Rows = rows[0].Rows;
    }

    public static Dataset Load(string path) => new(Npz.Read(path), path);

    /// <summary>An .npz read from a stream; <paramref name="name"/> labels messages.</summary>
    public static Dataset Load(Stream npz, string name) => new(Npz.Read(npz, name), name);

    public bool Has(string key) => Arrays.ContainsKey(key);

    /// <summary>Checks that every name is present, naming the missing keys and what the file holds.</summary>
    public void Require(IEnumerable<string> names, string why)
    {
        var missing = names.Where(n => !Arrays.ContainsKey(n)).ToList();
        if (missing.Count > 0)
            throw new UserError($"'{Source}' has no array named {string.Join(", ", missing.Select(m => $"'{m}'"))} ({why}); it holds {string.Join(", ", Arrays.Keys)}. Keys of a data file are the model's input names plus 'label'.");
    }

    /// <summary>Checks ranks and fixed dimensions of the arrays against the graph's declared input shapes.</summary>
    public void CheckShapes(IEnumerable<global::Onnx.ValueInfoProto> inputs, string model)
    {
        foreach (var input in inputs)
        {
            if (!Arrays.TryGetValue(input.Name, out var a) || input.Type?.TensorType?.Shape is not { } shape) continue;
            var dims = shape.Dim.Select(d => d.ValueCase == global::Onnx.TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? d.DimValue : -1).ToArray();
            string want = "[" + string.Join(", ", dims.Select(d => d < 0 ? "?" : d.ToString())) + "]";
            // axis 0 is the sample axis: a model with a fixed batch of 1 is fed one sample at a time.
            bool ok = dims.Length == a.Shape.Length && dims.Select((d, i) => d < 0 || i == 0 || d == a.Shape[i]).All(x => x);
            if (!ok)
                throw new UserError($"'{Source}': array '{input.Name}' has shape {NdArray.FormatShape(a.Shape)} but model '{model}' expects {want} for input '{input.Name}' (axis 0 = samples); reshape the data to match");
        }
    }

    /// <summary>Rows [start, start+count) of the named arrays as OrtValues of the given element types (converted when the file's type differs).</summary>
    public IReadOnlyDictionary<string, OrtValue> Batch(long start, long count, IReadOnlyDictionary<string, TensorElementType> types)
    {
        if (batches.TryGetValue((start, count), out var cached)) return cached;
        var feed = new Dictionary<string, OrtValue>();
        foreach (var (name, type) in types)
            feed[name] = OrtFeeds.Create(Arrays[name].SliceRows(start, count), type, $"'{Source}' array '{name}'");
        return batches[(start, count)] = feed;
    }

    /// <summary>A subset of rows (e.g. a seeded sample) as a new dataset.</summary>
    public Dataset Take(IReadOnlyList<long> rows, string source) =>
        new(Arrays.ToDictionary(kv => kv.Key, kv => kv.Value.TakeRows(rows)), source);

    public void Dispose()
    {
        foreach (var feed in batches.Values) foreach (var v in feed.Values) v.Dispose();
        batches.Clear();
    }
}

public static class OrtFeeds
{
    public static OrtValue Create(NdArray a, TensorElementType type, string what) => type switch
    {
        TensorElementType.Float => OrtValue.CreateTensorValueFromMemory(a.ToFloat(), a.Shape),
        TensorElementType.Double => OrtValue.CreateTensorValueFromMemory(a.ToDouble(), a.Shape),
        TensorElementType.Int64 => OrtValue.CreateTensorValueFromMemory(a.ToInt64(), a.Shape),
        TensorElementType.Int32 => OrtValue.CreateTensorValueFromMemory(a.ToInt64().Select(v => (int)v).ToArray(), a.Shape),
        TensorElementType.UInt8 => OrtValue.CreateTensorValueFromMemory(a.ToInt64().Select(v => (byte)v).ToArray(), a.Shape),
        TensorElementType.Bool => OrtValue.CreateTensorValueFromMemory(a.ToInt64().Select(v => v != 0).ToArray(), a.Shape),
        TensorElementType.Float16 => OrtValue.CreateTensorValueFromMemory(a.ToFloat().Select(v => (Float16)v).ToArray(), a.Shape),
        _ => throw new UserError($"{what}: the model wants element type {type}, which data files cannot feed yet"),
    };
}
