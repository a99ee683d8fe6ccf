using Google.Protobuf;
using Onnx;
using OnnxUnlearn.Autodiff.Lowering;
using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Autodiff;

/// <summary>
/// A training artifact: the forward model plus a loss head and its reverse-mode gradient graph, in standard ONNX ops.
/// Inputs: the model's data inputs, <c>label</c>, and every trainable parameter (always float32). Outputs: <c>loss</c>
/// (mean over the batch), <c>count</c> (labelled elements in the batch), <c>correct</c> (class losses) and
/// <c>grad/NAME</c> per parameter — the gradient of the mean loss.
/// </summary>
public sealed class TrainingArtifact
{
    public const string LossOutput = "loss", CountOutput = "count", CorrectOutput = "correct", GradPrefix = "grad/";

    public required ModelProto Model { get; init; }
    public required IReadOnlyList<Parameter> Parameters { get; init; }
    public required IReadOnlyList<string> DataInputs { get; init; }
    /// <summary>The value the loss head reads: the chosen output, or the logits before its final Softmax/Sigmoid (<see cref="LossHead.Source"/>).</summary>
    public required string Output { get; init; }
    /// <summary>The model's output the loss was asked of (as named in the model), which <see cref="Output"/> may look behind.</summary>
    public string ModelOutput { get; init; } = "";
    public required LossKind Loss { get; init; }
    public bool HasCorrect => LossHead.HasClasses(Loss);
    public bool HasGradients => Parameters.Count > 0;
    /// <summary>Piecewise-linear ops (ReLU, max pooling, ...) depend on the parameters: the gradient has kinks.</summary>
    public bool HasDecisions { get; init; }
    /// <summary>
    /// Parameters whose reference values the artifact reads from inputs NAME__ref: built with frozen decisions
    /// (<see cref="FrozenDecisions"/>), it takes its piecewise-linear decisions from a pass at those values.
    /// </summary>
    public IReadOnlyList<string> ReferenceInputs { get; init; } = [];
    /// <summary>
    /// Recurrent nodes unrolled over the sequence length measured when the artifact was built (empty when none): the
    /// artifact then takes only data inputs shaped like <see cref="BuiltFor"/> (axis 0, the batch, aside).
    /// </summary>
    public IReadOnlyList<UnrolledNode> Unrolled { get; init; } = [];
    /// <summary>Shapes of the data inputs the artifact was built with (-1 where they varied between the probes).</summary>
    public IReadOnlyDictionary<string, long[]> BuiltFor { get; init; } = new Dictionary<string, long[]>();

    public static string GradName(string parameter) => GradPrefix + parameter;

    /// <param name="forward">The forward model, already upgraded by <see cref="OpsetUpgrade"/> and with its linear ai.onnx.ml
    /// nodes lowered by <see cref="LinearScores.Lower"/>.</param>
    /// <param name="probe">Measures the shapes of every value of a model (the forward one, or one with recurrent ops
    /// unrolled: <see cref="Recurrent"/> unrolls those between the parameters and the loss before differentiation).</param>
    /// <param name="withGradients">False builds an evaluation artifact (loss and accuracy only).</param>
    /// <param name="embedDefaults">Keep parameter values as initializers so the parameter inputs may be omitted (for saved artifacts).</param>
    /// <param name="freezeDecisions">Rewrite the forward graph with <see cref="FrozenDecisions"/> before differentiating it,
    /// adding the inputs <see cref="ReferenceInputs"/>: the gradient is then smooth around the reference parameters.</param>
    public static TrainingArtifact Build(ModelFile file, ModelProto forward, Func<ModelProto, TensorShapes> probe, IReadOnlyList<Parameter> trainable,
        LossKind loss, string output, long? ignoreIndex = null, bool withGradients = true, bool embedDefaults = false, bool freezeDecisions = false)
    {
        var modelOutput = output;
        List<UnrolledNode> unrolled = [];
        // Gradients of float16/bfloat16 models are taken of the float32 forward (Precision says why); loss-only artifacts keep
        // the model's own precision, so the figures a user reads are those of the model as stored.
        bool upcast = withGradients && trainable.Count > 0 && Precision.HasReduced(forward.Graph);
        if (upcast) forward = Precision.Upcast(forward, file);
        if (withGradients && trainable.Count > 0)
        {
            var original = forward;
            (forward, unrolled) = Recurrent.LowerActive(original, trainable.Select(p => p.Name).ToList(), output, probe,
                name => ConstantInts(original.Graph, name, file));
        }
        var shapes = probe(forward);
        var builtFor = forward.Graph.Input.Where(i => shapes[i.Name] is not null && !forward.Graph.Initializer.Any(t => t.Name == i.Name))
            .ToDictionary(i => i.Name, i => shapes[i.Name]!.Dims);
        var m = forward.Clone();
        var g = m.Graph;
        long opset = m.DefaultOpset();
        var trainableNames = trainable.Select(p => p.Name).ToHashSet();

        // Every initializer's data goes inline (the artifact is loaded from memory), trainable ones become inputs.
        var initializers = g.Initializer.ToList();
        g.Initializer.Clear();
        foreach (var t in initializers)
        {
            t.Inline(file);
            if (!trainableNames.Contains(t.Name)) g.Initializer.Add(t);
            else if (embedDefaults) g.Initializer.Add(AsFloat32(t, file));
        }
        // Constant-node parameters become initializers (then inputs) of the same name.
        foreach (var node in g.Node.Where(n => n.OpType == "Constant" && trainableNames.Contains(n.Output[0])).ToList())
        {
            g.Node.Remove(node);
            if (embedDefaults) { var t = node.ConstantValue()!.Clone(); t.Name = node.Output[0]; g.Initializer.Add(AsFloat32(t, file)); }
        }
        var graphInputs = g.Input.Select(i => i.Name).ToHashSet();
        foreach (var i in g.Input.Where(i => trainableNames.Contains(i.Name)).ToList()) g.Input.Remove(i);
        var dataInputs = g.Input.Where(i => !g.Initializer.Any(t => t.Name == i.Name)).Select(i => i.Name).ToList();

        // The artifact's output names and its target input are fixed; a model value that already uses one is renamed inside
        // the copy (classifiers often call their label output "label").
        var reserved = new[] { LossOutput, CountOutput, CorrectOutput }.Concat(trainable.Select(p => GradName(p.Name))).ToHashSet();
        foreach (var node in g.Node)
            for (int k = 0; k < node.Output.Count; k++)
                if (reserved.Contains(node.Output[k]) || node.Output[k] == LossHead.LabelInput)
                {
                    var old = node.Output[k]; var renamed = "model_" + old.Replace('/', '_');
                    while (g.Node.Any(n => n.Output.Contains(renamed) || n.Input.Contains(renamed))) renamed += "_";
                    foreach (var n in g.Node) for (int j = 0; j < n.Input.Count; j++) if (n.Input[j] == old) n.Input[j] = renamed;
                    node.Output[k] = renamed;
                    if (shapes[old] is { } info) shapes.Declare(renamed, info);
                    if (output == old) output = renamed;
                }
        if (g.Input.Any(i => reserved.Contains(i.Name)) || g.Initializer.Any(t => reserved.Contains(t.Name)))
            throw new UserError($"model '{file.Path}' has an input or initializer named like an artifact output ({string.Join(", ", reserved.Where(r => g.Input.Any(i => i.Name == r) || g.Initializer.Any(t => t.Name == r)))}); rename it");

        var taken = new HashSet<string>(g.Node.SelectMany(n => n.Output).Concat(g.Node.SelectMany(n => n.Input)).Concat(graphInputs).Concat(g.Initializer.Select(t => t.Name)));
        if (taken.Contains(LossHead.LabelInput))
            throw new UserError($"model '{file.Path}' already has a value named '{LossHead.LabelInput}'; the training artifact needs that name for the targets");
        var b = new GraphBuilder(opset, taken.Contains);

        // Non-float32 parameters: a float32 input cast to the stored type, so buffers and gradients are always float32 (in an
        // upcast forward the parameters are float32 already; a float64 one is still cast).
        foreach (var p in trainable)
        {
            g.Input.Add(TensorValue(p.Name, DataTypes.Float, p.Shape));
            // Quantized weights are float32 in the forward already (Quantization.Lower replaced their DequantizeLinear).
            if (p.DataType == DataTypes.Float || upcast && Precision.IsReduced(p.DataType) || p.Grid is not null) continue;
            var typed = b.Fresh(p.Name + "_typed");
            foreach (var n in g.Node) for (int k = 0; k < n.Input.Count; k++) if (n.Input[k] == p.Name) n.Input[k] = typed;
            g.Node.Insert(0, new NodeProto { OpType = "Cast", Name = typed + "_cast", Input = { p.Name }, Output = { typed }, Attribute = { Attributes.Make("to", (long)p.DataType) } });
            shapes.Declare(typed, new Autodiff.ValueInfo(p.DataType, p.Shape, [p.Shape]));
        }
        foreach (var p in trainable) shapes.Declare(p.Name, new Autodiff.ValueInfo(DataTypes.Float, p.Shape, [p.Shape]));
        bool hasDecisions = FrozenDecisions.HasDecisions(g.Node, trainableNames);
        var references = freezeDecisions && withGradients ? FrozenDecisions.Apply(g, b, shapes, trainableNames) : [];
        foreach (var p in trainable.Where(p => references.Contains(p.Name)))
            g.Input.Add(TensorValue(FrozenDecisions.RefInput(p.Name), DataTypes.Float, p.Shape));

        (output, loss) = LossHead.Source(g, output, loss, shapes);
        var outInfo = shapes[output] ?? throw new UserError($"output '{output}' of '{file.Path}' produced no tensor when probed");
        if (Precision.IsReduced(outInfo.ElementType))
        {
            // The loss of a float16/bfloat16 output is taken in float32: a float16 log-sum-exp loses 3 digits of the loss.
            output = b.Op("Cast", [output], ("to", (long)DataTypes.Float));
            outInfo = outInfo with { ElementType = DataTypes.Float };
            shapes.Declare(output, outInfo);
        }
        var (lossName, dOut, correct, count) = LossHead.Build(b, loss, output, LossHead.LabelInput, ignoreIndex);
        g.Input.Add(LabelInput(loss, outInfo));

        // Every output is declared with its type and shape (scalars in the output's element type, counts of hits as int64,
        // gradients shaped like their float32 parameter), so the artifact passes onnx.checker's full check.
        var outputs = new List<(string Value, string Name, int Type, long[] Dims)>
            { (lossName, LossOutput, outInfo.ElementType, []), (count, CountOutput, outInfo.ElementType, []) };
        if (correct is not null) outputs.Add((correct, CorrectOutput, DataTypes.Int64, []));
        if (withGradients && trainable.Count > 0)
        {
            var grads = Backprop.Build(g, opset, b, shapes, new Dictionary<string, string> { [output] = dOut },
                trainable.Select(p => p.Name).ToList(), name => ConstantInts(g, name, file));
            foreach (var p in trainable)
                outputs.Add((grads[p.Name] ?? b.Op("ConstantOfShape", [b.Ints(p.Shape)], ("value", new TensorProto { DataType = 1, Dims = { 1 }, FloatData = { 0f } })),
                    GradName(p.Name), DataTypes.Float, p.Shape));
        }
        g.Node.AddRange(b.Nodes);
        g.Initializer.AddRange(b.Constants);
        g.Output.Clear();
        foreach (var (value, name, type, dims) in outputs)
        {
            g.Node.Add(new NodeProto { OpType = "Identity", Name = "out_" + name, Input = { value }, Output = { name } });
            g.Output.Add(TensorValue(name, type, dims));
        }
        g.ValueInfo.Clear();
        Prune(g);
        return new TrainingArtifact { Model = m, Parameters = trainable, DataInputs = dataInputs, Output = output, ModelOutput = modelOutput, Loss = loss, Unrolled = unrolled, BuiltFor = builtFor,
            HasDecisions = hasDecisions, ReferenceInputs = references };
    }

    /// <summary>
    /// Drops the nodes no artifact output reads (the model's other outputs: a ZipMap, a label, an ai.onnx.ml node already
    /// lowered) and the initializers left unread that are not graph inputs. Control-flow bodies' reads of outer values count.
    /// </summary>
    static void Prune(GraphProto g)
    {
        var needed = g.Output.Select(o => o.Name).ToHashSet();
        var keep = new bool[g.Node.Count];
        for (int k = g.Node.Count - 1; k >= 0; k--)
        {
            var node = g.Node[k];
            if (!node.Output.Any(needed.Contains)) continue;
            keep[k] = true;
            needed.UnionWith(node.Input.Where(x => x.Length > 0));
            if (ControlFlow.Is(node)) needed.UnionWith(ControlFlow.OuterReads(node));
        }
        var nodes = g.Node.Where((_, k) => keep[k]).ToList();
        g.Node.Clear();
        g.Node.AddRange(nodes);
        var inputs = g.Input.Select(i => i.Name).ToHashSet();
        var initializers = g.Initializer.Where(t => needed.Contains(t.Name) || inputs.Contains(t.Name)).ToList();
        g.Initializer.Clear();
        g.Initializer.AddRange(initializers);
    }

    static global::Onnx.ValueInfoProto LabelInput(LossKind loss, Autodiff.ValueInfo output)
    {
        // Class losses take integer labels shaped like the output without its class axis; the others match the output.
        bool classes = LossHead.HasClasses(loss);
        var dims = classes ? output.Dims[..^1] : output.Dims;
        return TensorValue(LossHead.LabelInput, classes ? DataTypes.Int64 : DataTypes.Float, dims);
    }

    static global::Onnx.ValueInfoProto TensorValue(string name, int type, long[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims) shape.Dim.Add(d >= 0 ? new TensorShapeProto.Types.Dimension { DimValue = d } : new TensorShapeProto.Types.Dimension { DimParam = "d" + shape.Dim.Count });
        return new global::Onnx.ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = type, Shape = shape } } };
    }

    /// <summary>A parameter's default value as the float32 input it stands for (its stored values widened).</summary>
    static TensorProto AsFloat32(TensorProto t, ModelFile file)
    {
        if (t.DataType == DataTypes.Float) return t;
        var wide = new TensorProto { Name = t.Name, DataType = DataTypes.Float, RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(t.ReadFloats(file).AsSpan())) };
        wide.Dims.AddRange(t.Dims);
        return wide;
    }

    /// <summary>Integer values of an initializer or Constant node (axes, pads, shapes given as inputs).</summary>
    static long[]? ConstantInts(GraphProto g, string name, ModelFile folder)
    {
        if (g.Initializer.FirstOrDefault(t => t.Name == name) is { } init && !DataTypes.IsFloat(init.DataType)) return init.ReadInt64s(folder);
        var node = g.Node.FirstOrDefault(n => n.OpType == "Constant" && n.Output.Count > 0 && n.Output[0] == name);
        return node?.ConstantValue() is { } t && !DataTypes.IsFloat(t.DataType) ? t.ReadInt64s(folder) : null;
    }
}
