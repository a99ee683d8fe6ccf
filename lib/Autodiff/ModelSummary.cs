using Onnx;
using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Autodiff;

/// <summary>What <c>inspect</c> reports about a model; serialised as-is for <c>--json</c> (a registry hook parses it).</summary>
public sealed record ModelSummary(
    string Path, long IrVersion, string Producer, IReadOnlyDictionary<string, long> Opsets,
    IReadOnlyList<ModelSummary.Value> Inputs, IReadOnlyList<ModelSummary.Value> Outputs,
    IReadOnlyDictionary<string, int> Ops, IReadOnlyList<ModelSummary.Tensor> Parameters,
    long TrainableElements, IReadOnlyList<ModelSummary.MissingRule> OpsWithoutGradient)
{
    /// <param name="Samples">Where a data input carries its samples: "axis 0", "axis 1" (a recurrent state [2, batch, H]) or "given once"; null for outputs.</param>
    public sealed record Value(string Name, string Type, IReadOnlyList<string> Shape, string? Samples = null);
    /// <param name="Branch">The If branch holding the tensor ("If 'node' then_branch"); null for the top-level graph.</param>
    public sealed record Tensor(string Name, string Type, IReadOnlyList<long> Shape, long Elements, string Storage, bool Trainable, string? Reason, string? Branch = null);
    public sealed record MissingRule(string Op, string Node, long Opset);

    /// <param name="file">The model, with If branches inlined where the data decided them (<c>Runtime.Inlining</c>).</param>
    /// <param name="samples">Each data input's sample axis, as <c>Runtime.SampleAxes.Describe</c> gives it.</param>
    public static ModelSummary Of(ModelFile file, string? output = null, Func<string, string>? samples = null)
    {
        var g = file.Graph;
        var inits = g.Initializer.Select(t => t.Name).ToHashSet();
        var parameters = TrainableParameters.Discover(file, output);
        // Dims come from the file: a damaged one may declare counts that overflow (refused, naming the tensor).
        long trainable = 0;
        foreach (var p in parameters)
        {
            long n = Data.NdArray.CheckedElementCount(p.Shape, $"tensor {UserError.Quote(p.Name)} of '{file.Path}'");
            if (p.Trainable && (trainable = n <= long.MaxValue - trainable ? trainable + n : -1) < 0)
                throw new UserError($"the trainable tensors of '{file.Path}' hold more elements than an int64 can count (tensor {UserError.Quote(p.Name)} " +
                    $"has shape {Data.NdArray.FormatShape(p.Shape)}); the model file is damaged: re-export it.");
        }
        var tensors = parameters.Select(p => new Tensor(p.Name, DataTypes.Name(p.DataType), p.Shape, p.Elements,
            p.Storage switch { ParameterStorage.Constant => "constant-node", ParameterStorage.Attribute => "node-attribute", _ => p.External ? "external" : "embedded" },
            p.Trainable, p.WhyNot, p.Branch)).ToList();
        // Linear ai.onnx.ml nodes and ONNX Runtime's fused ops are lowered to standard ops and recurrent ops unrolled for
        // gradients: they need no rule of their own. A ZipMap only repackages probabilities as maps for callers; no loss is
        // taken through it.
        var missing = g.Node.Where(n => GradientRegistry.Find(n.OpType, n.Domain) is null && !Lowering.Recurrent.Is(n.OpType, n.Domain)
                && !LinearModels.Is(n) && !ZipMap.Is(n) && !Lowering.Contrib.Is(n))
            .Select(n => new MissingRule(Domains.OpName(n.Domain, n.OpType), n.Name.Length > 0 ? n.Name : n.Output.FirstOrDefault() ?? "", OpsetOf(file.Model, n.Domain)))
            .ToList();
        return new ModelSummary(
            file.Path, file.Model.IrVersion,
            (file.Model.ProducerName + " " + file.Model.ProducerVersion).Trim(),
            file.Model.OpsetImport.GroupBy(o => Domains.IsDefault(o.Domain) ? "ai.onnx" : o.Domain).ToDictionary(o => o.Key, o => o.Max(x => x.Version)),
            g.Input.Where(i => !inits.Contains(i.Name)).Select(i => Describe(i) with { Samples = samples?.Invoke(i.Name) }).ToList(),
            g.Output.Select(Describe).ToList(),
            g.Node.GroupBy(n => Domains.OpName(n.Domain, n.OpType)).OrderByDescending(x => x.Count()).ThenBy(x => x.Key).ToDictionary(x => x.Key, x => x.Count()),
            tensors, trainable, missing);
    }

    static long OpsetOf(ModelProto m, string domain) =>
        Domains.IsDefault(domain) ? m.DefaultOpset() : m.OpsetImport.Where(o => o.Domain == domain).Select(o => o.Version).DefaultIfEmpty(0).Max();

    static Value Describe(global::Onnx.ValueInfoProto v)
    {
        var t = v.Type?.TensorType;
        if (t is null) return new Value(v.Name, DataTypes.Describe(v.Type), []);
        var dims = t.Shape?.Dim.Select(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? d.DimValue.ToString()
            : d.DimParam.Length > 0 ? d.DimParam : "?").ToList() ?? [];
        return new Value(v.Name, DataTypes.Name(t.ElemType), dims);
    }
}
