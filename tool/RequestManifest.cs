using OnnxUnlearn.Unlearning;

namespace OnnxUnlearn.Cli;

/// <summary>
/// <c>--request request.json</c>: a <see cref="RequestFile"/> turned into this command's options (each key the flag of
/// the same name, <c>"perTensor"</c> → <c>--per-tensor</c>; <c>"model"</c> the MODEL argument). Options given on the
/// command line win over the file.
/// </summary>
public static class RequestManifest
{
    public static string[] Expand(string[] args)
    {
        int at = Array.IndexOf(args, "--request");
        if (at < 0) return args;
        if (at + 1 >= args.Length) throw new UserError("--request needs a file: --request request.json");
        var request = RequestFile.Read(args[at + 1]);
        var rest = args.Take(at).Concat(args.Skip(at + 2)).ToList();
        var given = rest.Where(a => a.StartsWith("--")).ToHashSet();
        var fromFile = new List<string>();
        foreach (var entry in request.Entries)
        {
            var name = Cli.Flag(entry.Key);
            if (given.Contains(name)) continue;
            if (entry.IsBoolean) { if (entry.Values.Count > 0) fromFile.Add(name); continue; }
            foreach (var v in entry.Values) { fromFile.Add(name); fromFile.Add(v); }
        }
        // COMMAND [MODEL] ...: the file's model unless the command line names one
        bool modelGiven = rest.Count > 1 && !rest[1].StartsWith("--");
        var head = rest.Take(1).Concat(modelGiven || request.Model is null ? [] : [request.Model]);
        return [.. head, .. rest.Skip(1), .. fromFile];
    }
}
