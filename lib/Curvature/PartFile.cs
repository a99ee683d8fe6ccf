using System.Text;
using System.Text.Json;
using OnnxUnlearn.Data;

namespace OnnxUnlearn.Curvature;

/// <summary>A parameter tensor as a part file records it: the merged output is keyed and shaped by these.</summary>
public sealed record PartTensor(string Name, long[] Shape);

/// <summary>
/// What a part file says about its run (the "part.json" member): enough to refuse merging parts of different runs and to
/// name missing or duplicate chunks. <see cref="Settings"/> holds every flag that changes the result, by flag.
/// </summary>
public sealed record PartInfo
{
    public const string CurrentFormat = "onnx-unlearn-part/1";
    public string Format { get; init; } = CurrentFormat;
    /// <summary>"sharpness" (Hutchinson probe chunks) or "grad" (data row chunks).</summary>
    public required string Command { get; init; }
    public required string Model { get; init; }
    public required string ModelSha256 { get; init; }
    public required string Data { get; init; }
    public required string DataSha256 { get; init; }
    public required SortedDictionary<string, string> Settings { get; init; }
    /// <summary>Probes or rows per chunk.</summary>
    public required int Chunk { get; init; }
    /// <summary>Probes or rows in all.</summary>
    public required long Items { get; init; }
    public required int Chunks { get; init; }
    public required int Shard { get; init; }
    public required int Shards { get; init; }
    /// <summary>The chunks this part holds (those c with c mod Shards = Shard).</summary>
    public required int[] Held { get; init; }
    public required IReadOnlyList<PartTensor> Parameters { get; init; }
    /// <summary>grad: the loss counts correct predictions (an accuracy is reported).</summary>
    public bool HasAccuracy { get; init; }
}

/// <summary>
/// Part files: an .npz holding "part.json" (<see cref="PartInfo"/>, UTF-8 bytes) and float64 arrays per chunk c —
/// sharpness: chunk/c/mean, chunk/c/m2, chunk/c/first, chunk/c/second; grad: chunk/c/gradient and chunk/c/stats
/// (loss sum, labelled count, correct). docs/method.md#shards.
/// </summary>
public static class PartFile
{
    const string InfoKey = "part.json";
    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase, WriteIndented = false };

    public static void Write(string path, PartInfo info, IReadOnlyList<ProbeChunk> chunks)
    {
        var arrays = Begin(info);
        foreach (var c in chunks)
        {
            arrays[$"chunk/{c.Id}/mean"] = NdArray.FromDouble(c.Mean, c.Mean.Length);
            arrays[$"chunk/{c.Id}/m2"] = NdArray.FromDouble(c.M2, c.M2.Length);
            arrays[$"chunk/{c.Id}/first"] = NdArray.FromDouble(c.FirstHalf, c.FirstHalf.Length);
            arrays[$"chunk/{c.Id}/second"] = NdArray.FromDouble(c.SecondHalf, c.SecondHalf.Length);
        }
        Npz.Write(path, arrays);
    }

    public static void Write(string path, PartInfo info, IReadOnlyList<RowChunk> chunks)
    {
        var arrays = Begin(info);
        foreach (var c in chunks)
        {
            arrays[$"chunk/{c.Id}/gradient"] = NdArray.FromDouble(c.GradientSum, c.GradientSum.Length);
            arrays[$"chunk/{c.Id}/stats"] = NdArray.FromDouble([c.LossSum, c.Count, c.Correct], 3);
        }
        Npz.Write(path, arrays);
    }

    static Dictionary<string, NdArray> Begin(PartInfo info)
    {
        var bytes = JsonSerializer.SerializeToUtf8Bytes(info, Json);
        return new() { [InfoKey] = NdArray.FromUInt8(bytes, bytes.Length) };
    }

    /// <summary>A part's info and arrays; a file that is not a part is refused naming it.</summary>
    public static (PartInfo Info, Dictionary<string, NdArray> Arrays) Read(string path)
    {
        var arrays = Npz.Read(path);
        PartInfo? info = null;
        if (arrays.TryGetValue(InfoKey, out var raw) && raw.Data is byte[] bytes)
            try { info = JsonSerializer.Deserialize<PartInfo>(bytes, Json); }
            catch (JsonException) { }
        if (info is null) throw new UserError($"'{path}' is not a part file (no readable '{InfoKey}'); give the files that sharpness or grad wrote with --shard");
        if (info.Format != PartInfo.CurrentFormat) throw new UserError($"'{path}' is a part of format '{info.Format}'; this onnx-unlearn reads '{PartInfo.CurrentFormat}': recompute it with this version");
        return (info, arrays);
    }

    /// <summary>
    /// The parts of one run, checked: same command, model, data, settings, chunking, shard count and parameters; every chunk
    /// exactly once. Returns the first part's info and the arrays of all chunks.
    /// </summary>
    public static (PartInfo Info, Dictionary<string, NdArray> Arrays) Merge(IReadOnlyList<string> paths)
    {
        if (paths.Count == 0) throw new UserError("merge needs at least one part file");
        var parts = paths.Select(p => (Path: p, Part: Read(p))).ToList();
        var (first, (a, _)) = (parts[0].Path, parts[0].Part);
        var owner = new Dictionary<int, string>();
        var all = new Dictionary<string, NdArray>();
        foreach (var (path, (b, arrays)) in parts)
        {
            Same(first, path, "command", a.Command, b.Command, "merge parts of one command");
            Same(first, path, "model (sha256)", a.ModelSha256, b.ModelSha256, $"'{path}' was computed on '{b.Model}', '{first}' on '{a.Model}'; merge parts of one model");
            Same(first, path, "data (sha256)", a.DataSha256, b.DataSha256, $"'{path}' was computed on '{b.Data}', '{first}' on '{a.Data}'; merge parts of one data file");
            foreach (var key in a.Settings.Keys.Union(b.Settings.Keys))
                Same(first, path, key, a.Settings.GetValueOrDefault(key, "(not given)"), b.Settings.GetValueOrDefault(key, "(not given)"), "parts of one run share every setting");
            Same(first, path, "chunk size", a.Chunk.ToString(), b.Chunk.ToString(), "parts of one run share the chunking");
            Same(first, path, "items", a.Items.ToString(), b.Items.ToString(), "parts of one run cover the same probes or rows");
            Same(first, path, "shard count (--shard K/M)", a.Shards.ToString(), b.Shards.ToString(), "merge the parts of one sharding");
            Same(first, path, "parameters", string.Join(";", a.Parameters.Select(t => t.Name + "[" + string.Join(",", t.Shape) + "]")),
                string.Join(";", b.Parameters.Select(t => t.Name + "[" + string.Join(",", t.Shape) + "]")), "parts of one run train the same parameters");
            foreach (int c in b.Held)
            {
                if (owner.TryGetValue(c, out var other))
                    throw new UserError($"chunk {c} is in both '{other}' and '{path}' (shard {b.Shard}/{b.Shards} given twice?); give each shard's part once");
                owner[c] = path;
            }
            foreach (var (k, v) in arrays) if (k != InfoKey) all[k] = v;
        }
        var missing = Enumerable.Range(0, a.Chunks).Where(c => !owner.ContainsKey(c)).ToList();
        if (missing.Count > 0)
        {
            var shards = missing.Select(c => c % a.Shards).Distinct().Order().Select(k => $"{k}/{a.Shards}").ToList();
            throw new UserError($"chunk{(missing.Count > 1 ? "s" : "")} {string.Join(", ", missing)} of {a.Chunks} missing: add the part{(shards.Count > 1 ? "s" : "")} of shard{(shards.Count > 1 ? "s" : "")} {string.Join(", ", shards)}");
        }
        return (a, all);
    }

    static void Same(string first, string path, string what, string expected, string got, string fix)
    {
        if (expected != got)
            throw new UserError($"'{path}' differs from '{first}' in {what}: {Short(got)} vs {Short(expected)}; {fix}");
    }

    static string Short(string s) => s.Length > 80 ? s[..77] + "..." : s;

    /// <summary>The probe chunks of merged parts, in chunk order.</summary>
    public static List<ProbeChunk> ProbeChunks(PartInfo info, IReadOnlyDictionary<string, NdArray> arrays) =>
        Enumerable.Range(0, info.Chunks).Select(c => new ProbeChunk(c, (int)Math.Min(info.Chunk, info.Items - (long)c * info.Chunk),
            Get(arrays, $"chunk/{c}/mean"), Get(arrays, $"chunk/{c}/m2"), Get(arrays, $"chunk/{c}/first"), Get(arrays, $"chunk/{c}/second"))).ToList();

    /// <summary>The row chunks of merged parts, in chunk order.</summary>
    public static List<RowChunk> RowChunks(PartInfo info, IReadOnlyDictionary<string, NdArray> arrays) =>
        Enumerable.Range(0, info.Chunks).Select(c =>
        {
            var s = Get(arrays, $"chunk/{c}/stats");
            return new RowChunk(c, Get(arrays, $"chunk/{c}/gradient"), s[0], (long)s[1], s[2]);
        }).ToList();

    static double[] Get(IReadOnlyDictionary<string, NdArray> arrays, string key) =>
        arrays.TryGetValue(key, out var a) && a.Data is double[] d ? d : throw new UserError($"the parts hold no float64 array '{key}'; recompute that shard's part");

    /// <summary>A flat vector as arrays keyed and shaped by the recorded parameters (what <c>ParameterLayout.Split</c> writes).</summary>
    public static void Split(IReadOnlyList<PartTensor> tensors, float[] vector, Dictionary<string, NdArray> into, string prefix = "")
    {
        long offset = 0;
        foreach (var t in tensors)
        {
            long n = t.Shape.Aggregate(1L, (x, y) => x * y);
            into[prefix + t.Name] = NdArray.FromFloat(vector.AsSpan((int)offset, (int)n).ToArray(), t.Shape);
            offset += n;
        }
    }
}
