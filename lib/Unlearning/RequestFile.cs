using System.Text.Json;

namespace OnnxUnlearn.Unlearning;

/// <summary>
/// A request file: the settings of one run in a JSON object, so a model registry can hand a request over as one file.
/// Keys are setting names (<c>"forget": "z.npz"</c>, <c>"fraction": 0.05</c>, <c>"perTensor": true</c> or
/// <c>"per-tensor": true</c>) plus <c>"model"</c>; values are strings, numbers, booleans or lists of those. Paths
/// (<see cref="PathKeys"/>) resolve against the file's folder, so a request moves with its data.
/// </summary>
public sealed record RequestFile(string Path, string? Model, IReadOnlyList<RequestFile.Entry> Entries)
{
    /// <summary>One setting: its key as written, and its values as text (one for a scalar, several for a list; true/false for a boolean).</summary>
    public sealed record Entry(string Key, IReadOnlyList<string> Values, bool IsBoolean);

    /// <summary>Keys whose values are paths of files.</summary>
    public static readonly IReadOnlySet<string> PathKeys = new HashSet<string>
        { "model", "train", "forget", "corrected", "test", "out", "report", "data", "scores", "vocab", "mask" };

    public static RequestFile Read(string path)
    {
        if (!File.Exists(path)) throw new UserError($"request file '{path}' does not exist");
        JsonElement root;
        try { root = JsonDocument.Parse(File.ReadAllText(path)).RootElement; }
        catch (JsonException e) { throw new UserError($"request file '{path}' is not valid JSON: {e.Message}"); }
        if (root.ValueKind != JsonValueKind.Object) throw new UserError($"request file '{path}' must hold a JSON object of settings");
        var folder = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        string? model = null;
        var entries = new List<Entry>();
        foreach (var p in root.EnumerateObject())
        {
            string Value(JsonElement v)
            {
                var text = Scalar(v, path, p.Name);
                return PathKeys.Contains(p.Name) ? Resolve(folder, text) : text;
            }
            if (p.Name == "model") { model = Value(p.Value); continue; }
            entries.Add(p.Value.ValueKind switch
            {
                JsonValueKind.True => new Entry(p.Name, ["true"], true),
                JsonValueKind.False or JsonValueKind.Null => new Entry(p.Name, [], true),
                JsonValueKind.Array => new Entry(p.Name, p.Value.EnumerateArray().Select(Value).ToList(), false),
                _ => new Entry(p.Name, [Value(p.Value)], false),
            });
        }
        return new RequestFile(path, model, entries);
    }

    static string Resolve(string folder, string value) => System.IO.Path.IsPathRooted(value) ? value : System.IO.Path.Combine(folder, value);

    static string Scalar(JsonElement v, string path, string key) => v.ValueKind switch
    {
        JsonValueKind.String => v.GetString()!,
        JsonValueKind.Number => v.GetRawText(),
        _ => throw new UserError($"request file '{path}': '{key}' must be a string, a number, a boolean or a list of those"),
    };
}
