using Onnx;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Tests.Autodiff;

/// <summary>
/// One-op models for gradient checks: float inputs (random normal, seeded) and constant integer inputs (axes, shapes,
/// indices) written as initializers. Describe a case in one line and call <see cref="Check"/>.
/// </summary>
public sealed class NodeModel
{
    public string Op { get; init; } = "";
    /// <summary>The op's domain ("" = ai.onnx); another domain is imported at version 1 (ai.onnx.ml ops).</summary>
    public string Domain { get; init; } = "";
    /// <summary>Float inputs in order: name and shape. A null entry is an omitted optional input.</summary>
    public (string Name, long[] Shape)?[] Inputs { get; init; } = [];
    /// <summary>Integer constant inputs by position (e.g. axes, pads); or float constants when <see cref="FloatConsts"/> says so.</summary>
    public Dictionary<int, long[]> IntConsts { get; init; } = [];
    /// <summary>Float constant inputs by position (not differentiated), e.g. Clip bounds, Resize scales.</summary>
    public Dictionary<int, float[]> FloatConsts { get; init; } = [];
    /// <summary>Integer data inputs (indices) by position, fed as int64 arrays: name, shape, values.</summary>
    public Dictionary<int, (long[] Shape, long[] Values)> IndexInputs { get; init; } = [];
    /// <summary>Boolean data inputs (conditions, masks) by position: shape, values.</summary>
    public Dictionary<int, (long[] Shape, bool[] Values)> BoolInputs { get; init; } = [];
    public (string Name, object Value)[] Attrs { get; init; } = [];
    public int Outputs { get; init; } = 1;
    public long Opset { get; init; } = 17;
    public bool Double { get; init; }
    public int Seed { get; init; } = 7;
    /// <summary>Input values (by float input name); default random normal.</summary>
    public Dictionary<string, float[]> Values { get; init; } = [];

    public (ModelProto Model, Dictionary<string, NdArray> Feeds, List<string> Wrt) Build()
    {
        var rng = new Random(Seed);
        var g = new GraphProto { Name = "node_" + Op };
        var node = new NodeProto { OpType = Op, Name = Op + "_0", Domain = Domain };
        var feeds = new Dictionary<string, NdArray>();
        var wrt = new List<string>();
        int count = Math.Max(Inputs.Length, Math.Max(IntConsts.Keys.DefaultIfEmpty(-1).Max(), Math.Max(FloatConsts.Keys.DefaultIfEmpty(-1).Max(), Math.Max(IndexInputs.Keys.DefaultIfEmpty(-1).Max(), BoolInputs.Keys.DefaultIfEmpty(-1).Max()))) + 1);
        int elem = Double ? DataTypes.Double : DataTypes.Float;
        for (int i = 0; i < count; i++)
        {
            if (IntConsts.TryGetValue(i, out var ints))
            {
                var name = $"const{i}";
                g.Initializer.Add(new TensorProto { Name = name, DataType = DataTypes.Int64, Dims = { ints.Length }, Int64Data = { ints } });
                node.Input.Add(name);
            }
            else if (FloatConsts.TryGetValue(i, out var fl))
            {
                var name = $"fconst{i}";
                var t = new TensorProto { Name = name, DataType = elem, Dims = { fl.Length } };
                if (Double) t.DoubleData.AddRange(fl.Select(f => (double)f)); else t.FloatData.AddRange(fl);
                g.Initializer.Add(t);
                node.Input.Add(name);
            }
            else if (IndexInputs.TryGetValue(i, out var idx))
            {
                var name = $"index{i}";
                g.Input.Add(Input(name, DataTypes.Int64, idx.Shape));
                feeds[name] = NdArray.FromInt64(idx.Values, idx.Shape);
                node.Input.Add(name);
            }
            else if (BoolInputs.TryGetValue(i, out var cond))
            {
                var name = $"bool{i}";
                g.Input.Add(Input(name, DataTypes.Bool, cond.Shape));
                feeds[name] = NdArray.FromBool(cond.Values, cond.Shape);
                node.Input.Add(name);
            }
            else if (i < Inputs.Length && Inputs[i] is { } inp)
            {
                g.Input.Add(Input(inp.Name, elem, inp.Shape));
                long n = inp.Shape.Aggregate(1L, (a, d) => a * d);
                var values = Values.TryGetValue(inp.Name, out var v) ? v : Enumerable.Range(0, (int)n).Select(_ => (float)Normal(rng)).ToArray();
                feeds[inp.Name] = Double ? NdArray.FromDouble(values.Select(x => (double)x).ToArray(), inp.Shape) : NdArray.FromFloat(values, inp.Shape);
                node.Input.Add(inp.Name);
                if (!wrt.Contains(inp.Name)) wrt.Add(inp.Name);
            }
            else node.Input.Add("");
        }
        for (int o = 0; o < Outputs; o++) { node.Output.Add($"y{o}"); g.Output.Add(new global::Onnx.ValueInfoProto { Name = $"y{o}" }); }
        foreach (var (name, value) in Attrs) node.Attribute.Add(Attributes.Make(name, value));
        g.Node.Add(node);
        var model = new ModelProto { IrVersion = 8, Graph = g, OpsetImport = { new OperatorSetIdProto { Domain = "", Version = Opset } } };
        if (Domain.Length > 0) model.OpsetImport.Add(new OperatorSetIdProto { Domain = Domain, Version = 1 });
        return (model, feeds, wrt);
    }

    /// <summary>Builds the model and checks the gradient of every output against finite differences.</summary>
    /// <param name="freezeDecisions">Check the artifact with frozen decisions instead, and that its gradient at the
    /// reference equals the plain one.</param>
    public void Check(bool freezeDecisions = false)
    {
        var (model, feeds, wrt) = Build();
        for (int o = 0; o < Outputs; o++)
        {
            var r = GradCheck.Check(model, feeds, wrt, $"y{o}", Seed, freezeDecisions: freezeDecisions);
            Assert.True(r.MaxRelError <= GradCheck.Tolerance(Double), $"{Op} output y{o}: relative error {r.MaxRelError:E2} ({r.Detail})");
            Assert.True(r.FrozenGap <= 1e-6, $"{Op} output y{o}: frozen gradient differs from the plain one by {r.FrozenGap:E2}");
        }
    }

    static global::Onnx.ValueInfoProto Input(string name, int type, long[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new global::Onnx.ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = type, Shape = shape } } };
    }

    static double Normal(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
}
