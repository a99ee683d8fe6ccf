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
        var loss = new LossOptions();
        var c = new Command("artifacts", "Write the training artifact: the forward model with loss head and gradient graph in standard ONNX ops, plus a JSON manifest.");
        c.Arguments.Add(model); c.Options.Add(output); c.Options.Add(data); loss.AddTo(c);
        c.SetAction(r => Cli.Guard(() =>
        {
            var file = ModelFile.Load(r.GetValue(model)!);
            var settings = loss.Read(r);
            using var probe = r.GetValue(data) is { } path ? Dataset.Load(path) : ModelSession.SyntheticInputs(file.Graph);
            var (artifact, _, fixedBatch) = ModelSession.Prepare(file, settings, probe, embedDefaults: true);
            var dir = r.GetValue(output)!;
            Directory.CreateDirectory(dir);
            AtomicFile.Write(Path.Combine(dir, "gradient.onnx"), s => artifact.Model.WriteTo(s));
            var manifest = Manifest(file, artifact, fixedBatch);
            AtomicFile.Write(Path.Combine(dir, "manifest.json"), s => System.Text.Json.JsonSerializer.Serialize(s, manifest, Cli.Json));
            Console.WriteLine($"wrote {Path.Combine(dir, "gradient.onnx")} ({artifact.Parameters.Count} trainable tensors, {artifact.Model.Graph.Node.Count} nodes) and manifest.json");
            foreach (var u in artifact.Unrolled)
                Console.WriteLine($"  {u.Op} '{u.Node}' unrolled over {u.SequenceLength} time steps: the artifact takes sequences of that length only");
            return Cli.Ok;
        }));
        return c;
    }

    static object Manifest(ModelFile file, TrainingArtifact a, int fixedBatch) => new
    {
        source = file.Path,
        loss = a.Loss,
        output = a.Output,
        opset = a.Model.DefaultOpset(),
        batch = fixedBatch == 1 ? "fixed at 1: feed samples one at a time" : "any",
        // Recurrent ops between the parameters and the loss are unrolled over the sequence length of the probe data:
        // the artifact then takes only inputs of those shapes (axis 0 aside); write one artifact per sequence length.
        unrolled = a.Unrolled.Count == 0 ? null : new
        {
            nodes = a.Unrolled.Select(u => new { node = u.Node, op = u.Op, sequenceLength = u.SequenceLength }),
            inputShapes = a.BuiltFor.ToDictionary(kv => kv.Key, kv => kv.Value.Select((d, i) => i == 0 || d < 0 ? (object)"any" : d)),
            note = "the recurrent ops are unrolled over a fixed number of time steps: feed inputs of exactly these shapes (axis 0, the batch, aside); rerun 'artifacts' with --data of another sequence length for another artifact",
        },
        inputs = new
        {
            data = a.DataInputs,
            label = LossHead.LabelInput,
            parameters = a.Parameters.Select(p => new { name = p.Name, shape = p.Shape, storedAs = DataTypes.Name(p.DataType), fedAs = "float32", optional = true }),
        },
        outputs = new
        {
            loss = TrainingArtifact.LossOutput,
            count = TrainingArtifact.CountOutput,
            correct = a.HasCorrect ? TrainingArtifact.CorrectOutput : null,
            gradients = a.Parameters.ToDictionary(p => p.Name, p => TrainingArtifact.GradName(p.Name)),
        },
        note = "loss is the mean over the batch's labelled elements; gradients are of that mean; parameters default to the model's values",
    };
}
