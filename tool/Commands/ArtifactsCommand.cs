using System.CommandLine;
using Google.Protobuf;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;

namespace OnnxUnlearn.Cli.Commands;

public static class ArtifactsCommand
{
    public static Command Create()
    {
        var model = Cli.ModelArgument();
        var output = new Option<string>("--out") { Description = "folder to write gradient.onnx and manifest.json into", Required = true };
        var data = new Option<string?>("--data") { Description = ".npz whose samples are used to probe shapes (default: synthetic inputs)" };
        var json = Cli.JsonFlag();
        var loss = new LossOptions();
        var c = new Command("artifacts", "Write the training artifact: the forward model with loss head and gradient graph in standard ONNX ops, plus a JSON manifest.");
        c.Arguments.Add(model); c.Options.Add(output); c.Options.Add(data); c.Options.Add(json); loss.AddTo(c);
        c.SetAction(r => Cli.Guard(() =>
        {
            var settings = loss.Read(r);
            var file = ModelFile.Load(r.GetValue(model)!, settings.ExternalData);
            Evaluator.Preflight(file, settings);
            using var probe = r.GetValue(data) is { } path ? Dataset.Load(path, file) : Evaluator.SyntheticInputs(file.Graph);
            using var compiled = Evaluator.Open(file, settings, probe);
            var artifact = compiled.Build(ArtifactKind.Gradient, embedDefaults: true);
            var dir = r.GetValue(output)!;
            string gradient = Path.Combine(dir, "gradient.onnx"), manifestPath = Path.Combine(dir, "manifest.json");
            Directory.CreateDirectory(dir);
            AtomicFile.Write(gradient, s => artifact.Model.WriteTo(s));
            var manifest = ArtifactManifest.Of(file, artifact, compiled.FixedBatch);
            AtomicFile.Write(manifestPath, s => System.Text.Json.JsonSerializer.Serialize(s, manifest, Cli.Json));
            if (r.GetValue(json))
            {
                Cli.WriteJson(new
                {
                    model = r.GetValue(model), @out = dir, gradient, manifest = manifestPath, loss = artifact.Loss, output = artifact.Output,
                    trainableTensors = artifact.Parameters.Count, trainableElements = artifact.Parameters.Sum(p => p.Elements), nodes = artifact.Model.Graph.Node.Count,
                    unrolled = artifact.Unrolled.Select(u => new { node = u.Node, op = u.Op, sequenceLength = u.SequenceLength }).ToList(),
                });
                return Cli.Ok;
            }
            Console.WriteLine($"wrote {gradient} ({artifact.Parameters.Count} trainable tensors, {artifact.Model.Graph.Node.Count} nodes) and manifest.json");
            foreach (var u in artifact.Unrolled)
                Console.WriteLine($"  {u.Op} '{u.Node}' unrolled over {u.SequenceLength} time steps: the artifact takes sequences of that length only");
            return Cli.Ok;
        }));
        return c;
    }
}
