using Microsoft.ML.OnnxRuntime;
using Onnx;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;

namespace OnnxUnlearn.Tests.Autodiff;

/// <summary>Reductions, softmax and normalisation rules against finite differences (one line per case).</summary>
public class NormGradientTests
{
    static readonly long[] X3 = [2, 3, 4];

    public static TheoryData<string, string> ReduceCases()
    {
        var data = new TheoryData<string, string>();
        foreach (var op in new[] { "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp", "ReduceProd", "ReduceLogSum" })
            foreach (var form in new[] { "all", "all-keep0", "attr", "attr-keep0", "attr-neg", "input", "input-keep0", "input-neg-keep0", "input-empty", "input-noop" })
                if (!(op == "ReduceSum" && form.StartsWith("attr"))) // ReduceSum's axes attribute predates opset 13
                    data.Add(op, form);
        return data;
    }

    [Theory, MemberData(nameof(ReduceCases))]
    public void Reduce(string op, string form)
    {
        // Axes as input: ReduceSum from opset 13, the others from 18.
        long inputOpset = op == "ReduceSum" ? 17 : 18;
        NodeModel M(long opset, long keep, Dictionary<int, long[]>? axes = null, params (string, object)[] attrs) => new()
        {
            Op = op, Inputs = [("x", X3)], Opset = opset, IntConsts = axes ?? [], Double = true,
            Attrs = [("keepdims", keep), .. attrs],
            // Products want factors away from 0, log-sums positive sums; the others take the random normal default.
            Values = op == "ReduceProd" ? new() { ["x"] = Enumerable.Range(0, 24).Select(i => (i % 2 == 0 ? 1 : -1) * (0.6f + 0.05f * i)).ToArray() }
                : op == "ReduceLogSum" ? new() { ["x"] = Enumerable.Range(0, 24).Select(i => 0.3f + 0.11f * ((i * 7) % 24)).ToArray() } : [],
        };
        var model = form switch
        {
            "all" => M(17, 1),
            "all-keep0" => M(17, 0),
            "attr" => M(17, 1, null, ("axes", new long[] { 0, 2 })),
            "attr-keep0" => M(17, 0, null, ("axes", new long[] { 1 })),
            "attr-neg" => M(17, 0, null, ("axes", new long[] { -1, 0 })),
            "input" => M(inputOpset, 1, new() { [1] = [0, 2] }),
            "input-keep0" => M(inputOpset, 0, new() { [1] = [1] }),
            "input-neg-keep0" => M(inputOpset, 0, new() { [1] = [-1, -3] }),
            "input-empty" => M(inputOpset, 0, new() { [1] = [] }),
            "input-noop" => M(inputOpset, 0, new() { [1] = [] }, ("noop_with_empty_axes", 1L)),
            _ => throw new ArgumentException(form),
        };
        model.Check();
    }

    [Fact]
    public void ReduceMaxTiesSplitEvenly()
    {
        // Row 0 has its maximum 3 twice, row 1 its maximum 5 three times: each tie gets an equal share of dY.
        var m = new NodeModel { Op = "ReduceMax", Inputs = [("x", [2, 4])], Attrs = [("axes", new long[] { 1 }), ("keepdims", 0L)],
            Values = { ["x"] = [1, 3, 3, 0, 5, 2, 5, 5] } };
        Assert.Equal([0, 0.3f, 0.3f, 0, -0.3f, 0, -0.3f, -0.3f], Gradient(m, [0.6f, -0.9f]), new FloatNear(1e-6f));
        var all = new NodeModel { Op = "ReduceMin", Inputs = [("x", [2, 2])], Attrs = [("keepdims", 0L)], Values = { ["x"] = [-1, 4, -1, 2] } };
        Assert.Equal([0.5f, 0, 0.5f, 0], Gradient(all, [1f]), new FloatNear(1e-6f));
    }

    // ai.onnx.ml Normalizer (ONNX Runtime's forms: MAX divides by the signed maximum, L1 by Σ|x|, L2 by √Σx²), over
    // the last axis of [N, C] or [C]; inputs away from 0 (L1's |x| has a kink there) and, for MAX, a positive maximum.
    [Theory]
    [InlineData("MAX", new long[] { 3, 5 })] [InlineData("MAX", new long[] { 5 })]
    [InlineData("L1", new long[] { 3, 5 })] [InlineData("L1", new long[] { 5 })]
    [InlineData("L2", new long[] { 3, 5 })] [InlineData("L2", new long[] { 5 })]
    [InlineData("MAX", new long[] { 3, 5 }, true)] [InlineData("L1", new long[] { 3, 5 }, true)] // all negative: MAX divides by a negative maximum
    public void Normalizer(string norm, long[] shape, bool negative = false)
    {
        int n = (int)shape.Aggregate(1L, (a, d) => a * d);
        var values = Enumerable.Range(0, n).Select(i => (negative || i % 3 == 1 ? -1 : 1) * (0.3f + 0.17f * ((i * 7) % 11))).ToArray();
        new NodeModel { Op = "Normalizer", Domain = "ai.onnx.ml", Inputs = [("x", shape)], Attrs = [("norm", norm)], Values = { ["x"] = values } }.Check();
    }

    [Theory]
    [InlineData("MAX")] [InlineData("L1")] [InlineData("L2")]
    public void NormalizerCopiesRowsWithAZeroDivisor(string norm)
    {
        // Row 0 normalises (divisor 2 under every norm); row 1's divisor is 0 (MAX: its maximum is 0), so ONNX Runtime copies
        // it and its gradient is dY unchanged.
        var m = new NodeModel { Op = "Normalizer", Domain = "ai.onnx.ml", Inputs = [("x", [2, 2])], Attrs = [("norm", norm)],
            Values = { ["x"] = norm == "MAX" ? [2, 0, -1, 0] : norm == "L1" ? [2, 0, 0, 0] : [2, 0, 0, 0] } };
        var g = Gradient(m, [0.5f, 1f, 3f, -2f]);
        Assert.Equal([3f, -2f], g[2..], new FloatNear(1e-6f));
        // Row 0 = [2, 0]: y = [1, 0]; the second element moves y₂ = x₂/s (s = 2) and leaves s unchanged (L1: subgradient 0
        // at x = 0; L2 and MAX: ∂s/∂x₂ = 0 there).
        Assert.Equal(1f / 2, g[1], 1e-6f);
    }

    [Theory]
    [InlineData("Softmax", new long[] { 3, 4 }, -1)] [InlineData("Softmax", new long[] { 3, 4 }, 1)] [InlineData("Softmax", new long[] { 3, 4 }, 0)]
    [InlineData("Softmax", new long[] { 2, 3, 4 }, 1)] [InlineData("Softmax", new long[] { 2, 3, 4 }, -1)]
    [InlineData("Softmax", new long[] { 2, 3, 2, 4 }, 1)] [InlineData("Softmax", new long[] { 2, 3, 2, 4 }, -1)]
    [InlineData("LogSoftmax", new long[] { 3, 4 }, -1)] [InlineData("LogSoftmax", new long[] { 3, 4 }, 1)] [InlineData("LogSoftmax", new long[] { 3, 4 }, 0)]
    [InlineData("LogSoftmax", new long[] { 2, 3, 4 }, 1)] [InlineData("LogSoftmax", new long[] { 2, 3, 4 }, -1)]
    [InlineData("LogSoftmax", new long[] { 2, 3, 2, 4 }, 1)] [InlineData("LogSoftmax", new long[] { 2, 3, 2, 4 }, -1)]
    public void SoftmaxFamily(string op, long[] shape, long axis)
    {
        new NodeModel { Op = op, Inputs = [("x", shape)], Attrs = [("axis", axis)], Double = true }.Check();
        new NodeModel { Op = op, Inputs = [("x", shape)], Attrs = [("axis", axis)] }.Check();
    }

    [Theory]
    [InlineData("Softmax", false)] [InlineData("Softmax", true)] [InlineData("LogSoftmax", false)] [InlineData("LogSoftmax", true)]
    public void SoftmaxSaturated(string op, bool isDouble) => new NodeModel
    {   // Logits ±30 apart: the softmax is 1 or ~1e-26 per row; the gradient must stay accurate in both regimes.
        Op = op, Inputs = [("x", [3, 4])], Double = isDouble,
        Values = { ["x"] = [30, -30, 0.5f, -29, -30, 30.5f, 29.8f, 1, 0, -0.2f, 30, -30] },
    }.Check();

    [Fact]
    public void SoftmaxDefaultAxis() => new NodeModel { Op = "Softmax", Inputs = [("x", X3)], Double = true }.Check();

    [Theory]
    [InlineData(new long[] { 2, 3, 4, 5 })] [InlineData(new long[] { 4, 3 })] [InlineData(new long[] { 2, 3, 4 })] [InlineData(new long[] { 2, 3, 2, 2, 2 })]
    public void BatchNormalization(long[] shape) => new NodeModel
    {
        Op = "BatchNormalization", Inputs = [("x", shape), ("scale", [3]), ("bias", [3])], Double = true,
        FloatConsts = { [3] = [0.3f, -0.2f, 0.1f], [4] = [0.5f, 1.7f, 0.9f] }, Attrs = [("epsilon", 1e-3f)],
    }.Check();

    [Theory]
    [InlineData(-1, true)] [InlineData(-1, false)] [InlineData(1, true)] [InlineData(1, false)] [InlineData(2, true)] [InlineData(0, true)]
    public void LayerNormalization(long axis, bool bias)
    {
        var tail = X3[(int)GradContext.Axis(axis, 3)..];
        (string, long[])?[] inputs = bias ? [("x", X3), ("scale", tail), ("bias", tail)] : [("x", X3), ("scale", tail)];
        new NodeModel { Op = "LayerNormalization", Inputs = inputs, Attrs = [("axis", axis)], Double = true }.Check();
        new NodeModel { Op = "LayerNormalization", Inputs = inputs, Attrs = [("axis", axis), ("epsilon", 1e-3f)] }.Check();
    }

    [Fact]
    public void LayerNormalizationBroadcastScale() =>
        new NodeModel { Op = "LayerNormalization", Inputs = [("x", X3), ("scale", [1, 4]), ("bias", [4])], Attrs = [("axis", 1L)], Double = true }.Check();

    [Theory]
    [InlineData(new long[] { 2, 3, 4, 5 })] [InlineData(new long[] { 2, 3, 6 })]
    public void InstanceNormalization(long[] shape) => new NodeModel
    {
        Op = "InstanceNormalization", Inputs = [("x", shape), ("scale", [3]), ("bias", [3])], Attrs = [("epsilon", 1e-3f)],
    }.Check();

    [Theory]
    [InlineData(1, -1)] [InlineData(2, -1)] [InlineData(1, 1)] [InlineData(2, 1)] [InlineData(2, 0)]
    public void LpNormalization(long p, long axis) =>
        new NodeModel { Op = "LpNormalization", Inputs = [("x", X3)], Attrs = [("p", p), ("axis", axis)], Double = true }.Check();

    [Theory]
    [InlineData(18, new long[] { 2, 6, 4 }, 3)] [InlineData(18, new long[] { 2, 4, 3, 3 }, 2)]
    [InlineData(21, new long[] { 2, 6, 4 }, 3)] [InlineData(21, new long[] { 2, 4, 3, 3 }, 2)] [InlineData(21, new long[] { 2, 4, 5 }, 1)]
    public void GroupNormalization(long opset, long[] shape, long groups) => new NodeModel
    {
        Op = "GroupNormalization", Opset = opset, Attrs = [("num_groups", groups)],
        Inputs = [("x", shape), ("scale", [opset >= 21 ? shape[1] : groups]), ("bias", [opset >= 21 ? shape[1] : groups])],
    }.Check();

    /// <summary>Layer norm written out in the ops the opset-17 exporters emit, differentiated through the elementwise rules.</summary>
    [Theory]
    [InlineData(17)] [InlineData(18)]
    public void DecomposedLayerNorm(long opset)
    {
        var g = new GraphProto { Name = "decomposed_layernorm" };
        g.Input.Add(Input("x", X3)); g.Input.Add(Input("scale", [4])); g.Input.Add(Input("bias", [4]));
        g.Output.Add(new global::Onnx.ValueInfoProto { Name = "y" });
        g.Initializer.Add(new TensorProto { Name = "two", DataType = DataTypes.Double, DoubleData = { 2.0 } });
        g.Initializer.Add(new TensorProto { Name = "eps", DataType = DataTypes.Double, DoubleData = { 1e-5 } });
        g.Initializer.Add(new TensorProto { Name = "axes", DataType = DataTypes.Int64, Dims = { 1 }, Int64Data = { -1 } });
        void Node(string op, string[] inputs, string output, params (string, object)[] attrs)
        {
            var n = new NodeProto { OpType = op, Name = output + "_node", Input = { inputs }, Output = { output } };
            foreach (var (name, value) in attrs) n.Attribute.Add(Attributes.Make(name, value));
            g.Node.Add(n);
        }
        void Mean(string x, string y)
        {
            if (opset >= 18) Node("ReduceMean", [x, "axes"], y, ("keepdims", 1L));
            else Node("ReduceMean", [x], y, ("axes", new long[] { -1 }), ("keepdims", 1L));
        }
        Mean("x", "mu");
        Node("Sub", ["x", "mu"], "d");
        Node("Pow", ["d", "two"], "d2");
        Mean("d2", "var");
        Node("Add", ["var", "eps"], "ve");
        Node("Sqrt", ["ve"], "sd");
        Node("Div", ["d", "sd"], "xh");
        Node("Mul", ["xh", "scale"], "ys");
        Node("Add", ["ys", "bias"], "y");
        var model = new ModelProto { IrVersion = 8, Graph = g, OpsetImport = { new OperatorSetIdProto { Domain = "", Version = opset } } };
        var rng = new Random(3);
        NdArray Random(long[] s) => NdArray.FromDouble(Enumerable.Range(0, (int)NdArray.ElementCount(s)).Select(_ => rng.NextDouble() * 2 - 1).ToArray(), s);
        var feeds = new Dictionary<string, NdArray> { ["x"] = Random(X3), ["scale"] = Random([4]), ["bias"] = Random([4]) };
        var r = GradCheck.Check(model, feeds, ["x", "scale", "bias"], "y", 3);
        Assert.True(r.MaxRelError <= GradCheck.Tolerance(true), $"decomposed layer norm: relative error {r.MaxRelError:E2} ({r.Detail})");
    }

    [Theory]
    [InlineData(new long[] { 2, 3, 4, 5 })] [InlineData(new long[] { 4, 3 })]
    public void BatchNormalizationTrainingMode(long[] shape)
    {   // Batch statistics; only Y is differentiated (the running mean/var outputs feed no loss).
        var (model, feeds, wrt) = new NodeModel
        {
            Op = "BatchNormalization", Inputs = [("x", shape), ("scale", [3]), ("bias", [3])], Opset = 15, Outputs = 3, Double = true,
            FloatConsts = { [3] = [0.3f, -0.2f, 0.1f], [4] = [0.5f, 1.7f, 0.9f] }, Attrs = [("training_mode", 1L)],
        }.Build();
        var r = GradCheck.Check(model, feeds, wrt, "y0", 7);
        Assert.True(r.MaxRelError <= GradCheck.Tolerance(true), $"relative error {r.MaxRelError:E2} ({r.Detail})");
    }

    [Theory]
    [InlineData(new long[] { 2, 5, 3, 2 }, 3)] [InlineData(new long[] { 1, 4, 3, 2 }, 5)] [InlineData(new long[] { 2, 3, 2, 2 }, 1)]
    public void LRN(long[] shape, long size) => new NodeModel
    {   // α large enough that the window term matters; ONNX Runtime runs only 4-D inputs and odd sizes
        Op = "LRN", Inputs = [("x", shape)], Attrs = [("size", size), ("alpha", 0.5f), ("beta", 0.75f), ("bias", 1.5f)],
    }.Check();

    [Theory]
    [InlineData(null)] [InlineData(new long[] { 1 })] [InlineData(new long[] { 0, 1, 2, 3 })]
    public void MeanVarianceNormalization(long[]? axes)
    {   // float32 only: ONNX Runtime has no float64 kernel
        (string, object)[] attrs = axes is null ? [] : [("axes", axes)];
        new NodeModel { Op = "MeanVarianceNormalization", Inputs = [("x", [2, 3, 2, 2])], Attrs = attrs }.Check();
    }

    static global::Onnx.ValueInfoProto Input(string name, long[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new global::Onnx.ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = DataTypes.Double, Shape = shape } } };
    }

    /// <summary>The generated gradient of Σ w ⊙ y0 with respect to the model's first float input (as GradCheck builds it).</summary>
    static float[] Gradient(NodeModel nm, float[] w)
    {
        var (model, feeds, wrt) = nm.Build();
        foreach (var name in wrt)
        {
            var input = model.Graph.Input.First(i => i.Name == name);
            model.Graph.Input.Remove(input);
            model.Graph.Initializer.Add(TensorFile.ToTensorProto(name, feeds[name]));
        }
        var file = new ModelFile(model, "<gradient>", Path.GetTempPath());
        var all = TrainableParameters.Discover(file, "y0", wrt);
        var forward = OpsetUpgrade.Apply(model);
        var shapes = ShapeProbe.Run(forward, [new Dictionary<string, OrtValue>()]);
        var artifact = TrainingArtifact.Build(file, forward, _ => shapes, all.Where(p => wrt.Contains(p.Name)).ToList(), LossKind.Dot, "y0");
        using var s = new ArtifactSession(artifact, "gradient check");
        var theta = ParameterVector.Read(new ParameterLayout(artifact.Parameters), file);
        using var label = OrtValue.CreateTensorValueFromMemory(w, shapes["y0"]!.Dims);
        var grad = new float[theta.Length];
        s.RunBatch(new Dictionary<string, OrtValue> { [LossHead.LabelInput] = label }, theta, grad);
        return theta.Layout.Of(grad, theta.Layout.IndexOf(wrt[0])).ToArray();
    }

    sealed class FloatNear(float tolerance) : IEqualityComparer<float>
    {
        public bool Equals(float a, float b) => Math.Abs(a - b) <= tolerance;
        public int GetHashCode(float f) => 0;
    }
}
