using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using OnnxUnlearn.Autodiff;
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
    /// <summary>How far the model's external data may reach (<see cref="ExternalDataPolicy.AllowLinks"/>).</summary>
    public ExternalDataPolicy ExternalData { get; init; } = ExternalDataPolicy.Strict;
    /// <summary>Feed NaN and infinite values of float inputs and targets as they are (by default they are refused, naming the
    /// array, row and column: a loss or gradient through them is NaN).</summary>
    public bool AllowNonFinite { get; init; }
}

/// <summary>Mean loss over a dataset, with the number of labelled elements and (class losses) the accuracy.</summary>
public sealed record LossResult(double Loss, long Count, double? Accuracy);

/// <summary>The graphs of an artifact set.</summary>
public enum ArtifactKind
{
    /// <summary>Forward, loss head and gradient graph.</summary>
    Gradient,
    /// <summary>Forward and loss head with the parameters as inputs: 2–3× cheaper than running the gradient graph for its loss,
    /// since ONNX Runtime still runs much of the backward pass there.</summary>
    LossOnly,
    /// <summary>The gradient graph with ReLU/pool/clip decisions taken from a pass at reference parameters
    /// (<see cref="FrozenDecisions"/>): smooth around them, for curvature of piecewise-linear networks.</summary>
    FrozenDecisions,
}

/// <summary>
/// A model compiled once for one loss and input shape, and evaluated at parameters the caller passes: loss(θ, data),
/// gradient(θ, data, into) and the smooth gradient that Hessian-vector products difference. It holds the artifact set — the
/// opset-upgraded and lowered forward graph, its probed shapes, and the gradient, loss-only and frozen-decision graphs,
/// each built and opened in ONNX Runtime when first needed — and no parameter state: θ is always an argument.
/// </summary>
public sealed class Evaluator : IDisposable
{
    /// <summary>The model as compiled: the file's, with If nodes whose branch the data decides inlined (<see cref="Inlining"/>).</summary>
    public ModelFile File { get; }
    /// <summary>Where each data input carries its samples.</summary>
    public SampleAxes Axes { get; }
    public LossSettings Settings { get; }
    /// <summary>Every float tensor the model reads, trainable or not (with the reason).</summary>
    public IReadOnlyList<Parameter> AllParameters { get; }
    /// <summary>The trainable parameters: the space θ, gradients, scores and masks live in.</summary>
    public ParameterLayout Layout { get; }
    /// <summary>The model output the loss is computed on (as named in the model).</summary>
    public string ModelOutput { get; }
    /// <summary>1 when the model's batch dimension is fixed to 1 (samples go one at a time), else 0.</summary>
    public int FixedBatch { get; }
    /// <summary>The forward that losses and accuracies (<see cref="Loss"/>) are measured on: the model as stored, in its own
    /// precision, e.g. "float16 as stored".</summary>
    public string FiguresForward { get; }
    /// <summary>The forward that gradients and curvature are taken of: "float32 artifact (float16 widened)" for a model with
    /// float16/bfloat16 values (<see cref="Precision"/>), else the model as stored.</summary>
    public string GradientForward { get; }

    /// <summary>Batches run through a gradient graph so far (each one forward and backward pass), the frozen one's included.</summary>
    public long GradientEvaluations => sessions.Values.Sum(s => s.GradientEvaluations);

    /// <summary>Artifacts built so far, by kind (more than one of a kind only with recurrent ops unrolled for another sequence length).</summary>
    public IReadOnlyDictionary<ArtifactKind, int> Builds => builds;
    readonly Dictionary<ArtifactKind, int> builds = [];

    /// <summary>Shape probes run so far: one per distinct model probed (the forward graph; with recurrent ops, the unrolled one too).</summary>
    public int ShapeProbes => probes.Count;

    readonly ModelProto forward;
    readonly List<string> dataInputs;
    readonly Dataset probe;
    /// <summary>Shape probes by the model probed (the forward graph, or one with recurrent ops unrolled) and the data probed with.</summary>
    readonly List<(ModelProto Model, Dataset Data, TensorShapes Shapes)> probes = [];
    readonly Dictionary<ArtifactKind, ArtifactSession> sessions = [];
    /// <summary>The data the evaluator was opened with, until its targets are checked (when the first artifact is built: the
    /// class count comes from the probe). Subsets taken from it afterwards inherit the check.</summary>
    Dataset? uncheckedTargets;
    /// <summary>Classes along the model output's last axis, as probed (null before the first probe, or where it varies).</summary>
    long? classes;

    Evaluator(ModelFile file, LossSettings settings, Dataset probe)
    {
        Settings = settings;
        Axes = SampleAxes.For(file.Graph, file.Path);
        probe = probe.For(Axes);
        dataInputs = DataInputs(file.Graph);
        CheckInputTypes(file.Graph, dataInputs, file.Path);
        probe.Require(dataInputs, $"inputs of '{file.Path}'");
        if (probe.Rows == 0) throw new UserError($"'{probe.Source}' holds no samples (its arrays have 0 rows on their sample axis); give a data file with at least one sample");
        probe.CheckShapes(file.Graph.Input.Where(i => dataInputs.Contains(i.Name)), file.Path);
        probe.CheckFinite(dataInputs, settings.AllowNonFinite, $"an input of '{file.Path}'");
        // If nodes whose condition the data fixes (inputs given once, constants) run as their taken branch, so gradients reach its weights.
        File = file = Inlining.Apply(file, Axes, probe.MadeUp ? null : probe);
        ModelOutput = Parameters.OutputOrDefault(file, settings.Output);
        AllParameters = TrainableParameters.Discover(file, ModelOutput, settings.Params, settings.Frozen);
        CheckParameterSizes(file, AllParameters.Where(p => p.Trainable).ToList());
        Layout = new ParameterLayout(AllParameters.Where(p => p.Trainable).ToList());
        forward = Forward(file);
        var stored = string.Join("+", AllParameters.Where(p => DataTypes.IsFloat(p.DataType) || p.Grid is not null).Select(p => p.DataType).DefaultIfEmpty(DataTypes.Float).Distinct().Order().Select(DataTypes.Name));
        FiguresForward = $"{stored} as stored";
        // Quantized weights: the gradient is of the real weights, through activation quantizers taken as the identity.
        GradientForward = Precision.HasReduced(forward.Graph) ? $"float32 artifact ({stored} widened)"
            : AllParameters.Any(p => p.Grid is not null && p.Trainable) ? "float32 artifact (quantized weights dequantized, quantizers straight through)" : FiguresForward;
        uncheckedTargets = probe;
        FixedBatch = FixedBatchOf(forward.Graph, dataInputs, Axes);
        // Probe rows are copied: the caller may dispose its dataset while artifacts are still built lazily.
        this.probe = probe.Only(dataInputs).Take(Enumerable.Range(0, (int)Math.Min(3, probe.Rows)).Select(i => (long)i).ToArray(), probe.Source);
    }

    /// <summary>
    /// The model as the artifacts differentiate it: upgraded to one opset, its linear ai.onnx.ml nodes and ONNX Runtime's
    /// fused ops lowered to standard ops, the DequantizeLinear of each quantized weight replaced by its real values
    /// (<see cref="Quantization.Lower"/>: exact, so figures stay those of the quantized model). The loss-only artifact (eval figures) runs the same ops as the gradient one; the
    /// tests check that the lowered fused ops compute their kernels' outputs to float32 rounding.
    /// </summary>
    static ModelProto Forward(ModelFile file) =>
        Quantization.Lower(Autodiff.Lowering.Contrib.Lower(Autodiff.Lowering.LinearScores.Lower(OpsetUpgrade.Apply(file.Model), file.Graph), file.Path), file);

    /// <summary>
    /// What the model alone says about its gradient graph, checked before any data is loaded or forward pass run (probing
    /// a large model takes minutes): a float output, trainable parameters, and no control flow or op without a gradient
    /// rule between them and the loss (recurrent ops count as differentiable: they are unrolled once shapes are known).
    /// </summary>
    public static void Preflight(ModelFile file, LossSettings settings)
    {
        // If nodes decided by constants are inlined as the evaluator will; one the data decides leaves the checks to it.
        var axes = SampleAxes.For(file.Graph, file.Path);
        file = Inlining.Apply(file, axes, null);
        if (Inlining.NeedsData(file.Graph, axes)) return;
        var output = Parameters.OutputOrDefault(file, settings.Output);
        var trainable = TrainableParameters.Discover(file, output, settings.Params, settings.Frozen).Where(p => p.Trainable).Select(p => p.Name).ToList();
        if (trainable.Count == 0) throw NoTrainableParameters(file, output, settings);
        var m = Forward(file);
        Autodiff.Backprop.Active(m.Graph, m.DefaultOpset(), [output], trainable,
            n => Autodiff.Lowering.Recurrent.Is(n.OpType, n.Domain));
    }

    static UserError NoTrainableParameters(ModelFile file, string output, LossSettings settings) =>
        new($"model '{file.Path}' has no trainable parameters for output '{output}'" + (settings.Params is null ? "" : " matching the parameter globs"));

    /// <summary>Loads a model and compiles it for <paramref name="settings"/>, probing shapes on <paramref name="probe"/>'s first rows.</summary>
    public static Evaluator Open(string modelPath, LossSettings settings, Dataset probe) => Open(ModelFile.Load(modelPath, settings.ExternalData), settings, probe);

    public static Evaluator Open(ModelFile file, LossSettings settings, Dataset probe) => new(file, settings, probe);

    /// <summary>θ as stored in the model file (a new vector each call).</summary>
    public ParameterVector ReadParameters() => ParameterVector.Read(Layout, File);

    /// <summary>Mean loss and accuracy at <paramref name="theta"/>, forward only, on the model as stored: float16/bfloat16
    /// parameters take θ rounded to their type (<see cref="Precision.RoundedToStored"/>), the values a write-back stores.</summary>
    public LossResult Loss(ParameterVector theta, Dataset data)
    {
        var stored = Precision.RoundedToStored(Layout, theta.Span) is { } rounded ? new ParameterVector(Layout, rounded) : theta;
        return Checked(ArtifactKind.LossOnly, data).Run(data, stored, [], null, Settings.BatchSize, FixedBatch);
    }

    /// <summary>Mean loss at <paramref name="theta"/> and its gradient, written to <paramref name="into"/>.</summary>
    public LossResult Gradient(ParameterVector theta, Dataset data, Span<float> into) =>
        Checked(ArtifactKind.Gradient, data).Run(data, theta, into, null, Settings.BatchSize, FixedBatch);

    /// <summary>
    /// The gradient at <paramref name="theta"/> of the loss whose piecewise-linear decisions are those of
    /// <paramref name="reference"/>: equal to the true gradient at θ = reference and smooth around it. The plain
    /// gradient when no decision depends on the parameters.
    /// </summary>
    public LossResult SmoothGradient(ParameterVector theta, ParameterVector reference, Dataset data, Span<float> into) => HasDecisions
        ? Checked(ArtifactKind.FrozenDecisions, data).Run(data, theta, into, reference, Settings.BatchSize, FixedBatch)
        : Gradient(theta, data, into);

    /// <summary>
    /// Checks the values of <paramref name="data"/> for the loss (once per data set; subsets taken afterwards inherit it):
    /// no NaN or infinite float inputs or targets (unless <see cref="LossSettings.AllowNonFinite"/>), and for class losses
    /// integer labels in [0, classes) but for <see cref="LossSettings.IgnoreIndex"/>. Loss and gradient calls check their
    /// data themselves; a caller feeding batches of its own (<see cref="GradientBatch"/>) checks their data set with this.
    /// </summary>
    public void Check(Dataset data) => Check(data, (sessions.Values.FirstOrDefault() ?? Session(ArtifactKind.LossOnly)).Artifact);

    void Check(Dataset data, TrainingArtifact artifact)
    {
        data.CheckFinite(dataInputs, Settings.AllowNonFinite, $"an input of '{File.Path}'");
        string loss = $"{LossHead.Name(Settings.Loss)} of output {UserError.Quote(ModelOutput)}";
        if (LossHead.HasClasses(artifact.Loss)) data.CheckClassLabels(LossHead.LabelInput, classes, Settings.IgnoreIndex, loss);
        else data.CheckFinite([LossHead.LabelInput], Settings.AllowNonFinite, $"the targets of the loss {loss}");
    }

    /// <summary>The session of a kind, with <paramref name="data"/> checked for it.</summary>
    ArtifactSession Checked(ArtifactKind kind, Dataset data)
    {
        var s = Session(kind);
        Check(data, s.Artifact);
        return s;
    }

    /// <summary>One batch's mean-loss gradient (per-sample scores feed one row at a time).</summary>
    public (double Loss, long Count, double Correct) GradientBatch(ParameterVector theta, IReadOnlyDictionary<string, OrtValue> feed, Span<float> into) =>
        Session(ArtifactKind.Gradient).RunBatch(feed, theta, into);

    /// <summary>The data inputs and targets a batch must hold, with their element types.</summary>
    public IReadOnlyDictionary<string, TensorElementType> FeedTypes => Session(ArtifactKind.Gradient).FeedTypes;

    /// <summary>Piecewise-linear ops (ReLU, max pooling, ...) depend on the parameters: the gradient has kinks.</summary>
    public bool HasDecisions => Session(ArtifactKind.Gradient).Artifact.HasDecisions;

    /// <summary>The artifact of a kind in use (with recurrent ops unrolled, the one built for the last batch's sequence length).</summary>
    public TrainingArtifact Artifact(ArtifactKind kind = ArtifactKind.Gradient) => Session(kind).Artifact;

    ArtifactSession Session(ArtifactKind kind)
    {
        if (sessions.TryGetValue(kind, out var s)) return s;
        var what = kind == ArtifactKind.LossOnly ? $"loss graph of '{File.Path}'" : $"gradient graph of '{File.Path}'";
        var artifact = Build(kind, probe);
        if (uncheckedTargets is { } opened)
        {
            Check(opened, artifact);
            uncheckedTargets = null;
        }
        return sessions[kind] = new ArtifactSession(artifact, what, Settings.Threads, d => Build(kind, d), Axes);
    }

    /// <summary>Builds an artifact of the set from the compiled forward graph (shapes probed once per model and data).</summary>
    /// <param name="embedDefaults">Keep parameter values as initializers so the parameter inputs may be omitted (for saved artifacts).</param>
    public TrainingArtifact Build(ArtifactKind kind, Dataset? probeData = null, bool embedDefaults = false)
    {
        bool withGradients = kind != ArtifactKind.LossOnly;
        if (withGradients && Layout.Count == 0)
            throw new UserError(NoTrainableParameters(File, ModelOutput, Settings).Message +
                // Weights left inside an If's branches: say why that If was not inlined.
                (AllParameters.Any(p => p.Branch is not null && !File.Inlined.ContainsKey(p.Name)) ? string.Concat(Inlining.Undecided(File.Graph, Axes).Select(why => "; " + why)) : ""));
        var data = probeData ?? probe;
        builds[kind] = builds.GetValueOrDefault(kind) + 1;
        var artifact = TrainingArtifact.Build(File, forward, m => Probe(m, data), Layout.Parameters, Settings.Loss, ModelOutput,
            Settings.IgnoreIndex, withGradients, embedDefaults, kind == ArtifactKind.FrozenDecisions);
        // The class count of class losses: the model output's last axis, as probed (every probed model holds the output).
        classes ??= probes.Select(p => p.Shapes[ModelOutput]).FirstOrDefault(v => v is { Rank: > 0 }) is { } output && output.Dims[^1] > 0 ? output.Dims[^1] : null;
        if (artifact.Parameters.Count != Layout.Count || artifact.Parameters.Zip(Layout.Parameters).Any(p => p.First.Name != p.Second.Name))
            throw new InvalidOperationException($"the {kind} artifact has other parameters than the layout");
        return artifact;
    }

    /// <summary>The shapes of every value of <paramref name="model"/>; each distinct model is probed once per data set.</summary>
    TensorShapes Probe(ModelProto model, Dataset data)
    {
        foreach (var (m, d, shapes) in probes)
            if (ReferenceEquals(d, data) && (ReferenceEquals(m, model) || m.Equals(model))) return shapes.Copy();
        var probeModel = model.Clone();
        foreach (var t in probeModel.Graph.Initializer) t.Inline(File);
        var types = model.Graph.Input.Where(i => dataInputs.Contains(i.Name)).ToDictionary(i => i.Name, i => (TensorElementType)i.Type.TensorType.ElemType);
        // Two batch sizes tell batch-dependent dimensions apart from fixed ones: batches of 2 and 3 samples, repeating those
        // of a smaller file (one probe size would leave the batch axis fixed, and batches of another size would be refused).
        long[] sizes = FixedBatch == 1 ? [1L] : [2L, 3L];
        using var probeData = data.Rows >= 3 ? data.Only(dataInputs) : data.Only(dataInputs).Take([0, 1 % data.Rows, 2 % data.Rows], data.Source);
        var feeds = sizes.Select(n => probeData.Batch(0, n, types)).ToList();
        var result = ShapeProbe.Run(probeModel, feeds);
        probes.Add((model, data, result.Copy()));
        return result;
    }

    /// <summary>
    /// The trainable tensors' dims (from the file) must count elements that θ, one float array, can hold, and (for data held
    /// in the file itself) as many as the tensor holds: checked before any of them is read, so damaged dims cost no memory.
    /// </summary>
    static void CheckParameterSizes(ModelFile file, IReadOnlyList<Parameter> trainable)
    {
        long total = 0;
        var tensors = Parameters.Candidates(file.Graph).GroupBy(c => c.Name).ToDictionary(g => g.Key, g => g.First().Tensor);
        foreach (var p in trainable)
        {
            string what = $"tensor {UserError.Quote(p.Name)} of '{file.Path}'";
            long n = Data.NdArray.CheckedElementCount(p.Shape, what, Array.MaxLength);
            total += n;
            if (total > Array.MaxLength)
                throw new UserError($"the trainable tensors of '{file.Path}' hold more than {Array.MaxLength} elements together (up to tensor {UserError.Quote(p.Name)}), " +
                    $"more than one parameter vector can hold; train fewer tensors ({UserError.Setting("Params")}, {UserError.Setting("Frozen")})");
            if (!tensors.TryGetValue(p.Name, out var t) || t.IsExternal() || p.Storage == ParameterStorage.Attribute) continue;
            int size = DataTypes.Size(t.DataType);
            long values = t.DataType switch
            {
                DataTypes.Float => t.FloatData.Count,
                DataTypes.Double => t.DoubleData.Count,
                DataTypes.Int64 => t.Int64Data.Count,
                DataTypes.UInt32 or DataTypes.UInt64 => t.Uint64Data.Count,
                _ => t.Int32Data.Count,
            };
            if (t.RawData.IsEmpty ? values != n : t.RawData.Length != n * size)
                throw new UserError($"{what} declares shape {Data.NdArray.FormatShape(p.Shape)} ({n} elements of {DataTypes.Name(t.DataType)}) but holds " +
                    $"{(t.RawData.IsEmpty ? $"{values} values" : $"{t.RawData.Length} bytes of raw data")}; the model file is damaged: re-export it.");
        }
    }

    /// <summary>Every data input needs a tensor type with an element type: the probe and the feeds are made from it.</summary>
    static void CheckInputTypes(GraphProto g, List<string> inputs, string model)
    {
        foreach (var i in g.Input.Where(i => inputs.Contains(i.Name)))
        {
            if (i.Type is null || i.Type.ValueCase == TypeProto.ValueOneofCase.None)
                throw new UserError($"input {UserError.Quote(i.Name)} of '{model}' has no type; the model is damaged or incomplete: declare the input's " +
                    "element type and shape (e.g. onnx.helper.make_tensor_value_info) and re-save it");
            if (i.Type.TensorType is not { } t)
                throw new UserError($"input {UserError.Quote(i.Name)} of '{model}' is a {DataTypes.Describe(i.Type)}, not a tensor; only tensor inputs can be fed from data files");
            if (t.ElemType == 0)
                throw new UserError($"input {UserError.Quote(i.Name)} of '{model}' is a tensor of undefined element type; declare its element type " +
                    "(e.g. onnx.helper.make_tensor_value_info) and re-save the model");
        }
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
        var inputs = DataInputs(g);
        CheckInputTypes(g, inputs, "the model");
        var axes = SampleAxes.For(g, "the model");
        foreach (var name in inputs)
        {
            var t = g.Input.First(i => i.Name == name).Type.TensorType;
            var dims = t.Shape?.Dim.Select((d, a) => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue && d.DimValue > 0 ? d.DimValue : a == axes.Of(name) ? 3 : 1).ToArray() ?? [3];
            long n = 1;
            foreach (long d in dims)
                if ((n = d <= SyntheticElements / n ? n * d : long.MaxValue) > SyntheticElements)
                    throw new UserError($"input {UserError.Quote(name)} declares shape [{string.Join(", ", dims)}], more than the {SyntheticElements} elements " +
                        "made-up probe inputs may hold; give a data file to probe with");
            arrays[name] = DataTypes.IsFloat(t.ElemType)
                ? Data.NdArray.FromFloat(Enumerable.Range(0, (int)n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray(), dims)
                : Data.NdArray.FromInt64(new long[n], dims);
        }
        return new Dataset(arrays, "synthetic inputs", axes) { MadeUp = true };
    }

    /// <summary>Most elements of one made-up input (64 Mi floats, 256 MiB).</summary>
    const long SyntheticElements = 1L << 26;

    static int FixedBatchOf(GraphProto g, List<string> inputs, SampleAxes axes) =>
        g.Input.Where(i => inputs.Contains(i.Name) && axes.Of(i.Name) != SampleAxes.Once).Any(i => i.Type?.TensorType?.Shape?.Dim is { } d && d.Count > axes.Of(i.Name)
            && d[axes.Of(i.Name)].ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue && d[axes.Of(i.Name)].DimValue == 1) ? 1 : 0;

    public void Dispose()
    {
        foreach (var s in sessions.Values) s.Dispose();
        probe.Dispose();
    }
}
