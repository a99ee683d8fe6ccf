using System.CommandLine;
using OnnxUnlearn.Curvature;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using OnnxUnlearn.Unlearning;

namespace OnnxUnlearn.Cli.Commands;

/// <summary>The --shard and --chunk options of sharpness and grad, and the identity their part files record (docs/method.md#shards).</summary>
public sealed class Sharding(string unit, int defaultChunk)
{
    public Option<string?> Shard { get; } = new("--shard") { Description = $"compute shard K of M only (K/M, K counted from 0): chunk c of {unit} belongs to shard c mod M; --out gets a part file that 'merge' combines into the file one process writes", HelpName = "K/M" };
    public Option<int> Chunk { get; } = new("--chunk") { Description = $"{unit} per chunk: the fixed summation order that shards merge into (the same with or without --shard)", DefaultValueFactory = _ => defaultChunk };

    public void AddTo(Command c) { c.Options.Add(Shard); c.Options.Add(Chunk); }

    public Curvature.Shard? Read(ParseResult r) => r.GetValue(Shard) is { } s ? Curvature.Shard.Parse(s) : null;

    /// <summary>The settings every command's result depends on, by flag (resolved where the model resolves them).</summary>
    public static SortedDictionary<string, string> Settings(Evaluator s) => new(StringComparer.Ordinal)
    {
        ["--loss"] = s.Settings.Loss.ToString(), ["--output"] = s.ModelOutput,
        ["--params"] = s.Settings.Params is { } p ? string.Join(" ", p) : "(all)", ["--frozen"] = s.Settings.Frozen is { } f ? string.Join(" ", f) : "(none)",
        ["--ignore-index"] = s.Settings.IgnoreIndex?.ToString() ?? "(none)", ["--batch-size"] = s.Settings.BatchSize.ToString(),
        ["--threads"] = s.Settings.Threads.ToString(), ["--allow-nonfinite"] = s.Settings.AllowNonFinite.ToString(),
    };

    public static PartInfo Info(string command, string model, string data, Evaluator s, SortedDictionary<string, string> settings, int chunk, long items, Curvature.Shard shard, bool hasAccuracy = false)
    {
        int chunks = Curvature.Shard.Chunks(items, chunk);
        return new PartInfo
        {
            Command = command, Model = model, ModelSha256 = WeightsSha256(s.File), Data = data, DataSha256 = Report.Sha256(data), Settings = settings,
            Chunk = chunk, Items = items, Chunks = chunks, Shard = shard.Index, Shards = shard.Count, Held = shard.Of(chunks),
            Parameters = s.Layout.Parameters.Select(p => new PartTensor(p.Name, p.Shape)).ToList(), HasAccuracy = hasAccuracy,
        };
    }

    /// <summary>
    /// sha256 of the model file followed by each external data file it names (by relative path, sorted): parts computed
    /// on other weights behind the same .onnx are refused too.
    /// </summary>
    static string WeightsSha256(ModelFile file)
    {
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        var data = file.Graph.Initializer.Where(ExternalData.IsExternal)
            .Select(t => ExternalData.Resolve(t, file.Folder, null, file.Policy, file.Path))
            .GroupBy(e => e.RelativePath).OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => g.First().FullPath);
        var buffer = new byte[1 << 20];
        foreach (var path in data.Prepend(file.Path))
        {
            using var f = File.OpenRead(path);
            for (int n; (n = f.Read(buffer)) > 0;) sha.AppendData(buffer, 0, n);
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    /// <summary>What a shard run prints: the part it wrote.</summary>
    public static void Done(bool json, PartInfo info, string output, double seconds)
    {
        if (json) Cli.WriteJson(new { part = output, command = info.Command, shard = info.Shard, shards = info.Shards, chunks = info.Held, totalChunks = info.Chunks, seconds });
        else Console.WriteLine($"shard {info.Shard}/{info.Shards}: chunk{(info.Held.Length == 1 ? "" : "s")} {(info.Held.Length == 0 ? "none" : string.Join(", ", info.Held))} of {info.Chunks} written to {output} ({seconds:F2} s); combine the parts with 'onnx-unlearn merge'");
    }
}
