using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Tests.Corpus;

namespace OnnxUnlearn.Tests.Onnx;

/// <summary>
/// Each upgrade rule on small models: where ONNX Runtime still runs the old opset, the upgraded model must give exactly
/// the original's outputs; where it does not (opset 6 broadcasting, PRelu), outputs are checked against values computed
/// here. Inputs declared without a shape exercise the forms built at run time.
/// </summary>
public class OpsetUpgradeTests
{
    // ---- model building ----

    static NodeProto Node(string op, string[] inputs, string[] outputs, params (string Name, object Value)[] attrs)
    {
        var n = new NodeProto { OpType = op, Input = { inputs }, Output = { outputs } };
        foreach (var (name, value) in attrs) n.Attribute.Add(Attributes.Make(name, value));
        return n;
    }

    /// <summary>A graph input; a null shape leaves its rank unknown.</summary>
    static global::Onnx.ValueInfoProto In(string name, long[]? shape, int type = DataTypes.Float)
    {
        var t = new TypeProto.Types.Tensor { ElemType = type };
        if (shape is not null)
        {
            t.Shape = new TensorShapeProto();
            foreach (var d in shape) t.Shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        }
        return new global::Onnx.ValueInfoProto { Name = name, Type = new TypeProto { TensorType = t } };
    }

    static ModelProto Model(long opset, IEnumerable<NodeProto> nodes, IEnumerable<global::Onnx.ValueInfoProto> inputs, string[] outputs, params TensorProto[] inits)
    {
        var g = new GraphProto { Name = "g", Node = { nodes }, Input = { inputs }, Initializer = { inits } };
        foreach (var o in outputs) g.Output.Add(new global::Onnx.ValueInfoProto { Name = o });
        return new ModelProto { IrVersion = 4, Graph = g, OpsetImport = { new OperatorSetIdProto { Domain = "", Version = opset } } };
    }

    static TensorProto Floats(string name, float[] values, params long[] dims) => new() { Name = name, DataType = DataTypes.Float, Dims = { dims }, FloatData = { values } };
    static TensorProto Longs(string name, long[] values, params long[] dims) => new() { Name = name, DataType = DataTypes.Int64, Dims = { dims }, Int64Data = { values } };

    static float[] Random(long n, int seed = 3) { var r = new Random(seed); return Enumerable.Range(0, (int)n).Select(_ => (float)(r.NextDouble() * 4 - 2)).ToArray(); }
    static long Count(long[] shape) => shape.Aggregate(1L, (a, d) => a * d);

    sealed class Feeds : Dictionary<string, (Array Data, long[] Shape)>
    {
        public Feeds Float(string name, params long[] shape) { this[name] = (Random(Count(shape), Count + 3), shape); return this; }
        public Feeds Tensor<T>(string name, T[] data, params long[] shape) { this[name] = (data, shape); return this; }
    }

    static List<(long[] Shape, double[] Data)> Run(ModelProto m, Feeds feeds)
    {
        var values = new Dictionary<string, OrtValue>();
        foreach (var (name, (data, shape)) in feeds)
            values[name] = data switch
            {
                float[] f => OrtValue.CreateTensorValueFromMemory(f, shape),
                double[] d => OrtValue.CreateTensorValueFromMemory(d, shape),
                long[] l => OrtValue.CreateTensorValueFromMemory(l, shape),
                bool[] b => OrtValue.CreateTensorValueFromMemory(b, shape),
                _ => throw new ArgumentException(data.GetType().Name),
            };
        try
        {
            var results = CorpusRunner.Run(m, values);
            var list = results.Select(r =>
            {
                var info = r.GetTensorTypeAndShape();
                double[] data = info.ElementDataType switch
                {
                    TensorElementType.Float => r.GetTensorDataAsSpan<float>().ToArray().Select(v => (double)v).ToArray(),
                    TensorElementType.Double => r.GetTensorDataAsSpan<double>().ToArray(),
                    TensorElementType.Int64 => r.GetTensorDataAsSpan<long>().ToArray().Select(v => (double)v).ToArray(),
                    TensorElementType.Bool => r.GetTensorDataAsSpan<bool>().ToArray().Select(v => v ? 1.0 : 0.0).ToArray(),
                    var t => throw new ArgumentException(t.ToString()),
                };
                return (info.Shape, data);
            }).ToList();
            foreach (var r in results) r.Dispose();
            return list;
        }
        finally { foreach (var v in values.Values) v.Dispose(); }
    }

    static ModelProto Upgrade(ModelProto model)
    {
        var before = model.ToByteArray();
        var up = OpsetUpgrade.Apply(model);
        Assert.Equal(before, model.ToByteArray());
        Assert.Equal(OpsetUpgrade.MinOpset, up.OpsetImport.Single(o => o.Domain == "").Version);
        Assert.True(up.IrVersion >= OpsetUpgrade.MinIrVersion);
        return up;
    }

    static void AssertOutputs(List<(long[] Shape, double[] Data)> expected, List<(long[] Shape, double[] Data)> actual)
    {
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++)
        {
            Assert.Equal(expected[i].Shape, actual[i].Shape);
            for (int k = 0; k < expected[i].Data.Length; k++)
                Assert.True(Math.Abs(expected[i].Data[k] - actual[i].Data[k]) <= 1e-6 * (1 + Math.Abs(expected[i].Data[k])),
                    $"output {i} element {k}: {actual[i].Data[k]}, expected {expected[i].Data[k]}");
        }
    }

    /// <summary>The upgraded model gives exactly what ONNX Runtime gives for the original.</summary>
    static ModelProto AssertSameAsOriginal(ModelProto model, Feeds feeds)
    {
        var up = Upgrade(model);
        AssertOutputs(Run(model, feeds), Run(up, feeds));
        return up;
    }

    static long[]? Maybe(bool known, params long[] shape) => known ? shape : null;

    // ---- rules checked against ONNX Runtime running the original ----

    [Theory]
    [InlineData("Softmax", 0, true)] [InlineData("Softmax", 1, true)] [InlineData("Softmax", 2, true)] [InlineData("Softmax", -1, true)]
    [InlineData("Softmax", -2, true)] [InlineData("Softmax", 1, false)] [InlineData("Softmax", 2, false)] [InlineData("Softmax", -1, false)]
    [InlineData("LogSoftmax", 1, true)] [InlineData("LogSoftmax", 2, false)] [InlineData("Hardmax", 1, true)] [InlineData("Hardmax", 2, true)]
    public void SoftmaxFamilyBefore13(string op, long axis, bool rankKnown)
    {
        var m = Model(11, [Node(op, ["x"], ["y"], ("axis", axis))], [In("x", Maybe(rankKnown, 2, 3, 4))], ["y"]);
        var up = AssertSameAsOriginal(m, new Feeds().Float("x", 2, 3, 4));
        bool lastAxis = rankKnown ? axis is 2 or -1 : axis == -1;
        Assert.Equal(lastAxis ? 1 : 4, up.Graph.Node.Count(n => n.OpType is "Flatten" or "Reshape" or "Shape" || n.OpType == op));
    }

    [Fact]
    public void SoftmaxDefaultAxisAtOpset1() =>
        AssertSameAsOriginal(Model(1, [Node("Softmax", ["x"], ["y"])], [In("x", [2, 3, 4])], ["y"]), new Feeds().Float("x", 2, 3, 4));

    [Theory]
    [InlineData(true, true)] [InlineData(true, false)] [InlineData(false, true)]
    public void ClipBoundsBecomeInputs(bool min, bool max)
    {
        const int type = DataTypes.Float;
        var attrs = new List<(string, object)>();
        if (min) attrs.Add(("min", -0.5f));
        if (max) attrs.Add(("max", 0.7f));
        var m = Model(6, [Node("Clip", ["x"], ["y"], [.. attrs])], [In("x", [3, 4], type)], ["y"]);
        var up = AssertSameAsOriginal(m, new Feeds().Float("x", 3, 4));
        var clip = up.Graph.Node.Single(n => n.OpType == "Clip");
        Assert.Equal(max ? 3 : 2, clip.Input.Count);
        Assert.Equal(min, clip.Input[1].Length > 0);
        Assert.All(up.Graph.Initializer, t => Assert.Equal(type, t.DataType));
    }

    [Fact]
    public void ClipBoundsTakeTheInputType()
    {
        // ONNX Runtime has no float64 Clip-6: checked against values computed here.
        var m = Model(6, [Node("Clip", ["x"], ["y"], ("min", -0.5f), ("max", 0.7f))], [In("x", [3, 4], DataTypes.Double)], ["y"]);
        var x = Random(12).Select(v => (double)v).ToArray();
        var up = Upgrade(m);
        Assert.All(up.Graph.Initializer, t => Assert.Equal(DataTypes.Double, t.DataType));
        AssertOutputs([([3, 4], x.Select(v => Math.Clamp(v, -0.5, (double)0.7f)).ToArray())], Run(up, new Feeds().Tensor("x", x, 3, 4)));
    }

    [Fact]
    public void ClipOfUnknownTypeCastsItsBounds()
    {
        // EyeLike's output type is not inferred: the bounds go through CastLike.
        var m = Model(9, [Node("EyeLike", ["x"], ["e"]), Node("Clip", ["e"], ["y"], ("min", 0.25f), ("max", 0.5f))], [In("x", [3, 3])], ["y"]);
        var up = AssertSameAsOriginal(m, new Feeds().Float("x", 3, 3));
        Assert.Equal(2, up.Graph.Node.Count(n => n.OpType == "CastLike"));
    }

    [Theory]
    [InlineData("constant", 1.5f)] [InlineData("constant", 0f)] [InlineData("reflect", 0f)] [InlineData("edge", 0f)]
    public void PadAttributesBecomeInputs(string mode, float value) =>
        AssertSameAsOriginal(Model(2, [Node("Pad", ["x"], ["y"], ("mode", mode), ("pads", new long[] { 0, 1, 2, 0, 2, 1 }), ("value", value))], [In("x", [2, 3, 4])], ["y"]),
            new Feeds().Float("x", 2, 3, 4));

    [Theory]
    [InlineData(true)] [InlineData(false)]
    public void SliceAttributesBecomeInputs(bool axes)
    {
        var attrs = new List<(string, object)> { ("starts", new long[] { 1, 0 }), ("ends", new long[] { 3, -1 }) };
        if (axes) attrs.Add(("axes", new long[] { 2, 0 }));
        AssertSameAsOriginal(Model(1, [Node("Slice", ["x"], ["y"], [.. attrs])], [In("x", [4, 3, 5])], ["y"]), new Feeds().Float("x", 4, 3, 5));
    }

    [Fact]
    public void TopKAttributeBecomesInput() =>
        AssertSameAsOriginal(Model(1, [Node("TopK", ["x"], ["v", "i"], ("k", 2L), ("axis", 1L))], [In("x", [3, 5])], ["v", "i"]), new Feeds().Float("x", 3, 5));

    [Theory]
    [InlineData("Squeeze", true)] [InlineData("Squeeze", false)] [InlineData("Unsqueeze", true)]
    public void SqueezeAxesBecomeInput(string op, bool axes)
    {
        long[] shape = op == "Squeeze" ? [1, 3, 1, 2] : [3, 2];
        var m = axes ? Model(11, [Node(op, ["x"], ["y"], ("axes", op == "Squeeze" ? new long[] { 0, -2 } : [0, -1]))], [In("x", shape)], ["y"])
            : Model(11, [Node(op, ["x"], ["y"])], [In("x", shape)], ["y"]);
        AssertSameAsOriginal(m, new Feeds().Float("x", shape));
    }

    [Theory]
    [InlineData(true, 0L)] [InlineData(true, 1L)] [InlineData(false, 0L)] [InlineData(false, 1L)]
    public void ReduceSumAxesBecomeInput(bool axes, long keepdims)
    {
        var n = axes ? Node("ReduceSum", ["x"], ["y"], ("axes", new long[] { 0, 2 }), ("keepdims", keepdims)) : Node("ReduceSum", ["x"], ["y"], ("keepdims", keepdims));
        AssertSameAsOriginal(Model(11, [n, Node("Identity", ["y"], ["z"])], [In("x", [2, 3, 4])], ["z"]), new Feeds().Float("x", 2, 3, 4));
    }

    [Theory]
    [InlineData(true)] [InlineData(false)]
    public void SplitAttributeBecomesInput(bool split)
    {
        var n = split ? Node("Split", ["x"], ["a", "b"], ("axis", 1L), ("split", new long[] { 1, 3 })) : Node("Split", ["x"], ["a", "b"], ("axis", 1L));
        AssertSameAsOriginal(Model(2, [n], [In("x", [2, 4])], ["a", "b"]), new Feeds().Float("x", 2, 4));
    }

    [Fact]
    public void ReshapeShapeAttributeBecomesInput() =>
        AssertSameAsOriginal(Model(4, [Node("Reshape", ["x"], ["y"], ("shape", new long[] { 3, -1 }))], [In("x", [2, 3, 2])], ["y"]), new Feeds().Float("x", 2, 3, 2));

    [Theory]
    [InlineData("nearest", new[] { 1f, 1f, 2f, 3f })] [InlineData("linear", new[] { 1f, 1f, 2f, 2f })] [InlineData("nearest", new[] { 1f, 1f, 1.5f, 2.5f })]
    public void UpsampleBecomesResize(string mode, float[] scales)
    {
        var feeds = new Feeds().Float("x", 1, 2, 3, 4);
        var up = AssertSameAsOriginal(Model(7, [Node("Upsample", ["x"], ["y"], ("mode", mode), ("scales", scales))], [In("x", [1, 2, 3, 4])], ["y"]), feeds);
        Assert.Equal("Resize", up.Graph.Node.Single().OpType);
        AssertSameAsOriginal(Model(9, [Node("Upsample", ["x", "s"], ["y"], ("mode", mode))], [In("x", [1, 2, 3, 4])], ["y"], Floats("s", scales, 4)), feeds);
        // Scales fed at run time.
        AssertSameAsOriginal(Model(9, [Node("Upsample", ["x", "s"], ["y"], ("mode", mode))], [In("x", [1, 2, 3, 4]), In("s", [4])], ["y"]),
            new Feeds().Float("x", 1, 2, 3, 4).Tensor("s", scales, 4));
    }

    [Theory]
    [InlineData("nearest", new[] { 1f, 1f, 0.5f, 0.5f })] [InlineData("nearest", new[] { 1f, 1f, 0.6f, 0.75f })] [InlineData("nearest", new[] { 1f, 1f, 2f, 3f })]
    [InlineData("nearest", new[] { 1f, 1f, 0.6f, 1.7f })] [InlineData("nearest", new[] { 1f, 1f, 2.5f, 0.4f })] [InlineData("linear", new[] { 1f, 1f, 0.5f, 2f })]
    [InlineData("linear", new[] { 1f, 1f, 1.5f, 0.6f })]
    public void Resize10MatchesOnnxRuntime(string mode, float[] scales)
    {
        var feeds = new Feeds().Float("x", 1, 2, 5, 7);
        AssertSameAsOriginal(Model(10, [Node("Resize", ["x", "s"], ["y"], ("mode", mode))], [In("x", [1, 2, 5, 7])], ["y"], Floats("s", scales, 4)), feeds);
    }

    [Fact]
    public void ScatterBecomesScatterElements() =>
        AssertSameAsOriginal(Model(9, [Node("Scatter", ["x", "i", "u"], ["y"], ("axis", 1L))], [In("x", [3, 4]), In("i", [3, 2], DataTypes.Int64), In("u", [3, 2])], ["y"]),
            new Feeds().Float("x", 3, 4).Tensor("i", new long[] { 0, 3, 1, 2, 2, 0 }, 3, 2).Float("u", 3, 2));

    [Theory]
    [InlineData(7)] [InlineData(10)] [InlineData(11)]
    public void DropoutBecomesIdentity(long opset)
    {
        var m = Model(opset, [Node("Dropout", ["x"], ["y", "mask"], ("ratio", 0.3f))], [In("x", [3, 4])], ["y", "mask"]);
        var up = AssertSameAsOriginal(m, new Feeds().Float("x", 3, 4));
        Assert.DoesNotContain(up.Graph.Node, n => n.OpType == "Dropout");
    }

    [Fact]
    public void BatchNormalizationOpset7DropsSpatial() =>
        AssertSameAsOriginal(Model(7, [Node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], ("spatial", 1L), ("epsilon", 1e-3f))], [In("x", [2, 3, 4])], ["y"],
            Floats("s", [1, 2, 3], 3), Floats("b", [0, 1, -1], 3), Floats("m", [0.1f, 0.2f, 0.3f], 3), Floats("v", [1, 2, 0.5f], 3)), new Feeds().Float("x", 2, 3, 4));

    [Theory]
    [InlineData(false)] [InlineData(true)]
    public void Scan8RunsOverTheBatch(bool reverse)
    {
        // Body: state s (2), scan input x (2) → s + x, and the running sum as scan output.
        var body = new GraphProto
        {
            Name = "body",
            Node = { Node("Add", ["s_in", "x_in"], ["s_out"]), Node("Identity", ["s_out"], ["y_out"]) },
            Input = { In("s_in", [2]), In("x_in", [2]) },
            Output = { In("s_out", [2]), In("y_out", [2]) },
        };
        var scan = Node("Scan", ["", "s", "x"], ["s_final", "ys"], ("num_scan_inputs", 1L));
        scan.Attribute.Add(new AttributeProto { Name = "body", Type = AttributeProto.Types.AttributeType.Graph, G = body });
        if (reverse) scan.Attribute.Add(Attributes.Make("directions", new long[] { 1 }));
        var m = Model(8, [scan], [In("s", [3, 2]), In("x", [3, 4, 2])], ["s_final", "ys"]);
        AssertSameAsOriginal(m, new Feeds().Float("s", 3, 2).Float("x", 3, 4, 2));
    }

    [Theory]
    [InlineData(true)] [InlineData(false)]
    public void SubgraphsAreUpgraded(bool cond)
    {
        // then: Squeeze with axes attribute; else: ReduceSum with axes attribute and Softmax on the outer value's rank.
        var thenBranch = new GraphProto { Name = "then", Node = { Node("Squeeze", ["x"], ["t"], ("axes", new long[] { 0 })) }, Output = { In("t", [3]) } };
        var elseBranch = new GraphProto
        {
            Name = "else",
            Node = { Node("Softmax", ["x"], ["sm"], ("axis", 0L)), Node("ReduceSum", ["sm"], ["e"], ("axes", new long[] { 0 }), ("keepdims", 0L)) },
            Output = { In("e", [3]) },
        };
        var iff = new NodeProto { OpType = "If", Input = { "c" }, Output = { "y" } };
        iff.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = thenBranch });
        iff.Attribute.Add(new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = elseBranch });
        var m = Model(11, [iff], [In("c", [], DataTypes.Bool), In("x", [1, 3])], ["y"]);
        var up = AssertSameAsOriginal(m, new Feeds().Tensor("c", new[] { cond }).Float("x", 1, 3));
        Assert.Equal(2, up.Graph.Node.Single().Attribute.Where(a => a.G is not null).Sum(a => a.G.Node.Count(n => n.Input.Count == 2 && n.OpType is "Squeeze" or "ReduceSum")));
    }

    // ---- rules ONNX Runtime cannot run the original of: checked against values computed here ----

    [Theory]
    [InlineData(1, true)] [InlineData(1, false)] [InlineData(-3, true)] [InlineData(-3, false)] [InlineData(2, false)]
    public void LegacyBroadcastWithAxis(long axis, bool ranksKnown)
    {
        // A [2,3,4,5], B laid onto A from `axis`: [3,4] at axis 1 (or -3), [4,5] at axis 2.
        long[] b = axis == 2 ? [4, 5] : [3, 4];
        var m = Model(6, [Node("Add", ["a", "b"], ["y"], ("broadcast", 1L), ("axis", axis))], [In("a", Maybe(ranksKnown, 2, 3, 4, 5)), In("b", Maybe(ranksKnown, b))], ["y"]);
        var feeds = new Feeds().Float("a", 2, 3, 4, 5).Float("b", b);
        var (av, bv) = ((float[])feeds["a"].Data, (float[])feeds["b"].Data);
        var expected = new double[120];
        for (int n = 0; n < 2; n++) for (int c = 0; c < 3; c++) for (int h = 0; h < 4; h++) for (int w = 0; w < 5; w++)
        {
            int i = ((n * 3 + c) * 4 + h) * 5 + w;
            expected[i] = av[i] + (axis == 2 ? bv[h * 5 + w] : bv[c * 4 + h]);
        }
        var actual = Run(Upgrade(m), feeds);
        AssertOutputs([([2, 3, 4, 5], expected.Select(v => (double)(float)v).ToArray())], actual);
    }

    [Theory]
    [InlineData(true)] [InlineData(false)]
    public void LegacyPReluSlopeFollowsChannels(bool rankKnown)
    {
        var m = Model(6, [Node("PRelu", ["x", "s"], ["y"])], [In("x", Maybe(rankKnown, 2, 3, 4)), In("s", Maybe(rankKnown, 3))], ["y"]);
        var feeds = new Feeds().Float("x", 2, 3, 4).Tensor("s", new[] { 0.1f, 0.2f, 0.3f }, 3);
        var x = (float[])feeds["x"].Data;
        var expected = x.Select((v, i) => (double)(v > 0 ? v : v * (0.1f * (1 + i / 4 % 3)))).ToArray();
        AssertOutputs([([2, 3, 4], expected)], Run(Upgrade(m), feeds));
    }

    [Fact]
    public void ImageScalerBecomesMulAdd()
    {
        var m = Model(8, [Node("ImageScaler", ["x"], ["y"], ("scale", 2f), ("bias", new[] { 1f, -1f }))], [In("x", [1, 2, 2, 2])], ["y"]);
        var feeds = new Feeds().Float("x", 1, 2, 2, 2);
        var x = (float[])feeds["x"].Data;
        AssertOutputs([([1, 2, 2, 2], x.Select((v, i) => (double)(2 * v + (i < 4 ? 1 : -1))).ToArray())], Run(Upgrade(m), feeds));
    }

    [Fact]
    public void CastTargetNamedByString()
    {
        var n = new NodeProto { OpType = "Cast", Input = { "x" }, Output = { "y" } };
        n.Attribute.Add(new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8("DOUBLE") });
        var feeds = new Feeds().Float("x", 2, 2);
        AssertOutputs([([2, 2], ((float[])feeds["x"].Data).Select(v => (double)v).ToArray())], Run(Upgrade(Model(1, [n], [In("x", [2, 2])], ["y"])), feeds));
    }

    [Fact]
    public void LpPoolOrderBecomesAnInteger()
    {
        var m = Model(1, [Node("GlobalLpPool", ["x"], ["y"], ("p", 2f))], [In("x", [1, 2, 3])], ["y"]);
        var feeds = new Feeds().Float("x", 1, 2, 3);
        var x = (float[])feeds["x"].Data;
        double Norm(int c) => Math.Sqrt(x.Skip(3 * c).Take(3).Sum(v => (double)v * v));
        AssertOutputs([([1, 2, 1], [Norm(0), Norm(1)])], Run(Upgrade(m), feeds));
    }

    // ---- refusals and bookkeeping ----

    [Fact]
    public void RefusesWhatHasNoOpset15Form()
    {
        Assert.Throws<UserError>(() => OpsetUpgrade.Apply(Model(6, [Node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], ("spatial", 0L))], [In("x", [2, 3])], ["y"])));
        Assert.Throws<UserError>(() => OpsetUpgrade.Apply(Model(7, [Node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "mean"])], [In("x", [2, 3])], ["y", "mean"])));
        Assert.Throws<UserError>(() => OpsetUpgrade.Apply(Model(8, [Node("Scan", ["lens", "s", "x"], ["y"], ("num_scan_inputs", 1L))], [In("x", [2, 3])], ["y"])));
        Assert.Throws<UserError>(() => OpsetUpgrade.Apply(Model(9, [Node("ConstantFill", ["x"], ["y"])], [In("x", [2])], ["y"])));
    }

    [Fact]
    public void OtherDomainsAndNewerModelsAreLeftAlone()
    {
        var m = Model(9, [Node("Softmax", ["x"], ["y"], ("axis", 1L))], [In("x", [2, 3])], ["y"]);
        m.OpsetImport.Add(new OperatorSetIdProto { Domain = "ai.onnx.ml", Version = 2 });
        var up = Upgrade(m);
        Assert.Equal(2, up.OpsetImport.Single(o => o.Domain == "ai.onnx.ml").Version);
        Assert.Equal(8, up.IrVersion);
        var recent = Model(17, [Node("Relu", ["x"], ["y"])], [In("x", [2])], ["y"]);
        Assert.Equal(recent, OpsetUpgrade.Apply(recent));
        // Without a default-domain import, one is added for the gradient nodes.
        var ml = Model(1, [Node("Normalizer", ["x"], ["y"])], [In("x", [2])], ["y"]);
        ml.OpsetImport[0].Domain = "ai.onnx.ml";
        ml.Graph.Node[0].Domain = "ai.onnx.ml";
        var mlUp = OpsetUpgrade.Apply(ml);
        Assert.Equal(OpsetUpgrade.MinOpset, mlUp.OpsetImport.Single(o => o.Domain == "").Version);
        Assert.Equal(ml.Graph, mlUp.Graph);
    }

    [Fact]
    public void NewConstantsHaveFreshNames()
    {
        // A value already named like the upgrade's constants must not clash.
        var m = Model(11, [Node("Unsqueeze", ["x"], ["const__up0"], ("axes", new long[] { 0 })), Node("Unsqueeze", ["const__up0"], ["y"], ("axes", new long[] { 0 }))],
            [In("x", [2])], ["y"]);
        var up = AssertSameAsOriginal(m, new Feeds().Float("x", 2));
        var names = up.Graph.Initializer.Select(t => t.Name).Concat(up.Graph.Node.SelectMany(n => n.Output)).ToList();
        Assert.Equal(names.Count, names.Distinct().Count());
    }
}
