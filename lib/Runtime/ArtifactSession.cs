using System.Numerics.Tensors;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxUnlearn.Autodiff;

namespace OnnxUnlearn.Runtime;

/// <summary>
/// One training artifact in one ONNX Runtime session. Every run takes θ (and, for an artifact with frozen decisions, the
/// reference θ) as an argument: the parameter inputs are OrtValues over the caller's <see cref="ParameterVector"/>, so
/// the session holds no parameter state. With recurrent ops unrolled, a batch of another sequence length switches to an
/// artifact built for it (by <c>rebuild</c>, on first sight of that length).
/// </summary>
public sealed class ArtifactSession : IDisposable
{
    public TrainingArtifact Artifact { get; private set; }
    public IReadOnlyDictionary<string, TensorElementType> FeedTypes { get; }
    /// <summary>Batches run with a gradient so far (each one forward and backward pass).</summary>
    public long GradientEvaluations { get; private set; }

    readonly string what;
    readonly int threads;
    readonly Func<Dataset, TrainingArtifact>? rebuild;
    readonly SampleAxes axes;
    InferenceSession session;
    string[] outputNames;
    /// <summary>Artifacts with unrolled recurrent ops, by the data input shapes they were built for.</summary>
    readonly Dictionary<string, (InferenceSession Session, TrainingArtifact Artifact, string[] Outputs)> bySequence = [];

    /// <param name="what">What the session runs, for messages (e.g. "gradient graph of 'model.onnx'").</param>
    /// <param name="rebuild">Builds the artifact again from a probe of other inputs: with unrolled recurrent ops, called
    /// for each new sequence length; without it such a batch is refused.</param>
    /// <param name="axes">Where the data inputs carry their samples (by default axis 0).</param>
    public ArtifactSession(TrainingArtifact artifact, string what, int threads = 1, Func<Dataset, TrainingArtifact>? rebuild = null, SampleAxes? axes = null)
    {
        Artifact = artifact; this.what = what; this.threads = threads; this.rebuild = rebuild; this.axes = axes ?? SampleAxes.Rows;
        session = CreateSession(artifact);
        outputNames = session.OutputNames.ToArray();
        FeedTypes = artifact.Model.Graph.Input.Where(i => artifact.DataInputs.Contains(i.Name) || i.Name == LossHead.LabelInput)
            .ToDictionary(i => i.Name, i => (TensorElementType)i.Type.TensorType.ElemType);
        if (artifact.Unrolled.Count > 0) bySequence[ShapeKey(artifact.BuiltFor.ToDictionary(kv => kv.Key, kv => kv.Value))] = (session, artifact, outputNames);
    }

    InferenceSession CreateSession(TrainingArtifact artifact)
    {
        using var options = OrtSessions.Options(threads);
        return OrtSessions.Create(artifact.Model.ToByteArray(), options, what);
    }

    /// <summary>
    /// Mean loss over all samples of <paramref name="data"/> at <paramref name="theta"/> and, when <paramref name="grad"/>
    /// is given, its gradient (written there).
    /// </summary>
    public LossResult Run(Dataset data, ParameterVector theta, Span<float> grad, ParameterVector? reference = null, int batchSize = 256, int fixedBatch = 0)
    {
        data.Require(FeedTypes.Keys, "inputs and targets of the training artifact");
        // Targets shaped [N] for an output [N, 1] (scikit-learn's y for a LinearRegressor's `variable`) are refused here
        // with both shapes named, rather than by ONNX Runtime with a bare rank mismatch. (Only the rank: an artifact with
        // unrolled recurrent ops is rebuilt for other sequence lengths.)
        if (Artifact.Model.Graph.Input.FirstOrDefault(i => i.Name == LossHead.LabelInput)?.Type?.TensorType?.Shape is { } want
            && data.Arrays.TryGetValue(LossHead.LabelInput, out var label) && label.Shape.Length != want.Dim.Count)
            throw new UserError($"'{data.Source}': array '{LossHead.LabelInput}' has shape {Data.NdArray.FormatShape(label.Shape)}, but the loss " +
                $"{Artifact.Loss} of output '{Artifact.ModelOutput}' needs {want.Dim.Count} axes (axis 0 = samples){(want.Dim.Count == label.Shape.Length + 1 ? "; add the last axis, e.g. y.reshape(-1, 1)" : "")}");
        if (grad.Length > 0) { if (grad.Length != theta.Length) throw new ArgumentException("gradient buffer size"); grad.Clear(); }
        using var parameters = new Bound(theta, reference);
        double lossSum = 0, correct = 0; long count = 0;
        long size = fixedBatch == 1 ? 1 : Math.Max(1, batchSize);
        for (long start = 0; start < data.Rows; start += size)
        {
            var (loss, batchCount, hits) = RunBatch(data.Batch(start, Math.Min(size, data.Rows - start), FeedTypes), parameters, grad, accumulate: true);
            lossSum += loss * batchCount;
            count += batchCount;
            correct += hits;
        }
        if (count == 0) throw new UserError($"'{data.Source}' has no labelled samples");
        if (grad.Length > 0) TensorPrimitives.Multiply(grad, (float)(1.0 / count), grad);
        return new LossResult(lossSum / count, count, Artifact.HasCorrect ? correct / count : null);
    }

    /// <summary>
    /// One run on a ready feed (data inputs and label). With a gradient buffer, the batch's mean-loss gradient is written
    /// to it, or, with <paramref name="accumulate"/>, added to it weighted by the batch's count.
    /// </summary>
    public (double Loss, long Count, double Correct) RunBatch(IReadOnlyDictionary<string, OrtValue> feed, ParameterVector theta, Span<float> grad,
        ParameterVector? reference = null, bool accumulate = false)
    {
        using var parameters = new Bound(theta, reference);
        return RunBatch(feed, parameters, grad, accumulate);
    }

    (double Loss, long Count, double Correct) RunBatch(IReadOnlyDictionary<string, OrtValue> feed, Bound parameters, Span<float> grad, bool accumulate)
    {
        if (Artifact.Unrolled.Count > 0) UseArtifactFor(feed);
        var layout = parameters.Theta.Layout;
        bool wantGrad = grad.Length > 0;
        var names = wantGrad ? outputNames : outputNames.Where(n => !n.StartsWith(TrainingArtifact.GradPrefix)).ToArray();
        var references = Enumerable.Range(0, layout.Count).Where(i => Artifact.ReferenceInputs.Contains(layout.Parameters[i].Name)).ToList();
        if (references.Count > 0 && parameters.Reference is null)
            throw new InvalidOperationException("an artifact with frozen decisions needs the reference parameters");
        var inputNames = FeedTypes.Keys.Concat(layout.Parameters.Select(p => p.Name))
            .Concat(references.Select(i => FrozenDecisions.RefInput(layout.Parameters[i].Name))).ToArray();
        var inputs = FeedTypes.Keys.Select(k => feed[k]).Concat(parameters.Values).Concat(references.Select(i => parameters.References![i])).ToArray();
        using var results = OrtSessions.Run(session, inputNames, inputs, names, what);
        double count = Scalar(results[Array.IndexOf(names, TrainingArtifact.CountOutput)]);
        double loss = Scalar(results[Array.IndexOf(names, TrainingArtifact.LossOutput)]);
        double correct = Artifact.HasCorrect ? Scalar(results[Array.IndexOf(names, TrainingArtifact.CorrectOutput)]) : 0;
        if (wantGrad)
        {
            GradientEvaluations++;
            for (int i = 0; i < layout.Count; i++)
            {
                var g = results[Array.IndexOf(names, TrainingArtifact.GradName(layout.Parameters[i].Name))].GetTensorDataAsSpan<float>();
                var dst = layout.Of(grad, i);
                if (accumulate) TensorPrimitives.MultiplyAdd(g, (float)count, dst, dst);
                else g.CopyTo(dst);
            }
        }
        return (loss, (long)count, correct);
    }

    /// <summary>OrtValues over the caller's θ (and reference θ), one per tensor, for the runs of one call.</summary>
    sealed class Bound : IDisposable
    {
        public ParameterVector Theta { get; }
        public ParameterVector? Reference { get; }
        public OrtValue[] Values { get; }
        public OrtValue[]? References { get; }

        public Bound(ParameterVector theta, ParameterVector? reference)
        {
            Theta = theta; Reference = reference;
            Values = Over(theta);
            References = reference is null ? null : Over(reference);
        }

        static OrtValue[] Over(ParameterVector v) => Enumerable.Range(0, v.Layout.Count)
            .Select(i => OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, v.Tensor(i), v.Layout.Parameters[i].Shape))
            .ToArray();

        public void Dispose()
        {
            foreach (var v in Values) v.Dispose();
            if (References is { } r) foreach (var v in r) v.Dispose();
        }
    }

    /// <summary>
    /// With recurrent ops unrolled over a fixed number of steps, switches to the artifact built for the feed's data
    /// input shapes, building it on first sight of them (probing with the feed's samples).
    /// </summary>
    void UseArtifactFor(IReadOnlyDictionary<string, OrtValue> feed)
    {
        var shapes = Artifact.DataInputs.ToDictionary(n => n, n => feed[n].GetTensorTypeAndShape().Shape);
        bool fits = shapes.All(kv => Artifact.BuiltFor.TryGetValue(kv.Key, out var built) && built.Length == kv.Value.Length
            && built.Select((d, a) => a == axes.Of(kv.Key) || d < 0 || d == kv.Value[a]).All(x => x));
        if (fits) return;
        var key = ShapeKey(shapes);
        if (!bySequence.TryGetValue(key, out var built))
        {
            var steps = string.Join(", ", Artifact.Unrolled.Select(u => $"{u.Op} '{u.Node}' over {u.SequenceLength} steps"));
            var had = string.Join(", ", Artifact.BuiltFor.Select(kv => $"'{kv.Key}' {Data.NdArray.FormatShape(kv.Value)}"));
            var got = string.Join(", ", shapes.Select(kv => $"'{kv.Key}' {Data.NdArray.FormatShape(kv.Value)}"));
            if (rebuild is null)
                throw new UserError($"the {what} unrolls {steps}, built for inputs {had}; this batch has {got}. Build the artifact for this sequence length.");
            using var probe = new Dataset(shapes.Keys.ToDictionary(n => n, n => ProbeRows(feed[n], axes.Of(n))), $"a batch of shape {got}", axes);
            var artifact = rebuild(probe);
            var s = CreateSession(artifact);
            built = bySequence[key] = (s, artifact, s.OutputNames.ToArray());
        }
        (session, Artifact, outputNames) = built;
    }

    string ShapeKey(Dictionary<string, long[]> shapes) =>
        string.Join(";", shapes.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Key + ":" + string.Join(",", kv.Value.Where((_, a) => a != axes.Of(kv.Key)))));

    /// <summary>A batch's values as an array of at least three rows along <paramref name="axis"/> (repeated as needed), so that the
    /// probe sees two batch sizes; an input given once as it is.</summary>
    static Data.NdArray ProbeRows(OrtValue v, int axis)
    {
        var info = v.GetTensorTypeAndShape();
        var shape = info.Shape;
        Data.NdArray a = info.ElementDataType switch
        {
            TensorElementType.Float => Data.NdArray.FromFloat(v.GetTensorDataAsSpan<float>().ToArray(), shape),
            TensorElementType.Double => Data.NdArray.FromDouble(v.GetTensorDataAsSpan<double>().ToArray(), shape),
            TensorElementType.Int64 => Data.NdArray.FromInt64(v.GetTensorDataAsSpan<long>().ToArray(), shape),
            TensorElementType.Int32 => Data.NdArray.FromInt32(v.GetTensorDataAsSpan<int>().ToArray(), shape),
            TensorElementType.UInt8 => Data.NdArray.FromUInt8(v.GetTensorDataAsSpan<byte>().ToArray(), shape),
            TensorElementType.Bool => Data.NdArray.FromBool(v.GetTensorDataAsSpan<bool>().ToArray(), shape),
            TensorElementType.Float16 => Data.NdArray.FromFloat(v.GetTensorDataAsSpan<Float16>().ToArray().Select(h => (float)h).ToArray(), shape),
            TensorElementType.BFloat16 => Data.NdArray.FromFloat(v.GetTensorDataAsSpan<BFloat16>().ToArray().Select(h => (float)h).ToArray(), shape),
            var t => throw new UserError($"cannot rebuild the gradient graph for inputs of element type {t}"),
        };
        if (axis == SampleAxes.Once) return a;
        long rows = a.Shape[axis];
        return a.TakeAlong(axis, Enumerable.Range(0, (int)Math.Max(3, rows)).Select(i => i % rows).ToArray());
    }

    static double Scalar(OrtValue v) => v.GetTensorTypeAndShape().ElementDataType switch
    {
        TensorElementType.Float => v.GetTensorDataAsSpan<float>()[0],
        TensorElementType.Double => v.GetTensorDataAsSpan<double>()[0],
        TensorElementType.Int64 => v.GetTensorDataAsSpan<long>()[0],
        var t => throw new InvalidOperationException($"unexpected scalar type {t}"),
    };

    public void Dispose()
    {
        session.Dispose();
        foreach (var (s, _, _) in bySequence.Values) if (!ReferenceEquals(s, session)) s.Dispose();
    }
}
