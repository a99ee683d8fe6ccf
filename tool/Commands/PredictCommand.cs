using System.CommandLine;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;

namespace OnnxUnlearn.Cli.Commands;

/// <summary>Plain inference: the argmax over the last axis of an output, per sample (and optionally the raw output).</summary>
public static class PredictCommand
{
    public static Command Create()
    {
        var model = Cli.ModelArgument();
        var data = new Option<string>("--data") { Description = ".npz of samples keyed by the model's input names ('label', if present, is only used for the accuracy)", Required = true };
        var output = new Option<string>("--out") { Description = ".npz with 'pred' (int64 argmax over the last axis of the output) and, with --logits, 'logits'", Required = true };
        var name = Cli.Output();
        var logits = new Option<bool>("--logits") { Description = "also store the raw output (float32)" };
        var batchSize = Cli.BatchSize();
        var threads = Cli.Threads();
        var json = Cli.JsonFlag();
        var allowLinks = Cli.AllowLinks();
        var c = new Command("predict", "Run the model on a data file and write its predicted classes (argmax of the output).");
        c.Arguments.Add(model);
        foreach (Option o in new Option[] { data, output, name, logits, batchSize, threads, json, allowLinks }) c.Options.Add(o);
        c.SetAction(r => Cli.Guard(() =>
        {
            var (preds, raw, shape) = Run(r.GetValue(model)!, r.GetValue(data)!, r.GetValue(name), r.GetValue(batchSize), r.GetValue(threads), Cli.Policy(r, allowLinks));
            var arrays = new Dictionary<string, NdArray> { ["pred"] = NdArray.FromInt64(preds, shape[..^1]) };
            if (r.GetValue(logits)) arrays["logits"] = NdArray.FromFloat(raw, shape);
            using (var d = Dataset.Load(r.GetValue(data)!, ModelFile.Load(r.GetValue(model)!, Cli.Policy(r, allowLinks), verify: false)))
            {
                double? accuracy = d.Has("label") && d.Arrays["label"].Length == preds.Length
                    ? preds.Zip(d.Arrays["label"].ToInt64()).Count(p => p.First == p.Second) / (double)Math.Max(1, preds.Length) : null;
                Npz.Write(r.GetValue(output)!, arrays);
                if (r.GetValue(json)) Cli.WriteJson(new { model = r.GetValue(model), data = r.GetValue(data), output = r.GetValue(output), count = preds.Length, accuracy });
                else Console.WriteLine($"{preds.Length} predictions written to {r.GetValue(output)}" + (accuracy is { } a ? $", accuracy {a:P2}" : ""));
            }
            return Cli.Ok;
        }));
        return c;
    }

    /// <summary>Argmax over the last axis of <paramref name="outputName"/> (default: the first output), batched; also the raw output and its shape.</summary>
    public static (long[] Preds, float[] Raw, long[] Shape) Run(string modelPath, string dataPath, string? outputName, int batchSize, int threads, ExternalDataPolicy? policy = null)
    {
        var file = ModelFile.Load(modelPath, policy);
        var m = file.Model.Clone();
        foreach (var t in m.Graph.Initializer) t.Inline(file);
        string output = outputName ?? m.Graph.Output.FirstOrDefault()?.Name ?? throw new UserError($"model '{modelPath}' has no outputs");
        if (m.Graph.Output.All(o => o.Name != output))
            throw new UserError($"model '{modelPath}' has no output '{output}'; it has {string.Join(", ", m.Graph.Output.Select(o => o.Name))}");
        var inputs = Evaluator.DataInputs(m.Graph);
        using var d = Dataset.Load(dataPath, file);
        d.Require(inputs, $"inputs of '{modelPath}'");
        d.CheckShapes(m.Graph.Input.Where(i => inputs.Contains(i.Name)), modelPath);
        var types = m.Graph.Input.Where(i => inputs.Contains(i.Name)).ToDictionary(i => i.Name, i => (TensorElementType)i.Type.TensorType.ElemType);
        bool one = m.Graph.Input.Where(i => inputs.Contains(i.Name) && d.Axes.Of(i.Name) == 0).Any(i => i.Type?.TensorType?.Shape?.Dim is { Count: > 0 } dims
            && dims[0].ValueCase == global::Onnx.TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue && dims[0].DimValue == 1);
        long size = one ? 1 : Math.Max(1, batchSize);
        using var options = OrtSessions.Options(threads);
        using var session = OrtSessions.Create(m.ToByteArray(), options, $"model '{modelPath}'");
        var raw = new List<float>();
        long[]? rest = null;
        for (long s = 0; s < d.Rows; s += size)
        {
            var feed = d.Batch(s, Math.Min(size, d.Rows - s), types);
            using var results = OrtSessions.Run(session, feed.Keys.ToArray(), feed.Values.ToArray(), [output], $"model '{modelPath}'");
            var info = results[0].GetTensorTypeAndShape();
            var dims = info.Shape;
            if (dims.Length < 2) throw new UserError($"output '{output}' of '{modelPath}' has shape [{string.Join(", ", dims)}]; predict needs samples on axis 0 and classes on the last axis");
            rest ??= dims[1..];
            raw.AddRange(info.ElementDataType switch
            {
                TensorElementType.Float => results[0].GetTensorDataAsSpan<float>().ToArray(),
                TensorElementType.Double => results[0].GetTensorDataAsSpan<double>().ToArray().Select(v => (float)v),
                TensorElementType.Float16 => results[0].GetTensorDataAsSpan<Float16>().ToArray().Select(v => (float)v),
                TensorElementType.BFloat16 => results[0].GetTensorDataAsSpan<BFloat16>().ToArray().Select(v => (float)v),
                var t => throw new UserError($"output '{output}' of '{modelPath}' is {t}; predict needs a float output"),
            });
        }
        var shape = new[] { d.Rows }.Concat(rest ?? []).ToArray();
        int classes = (int)shape[^1];
        var values = raw.ToArray();
        var preds = new long[values.Length / Math.Max(1, classes)];
        for (int i = 0; i < preds.Length; i++)
        {
            var row = values.AsSpan(i * classes, classes);
            int best = 0;
            for (int j = 1; j < classes; j++) if (row[j] > row[best]) best = j;
            preds[i] = best;
        }
        return (preds, values, shape);
    }
}
