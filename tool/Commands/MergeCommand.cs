using System.CommandLine;
using System.Globalization;
using OnnxUnlearn.Curvature;
using OnnxUnlearn.Data;

namespace OnnxUnlearn.Cli.Commands;

/// <summary>merge: the part files of sharpness or grad --shard K/M into the file one process writes (docs/method.md#shards).</summary>
public static class MergeCommand
{
    public static Command Create()
    {
        var parts = new Argument<string[]>("PART") { Description = "part files written with --shard K/M, one per shard (any order)", Arity = ArgumentArity.OneOrMore };
        var output = new Option<string>("--out") { Description = ".npz to write: the file the command without --shard writes, byte for byte", Required = true };
        var json = Cli.JsonFlag();
        var c = new Command("merge", "Combine the parts of a sharded sharpness (--estimator hutchinson) or grad run into the file one process writes; refuses parts of different runs and names missing or duplicate chunks.");
        c.Arguments.Add(parts); c.Options.Add(output); c.Options.Add(json);
        c.SetAction(r => Cli.Guard(() =>
        {
            var paths = r.GetValue(parts)!;
            var (info, arrays) = PartFile.Merge(paths);
            var written = new Dictionary<string, NdArray>();
            double? overlap = null, loss = null, norm = null; long? count = null;
            if (info.Command == "sharpness")
            {
                double top = double.Parse(info.Settings["--top"], CultureInfo.InvariantCulture);
                var est = Chunked.Combine(PartFile.ProbeChunks(info, arrays), (int)info.Items, top);
                PartFile.Split(info.Parameters, est.Values, written);
                if (est.StandardError is { } se) PartFile.Split(info.Parameters, se, written, "stderr/");
                overlap = est.TopKOverlap;
            }
            else if (info.Command == "grad")
            {
                var (grad, result) = Chunked.Combine(PartFile.RowChunks(info, arrays), info.HasAccuracy);
                PartFile.Split(info.Parameters, grad, written);
                (loss, count, norm) = (result.Loss, result.Count, GradCommand.Norm(grad));
            }
            else throw new UserError($"'{paths[0]}' is a part of command '{info.Command}', which merge does not know; merge parts of sharpness or grad");
            Npz.Write(r.GetValue(output)!, written);
            if (r.GetValue(json))
                Cli.WriteJson(new { @out = r.GetValue(output), command = info.Command, parts = paths, shards = info.Shards, chunks = info.Chunks, items = info.Items, model = info.Model, modelSha256 = info.ModelSha256, loss, count, norm, topKOverlap = overlap });
            else
                Console.WriteLine($"{info.Command}: {paths.Length} part{(paths.Length == 1 ? "" : "s")} of {info.Shards} shard{(info.Shards == 1 ? "" : "s")}, {info.Chunks} chunks of {info.Items} {(info.Command == "grad" ? "rows" : "probes")}, merged into {r.GetValue(output)}"
                    + (loss is { } l ? $"; loss {l:G6} over {count} labelled elements" : "") + (overlap is { } o ? $"; top-k overlap between probe halves (Jaccard) {o:F3}" : ""));
            return Cli.Ok;
        }));
        return c;
    }
}
