using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using OnnxUnlearn.Autodiff.Lowering;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;

namespace OnnxUnlearn.Tests.Autodiff;

/// <summary>
/// LSTM, GRU and RNN: the unrolled subgraph (<see cref="Recurrent"/>) against ONNX Runtime's own kernels, then the
/// gradients of every output against finite differences, over the forms exporters write.
/// </summary>
public class RecurrentGradientTests
{
    const long T = 4, N = 3, I = 2, H = 3;

    /// <summary>One recurrent node; X [T,N,I] (layout 0) or [N,T,I] (layout 1). Omitted inputs are left empty.</summary>
    sealed record Case(string Op, string Direction = "forward", bool Bias = true, bool Initial = false, long Layout = 0,
        bool Peepholes = false, bool Double = false, long[]? SequenceLens = null, bool ConstLens = false, (string, object)[]? Attrs = null,
        bool[]? Used = null)
    {
        int Gates => Op switch { "LSTM" => 4, "GRU" => 3, _ => 1 };
        int Dirs => Direction == "bidirectional" ? 2 : 1;
        public int Outputs => Op == "LSTM" ? 3 : 2;
        public bool IsUsed(int o) => Used is null || Used[o];

        public NodeModel Node()
        {
            long[] state = Layout == 0 ? [Dirs, N, H] : [N, Dirs, H];
            var inputs = new List<(string, long[])?>
            {
                ("X", Layout == 0 ? [T, N, I] : [N, T, I]), ("W", [Dirs, Gates * H, I]), ("R", [Dirs, Gates * H, H]),
                Bias ? ("B", [Dirs, 2 * Gates * H]) : null, null, Initial ? ("initial_h", state) : null,
            };
            if (Op == "LSTM") { inputs.Add(Initial ? ("initial_c", state) : null); inputs.Add(Peepholes ? ("P", [Dirs, 3 * H]) : null); }
            while (inputs[^1] is null) inputs.RemoveAt(inputs.Count - 1);
            var attrs = new List<(string, object)> { ("hidden_size", H), ("direction", Direction) };
            if (Layout != 0) attrs.Add(("layout", Layout));
            attrs.AddRange(Attrs ?? []);
            return new NodeModel
            {
                Op = Op, Inputs = [.. inputs], Attrs = [.. attrs], Outputs = Outputs, Double = Double, Opset = 14,
                IntConsts = SequenceLens is { } c && ConstLens ? new() { [4] = c } : [],
                IndexInputs = SequenceLens is { } l && !ConstLens ? new() { [4] = ([N], l) } : [],
            };
        }

        /// <summary>The model, with sequence_lens made int32 (as the spec wants) and unused outputs left empty.</summary>
        public (ModelProto Model, Dictionary<string, NdArray> Feeds, List<string> Wrt) Build()
        {
            var (model, feeds, wrt) = Node().Build();
            var g = model.Graph;
            foreach (var i in g.Input.Where(i => i.Name == "index4")) i.Type.TensorType.ElemType = DataTypes.Int32;
            foreach (var t in g.Initializer.Where(t => t.Name == "const4").ToList())
            {
                var ints = t.Int64Data.Select(v => (int)v).ToArray();
                g.Initializer.Remove(t);
                g.Initializer.Add(new TensorProto { Name = t.Name, DataType = DataTypes.Int32, Dims = { t.Dims }, Int32Data = { ints } });
            }
            for (int o = 0; o < Outputs; o++)
                if (!IsUsed(o)) { g.Node[0].Output[o] = ""; g.Output.Remove(g.Output.First(v => v.Name == $"y{o}")); }
            return (model, feeds, wrt);
        }
    }

    // ---- forward: the unrolled graph computes what ONNX Runtime's kernel computes ----

    /// <summary>
    /// The unrolled node against ONNX Runtime's kernel. That kernel is float32 and layout 0 only: double cases are
    /// compared with it on the same values in float32, layout-1 cases on transposed inputs and outputs.
    /// </summary>
    static void ForwardMatches(Case c)
    {
        var (raw, feeds, _) = c.Build();
        var model = OpsetUpgrade.Apply(raw);
        var shapes = new OnnxUnlearn.Autodiff.TensorShapes(feeds.ToDictionary(kv => kv.Key,
            kv => new OnnxUnlearn.Autodiff.ValueInfo(kv.Value.Type == ElementType.Float64 ? DataTypes.Double : DataTypes.Float, kv.Value.Shape, [kv.Value.Shape])));
        var (lowered, unrolled) = Recurrent.Lower(model, shapes, [0], name => model.Graph.Initializer.FirstOrDefault(t => t.Name == name)?.ReadInt64s(""));
        Assert.Equal(T, Assert.Single(unrolled).SequenceLength);
        Assert.DoesNotContain(lowered.Graph.Node, n => Recurrent.Is(n.OpType));
        var actual = Run(lowered, feeds);

        var reference = OpsetUpgrade.Apply((c with { Double = false, Layout = 0 }).Build().Model);
        var refFeeds = feeds.ToDictionary(kv => kv.Key, kv => kv.Key switch
        {
            "index4" => kv.Value,
            "X" or "initial_h" or "initial_c" when c.Layout == 1 => Transpose(kv.Value, [1, 0, 2]),
            _ => NdArray.FromFloat(kv.Value.ToFloat(), kv.Value.Shape),
        });
        var expected = Run(reference, refFeeds);
        if (c.Layout == 1)
            expected = expected.ToDictionary(kv => kv.Key, kv => kv.Key == "y0" ? Transpose(kv.Value, [2, 0, 1, 3]) : Transpose(kv.Value, [1, 0, 2]));

        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        const double rtol = 1e-5, atol = 1e-6;
        foreach (var (name, e) in expected)
        {
            var a = actual[name];
            Assert.Equal(e.Shape, a.Shape);
            var (ev, av) = (e.ToDouble(), a.ToDouble());
            for (int k = 0; k < ev.Length; k++)
                Assert.True(Math.Abs(av[k] - ev[k]) <= atol + rtol * Math.Abs(ev[k]), $"{c}: output {name}[{k}] unrolled {av[k]:R}, ONNX Runtime {ev[k]:R}");
        }
    }

    /// <summary>Axes permuted: result axis i is axis perm[i] of the input.</summary>
    static NdArray Transpose(NdArray a, int[] perm)
    {
        var src = a.ToFloat();
        var shape = perm.Select(p => a.Shape[p]).ToArray();
        var dst = new float[src.Length];
        var stride = new long[a.Shape.Length];
        for (int i = a.Shape.Length - 1, s = 1; i >= 0; s *= (int)a.Shape[i], i--) stride[i] = s;
        var index = new long[shape.Length];
        for (int k = 0; k < dst.Length; k++)
        {
            long offset = 0;
            for (int i = 0; i < shape.Length; i++) offset += index[i] * stride[perm[i]];
            dst[k] = src[offset];
            for (int i = shape.Length - 1; i >= 0 && ++index[i] == shape[i]; i--) index[i] = 0;
        }
        return NdArray.FromFloat(dst, shape);
    }

    static Dictionary<string, NdArray> Run(ModelProto model, Dictionary<string, NdArray> feeds)
    {
        var types = model.Graph.Input.ToDictionary(i => i.Name, i => (TensorElementType)i.Type.TensorType.ElemType);
        var feed = types.ToDictionary(kv => kv.Key, kv => OrtFeeds.Create(feeds[kv.Key], kv.Value, kv.Key));
        try { return Run(model, feed); }
        finally { foreach (var v in feed.Values) v.Dispose(); }
    }

    static Dictionary<string, NdArray> Run(ModelProto model, Dictionary<string, OrtValue> feed)
    {
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
        using var session = new InferenceSession(model.ToByteArray(), options);
        var names = model.Graph.Output.Select(o => o.Name).ToArray();
        using var results = session.Run(new RunOptions(), feed.Keys.ToArray(), feed.Values.ToArray(), names);
        var outputs = new Dictionary<string, NdArray>();
        for (int k = 0; k < names.Length; k++)
        {
            var info = results[k].GetTensorTypeAndShape();
            outputs[names[k]] = info.ElementDataType == TensorElementType.Double
                ? NdArray.FromDouble(results[k].GetTensorDataAsSpan<double>().ToArray(), info.Shape)
                : NdArray.FromFloat(results[k].GetTensorDataAsSpan<float>().ToArray(), info.Shape);
        }
        return outputs;
    }

    static IEnumerable<Case> Variants(string op, bool isDouble)
    {
        foreach (var direction in new[] { "forward", "reverse", "bidirectional" })
        {
            yield return new Case(op, direction, Double: isDouble);
            yield return new Case(op, direction, Bias: false, Initial: true, Double: isDouble);
            yield return new Case(op, direction, Initial: true, Layout: 1, Double: isDouble);
        }
    }

    public static TheoryData<string> Ops => new() { "LSTM", "GRU", "RNN" };

    [Theory]
    [MemberData(nameof(Ops))]
    public void UnrolledMatchesOrtFloat(string op)
    {
        foreach (var c in Variants(op, false)) ForwardMatches(c);
        if (op == "GRU")
            foreach (var direction in new[] { "forward", "bidirectional" })
                ForwardMatches(new Case(op, direction, Initial: true, Attrs: [("linear_before_reset", 1L)]));
    }

    [Theory]
    [MemberData(nameof(Ops))]
    public void UnrolledMatchesOrtDouble(string op)
    {
        foreach (var c in Variants(op, true)) ForwardMatches(c);
        if (op == "GRU") ForwardMatches(new Case(op, "bidirectional", Initial: true, Double: true, Attrs: [("linear_before_reset", 1L)]));
    }

    [Fact]
    public void UnrolledLstmExtrasMatchOrt()
    {
        ForwardMatches(new Case("LSTM", "bidirectional", Initial: true, Peepholes: true));
        ForwardMatches(new Case("LSTM", Initial: true, Attrs: [("clip", 0.5f)]));
        ForwardMatches(new Case("LSTM", "reverse", Attrs: [("input_forget", 1L)]));
        ForwardMatches(new Case("GRU", Initial: true, Attrs: [("clip", 0.5f)]));
        ForwardMatches(new Case("RNN", "bidirectional", Attrs: [("clip", 0.5f)]));
    }

    [Fact]
    public void UnrolledSequenceLengthsMatchOrt()
    {
        foreach (var op in new[] { "LSTM", "GRU", "RNN" })
        {
            ForwardMatches(new Case(op, "bidirectional", Initial: true, SequenceLens: [4, 2, 3]));
            ForwardMatches(new Case(op, "reverse", SequenceLens: [1, 4, 3], ConstLens: true));
            ForwardMatches(new Case(op, SequenceLens: [4, 4, 4], ConstLens: true));
        }
    }

    [Theory]
    [InlineData("Relu")] [InlineData("Sigmoid")] [InlineData("Tanh")] [InlineData("Softsign")] [InlineData("Softplus")]
    [InlineData("LeakyRelu")] [InlineData("Elu")] [InlineData("HardSigmoid")] [InlineData("ScaledTanh")] [InlineData("Affine")]
    [InlineData("ThresholdedRelu")]
    public void UnrolledActivationsMatchOrt(string activation)
    {
        float[] alpha = [0.3f], beta = [0.4f];
        ForwardMatches(new Case("RNN", "bidirectional", Attrs: [("activations", new[] { activation, "Tanh" }), ("activation_alpha", alpha), ("activation_beta", beta)]));
        ForwardMatches(new Case("GRU", Attrs: [("activations", new[] { "Sigmoid", activation })]));
        ForwardMatches(new Case("LSTM", Initial: true, Attrs: [("activations", new[] { "Sigmoid", activation, "Tanh" }), ("activation_alpha", alpha), ("activation_beta", beta)]));
    }

    /// <summary>
    /// The ONNX backend corpus's recurrent models against their reference outputs (written by the ONNX reference
    /// implementation), including the layout-1 ("batchwise") ones ONNX Runtime cannot run.
    /// </summary>
    [Corpus.CorpusFact]
    public void UnrolledCorpusModelsMatchTheirReferenceOutputs()
    {
        var cases = Corpus.CorpusCase.All().Where(c => c.Suite == "node" && c.LoadModel().Graph.Node.Any(n => Recurrent.Is(n.OpType))).ToList();
        foreach (var c in cases)
        {
            var model = OpsetUpgrade.Apply(c.LoadModel());
            var feeds = Corpus.CorpusRunner.Feeds(model, c);
            try
            {
                var shapes = new OnnxUnlearn.Autodiff.TensorShapes(feeds.ToDictionary(kv => kv.Key, kv =>
                {
                    var info = kv.Value.GetTensorTypeAndShape();
                    return new OnnxUnlearn.Autodiff.ValueInfo((int)info.ElementDataType, info.Shape, [info.Shape]);
                }));
                var positions = Enumerable.Range(0, model.Graph.Node.Count).Where(i => Recurrent.Is(model.Graph.Node[i].OpType)).ToList();
                var (lowered, _) = Recurrent.Lower(model, shapes, positions, _ => null);
                var outputs = Corpus.CorpusRunner.Run(lowered, feeds);
                try { Assert.Null(Corpus.CorpusRunner.CompareAll(lowered, c, outputs, rtol: 1e-5, atol: 1e-6) is { } why ? $"{c.Id}: {why}" : null); }
                finally { foreach (var v in outputs) v.Dispose(); }
            }
            finally { foreach (var v in feeds.Values) v.Dispose(); }
        }
        Assert.Contains(cases, c => c.Name.Contains("batchwise"));
    }

    // ---- gradients: every input, every output, against finite differences ----

    static void GradientsMatch(Case c)
    {
        var (model, feeds, wrt) = c.Build();
        for (int o = 0; o < c.Outputs; o++)
        {
            if (!c.IsUsed(o)) continue;
            var r = GradCheck.Check(model, feeds, wrt, $"y{o}", seed: 3 + o);
            Assert.True(r.MaxRelError <= GradCheck.Tolerance(c.Double), $"{c} output y{o}: relative error {r.MaxRelError:E2} ({r.Detail})");
        }
    }

    [Theory]
    [InlineData("forward")] [InlineData("reverse")] [InlineData("bidirectional")]
    public void LstmGradients(string direction)
    {
        GradientsMatch(new Case("LSTM", direction, Double: true));
        GradientsMatch(new Case("LSTM", direction, Bias: false, Initial: true, Double: true));
        GradientsMatch(new Case("LSTM", direction, Initial: true, Layout: 1, Double: true));
    }

    [Theory]
    [InlineData("forward")] [InlineData("reverse")] [InlineData("bidirectional")]
    public void GruGradients(string direction)
    {
        GradientsMatch(new Case("GRU", direction, Double: true));
        GradientsMatch(new Case("GRU", direction, Bias: false, Initial: true, Double: true));
        GradientsMatch(new Case("GRU", direction, Initial: true, Layout: 1, Double: true, Attrs: [("linear_before_reset", 1L)]));
    }

    [Theory]
    [InlineData("forward")] [InlineData("reverse")] [InlineData("bidirectional")]
    public void RnnGradients(string direction)
    {
        GradientsMatch(new Case("RNN", direction, Double: true));
        GradientsMatch(new Case("RNN", direction, Bias: false, Initial: true, Double: true));
        GradientsMatch(new Case("RNN", direction, Initial: true, Layout: 1, Double: true,
            Attrs: [("activations", direction == "bidirectional" ? new[] { "Sigmoid", "Relu" } : ["Relu"])]));
        GradientsMatch(new Case("RNN", direction, Initial: true));
    }

    [Fact]
    public void SingleOutputsAndExtrasGradients()
    {
        GradientsMatch(new Case("LSTM", Initial: true, Double: true, Used: [false, true, false]));
        GradientsMatch(new Case("LSTM", "reverse", Double: true, Used: [false, false, true]));
        GradientsMatch(new Case("GRU", "bidirectional", Double: true, Used: [false, true]));
        GradientsMatch(new Case("LSTM", "bidirectional", Initial: true, Peepholes: true, Double: true));
        GradientsMatch(new Case("LSTM", "bidirectional", Double: true, SequenceLens: [4, 2, 3]));
        GradientsMatch(new Case("GRU", "reverse", Initial: true, Double: true, SequenceLens: [1, 4, 3], ConstLens: true));
    }

    // ---- refusals ----

    [Fact]
    public void UnknownActivationIsRefusedNamingTheNode()
    {
        var (model, _, _) = new Case("RNN", Attrs: [("activations", new[] { "Swish" })]).Build();
        var shapes = new OnnxUnlearn.Autodiff.TensorShapes(new() { ["X"] = new OnnxUnlearn.Autodiff.ValueInfo(DataTypes.Float, [T, N, I], [[T, N, I]]) });
        var e = Assert.Throws<UserError>(() => Recurrent.Lower(OpsetUpgrade.Apply(model), shapes, [0], _ => null));
        Assert.Contains("RNN node 'RNN_0'", e.Message);
        Assert.Contains("Swish", e.Message);
    }
}
