using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using OnnxUnlearn.Autodiff.Lowering;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using Xunit.Abstractions;

namespace OnnxUnlearn.Tests.Autodiff;

/// <summary>
/// ONNX Runtime's fused ops (<see cref="Contrib"/>): the lowered graph gives the outputs of ONNX Runtime's own contrib
/// kernel, and the gradient through it matches central differences of the kernel's forward (the original node).
/// </summary>
public partial class ContribLoweringTests(ITestOutputHelper log)
{
    const string MS = Contrib.Domain;
    static long[] L(params long[] v) => v;
    static float[] F(params float[] v) => v;

    /// <summary>Checks every output against the kernel and the gradient of each input on its own against its differences.</summary>
    void Check(NodeModel node, double tolerance = 1e-5, params int[] unused) => Check(node.Build, node.Op, node.Seed, tolerance, unused);

    void Check(Func<(ModelProto, Dictionary<string, NdArray>, List<string>)> build, string op, int seed = 7, double tolerance = 1e-5, params int[] unused)
    {
        var (model, feeds, wrt) = build();
        foreach (var o in unused) Drop(model, o);
        var lowered = Contrib.Lower(OpsetUpgrade.Apply(model), "<test>");
        Assert.DoesNotContain(lowered.Graph.Node, Contrib.Is);
        var kernel = Run(model, feeds);
        var ours = Run(lowered, feeds);
        foreach (var (name, expected) in kernel)
        {
            var e = expected.ToFloat(); var a = ours[name].ToFloat();
            Assert.Equal(expected.Shape, ours[name].Shape);
            double scale = e.Max(v => Math.Abs((double)v)), err = e.Zip(a, (x, y) => Math.Abs((double)x - y)).Max() / Math.Max(scale, 1e-30);
            log.WriteLine($"{op} {name}: max |lowered − kernel| / max |kernel| = {err:E2}");
            Assert.True(err <= tolerance, $"{op} {name}: lowered differs from ONNX Runtime's kernel by {err:E2} (relative)");
        }
        foreach (var name in kernel.Keys.Where(k => kernel[k].Type == ElementType.Float32))   // integer outputs (mask_index) carry no gradient
            foreach (var input in wrt)
            {
                var (worst, detail) = GradientVersusKernel(model, feeds, input, name, seed);
                log.WriteLine($"{op} d{name}/d{input}: relative error {worst:E2}");
                Assert.True(worst <= GradCheck.Tolerance(false), $"{op} d{name}/d{input}: relative error {worst:E2} ({detail})");
            }
    }

    /// <summary>The generated gradient of Σ w ⊙ output along random directions of one input, against central differences
    /// of the same sum computed by ONNX Runtime's kernel on the original (unlowered) model.</summary>
    static (double, string) GradientVersusKernel(ModelProto model, Dictionary<string, NdArray> feeds, string input, string output, int seed)
    {
        var rng = new Random(seed);
        var n = (int)Run(model, feeds)[output].ToFloat().Length;
        var w = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var grad = GradCheck.Gradient(model, feeds, [input], output, w);
        var theta0 = feeds[input].ToFloat();
        double Loss(float[] theta)
        {
            var f = new Dictionary<string, NdArray>(feeds) { [input] = NdArray.FromFloat(theta, feeds[input].Shape) };
            var y = Run(model, f)[output].ToFloat();
            return y.Zip(w, (a, b) => (double)a * b).Sum();
        }
        double worst = 0; string detail = "";
        for (int k = 0; k < 3; k++)
        {
            var v = theta0.Select(_ => rng.NextDouble() * 2 - 1).ToArray();
            double best = double.MaxValue; string bestDetail = "";
            foreach (double step in new[] { 1e-2, 3e-3, 1e-3 })
            {
                var plus = theta0.Select((t, i) => (float)(t + step * Math.Max(1, Math.Abs(t)) * v[i])).ToArray();
                var minus = theta0.Select((t, i) => (float)(t - step * Math.Max(1, Math.Abs(t)) * v[i])).ToArray();
                double fd = Loss(plus) - Loss(minus), an = 0, mag = 0;
                for (int i = 0; i < theta0.Length; i++) { double d = (double)plus[i] - minus[i]; an += grad[i] * d; mag += Math.Abs(grad[i] * d); }
                double err = Math.Abs(fd - an) / Math.Max(Math.Abs(an), Math.Max(mag, 1e-3 * step));
                if (err < best) { best = err; bestDetail = $"direction {k}: finite difference {fd:E4}, gradient {an:E4}"; }
            }
            if (best > worst) { worst = best; detail = bestDetail; }
        }
        return (worst, detail);
    }

    /// <summary>The model's inputs without shapes, as values computed inside ONNX Runtime's saved graphs come (no value_info).</summary>
    static Func<(ModelProto, Dictionary<string, NdArray>, List<string>)> Unranked(NodeModel node) => () =>
    {
        var (model, feeds, wrt) = node.Build();
        foreach (var i in model.Graph.Input) i.Type.TensorType.Shape = null;
        return (model, feeds, wrt);
    };

    /// <summary>Removes output <paramref name="o"/> from the node and the graph (an optional output left unused).</summary>
    static void Drop(ModelProto model, int o)
    {
        var g = model.Graph;
        g.Output.Remove(g.Output.First(v => v.Name == $"y{o}"));
        g.Node[0].Output[o] = "";
        while (g.Node[0].Output.Count > 0 && g.Node[0].Output[^1].Length == 0) g.Node[0].Output.RemoveAt(g.Node[0].Output.Count - 1);
    }

    /// <summary>Runs a model as stored (no graph optimisation), returning every graph output.</summary>
    internal static Dictionary<string, NdArray> Run(ModelProto model, Dictionary<string, NdArray> feeds)
    {
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
        using var session = new InferenceSession(model.ToByteArray(), options);
        var inputs = model.Graph.Input.Where(i => feeds.ContainsKey(i.Name)).ToList();
        var feed = inputs.Select(i => OrtFeeds.Create(feeds[i.Name], (TensorElementType)i.Type.TensorType.ElemType, i.Name)).ToArray();
        try
        {
            var names = model.Graph.Output.Select(o => o.Name).ToArray();
            using var results = session.Run(new RunOptions(), inputs.Select(i => i.Name).ToArray(), feed, names);
            return names.Select((name, k) => (name, k)).ToDictionary(p => p.name, p => results[p.k].GetTensorTypeAndShape() is var t && t.ElementDataType == TensorElementType.Int32
                ? NdArray.FromInt32(results[p.k].GetTensorDataAsSpan<int>().ToArray(), t.Shape)
                : NdArray.FromFloat(results[p.k].GetTensorDataAsSpan<float>().ToArray(), t.Shape));
        }
        finally { foreach (var v in feed) v.Dispose(); }
    }

    // ---- FusedConv: Conv + activation (activation_params), optional Z added before it ----
    void FusedConv(string act, float[]? p = null, bool z = false, bool bias = true, params (string, object)[] attrs) => Check(new NodeModel
    {
        Op = "FusedConv", Domain = MS,
        Inputs = [("x", [2, 3, 6, 5]), ("w", [4, 3, 3, 3]), bias ? ("b", [4]) : null, z ? ("z", [2, 4, 6, 5]) : null],
        Attrs = [("activation", act), .. p is null ? [] : new (string, object)[] { ("activation_params", p) }, ("pads", L(1, 1, 1, 1)), .. attrs],
    });

    [Fact] public void FusedConvRelu() => FusedConv("Relu");
    [Fact] public void FusedConvTanh() => FusedConv("Tanh");
    [Fact] public void FusedConvSigmoid() => FusedConv("Sigmoid");
    [Fact] public void FusedConvLeakyRelu() => FusedConv("LeakyRelu", F(0.2f));
    [Fact] public void FusedConvClip() => FusedConv("Clip", F(-0.5f, 1.5f));
    [Fact] public void FusedConvHardSigmoid() => FusedConv("HardSigmoid", F(0.3f, 0.4f));
    [Fact] public void FusedConvReluWithZ() => FusedConv("Relu", z: true);
    [Fact] public void FusedConvNoBiasWithZ() => FusedConv("Tanh", z: true, bias: false);
    [Fact] public void FusedConvStridedGrouped() => Check(new NodeModel
    {
        Op = "FusedConv", Domain = MS, Inputs = [("x", [1, 4, 7, 6]), ("w", [6, 2, 3, 3]), ("b", [6])],
        Attrs = [("activation", "Relu"), ("group", 2L), ("strides", L(2, 2)), ("pads", L(1, 0, 1, 1))],
    });

    // ---- FusedGemm: Gemm + activation (activation_alpha/beta/gamma) ----
    void FusedGemm(string act, long transB = 0, params (string, object)[] attrs) => Check(new NodeModel
    {
        Op = "FusedGemm", Domain = MS, Inputs = [("a", [3, 5]), ("b", transB != 0 ? [4, 5] : [5, 4]), ("c", [4])],
        Attrs = [("activation", act), ("transB", transB), .. attrs],
    });

    [Fact] public void FusedGemmRelu() => FusedGemm("Relu");
    [Fact] public void FusedGemmLeakyReluTransB() => FusedGemm("LeakyRelu", 1, ("activation_alpha", 0.3f));
    [Fact] public void FusedGemmTanhAlphaBeta() => FusedGemm("Tanh", 0, ("alpha", 0.7f), ("beta", 1.3f));
    [Fact] public void FusedGemmSigmoid() => FusedGemm("Sigmoid", 1);
    [Fact] public void FusedGemmHardSigmoid() => FusedGemm("HardSigmoid", 0, ("activation_alpha", 0.25f), ("activation_beta", 0.6f));
    [Fact] public void FusedGemmElu() => FusedGemm("Elu", 0, ("activation_alpha", 0.8f));
    [Fact] public void FusedGemmSelu() => FusedGemm("Selu", 1, ("activation_alpha", 1.5f), ("activation_gamma", 1.1f));
    [Fact] public void FusedGemmSoftplus() => FusedGemm("Softplus");
    [Fact] public void FusedGemmSoftsign() => FusedGemm("Softsign", 1);
    [Fact] public void FusedGemmThresholdedRelu() => FusedGemm("ThresholdedRelu", 0, ("activation_alpha", 0.4f));
    [Fact] public void FusedGemmTransA() => Check(new NodeModel
    {
        Op = "FusedGemm", Domain = MS, Inputs = [("a", [5, 3]), ("b", [5, 4]), ("c", [3, 4])], Attrs = [("activation", "Relu"), ("transA", 1L)],
    });

    // ---- FusedMatMul: alpha·op(A)·op(B) ----
    void FusedMatMul(long[] a, long[] b, params (string, object)[] attrs) =>
        Check(new NodeModel { Op = "FusedMatMul", Domain = MS, Inputs = [("a", a), ("b", b)], Attrs = attrs });

    [Fact] public void FusedMatMulAlpha() => FusedMatMul([2, 3, 4], [2, 4, 5], ("alpha", 0.125f));
    [Fact] public void FusedMatMulTransA() => FusedMatMul([2, 4, 3], [4, 5], ("transA", 1L));
    [Fact] public void FusedMatMulTransB() => FusedMatMul([2, 3, 4], [2, 5, 4], ("transB", 1L), ("alpha", 2f));
    [Fact] public void FusedMatMulTransAB() => FusedMatMul([4, 3], [5, 4], ("transA", 1L), ("transB", 1L));
    [Fact] public void FusedMatMulTransBatchA() => FusedMatMul([3, 2, 4], [2, 4, 5], ("transBatchA", 1L));
    [Fact] public void FusedMatMulTransBatchB() => FusedMatMul([2, 3, 4], [4, 2, 5], ("transBatchB", 1L));
    [Fact] public void FusedMatMulTransBatchBTransB() => FusedMatMul([2, 2, 3, 4], [5, 2, 2, 4], ("transBatchB", 1L), ("transB", 1L));
    [Fact] public void FusedMatMulTransBUnrecordedRanks() => Check(Unranked(new NodeModel { Op = "FusedMatMul", Domain = MS, Inputs = [("a", [2, 3, 4]), ("b", [2, 5, 4])], Attrs = [("transB", 1L), ("alpha", 0.5f)] }), "FusedMatMul");
    [Fact] public void FusedMatMulTransAUnrecordedRanks() => Check(Unranked(new NodeModel { Op = "FusedMatMul", Domain = MS, Inputs = [("a", [2, 4, 3]), ("b", [2, 4, 5])], Attrs = [("transA", 1L)] }), "FusedMatMul");
    [Fact] public void FusedMatMulTransBatchATransA() => FusedMatMul([4, 2, 3], [2, 4, 5], ("transBatchA", 1L), ("transA", 1L), ("alpha", 0.5f));

    // ---- the GELU family ----
    [Fact] public void Gelu() => Check(new NodeModel { Op = "Gelu", Domain = MS, Inputs = [("x", [3, 7])] });
    [Fact] public void BiasGelu() => Check(new NodeModel { Op = "BiasGelu", Domain = MS, Inputs = [("x", [2, 3, 6]), ("b", [6])] });
    [Fact] public void FastGelu() => Check(new NodeModel { Op = "FastGelu", Domain = MS, Inputs = [("x", [3, 7])] });
    [Fact] public void FastGeluBias() => Check(new NodeModel { Op = "FastGelu", Domain = MS, Inputs = [("x", [2, 3, 6]), ("b", [6])] });
    [Fact] public void QuickGelu() => Check(new NodeModel { Op = "QuickGelu", Domain = MS, Inputs = [("x", [3, 7])] });
    [Fact] public void QuickGeluAlpha() => Check(new NodeModel { Op = "QuickGelu", Domain = MS, Inputs = [("x", [3, 7])], Attrs = [("alpha", 1.0f)] });

    // ---- the skip layer norms (outputs: y, mean, inv_std_var, input_skip_bias_sum) ----
    void SkipLayerNorm(bool beta, bool bias, long[]? skip = null, params int[] unused) => Check(new NodeModel
    {
        Op = "SkipLayerNormalization", Domain = MS, Outputs = 4, Attrs = [("epsilon", 1e-5f)],
        Inputs = [("x", [2, 3, 8]), ("skip", skip ?? [2, 3, 8]), ("gamma", [8]), beta ? ("beta", [8]) : null, bias ? ("bias", [8]) : null],
    }, 2e-5, unused);

    [Fact] public void SkipLayerNormalization() => SkipLayerNorm(beta: true, bias: true);
    [Fact] public void SkipLayerNormalizationNoBetaNoBias() => SkipLayerNorm(beta: false, bias: false, unused: [1, 2, 3]);
    [Fact] public void SkipLayerNormalizationBroadcastSkip() => SkipLayerNorm(beta: true, bias: false, skip: [3, 8], unused: [1]);

    /// <summary>Pre-LN residual streams read the sum (output 3) in the next layer: both outputs feed the loss.</summary>
    [Fact]
    public void SkipLayerNormalizationSumFeedsTheNextLayer() => Check(() =>
    {
        var (model, feeds, wrt) = new NodeModel
        {
            Op = "SkipLayerNormalization", Domain = MS, Outputs = 4, Attrs = [("epsilon", 1e-5f)],
            Inputs = [("x", [2, 3, 8]), ("skip", [2, 3, 8]), ("gamma", [8]), ("beta", [8]), ("bias", [8])],
        }.Build();
        foreach (var o in new[] { 1, 2 }) Drop(model, o);
        model.Graph.Node.Add(new NodeProto { OpType = "Mul", Name = "next", Input = { "y0", "y3" }, Output = { "z" } });
        model.Graph.Output.Clear();
        model.Graph.Output.Add(new global::Onnx.ValueInfoProto { Name = "z" });
        return (model, feeds, wrt);
    }, "SkipLayerNormalization", tolerance: 2e-5);

    void SkipSimplified(bool bias, params int[] unused) => Check(new NodeModel
    {
        Op = "SkipSimplifiedLayerNormalization", Domain = MS, Outputs = 4, Attrs = [("epsilon", 1e-5f)],
        Inputs = [("x", [2, 3, 8]), ("skip", [2, 3, 8]), ("gamma", [8]), bias ? ("bias", [8]) : null],
    }, 2e-5, unused);

    [Fact] public void SkipSimplifiedLayerNormalization() => SkipSimplified(bias: true);   // mean (output 1) is zeros, as the kernel writes it
    [Fact] public void SkipSimplifiedLayerNormalizationNoBiasNoSum() => SkipSimplified(bias: false, unused: [1, 2, 3]);

    void Simplified(long axis, long[] x, long[] scale, int outputs = 1, long opset = 17) => Check(new NodeModel
    {
        Op = "SimplifiedLayerNormalization", Outputs = outputs, Opset = opset, Attrs = [("axis", axis), ("epsilon", 1e-5f)], Inputs = [("x", x), ("scale", scale)],
    }, 2e-5);

    [Fact] public void SimplifiedLayerNormalization() => Simplified(-1, [2, 3, 8], [8]);
    [Fact] public void SimplifiedLayerNormalizationInvStd() => Simplified(-1, [4, 6], [6], outputs: 2);
    [Fact] public void SimplifiedLayerNormalizationTwoAxes() => Simplified(-2, [2, 3, 4], [3, 4]);
    [Fact] public void SimplifiedLayerNormalizationOpset13() => Simplified(-1, [2, 3, 8], [8], opset: 13);   // upgraded to 16 first, then lowered
    [Fact] public void SimplifiedLayerNormalizationPositiveAxis() => Simplified(1, [2, 3, 4], [3, 4], outputs: 2);

    // ---- BiasAdd and BiasSoftmax: ONNX Runtime has no CPU kernel for them (CUDA only), so the reference is computed here ----
    [Fact]
    public void BiasAdd()
    {
        var (model, feeds, wrt) = new NodeModel { Op = "BiasAdd", Domain = MS, Inputs = [("x", [2, 4, 6]), ("bias", [6]), ("skip", [2, 4, 6])] }.Build();
        var (x, bias, skip) = (feeds["x"].ToFloat(), feeds["bias"].ToFloat(), feeds["skip"].ToFloat());
        var expected = x.Select((v, i) => v + bias[i % 6] + skip[i]).ToArray();
        CheckAgainst(model, feeds, wrt, expected);
    }

    [Theory]
    [InlineData(3L, 1L, new long[] { 2, 1, 1, 5 })]   // inner broadcast: an additive mask per batch row, over heads and queries
    [InlineData(3L, 0L, new long[] { 3, 4, 5 })]      // outer broadcast: one bias for every batch row
    [InlineData(2L, 1L, new long[] { 2, 1, 4, 5 })]   // softmax over the last two axes together
    public void BiasSoftmax(long axis, long inner, long[] biasShape)
    {
        long[] shape = [2, 3, 4, 5];
        var (model, feeds, wrt) = new NodeModel { Op = "BiasSoftmax", Domain = MS, Inputs = [("x", shape), ("bias", biasShape)], Attrs = [("axis", axis), ("is_inner_broadcast", inner)] }.Build();
        var x = feeds["x"].ToFloat(); var bias = feeds["bias"].ToFloat();
        var padded = Enumerable.Repeat(1L, shape.Length - biasShape.Length).Concat(biasShape).ToArray();
        var s = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
        {   // numpy broadcasting: the bias index drops the axes where the bias has extent 1
            long rest = i, bi = 0, stride = 1;
            var idx = new long[shape.Length];
            for (int d = shape.Length - 1; d >= 0; d--) { idx[d] = rest % shape[d]; rest /= shape[d]; }
            for (int d = shape.Length - 1; d >= 0; d--) { bi += (padded[d] == 1 ? 0 : idx[d]) * stride; stride *= padded[d]; }
            s[i] = x[i] + bias[bi];
        }
        int inner_ = (int)shape.Skip((int)axis).Aggregate(1L, (a, d) => a * d);
        var expected = new float[x.Length];
        for (int r = 0; r < x.Length / inner_; r++)
        {
            var row = s.Skip(r * inner_).Take(inner_).ToArray();
            double max = row.Max(), sum = row.Sum(v => Math.Exp(v - max));
            for (int j = 0; j < inner_; j++) expected[r * inner_ + j] = (float)(Math.Exp(row[j] - max) / sum);
        }
        CheckAgainst(model, feeds, wrt, expected);
    }

    /// <summary>The lowered graph against values computed here, and its gradient against central differences of the lowered graph.</summary>
    void CheckAgainst(ModelProto model, Dictionary<string, NdArray> feeds, List<string> wrt, float[] expected)
    {
        var op = model.Graph.Node[0].OpType;
        var lowered = Contrib.Lower(OpsetUpgrade.Apply(model), "<test>");
        var a = Run(lowered, feeds)["y0"].ToFloat();
        double err = expected.Zip(a, (x, y) => Math.Abs((double)x - y)).Max() / expected.Max(v => Math.Abs((double)v));
        log.WriteLine($"{op}: max |lowered − reference| / max |reference| = {err:E2}");
        Assert.True(err <= 1e-6, $"{op}: lowered differs from the reference by {err:E2}");
        foreach (var input in wrt)
        {
            var r = GradCheck.Check(model, feeds, [input]);
            log.WriteLine($"{op} d{input}: relative error {r.MaxRelError:E2}");
            Assert.True(r.MaxRelError <= GradCheck.Tolerance(false), $"{op} d{input}: relative error {r.MaxRelError:E2} ({r.Detail})");
        }
    }

    // ---- refusals ----
    [Fact]
    public void NchwcOpsAreRefusedNamingTheNodeAndLevelExtended()
    {
        var (model, _, _) = new NodeModel { Op = "ReorderInput", Domain = MS + ".nchwc", Inputs = [("x", [1, 8, 4, 4])] }.Build();
        var e = Assert.Throws<UserError>(() => Contrib.Lower(OpsetUpgrade.Apply(model), "m.onnx"));
        Assert.Contains("'ReorderInput_0'", e.Message);
        Assert.Contains("com.microsoft.nchwc.ReorderInput", e.Message);
        Assert.Contains("ORT_ENABLE_EXTENDED", e.Message);
    }

    [Fact]
    public void UnknownActivationIsRefused()
    {
        var (model, _, _) = new NodeModel { Op = "FusedConv", Domain = MS, Inputs = [("x", [1, 2, 4, 4]), ("w", [3, 2, 3, 3])], Attrs = [("activation", "Gelu")] }.Build();
        var e = Assert.Throws<UserError>(() => Contrib.Lower(OpsetUpgrade.Apply(model), "m.onnx"));
        Assert.Contains("FusedConv 'FusedConv_0' of 'm.onnx' has activation 'Gelu'", e.Message);
    }

    [Fact]
    public void ExtraOutputsAreRefused()
    {
        var (model, _, _) = new NodeModel { Op = "Gelu", Domain = MS, Inputs = [("x", [2, 3])], Outputs = 2 }.Build();
        var e = Assert.Throws<UserError>(() => Contrib.Lower(OpsetUpgrade.Apply(model), "m.onnx"));
        Assert.Equal("Gelu 'Gelu_0' of 'm.onnx' has 2 outputs; the op has 1: the file is damaged, re-export it", e.Message);
    }
}
