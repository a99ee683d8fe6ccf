using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Autodiff;

/// <summary>
/// What a saved training artifact (<c>gradient.onnx</c>) takes and returns, written next to it as <c>manifest.json</c>
/// so that another runtime can feed it without reading the graph.
/// </summary>
public sealed record ArtifactManifest(string Source, LossKind Loss, string Output, long Opset, string Batch, ArtifactManifest.UnrolledInfo? Unrolled,
    ArtifactManifest.InputInfo Inputs, ArtifactManifest.OutputInfo Outputs, string Note)
{
    /// <summary>Recurrent ops between the parameters and the loss, unrolled over the probe data's sequence length: the artifact
    /// then takes only inputs of those shapes (axis 0 aside); one artifact per sequence length.</summary>
    public sealed record UnrolledInfo(IReadOnlyList<UnrolledNodeInfo> Nodes, IReadOnlyDictionary<string, object[]> InputShapes, string Note);
    public sealed record UnrolledNodeInfo(string Node, string Op, long SequenceLength);
    public sealed record ParameterInfo(string Name, long[] Shape, string StoredAs, string FedAs, bool Optional);
    public sealed record InputInfo(IReadOnlyList<string> Data, string Label, IReadOnlyList<ParameterInfo> Parameters);
    public sealed record OutputInfo(string Loss, string Count, string? Correct, IReadOnlyDictionary<string, string> Gradients);

    /// <param name="fixedBatch">1 when the model's batch dimension is fixed to 1.</param>
    public static ArtifactManifest Of(ModelFile file, TrainingArtifact a, int fixedBatch) => new(
        file.Path, a.Loss, a.Output,
        a.Model.DefaultOpset(),
        fixedBatch == 1 ? "fixed at 1: feed samples one at a time" : "any",
        a.Unrolled.Count == 0 ? null : new UnrolledInfo(
            a.Unrolled.Select(u => new UnrolledNodeInfo(u.Node, u.Op, u.SequenceLength)).ToList(),
            a.BuiltFor.ToDictionary(kv => kv.Key, kv => kv.Value.Select((d, i) => i == 0 || d < 0 ? (object)"any" : d).ToArray()),
            "the recurrent ops are unrolled over a fixed number of time steps: feed inputs of exactly these shapes (axis 0, the batch, aside); build another artifact from data of another sequence length for other lengths"),
        new InputInfo(a.DataInputs, LossHead.LabelInput,
            a.Parameters.Select(p => new ParameterInfo(p.Name, p.Shape, DataTypes.Name(p.DataType), "float32", true)).ToList()),
        new OutputInfo(TrainingArtifact.LossOutput, TrainingArtifact.CountOutput, a.HasCorrect ? TrainingArtifact.CorrectOutput : null,
            a.Parameters.ToDictionary(p => p.Name, p => TrainingArtifact.GradName(p.Name))),
        "loss is the mean over the batch's labelled elements; gradients are of that mean; parameters default to the model's values");
}
