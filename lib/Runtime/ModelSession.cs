using OnnxUnlearn.Autodiff;
using Microsoft.ML.OnnxRuntime.Tensors;
using System.Numerics.Tensors;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Runtime;

/// <summary>How to turn a model into a loss: which output, which loss, which parameters, how to batch.</summary>
public sealed record LossSettings
{
    public LossKind Loss { get; init; } = LossKind.CrossEntropy;
    public string? Output { get; init; }
    public IReadOnlyList<string>? Params { get; init; }
    public IReadOnlyList<string>? Frozen { get; init; }
    public long? IgnoreIndex { get; init; }
    public int BatchSize { get; init; } = 256;
    /// <summary>ONNX Runtime intra-op threads; 1 (default) is bit-reproducible, 0 = all cores (multi-threaded kernels do not
    /// add in a fixed order, and iterative unlearning amplifies last-bit differences into different step choices).</summary>
    public int Threads { get; init; } = 1;
    /// <summary>
    /// Build the artifact with frozen decisions (<see cref="FrozenDecisions"/>) at the session's reference parameters
    /// (<see cref="ModelSession.FreezeDecisions"/>): for curvature of piecewise-linear networks.
    /// </summary>
    public bool FreezeDecisions { get; init; }
}

/// <summary>Mean loss over a dataset, with the number of labelled elements and (class losses) the accuracy.</summary>
public sealed record LossResult(double Loss, long Count, double? Accuracy);

/// <summary>
/// A model ready to differentiate: the gradient artifact in one ONNX Runtime session whose parameter inputs are OrtValues
/// over <see cref="Theta"/>. Shifting <see cref="Theta"/> in place (θ ± εv) changes what the next run sees, with no
/// session rebuild and no copy of the model.
/// </summary>
public sealed class ModelSession : IDisposable
{
    public ModelFile File { get; }
    public LossSettings Settings { get; }
    public ParameterLayout Layout { get; }
    public IReadOnlyList<Parameter> AllParameters { get; }
    /// <summary>The artifact in use (with recurrent ops unrolled, the one built for the last batch's sequence length).</summary>
    public TrainingArtifact Artifact { get; private set; }
    /// <summary>Live parameter values (float32, flat, by <see cref="Layout"/>).</summary>
    public float[] Theta { get; }
    /// <summary>θ_ref, fed to the inputs NAME__ref of an artifact with frozen decisions (a copy of θ at creation).</summary>
    readonly float[] reference;

    /// <summary>Batches run through the gradient graph so far (each one forward and backward pass), its frozen twin's included.</summary>
    public long GradientEvaluations => evaluations + (frozen?.GradientEvaluations ?? 0);
    long evaluations;
    ModelSession? frozen;

    InferenceSession session;
    string[] outputNames;
    readonly OrtValue[] paramValues, referenceValues;
    readonly Dictionary<string, TensorElementType> feedTypes;
    readonly int fixedBatch;
    readonly Func<Dataset, TrainingArtifact>? rebuild;
    /// <summary>Artifacts with unrolled recurrent ops, by the data input shapes they were built for.</summary>
    readonly Dictionary<string, (InferenceSession Session, TrainingArtifact Artifact, string[] Outputs)> bySequence = [];

    /// <summary>A session over an artifact built elsewhere (gradient checks build their own).</summary>
    /// <param name="rebuild">Builds the artifact again from a probe of other inputs: with unrolled recurrent ops, called
    /// for each new sequence length; without it such a batch is refused.</param>
    /// <param name="theta">A parameter buffer to share (default: a new one holding the file's values).</param>
    public ModelSession(ModelFile file, LossSettings settings, IReadOnlyList<Parameter> all, TrainingArtifact artifact, int fixedBatch = 0,
        Func<Dataset, TrainingArtifact>? rebuild = null, float[]? theta = null)
    {
        File = file; Settings = settings; AllParameters = all; Artifact = artifact; this.fixedBatch = fixedBatch; this.rebuild = rebuild;
        Layout = new ParameterLayout(artifact.Parameters);
        Theta = theta ?? Layout.ReadValues(file);
        reference = (float[])Theta.Clone();
        session = CreateSession(artifact);
        OrtValue[] Over(float[] values) => Enumerable.Range(0, Layout.Count)
            .Select(i => OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, Layout.Of(values, i), Layout.Parameters[i].Shape))
            .ToArray();
        paramValues = Over(Theta);
        referenceValues = Over(reference);
        feedTypes = artifact.Model.Graph.Input.Where(i => artifact.DataInputs.Contains(i.Name) || i.Name == LossHead.LabelInput)
            .ToDictionary(i => i.Name, i => (TensorElementType)i.Type.TensorType.ElemType);
        outputNames = session.OutputNames.ToArray();
        if (artifact.Unrolled.Count > 0) bySequence[ShapeKey(artifact.BuiltFor.ToDictionary(kv => kv.Key, kv => kv.Value))] = (session, artifact, outputNames);
    }

    InferenceSession CreateSession(TrainingArtifact artifact)
    {
        using var options = OrtSessions.Options(Settings.Threads);
        return OrtSessions.Create(artifact.Model.ToByteArray(), options, $"gradient graph of '{File.Path}'");
    }

    public IReadOnlyDictionary<string, TensorElementType> FeedTypes => feedTypes;

    /// <summary>Loads the model, probes its shapes on <paramref name="data"/>, builds the gradient artifact and opens a session.</summary>
    public static ModelSession Open(string modelPath, LossSettings settings, Dataset data, bool withGradients = true)
    {
        var file = ModelFile.Load(modelPath);
        var (artifact, all, fixedBatch) = Prepare(file, settings, data, withGradients);
        return new ModelSession(file, settings, all, artifact, fixedBatch, d => Prepare(file, settings, d, withGradients).Artifact);
    }

    /// <summary>
    /// For curvature: this model with its decisions frozen at the current θ (<see cref="LossSettings.FreezeDecisions"/>),
    /// over this session's <see cref="Theta"/> buffer, so that shifting θ here moves it too. Built on first call (probing
    /// shapes on <paramref name="probe"/>); every call resets its θ_ref to the current θ. This session itself when no
    /// decision depends on the parameters, or when it is frozen itself.
    /// </summary>
    public ModelSession FreezeDecisions(Dataset probe)
    {
        if (Settings.FreezeDecisions) { Theta.CopyTo(reference, 0); return this; }
        if (!Artifact.HasDecisions) return this;
        if (frozen is null)
        {
            var settings = Settings with { FreezeDecisions = true };
            var (artifact, _, _) = Prepare(File, settings, probe);
            if (artifact.Parameters.Count != Layout.Count || artifact.Parameters.Zip(Layout.Parameters).Any(p => p.First.Name != p.Second.Name))
                throw new InvalidOperationException("the artifact with frozen decisions has other parameters than the session's");
            frozen = new ModelSession(File, settings, AllParameters, artifact, fixedBatch, d => Prepare(File, settings, d).Artifact, Theta);
        }
        Theta.CopyTo(frozen.reference, 0);
        return frozen;
    }

    /// <summary>
    /// Mean loss and accuracy at the current θ without a gradient, from a forward-only twin over this session's
    /// <see cref="Theta"/> (built on first call; recurrent ops stay whole). Running the gradient graph for its loss outputs
    /// alone costs 2–3× more: ONNX Runtime still runs much of the backward pass.
    /// </summary>
    public LossResult Loss(Dataset data)
    {
        if (lossOnly is null)
        {
            if (Layout.Count == 0) return Run(data, []);
            var (artifact, _, _) = Prepare(File, Settings with { FreezeDecisions = false }, data, withGradients: false, parameterInputs: true);
            if (artifact.Parameters.Count != Layout.Count || artifact.Parameters.Zip(Layout.Parameters).Any(p => p.First.Name != p.Second.Name))
                throw new InvalidOperationException("the loss-only artifact has other parameters than the session's");
            lossOnly = new ModelSession(File, Settings, AllParameters, artifact, fixedBatch, null, Theta);
        }
        return lossOnly.Run(data, []);
    }
    ModelSession? lossOnly;

    /// <summary>Builds the training artifact of a model: parameters, opset upgrade, shape probe on <paramref name="probe"/>, gradient graph.</summary>
    /// <param name="parameterInputs">Without gradients, still make the trainable parameters inputs (a loss-only twin over a shared θ).</param>
    public static (TrainingArtifact Artifact, List<Parameter> All, int FixedBatch) Prepare(ModelFile file, LossSettings settings, Dataset probe,
        bool withGradients = true, bool embedDefaults = false, bool parameterInputs = false)
    {
        var output = Parameters.OutputOrDefault(file, settings.Output);
        var all = TrainableParameters.Discover(file, output, settings.Params, settings.Frozen);
        var trainable = withGradients || parameterInputs ? all.Where(p => p.Trainable).ToList() : [];
        if (withGradients && trainable.Count == 0)
            throw new UserError($"model '{file.Path}' has no trainable parameters for output '{output}'" + (settings.Params is null ? "" : " matching --params"));
        var forward = Autodiff.Lowering.LinearScores.Lower(OpsetUpgrade.Apply(file.Model), file.Graph);
        var dataInputs = DataInputs(forward.Graph);
        probe.Require(dataInputs, $"inputs of '{file.Path}'");
        probe.CheckShapes(forward.Graph.Input.Where(i => dataInputs.Contains(i.Name)), file.Path);
        int fixedBatch = FixedBatch(forward.Graph, dataInputs);
        var artifact = TrainingArtifact.Build(file, forward, m => Probe(file, m, probe, dataInputs, fixedBatch), trainable, settings.Loss, output,
            settings.IgnoreIndex, withGradients, embedDefaults, settings.FreezeDecisions);
        return (artifact, all, fixedBatch);
    }

    /// <summary>Graph inputs that must be fed (initializers listed as inputs are parameters with defaults).</summary>
    public static List<string> DataInputs(GraphProto g)
    {
        var inits = g.Initializer.Select(t => t.Name).ToHashSet();
        return g.Input.Where(i => !inits.Contains(i.Name)).Select(i => i.Name).ToList();
    }

    /// <summary>
    /// Made-up inputs for probing shapes when no data is given: three samples, unknown dimensions 1, floats N(0,1)
    /// (seeded), integers 0 (a valid index for any embedding).
    /// </summary>
    public static Dataset SyntheticInputs(GraphProto g, int seed = 0)
    {
        var rng = new Random(seed);
        var arrays = new Dictionary<string, Data.NdArray>();
        foreach (var name in DataInputs(g))
        {
            var t = g.Input.First(i => i.Name == name).Type?.TensorType ?? throw new UserError($"input '{name}' is not a tensor; only tensor inputs are supported");
            var dims = t.Shape?.Dim.Select((d, a) => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue && d.DimValue > 0 ? d.DimValue : a == 0 ? 3 : 1).ToArray() ?? [3];
            long n = dims.Aggregate(1L, (x, y) => x * y);
            arrays[name] = DataTypes.IsFloat(t.ElemType)
                ? Data.NdArray.FromFloat(Enumerable.Range(0, (int)n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray(), dims)
                : Data.NdArray.FromInt64(new long[n], dims);
        }
        return new Dataset(arrays, "synthetic inputs");
    }

    /// <summary>1 when an input's first dimension is fixed to 1 (samples go one at a time), else 0.</summary>
    static int FixedBatch(GraphProto g, List<string> inputs) =>
        g.Input.Where(i => inputs.Contains(i.Name)).Any(i => i.Type?.TensorType?.Shape?.Dim is { Count: > 0 } d && d[0].ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue && d[0].DimValue == 1) ? 1 : 0;

    static TensorShapes Probe(ModelFile file, ModelProto forward, Dataset data, List<string> inputs, int fixedBatch)
    {
        var probeModel = forward.Clone();
        foreach (var t in probeModel.Graph.Initializer) t.Inline(file.Folder);
        var types = forward.Graph.Input.Where(i => inputs.Contains(i.Name)).ToDictionary(i => i.Name, i => (TensorElementType)i.Type.TensorType.ElemType);
        // Two batch sizes tell batch-dependent dimensions apart from fixed ones.
        var sizes = fixedBatch == 1 ? [1L] : new[] { Math.Min(2, data.Rows), Math.Min(3, data.Rows) }.Distinct().ToArray();
        using var probeData = new Dataset(data.Arrays.Where(kv => inputs.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value), data.Source);
        var feeds = sizes.Select(n => probeData.Batch(0, n, types)).ToList();
        return ShapeProbe.Run(probeModel, feeds);
    }

    IEnumerable<(long Start, long Count)> Batches(Dataset data)
    {
        long size = fixedBatch == 1 ? 1 : Math.Max(1, Settings.BatchSize);
        for (long s = 0; s < data.Rows; s += size) yield return (s, Math.Min(size, data.Rows - s));
    }

    /// <summary>Mean loss over all samples of <paramref name="data"/> and, when <paramref name="grad"/> is given, its gradient (written there).</summary>
    public LossResult Run(Dataset data, Span<float> grad)
    {
        data.Require(feedTypes.Keys, "inputs and targets of the training artifact");
        // Targets shaped [N] for an output [N, 1] (scikit-learn's y for a LinearRegressor's `variable`) are refused here
        // with both shapes named, rather than by ONNX Runtime with a bare rank mismatch. (Only the rank: an artifact with
        // unrolled recurrent ops is rebuilt for other sequence lengths.)
        if (Artifact.Model.Graph.Input.FirstOrDefault(i => i.Name == LossHead.LabelInput)?.Type?.TensorType?.Shape is { } want
            && data.Arrays.TryGetValue(LossHead.LabelInput, out var label) && label.Shape.Length != want.Dim.Count)
            throw new UserError($"'{data.Source}': array '{LossHead.LabelInput}' has shape {Data.NdArray.FormatShape(label.Shape)}, but the loss " +
                $"{Settings.Loss} of output '{Artifact.ModelOutput}' needs {want.Dim.Count} axes (axis 0 = samples){(want.Dim.Count == label.Shape.Length + 1 ? "; add the last axis, e.g. y.reshape(-1, 1)" : "")}");
        if (grad.Length > 0) { if (grad.Length != Layout.Size) throw new ArgumentException("gradient buffer size"); grad.Clear(); }
        double lossSum = 0, correct = 0; long count = 0;
        foreach (var (start, n) in Batches(data))
        {
            var (loss, batchCount, hits) = RunBatch(data.Batch(start, n, feedTypes), grad, accumulate: true);
            lossSum += loss * batchCount;
            count += batchCount;
            correct += hits;
        }
        if (count == 0) throw new UserError($"'{data.Source}' has no labelled samples");
        if (grad.Length > 0) TensorPrimitives.Multiply(grad, (float)(1.0 / count), grad);
        return new LossResult(lossSum / count, count, Artifact.HasCorrect ? correct / count : null);
    }

    /// <summary>
    /// One run of the artifact on a ready feed (data inputs and label). With a gradient buffer, the batch's mean-loss
    /// gradient is written to it, or, with <paramref name="accumulate"/>, added to it weighted by the batch's count.
    /// </summary>
    public (double Loss, long Count, double Correct) RunBatch(IReadOnlyDictionary<string, OrtValue> feed, Span<float> grad, bool accumulate = false)
    {
        if (Artifact.Unrolled.Count > 0) UseArtifactFor(feed);
        bool wantGrad = grad.Length > 0;
        var names = wantGrad ? outputNames : outputNames.Where(n => !n.StartsWith(TrainingArtifact.GradPrefix)).ToArray();
        var references = Enumerable.Range(0, Layout.Count).Where(i => Artifact.ReferenceInputs.Contains(Layout.Parameters[i].Name)).ToList();
        var inputNames = feedTypes.Keys.Concat(Layout.Parameters.Select(p => p.Name))
            .Concat(references.Select(i => FrozenDecisions.RefInput(Layout.Parameters[i].Name))).ToArray();
        var inputs = feedTypes.Keys.Select(k => feed[k]).Concat(paramValues).Concat(references.Select(i => referenceValues[i])).ToArray();
        using var results = OrtSessions.Run(session, inputNames, inputs, names, $"gradient graph of '{File.Path}'");
        double count = Scalar(results[Array.IndexOf(names, TrainingArtifact.CountOutput)]);
        double loss = Scalar(results[Array.IndexOf(names, TrainingArtifact.LossOutput)]);
        double correct = Artifact.HasCorrect ? Scalar(results[Array.IndexOf(names, TrainingArtifact.CorrectOutput)]) : 0;
        if (wantGrad)
        {
            evaluations++;
            for (int i = 0; i < Layout.Count; i++)
            {
                var g = results[Array.IndexOf(names, TrainingArtifact.GradName(Layout.Parameters[i].Name))].GetTensorDataAsSpan<float>();
                var dst = Layout.Of(grad, i);
                if (accumulate) TensorPrimitives.MultiplyAdd(g, (float)count, dst, dst);
                else g.CopyTo(dst);
            }
        }
        return (loss, (long)count, correct);
    }

    /// <summary>
    /// With recurrent ops unrolled over a fixed number of steps, switches to the artifact built for the feed's data
    /// input shapes, building it on first sight of them (probing with the feed's samples).
    /// </summary>
    void UseArtifactFor(IReadOnlyDictionary<string, OrtValue> feed)
    {
        var shapes = Artifact.DataInputs.ToDictionary(n => n, n => feed[n].GetTensorTypeAndShape().Shape);
        bool fits = shapes.All(kv => Artifact.BuiltFor.TryGetValue(kv.Key, out var built) && built.Length == kv.Value.Length
            && built.Select((d, a) => a == 0 || d < 0 || d == kv.Value[a]).All(x => x));
        if (fits) return;
        var key = ShapeKey(shapes);
        if (!bySequence.TryGetValue(key, out var built))
        {
            var steps = string.Join(", ", Artifact.Unrolled.Select(u => $"{u.Op} '{u.Node}' over {u.SequenceLength} steps"));
            var had = string.Join(", ", Artifact.BuiltFor.Select(kv => $"'{kv.Key}' {Data.NdArray.FormatShape(kv.Value)}"));
            var got = string.Join(", ", shapes.Select(kv => $"'{kv.Key}' {Data.NdArray.FormatShape(kv.Value)}"));
            if (rebuild is null)
                throw new UserError($"the gradient graph of '{File.Path}' unrolls {steps}, built for inputs {had}; this batch has {got}. Build the artifact for this sequence length.");
            using var probe = new Dataset(shapes.Keys.ToDictionary(n => n, n => ProbeRows(feed[n])), $"a batch of shape {got}");
            var artifact = rebuild(probe);
            var s = CreateSession(artifact);
            built = bySequence[key] = (s, artifact, s.OutputNames.ToArray());
        }
        (session, Artifact, outputNames) = built;
    }

    static string ShapeKey(Dictionary<string, long[]> shapes) =>
        string.Join(";", shapes.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Key + ":" + string.Join(",", kv.Value.Skip(1))));

    /// <summary>A batch's values as an array of at least three rows (repeated as needed), so that the probe sees two batch sizes.</summary>
    static Data.NdArray ProbeRows(OrtValue v)
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
            var t => throw new UserError($"cannot rebuild the gradient graph for inputs of element type {t}"),
        };
        return a.TakeRows(Enumerable.Range(0, (int)Math.Max(3, a.Rows)).Select(i => i % a.Rows).ToArray());
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
        foreach (var v in paramValues.Concat(referenceValues)) v.Dispose();
        frozen?.Dispose();
        lossOnly?.Dispose();
        session.Dispose();
        foreach (var (s, _, _) in bySequence.Values) if (!ReferenceEquals(s, session)) s.Dispose();
    }
}
