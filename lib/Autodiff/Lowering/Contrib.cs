using Onnx;
using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Autodiff.Lowering;

/// <summary>
/// The fused ops ONNX Runtime's session optimizer writes at level extended (com.microsoft FusedConv, FusedGemm,
/// FusedMatMul, the GELU family, BiasAdd, BiasSoftmax, the skip layer norms; SimplifiedLayerNormalization, which ONNX
/// Runtime registers in the default domain), rewritten in the standard ops they fuse so the gradient rules differentiate
/// them. Each lowered node computes what ONNX Runtime's CPU kernel computes (the tests compare the two), and its weights
/// stay the initializers the node read, so they remain the trainable parameters.
/// </summary>
public static partial class Contrib
{
    public const string Domain = "com.microsoft";

    static readonly HashSet<string> Ops =
    [
        "FusedConv", "FusedGemm", "FusedMatMul", "BiasGelu", "FastGelu", "Gelu", "QuickGelu", "BiasAdd", "BiasSoftmax",
        "SkipLayerNormalization", "SkipSimplifiedLayerNormalization", "SimplifiedLayerNormalization",
        "EmbedLayerNormalization", "Attention", "MultiHeadAttention", "RotaryEmbedding", "GroupQueryAttention",
    ];

    /// <summary>An op this lowering rewrites (SimplifiedLayerNormalization in either domain).</summary>
    public static bool Is(string opType, string domain) =>
        (domain == Domain && Ops.Contains(opType)) || (opType == "SimplifiedLayerNormalization" && Domains.IsDefault(domain));

    public static bool Is(NodeProto n) => Is(n.OpType, n.Domain);

    /// <summary>
    /// Rewrites every lowered op of the top-level graph in standard ops (outputs keep their names); refuses the
    /// com.microsoft.nchwc layout ops, which the optimizer writes only at level all.
    /// </summary>
    /// <param name="model">A model already upgraded to opset ≥ 16 (<see cref="OpsetUpgrade"/>).</param>
    /// <param name="path">The model's file, for messages.</param>
    public static ModelProto Lower(ModelProto model, string path)
    {
        foreach (var n in model.Graph.Node)
            if (n.Domain.StartsWith(Domain + ".nchwc", StringComparison.Ordinal))
                throw new UserError($"node {Name(n)} of '{path}' is {n.Domain}.{n.OpType}, a blocked-layout op that ONNX Runtime's optimizer writes " +
                    "at level all for this CPU only; save the optimized model at level extended instead (GraphOptimizationLevel.ORT_ENABLE_EXTENDED)");
        if (!model.Graph.Node.Any(Is)) return model;
        var m = model.Clone();
        var g = m.Graph;
        var nodes = g.Node.ToList();
        var taken = new HashSet<string>(nodes.SelectMany(n => n.Input.Concat(n.Output).Append(n.Name)).Concat(g.Input.Select(i => i.Name)).Concat(g.Initializer.Select(t => t.Name)));
        var ranks = Ranks(g);
        var b = new GraphBuilder(m.DefaultOpset(), taken.Contains, "contrib_");
        g.Node.Clear();
        foreach (var n in nodes)
        {
            if (!Is(n)) { g.Node.Add(n); continue; }
            int start = b.Nodes.Count;
            string what = $"{n.OpType} {Name(n)} of '{path}'";
            var outs = Emit(b, n, what, ranks);
            for (int i = 0; i < n.Output.Count; i++)
            {
                if (n.Output[i].Length == 0) continue;
                if (i >= outs.Length)
                    throw new UserError($"{what} has {n.Output.Count} outputs; the op has {outs.Length}: the file is damaged, re-export it");
                // An Identity keeps the output's name (other nodes and the graph outputs read it).
                b.Nodes.Add(new NodeProto { OpType = "Identity", Name = b.Fresh("contrib_Identity"), Input = { outs[i] }, Output = { n.Output[i] } });
            }
            g.Node.AddRange(b.Nodes.Skip(start));
        }
        g.Initializer.AddRange(b.Constants);
        return m;
    }

    static string Name(NodeProto n) => UserError.Quote(n.Name.Length > 0 ? n.Name : n.Output.FirstOrDefault() ?? "");

    /// <summary>The values of each output of one node, in standard ops.</summary>
    static string[] Emit(GraphBuilder b, NodeProto n, string what, Dictionary<string, int> ranks)
    {
        string? In(int i) => i < n.Input.Count && n.Input[i].Length > 0 ? n.Input[i] : null;
        string X = In(0) ?? throw new UserError($"{what} has no input 0");
        switch (n.OpType)
        {
            case "FusedConv":
            {   // Y = act(Conv(X, W, B) + Z): ONNX Runtime adds Z before the activation.
                var y = Standard(b, "Conv", [X, In(1) ?? throw new UserError($"{what} has no weights"), .. In(2) is { } bias ? [bias] : Array.Empty<string>()], n, "activation", "activation_params");
                if (In(3) is { } z) y = b.Add(y, z);
                return [ConvActivation(b, y, n, what)];
            }
            case "FusedGemm":
            {   // Y = act(α·A'·B' + β·C), the activation's attributes named activation_alpha/beta/gamma.
                var ins = new[] { X, In(1)! }.Concat(In(2) is { } c ? [c] : Array.Empty<string>()).ToArray();
                var y = Standard(b, "Gemm", ins, n, "activation", "activation_alpha", "activation_beta", "activation_gamma");
                return [GemmActivation(b, y, n, what)];
            }
            case "FusedMatMul":
            {   // Y = α·op(A)·op(B); op moves axis 0 behind the batch axes (transBatch) and swaps the last two (trans).
                long ta = Int(n, "transA"), tb = Int(n, "transB"), tba = Int(n, "transBatchA"), tbb = Int(n, "transBatchB");
                string y;
                if ((ta != 0 && !ranks.ContainsKey(X) || tb != 0 && !ranks.ContainsKey(In(1)!)) && tba == 0 && tbb == 0)
                    // Ranks unrecorded (ONNX Runtime saves no value_info): swap the last two axes whatever the rank.
                    y = b.Op("Einsum", [X, In(1)!], ("equation", (ta != 0 ? "...ji" : "...ij") + "," + (tb != 0 ? "...kj" : "...jk") + "->...ik"));
                else
                    y = b.MatMul(MatMulOperand(b, X, ta, tba, ranks, what, "A"), MatMulOperand(b, In(1)!, tb, tbb, ranks, what, "B"));
                float alpha = Float(n, "alpha", 1f);
                return [alpha == 1f ? y : b.Mul(y, b.Scalar(alpha, y))];
            }
            case "Gelu": return [Gelu(b, X)];
            case "BiasGelu": return [Gelu(b, b.Add(X, In(1)!))];
            case "FastGelu":
            {   // y = ½x(1 + tanh(√(2/π)(x + 0.044715x³))), x = X + bias
                var x = In(1) is { } bias ? b.Add(X, bias) : X;
                var inner = b.Add(x, b.Scale(b.Mul(b.Mul(x, x), x), 0.044715));
                var t = b.Op("Tanh", [b.Scale(inner, Math.Sqrt(2 / Math.PI))]);
                return [b.Mul(b.Scale(x, 0.5), b.Add(b.Scalar(1, x), t))];
            }
            case "QuickGelu": return [b.Mul(X, b.Sigmoid(b.Scale(X, Float(n, "alpha", 1.702f))))];   // x·σ(αx)
            case "BiasAdd": return [b.Add(b.Add(X, In(1)!), In(2)!)];                                // X + bias + skip
            case "BiasSoftmax":
            {   // softmax over axes [axis, rank) of data + bias (bias broadcasts as numpy does)
                if (Int(n, "is_inner_broadcast") != 0 && ranks.TryGetValue(X, out var rx) && ranks.TryGetValue(In(1)!, out var rb) && rx != rb)
                    throw new UserError($"{what} broadcasts a bias of rank {rb} over inner axes of data of rank {rx}; only a bias of the data's rank (extent 1 on the broadcast axes) can be lowered");
                var s = b.Add(X, In(1)!);
                var flat = b.Op("Flatten", [s], ("axis", Int(n, "axis", 1)));
                return [b.Reshape(b.Op("Softmax", [flat], ("axis", 1L)), b.Shape(s))];
            }
            case "SkipLayerNormalization":
            {   // s = input + skip + bias; y = (s − μ)/√(E[s²] − μ² + ε)·γ + β, the variance formed as the kernel forms it
                var s = Sum(b, X, In(1)!, In(4));
                var mean = b.Reduce("ReduceMean", s, [-1], keepDims: true);
                var meanSquare = b.Reduce("ReduceMean", b.Mul(s, s), [-1], keepDims: true);
                var std = b.Sqrt(b.Add(b.Sub(meanSquare, b.Mul(mean, mean)), b.Scalar(Float(n, "epsilon", 1e-12f), s)));
                var y = b.Mul(b.Div(b.Sub(s, mean), std), In(2)!);
                if (In(3) is { } beta) y = b.Add(y, beta);
                return [y, mean, b.Div(b.Scalar(1, std), std), s];
            }
            case "SkipSimplifiedLayerNormalization":
            {   // s = input + skip + bias; y = s/√(E[s²] + ε)·γ (no mean output: RMS norm has none)
                var s = Sum(b, X, In(1)!, In(3));
                var rms = Rms(b, s, [-1], Float(n, "epsilon", 1e-12f));
                return [b.Mul(b.Div(s, rms), In(2)!), b.ZerosLike(rms), b.Div(b.Scalar(1, rms), rms), s];
            }
            case "SimplifiedLayerNormalization":
            {   // y = x/√(mean of x² over axes [axis, rank) + ε)·scale
                long axis = Int(n, "axis", -1);
                long[] axes;
                if (axis < 0) axes = Enumerable.Range(0, (int)-axis).Select(i => axis + i).ToArray();
                else if (ranks.TryGetValue(X, out var r)) axes = Enumerable.Range((int)axis, (int)(r - axis)).Select(i => (long)i).ToArray();
                else throw new UserError($"{what} normalizes from axis {axis} of an input whose rank the model does not record; set axis to a negative value");
                var rms = Rms(b, X, axes, Float(n, "epsilon", 1e-5f));
                return [b.Mul(b.Div(X, rms), In(1)!), b.Div(b.Scalar(1, rms), rms)];
            }
            case "EmbedLayerNormalization": return EmbedLayerNorm(b, n, what);
            case "Attention": return Attention(b, n, what, ranks);
            case "MultiHeadAttention": return MultiHeadAttention(b, n, what, ranks);
            case "RotaryEmbedding": return [RotaryEmbedding(b, n, what, ranks)];
            case "GroupQueryAttention": return GroupQueryAttention(b, n, what, ranks);
        }
        throw new InvalidOperationException($"no lowering for {n.OpType}");
    }

    static string Sum(GraphBuilder b, string x, string skip, string? bias) => bias is null ? b.Add(x, skip) : b.Add(b.Add(x, skip), bias);

    /// <summary>√(mean of x² over <paramref name="axes"/> + ε), kept dims.</summary>
    static string Rms(GraphBuilder b, string x, long[] axes, float epsilon) =>
        b.Sqrt(b.Add(b.Reduce("ReduceMean", b.Mul(x, x), axes, keepDims: true), b.Scalar(epsilon, x)));

    /// <summary>gelu(x) = ½x(1 + erf(x/√2))</summary>
    static string Gelu(GraphBuilder b, string x) =>
        b.Mul(b.Scale(x, 0.5), b.Add(b.Scalar(1, x), b.Op("Erf", [b.Scale(x, 1 / Math.Sqrt(2))])));

    /// <summary>A standard op on <paramref name="inputs"/> with the node's attributes less <paramref name="drop"/>.</summary>
    static string Standard(GraphBuilder b, string op, string[] inputs, NodeProto n, params string[] drop)
    {
        var y = b.Op(op, inputs);
        b.Nodes[^1].Attribute.AddRange(n.Attribute.Where(a => !drop.Contains(a.Name)).Select(a => a.Clone()));
        return y;
    }

    /// <summary>FusedConv's activations (MLAS's set): parameters in activation_params.</summary>
    static string ConvActivation(GraphBuilder b, string y, NodeProto n, string what)
    {
        var act = Str(n, "activation");
        var p = n.Attribute.FirstOrDefault(a => a.Name == "activation_params")?.Floats.ToArray() ?? [];
        float P(int i, float def) => i < p.Length ? p[i] : def;
        return act switch
        {
            null or "" => y,
            "Relu" or "Tanh" or "Sigmoid" => b.Op(act, [y]),
            "LeakyRelu" => b.Op("LeakyRelu", [y], ("alpha", P(0, 0.01f))),
            "HardSigmoid" => b.Op("HardSigmoid", [y], ("alpha", P(0, 0.2f)), ("beta", P(1, 0.5f))),
            "Clip" when p.Length == 2 => b.Op("Clip", [y, b.Scalar(p[0], y), b.Scalar(p[1], y)]),
            _ => throw new UserError($"{what} has activation '{act}'{(act == "Clip" ? $" with {p.Length} parameters (needs min and max)" : "")}; " +
                "only Relu, Tanh, Sigmoid, LeakyRelu, HardSigmoid and Clip can be lowered"),
        };
    }

    /// <summary>FusedGemm's activations: ONNX ops whose alpha/beta/gamma attributes come as activation_alpha/beta/gamma.</summary>
    static string GemmActivation(GraphBuilder b, string y, NodeProto n, string what)
    {
        var act = Str(n, "activation");
        if (act is null or "") return y;
        if (act is not ("Relu" or "Tanh" or "Sigmoid" or "LeakyRelu" or "HardSigmoid" or "Elu" or "Selu" or "Softplus" or "Softsign" or "ThresholdedRelu"))
            throw new UserError($"{what} has activation '{act}'; only Relu, Tanh, Sigmoid, LeakyRelu, HardSigmoid, Elu, Selu, Softplus, Softsign and ThresholdedRelu can be lowered");
        string[] names = act switch { "LeakyRelu" or "Elu" or "ThresholdedRelu" => ["alpha"], "HardSigmoid" => ["alpha", "beta"], "Selu" => ["alpha", "gamma"], _ => [] };
        var attrs = names.Where(a => n.Attribute.Any(x => x.Name == "activation_" + a)).Select(a => (a, (object)Float(n, "activation_" + a, 0))).ToArray();
        return b.Op(act, [y], attrs);
    }

    /// <summary>A FusedMatMul operand as MatMul takes it: transBatch moves axis 0 behind the batch axes, trans swaps the last two.</summary>
    static string MatMulOperand(GraphBuilder b, string x, long trans, long transBatch, Dictionary<string, int> ranks, string what, string operand)
    {
        if (trans == 0 && transBatch == 0) return x;
        if (!ranks.TryGetValue(x, out var r))
            throw new UserError($"{what} transposes its input {operand} ('{x}'), whose rank the model does not record; run ONNX Runtime's shape inference on the model (or save it from a session, which records it)");
        if (r < 2) return x;   // a vector is not transposed (as in numpy)
        var batch = transBatch != 0 ? Enumerable.Range(1, r - 2) : Enumerable.Range(0, r - 2);
        long row = transBatch != 0 ? 0 : r - 2, col = r - 1;
        var perm = batch.Select(i => (long)i).Concat(trans != 0 ? [col, row] : [row, col]).ToArray();
        return perm.Select((p, i) => p == i).All(same => same) ? x : b.Transpose(x, perm);
    }

    /// <summary>
    /// Ranks the graph records (inputs, outputs, value_info, initializers), then those that follow from them through the
    /// ops around fused attention: ONNX Runtime saves optimized models without value_info, so a mask from
    /// EmbedLayerNormalization or a rotary input from a MatMul has no recorded rank.
    /// </summary>
    static Dictionary<string, int> Ranks(GraphProto g)
    {
        var ranks = new Dictionary<string, int>();
        foreach (var v in g.Input.Concat(g.ValueInfo).Concat(g.Output))
            if (v.Type?.TensorType?.Shape is { } s) ranks[v.Name] = s.Dim.Count;
        foreach (var t in g.Initializer) ranks[t.Name] = t.Dims.Count;
        var consts = g.Initializer.Where(t => t.DataType == 7).ToDictionary(t => t.Name, t => t.Dims.Count == 1 ? t.Dims[0] : -1);
        foreach (var n in g.Node)   // nodes are stored in topological order
        {
            int? R(int i) => i < n.Input.Count && ranks.TryGetValue(n.Input[i], out var r) ? r : null;
            int?[] outs = (n.Domain, n.OpType) switch
            {
                (Domain, "EmbedLayerNormalization") => [3, 1, 3],
                (Domain, "Attention" or "MultiHeadAttention") => [3, 4, 4],
                (Domain, "GroupQueryAttention") => [3, 4, 4],
                (Domain, "RotaryEmbedding" or "Gelu" or "FastGelu" or "BiasGelu" or "QuickGelu" or "SkipLayerNormalization" or "SkipSimplifiedLayerNormalization") => [R(0), null, null, R(0)],
                ("" or "ai.onnx", "Identity" or "Cast" or "Relu" or "Tanh" or "Sigmoid" or "Erf" or "Sqrt" or "Neg" or "Softmax" or "Transpose" or "LayerNormalization" or "SimplifiedLayerNormalization") => [R(0)],
                ("" or "ai.onnx", "Add" or "Sub" or "Mul" or "Div" or "Pow" or "Where") => [n.Input.Select((_, i) => R(i)).Aggregate((int?)0, (a, r) => a is null || r is null ? null : Math.Max(a.Value, r.Value))],
                ("" or "ai.onnx", "MatMul") when R(0) >= 2 && R(1) >= 2 => [Math.Max(R(0)!.Value, R(1)!.Value)],
                ("" or "ai.onnx", "Reshape") when n.Input.Count > 1 && consts.TryGetValue(n.Input[1], out var len) && len >= 0 => [(int)len],
                ("" or "ai.onnx", "Gather") when R(0) is { } rd && R(1) is { } ri => [rd + ri - 1],
                _ => [],
            };
            for (int o = 0; o < Math.Min(outs.Length, n.Output.Count); o++)
                if (outs[o] is { } r && n.Output[o].Length > 0) ranks.TryAdd(n.Output[o], r);
        }
        return ranks;
    }

    static long Int(NodeProto n, string name, long def = 0) => n.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.I : def;
    static float Float(NodeProto n, string name, float def) => n.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.F : def;
    static string? Str(NodeProto n, string name) => n.Attribute.FirstOrDefault(a => a.Name == name)?.S.ToStringUtf8();
}
