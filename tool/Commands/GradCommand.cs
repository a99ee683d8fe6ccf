using OnnxUnlearn.Onnx;
using System.CommandLine;
using OnnxUnlearn.Curvature;
using OnnxUnlearn.Data;
using OnnxUnlearn.Runtime;
using Spectre.Console;

namespace OnnxUnlearn.Cli.Commands;

public static class GradCommand
{
    public static Command Create()
    {
        var model = Cli.ModelArgument();
        var data = new Option<string>("--data") { Description = ".npz of samples: the model's input names plus 'label'", Required = true };
        var output = new Option<string>("--out") { Description = ".npz to write, keyed by parameter name", Required = true };
        var json = Cli.JsonFlag();
        var loss = new LossOptions();
        var sharding = new Sharding("data rows", Chunked.RowChunk);
        var c = new Command("grad", "Gradient of the mean loss over all samples of a data file, keyed by parameter name.");
        c.Arguments.Add(model); c.Options.Add(data); c.Options.Add(output); c.Options.Add(json); loss.AddTo(c); sharding.AddTo(c);
        c.SetAction(r => Cli.Guard(() =>
        {
            var settings = loss.Read(r);
            var shard = sharding.Read(r);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var file = ModelFile.Load(r.GetValue(model)!, settings.ExternalData);
            Evaluator.Preflight(file, settings);
            using var d = Dataset.Load(r.GetValue(data)!, file);
            using var s = Evaluator.Open(file, settings, d);
            // Row chunks summed in chunk order, sharded or not, so that merged parts equal this file (docs/method.md#shards).
            var chunks = Chunked.Gradient(s, s.ReadParameters(), d, r.GetValue(sharding.Chunk), shard ?? Shard.Whole);
            if (shard is { } part)
            {
                var info = Sharding.Info("grad", r.GetValue(model)!, r.GetValue(data)!, s, Sharding.Settings(s), r.GetValue(sharding.Chunk), d.Rows, part, s.Artifact().HasCorrect);
                PartFile.Write(r.GetValue(output)!, info, chunks);
                Sharding.Done(r.GetValue(json), info, r.GetValue(output)!, clock.Elapsed.TotalSeconds);
                return Cli.Ok;
            }
            var (grad, result) = Chunked.Combine(chunks, s.Artifact().HasCorrect);
            Npz.Write(r.GetValue(output)!, s.Layout.Split(grad));
            if (r.GetValue(json))
            {
                var tensors = s.Layout.Parameters.Select((p, i) => new { name = p.Name, shape = p.Shape, elements = p.Elements, norm = Norm(s.Layout.Of(grad.AsSpan(), i)) }).ToList();
                Cli.WriteJson(new { model = r.GetValue(model), data = r.GetValue(data), @out = r.GetValue(output), loss = result.Loss, count = result.Count, elements = s.Layout.Size, norm = Norm(grad), tensors });
                return Cli.Ok;
            }
            Console.WriteLine($"loss {result.Loss:G6} over {result.Count} labelled elements; gradient of {s.Layout.Count} tensors ({s.Layout.Size:N0} elements) written to {r.GetValue(output)}");
            return Cli.Ok;
        }));
        return c;
    }

    /// <summary>Euclidean norm, summed in double.</summary>
    public static double Norm(ReadOnlySpan<float> v)
    {
        double sum = 0;
        foreach (var x in v) sum += (double)x * x;
        return Math.Sqrt(sum);
    }
}
