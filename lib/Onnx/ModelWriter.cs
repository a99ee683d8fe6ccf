namespace OnnxUnlearn.Onnx;

/// <summary>
/// Where a new model goes. <see cref="Measure"/> says what writing would change without writing (so a run can decide
/// whether an update is effective, and whether to write at all); <see cref="Write"/> writes it, or returns null for a
/// writer that only measures.
/// </summary>
public interface IModelWriter
{
    PatchSummary Measure(IReadOnlyDictionary<string, TensorPatch> patches);
    PatchSummary? Write(IReadOnlyDictionary<string, TensorPatch> patches);
}

/// <summary>The model file on disk patched into an output file (null: measure only, write nothing); its external
/// data read under an <see cref="ExternalDataPolicy"/>. The output is checked when the writer is made (<see cref="WeightPatch.CheckOutput"/>),
/// so a job that could not write its result fails before it starts.</summary>
public sealed class FileModelWriter : IModelWriter
{
    readonly string input;
    readonly string? output;
    readonly ExternalDataPolicy? policy;

    public FileModelWriter(string input, string? output, ExternalDataPolicy? policy = null)
    {
        (this.input, this.output, this.policy) = (input, output, policy);
        if (output is not null) WeightPatch.CheckOutput(input, output, policy: policy);
    }

    public PatchSummary Measure(IReadOnlyDictionary<string, TensorPatch> patches) => WeightPatch.Measure(input, patches, policy);

    public PatchSummary? Write(IReadOnlyDictionary<string, TensorPatch> patches) =>
        output is null ? null : WeightPatch.Write(input, output, patches, policy: policy);
}

/// <summary>A model held in memory: <see cref="Result"/> holds the new model's bytes once written.</summary>
public sealed class MemoryModelWriter(byte[] model, string name) : IModelWriter
{
    public byte[]? Result { get; private set; }

    public PatchSummary Measure(IReadOnlyDictionary<string, TensorPatch> patches) => WeightPatch.Apply(model, patches, name).Summary;

    public PatchSummary? Write(IReadOnlyDictionary<string, TensorPatch> patches)
    {
        var (bytes, summary) = WeightPatch.Apply(model, patches, name);
        Result = bytes;
        return summary;
    }
}
