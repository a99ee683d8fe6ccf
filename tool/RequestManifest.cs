using System.Text.Json;

namespace OnnxUnlearn.Cli;

/// <summary>
/// <c>--request request.json</c>: the options of one command in a file, so a model registry can call the tool with one
/// argument. Keys are option names without dashes (<c>"forget": "z.npz"</c>, <c>"fraction": 0.05</c>, <c>"perTensor": true</c>
/// or <c>"per-tensor": true</c>) plus <c>"model"</c>; relative paths resolve against the request file's folder. Options given
/// on the command line win over the file.
/// </summary>
public static class RequestManifest
{
    public static string[] Expand(string[] args)
    {
        int at = Array.IndexOf(args, "--request");
        if (at < 0) return args;
        if (at + 1 >= args.Length) throw new UserError("--request needs a file: --request request.json");
        var path = args[at + 1];
        if (!File.Exists(path)) throw new UserError($"request file '{path}' does not exist");
        JsonElement root;
        try { root = JsonDocument.Parse(File.ReadAllText(path)).RootElement; }
        catch (JsonException e) { throw new UserError($"request file '{path}' is not valid JSON: {e.Message}"); }
        if (root.ValueKind != JsonValueKind.Object) throw new UserError($"request file '{path}' must hold a JSON object of options");
        var folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
        var rest = args.Take(at).Concat(args.Skip(at + 2)).ToList();
        var given = rest.Where(a => a.StartsWith("--")).ToHashSet();
        string? model = null;
        var fromFile = new List<string>();
        foreach (var p in root.EnumerateObject())
        {
            var name = Cli.Flag(p.Name);
            if (p.Name == "model") { model = Resolve(folder, Scalar(p.Value, path, p.Name)); continue; }
            if (given.Contains(name)) continue;
            switch (p.Value.ValueKind)
            {
                case JsonValueKind.True: fromFile.Add(name); break;
                case JsonValueKind.False or JsonValueKind.Null: break;
                case JsonValueKind.Array:
                    foreach (var v in p.Value.EnumerateArray()) { fromFile.Add(name); fromFile.Add(Scalar(v, path, p.Name)); }
                    break;
                default:
                    var value = Scalar(p.Value, path, p.Name);
                    fromFile.Add(name);
                    fromFile.Add(IsPath(p.Name) ? Resolve(folder, value) : value);
                    break;
            }
        }
        // COMMAND [MODEL] ...: the file's model unless the command line names one
        bool modelGiven = rest.Count > 1 && !rest[1].StartsWith("--");
        var head = rest.Take(1).Concat(modelGiven || model is null ? [] : [model]);
        return [.. head, .. rest.Skip(1), .. fromFile];
    }

    static bool IsPath(string key) => key is "train" or "forget" or "corrected" or "test" or "out" or "report" or "data" or "scores" or "vocab" or "mask";

    static string Resolve(string folder, string value) => Path.IsPathRooted(value) ? value : Path.Combine(folder, value);

    static string Scalar(JsonElement v, string path, string key) => v.ValueKind switch
    {
        JsonValueKind.String => v.GetString()!,
        JsonValueKind.Number => v.GetRawText(),
        _ => throw new UserError($"request file '{path}': '{key}' must be a string, a number, a boolean or a list of those"),
    };
}
