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
    public int Threads { get; init; }
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
    public TrainingArtifact Artifact { get; }
    /// <summary>Live parameter values (float32, flat, by <see cref="Layout"/>).</summary>
    public float[] Theta { get; }
    /// <summary>
    /// The <see cref="KinkPattern"/> of the last gradient run over a dataset (null for smooth models): equal patterns
    /// mean the same linear piece of a piecewise-linear network.
    /// </summary>
    public long[]? Pattern { get; private set; }

    /// <summary>Batches run through the gradient graph so far (each one forward and backward pass).</summary>
    public long GradientEvaluations { get; private set; }

    readonly InferenceSession session;
    readonly OrtValue[] paramValues;
    readonly Dictionary<string, TensorElementType> feedTypes;
    readonly int fixedBatch;
    readonly string[] outputNames;

    /// <summary>A session over an artifact built elsewhere (gradient checks build their own).</summary>
    public ModelSession(ModelFile file, LossSettings settings, IReadOnlyList<Parameter> all, TrainingArtifact artifact, int fixedBatch = 0)
    {
        File = file; Settings = settings; AllParameters = all; Artifact = artifact; this.fixedBatch = fixedBatch;
        Layout = new ParameterLayout(artifact.Parameters);
        Theta = Layout.ReadValues(file);
        using var options = OrtSessions.Options(settings.Threads);
        session = OrtSessions.Create(artifact.Model.ToByteArray(), options, $"gradient graph of '{file.Path}'");
        paramValues = Enumerable.Range(0, Layout.Count)
            .Select(i => OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, Layout.Of(Theta, i), Layout.Parameters[i].Shape))
            .ToArray();
        feedTypes = artifact.Model.Graph.Input.Where(i => artifact.DataInputs.Contains(i.Name) || i.Name == LossHead.LabelInput)
            .ToDictionary(i => i.Name, i => (TensorElementType)i.Type.TensorType.ElemType);
        outputNames = session.OutputNames.ToArray();
    }

    public IReadOnlyDictionary<string, TensorElementType> FeedTypes => feedTypes;

    /// <summary>Loads the model, probes its shapes on <paramref name="data"/>, builds the gradient artifact and opens a session.</summary>
    public static ModelSession Open(string modelPath, LossSettings settings, Dataset data, bool withGradients = true)
    {
        var file = ModelFile.Load(modelPath);
        var (artifact, all, fixedBatch) = Prepare(file, settings, data, withGradients);
        return new ModelSession(file, settings, all, artifact, fixedBatch);
    }

    /// <summary>Builds the training artifact of a model: parameters, opset upgrade, shape probe on <paramref name="probe"/>, gradient graph.</summary>
    public static (TrainingArtifact Artifact, List<Parameter> All, int FixedBatch) Prepare(ModelFile file, LossSettings settings, Dataset probe,
        bool withGradients = true, bool embedDefaults = false)
    {
        var output = Parameters.OutputOrDefault(file, settings.Output);
        var all = Parameters.Discover(file, output, settings.Params, settings.Frozen);
        var trainable = withGradients ? all.Where(p => p.Trainable).ToList() : [];
        if (withGradients && trainable.Count == 0)
            throw new UserError($"model '{file.Path}' has no trainable parameters for output '{output}'" + (settings.Params is null ? "" : " matching --params"));
        var forward = LinearModels.Lower(OpsetUpgrade.Apply(file.Model), file.Graph);
        var dataInputs = DataInputs(forward.Graph);
        probe.Require(dataInputs, $"inputs of '{file.Path}'");
        probe.CheckShapes(forward.Graph.Input.Where(i => dataInputs.Contains(i.Name)), file.Path);
        int fixedBatch = FixedBatch(forward.Graph, dataInputs);
        var shapes = Probe(file, forward, probe, dataInputs, fixedBatch);
        var artifact = TrainingArtifact.Build(file, forward, shapes, trainable, settings.Loss, output, settings.IgnoreIndex, withGradients, embedDefaults);
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
        if (grad.Length > 0) { if (grad.Length != Layout.Size) throw new ArgumentException("gradient buffer size"); grad.Clear(); }
        double lossSum = 0, correct = 0; long count = 0;
        Pattern = null;
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
        bool wantGrad = grad.Length > 0;
        var names = wantGrad ? outputNames : outputNames.Where(n => !n.StartsWith(TrainingArtifact.GradPrefix)).ToArray();
        var inputNames = feedTypes.Keys.Concat(Layout.Parameters.Select(p => p.Name)).ToArray();
        var inputs = feedTypes.Keys.Select(k => feed[k]).Concat(paramValues).ToArray();
        using var results = OrtSessions.Run(session, inputNames, inputs, names, $"gradient graph of '{File.Path}'");
        double count = Scalar(results[Array.IndexOf(names, TrainingArtifact.CountOutput)]);
        double loss = Scalar(results[Array.IndexOf(names, TrainingArtifact.LossOutput)]);
        double correct = Artifact.HasCorrect ? Scalar(results[Array.IndexOf(names, TrainingArtifact.CorrectOutput)]) : 0;
        if (wantGrad && Artifact.HasPattern)
        {   // fingerprints of all batches, combined so that a change in any batch changes the whole
            var p = results[Array.IndexOf(names, KinkPattern.Output)].GetTensorDataAsSpan<long>();
            Pattern ??= new long[p.Length];
            for (int i = 0; i < p.Length; i++) Pattern[i] = Pattern[i] * 1_000_003 + p[i];
        }
        if (wantGrad)
        {
            GradientEvaluations++;
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

    static double Scalar(OrtValue v) => v.GetTensorTypeAndShape().ElementDataType switch
    {
        TensorElementType.Float => v.GetTensorDataAsSpan<float>()[0],
        TensorElementType.Double => v.GetTensorDataAsSpan<double>()[0],
        TensorElementType.Int64 => v.GetTensorDataAsSpan<long>()[0],
        var t => throw new InvalidOperationException($"unexpected scalar type {t}"),
    };

    public void Dispose()
    {
        foreach (var v in paramValues) v.Dispose();
        session.Dispose();
    }
}
