namespace OnnxUnlearn.Autodiff;

// Softmax family and normalisation layers (convolution, pooling and resizing live in Convolution.cs).
// x̂ = (X − μ)·σ⁻¹ is the standardised input; per-channel parameters broadcast over axis 1.
public static partial class GradientRegistry
{
    static void Network(Dictionary<string, OpGradient> d)
    {
        // Y = softmax(X) along one axis (opset ≥ 13, default −1): dX = Y ⊙ (dY − Σ dY⊙Y)
        Rule(d, "Softmax", c =>
        {
            var b = c.B; var y = c.Y();
            c.Give(0, b.Mul(y, b.Sub(c.dY, b.ReduceSum(b.Mul(c.dY, y), [c.Int("axis", -1)], keepDims: true))));
        });
        // Y = log softmax(X): dX = dY − exp(Y)·Σ dY (exp(Y) is the softmax, accurate even where it saturates)
        Rule(d, "LogSoftmax", c =>
        {
            var b = c.B;
            c.Give(0, b.Sub(c.dY, b.Mul(b.Exp(c.Y()), b.ReduceSum(c.dY, [c.Int("axis", -1)], keepDims: true))));
        });

        // Loss = −w[t]·X[n, t, d…] per element (0 where t = ignore_index), reduced by none/sum/mean (mean divides by
        // Σ w[t] over the kept elements). dX = −w[t]·onehot(t)·g, g = dY per element, dY, or dY/Σ w[t]. The class
        // weights (input 2) get no gradient.
        RuleOnly(d, "NegativeLogLikelihoodLoss", c => c.Give(0, NllBackward(c, c.X(0), c.dY)), 0);
        // Loss = NLL(log softmax(X) along axis 1), optional output 1 = log softmax(X). With D = dLoss/dlogp (+ dY₁):
        // dX = D − softmax(X)·Σ_C D, i.e. g·w[t]·(softmax − onehot) for the loss alone, from a stable log softmax.
        RuleOnly(d, "SoftmaxCrossEntropyLoss", c =>
        {
            var b = c.B; var x = c.X(0);
            var terms = new List<string>();
            if (c.GradY(0) is { } g) terms.Add(NllBackward(c, x, g));
            if (c.GradY(1) is { } glp) terms.Add(glp);
            if (terms.Count == 0) return;
            var dlp = b.Sum(terms);
            var logp = c.Node.Output.Count > 1 && c.Y(1).Length > 0 ? c.Y(1) : b.Op("LogSoftmax", [x], ("axis", 1L));
            c.Give(0, b.Sub(dlp, b.Mul(b.Exp(logp), b.ReduceSum(dlp, [1], keepDims: true))));
        }, 0);

        // Inference form, running μ, σ² (inputs 3, 4) fixed: Y = γ·(X − μ)/√(σ² + ε) + β.
        // dX = dY·γ/√(σ² + ε), dγ = Σ dY⊙x̂, dβ = Σ dY, sums over every axis but 1.
        // Training mode (batch statistics over every axis but 1) is instance norm's backward over those axes.
        Rule(d, "BatchNormalization", c =>
        {
            var b = c.B; var x = c.X(0); int r = c.Rank(x);
            OnlyFirstOutputDifferentiated(c, "running mean/var");
            if (c.Int("training_mode", 0) != 0) { ChannelNormRule(c, NormNonChannelAxes(r)); return; }
            var invstd = b.Op("Reciprocal", [b.Sqrt(b.Add(c.X(4), b.Scalar(c.Float("epsilon", 1e-5f), c.X(4))))]);
            if (c.Needs(0)) c.Give(0, b.Mul(c.dY, NormPerChannel(b, b.Mul(c.X(1), invstd), r)));
            if (c.Needs(1))
            {
                var xh = b.Mul(b.Sub(x, NormPerChannel(b, c.X(3), r)), NormPerChannel(b, invstd, r));
                c.Give(1, b.ReduceSum(b.Mul(c.dY, xh), NormNonChannelAxes(r), keepDims: false));
            }
            if (c.Needs(2)) c.Give(2, b.ReduceSum(c.dY, NormNonChannelAxes(r), keepDims: false));
        }, 3, 4);

        // Y = x̂·S + B over axes [axis, rank); dS, dB sum dY⊙x̂, dY over the leading axes (and any broadcast of S, B).
        Rule(d, "LayerNormalization", c =>
        {
            OnlyFirstOutputDifferentiated(c, "Mean/InvStdDev");
            var b = c.B; var x = c.X(0); int r = c.Rank(x);
            var axes = NormAxes(GradContext.Axis(c.Int("axis", -1), r), r);
            var (xh, invstd) = NormStandardise(c, x, axes);
            if (c.Needs(0)) c.Give(0, NormBackward(b, b.Mul(c.dY, c.X(1)), xh, invstd, axes));
            if (c.Needs(1)) c.Give(1, c.UnbroadcastTo(b.Mul(c.dY, xh), c.Y(), c.X(1)));
            if (c.Needs(2)) c.Give(2, c.UnbroadcastTo(c.dY, c.Y(), c.X(2)));
        });

        // Y = γ·x̂ + β, x̂ over the spatial axes of each (n, c); γ, β per channel.
        Rule(d, "InstanceNormalization", c => ChannelNormRule(c, NormAxes(2, c.Rank(c.X(0)))));

        // X viewed as [N, G, rest], standardised over rest; γ, β per channel (opset 21) or per group (18–20).
        Rule(d, "GroupNormalization", c =>
        {
            var b = c.B; var x = c.X(0); int r = c.Rank(x);
            long groups = c.Int("num_groups", 1);
            string Grouped(string v) => b.Reshape(v, b.Ints(0, groups, -1));
            var xg = Grouped(x);
            var (xh, invstd) = NormStandardise(c, xg, [2]);
            bool perChannel = c.Opset >= 21;
            // In the grouped view: per-group parameters are [G, 1]; per-channel ones act before grouping.
            var dYg = Grouped(c.dY);
            var xhOwn = perChannel ? b.Reshape(xh, b.Shape(x)) : xh;
            var dYOwn = perChannel ? c.dY : dYg;
            long[] sumAxes = perChannel ? NormNonChannelAxes(r) : [0, 2];
            if (c.Needs(0))
            {
                var dxh = perChannel ? Grouped(b.Mul(c.dY, NormPerChannel(b, c.X(1), r))) : b.Mul(dYg, b.Unsqueeze(c.X(1), 1));
                c.Give(0, b.Reshape(NormBackward(b, dxh, xh, invstd, [2]), b.Shape(x)));
            }
            if (c.Needs(1)) c.Give(1, b.ReduceSum(b.Mul(dYOwn, xhOwn), sumAxes, keepDims: false));
            if (c.Needs(2)) c.Give(2, b.ReduceSum(dYOwn, sumAxes, keepDims: false));
        });

        // Y = X/‖X‖ₚ along one axis (p = 1, 2): dX = (dY − ∂‖X‖ₚ/∂X · Σ dY⊙Y)/‖X‖ₚ, ∂‖X‖/∂X = sign(X) or Y
        Rule(d, "LpNormalization", c =>
        {
            var b = c.B; var x = c.X(0); var y = c.Y();
            long p = c.Int("p", 2), axis = c.Int("axis", -1);
            if (p is not (1 or 2)) throw new UserError($"{Backprop.Describe(c.Node, c.Opset)}: p = {p} (only 1 and 2 are defined)");
            var norm = b.Reduce(p == 1 ? "ReduceL1" : "ReduceL2", x, [axis], keepDims: true);
            var dn = p == 1 ? b.Op("Sign", [x]) : y;
            c.Give(0, b.Div(b.Sub(c.dY, b.Mul(dn, b.ReduceSum(b.Mul(c.dY, y), [axis], keepDims: true))), norm));
        });

        // Y = X·S^−β, S = bias + α/size·Σ X² over a window of channels [c − ⌊(size−1)/2⌋, c + ⌈(size−1)/2⌉]:
        // dX = dY·S^−β − (2αβ/size)·X·Σ' dY·X·S^(−β−1), Σ' over the mirrored window (the channels whose window holds c).
        Rule(d, "LRN", c =>
        {
            var b = c.B; var x = c.X(0);
            long size = c.Int("size", 1), lo = (size - 1) / 2, hi = size - 1 - lo;
            double alpha = c.Float("alpha", 1e-4f), beta = c.Float("beta", 0.75f);
            var s = b.Add(b.Scalar(c.Float("bias", 1f), x), b.Scale(ChannelWindowSum(c, b.Mul(x, x), lo, hi), alpha / size));
            var scaled = b.Op("Pow", [s, b.Scalar(-beta, x)]);
            var t = b.Div(b.Mul(b.Mul(c.dY, x), scaled), s);
            c.Give(0, b.Sub(b.Mul(c.dY, scaled), b.Mul(b.Scale(x, 2 * alpha * beta / size), ChannelWindowSum(c, t, hi, lo))));
        });

        // Y = (X − μ)/(σ + 1e-9) over axes (default 0, 2, 3), σ the population standard deviation. With s = σ + ε:
        // dX = (dY − mean dY)/s − (X − μ)·mean(dY⊙(X − μ))/(σ·s²)
        Rule(d, "MeanVarianceNormalization", c =>
        {
            var b = c.B; var x = c.X(0); var axes = c.Ints("axes") ?? [0, 2, 3];
            string Mean(string v) => b.Reduce("ReduceMean", v, axes, keepDims: true);
            var centred = b.Sub(x, Mean(x));
            var sd = b.Sqrt(Mean(b.Mul(centred, centred)));
            var s = b.Add(sd, b.Scalar(1e-9, x));
            var first = b.Div(b.Sub(c.dY, Mean(c.dY)), s);
            c.Give(0, b.Sub(first, b.Div(b.Mul(centred, Mean(b.Mul(c.dY, centred))), b.Mul(sd, b.Mul(s, s)))));
        });
    }

    /// <summary>Y = γ·x̂ + β, x̂ standardised over <paramref name="axes"/>, γ, β per channel (inputs 1, 2).</summary>
    static void ChannelNormRule(GradContext c, long[] axes)
    {
        var b = c.B; var x = c.X(0); int r = c.Rank(x);
        var (xh, invstd) = NormStandardise(c, x, axes);
        if (c.Needs(0)) c.Give(0, NormBackward(b, b.Mul(c.dY, NormPerChannel(b, c.X(1), r)), xh, invstd, axes));
        if (c.Needs(1)) c.Give(1, b.ReduceSum(b.Mul(c.dY, xh), NormNonChannelAxes(r), keepDims: false));
        if (c.Needs(2)) c.Give(2, b.ReduceSum(c.dY, NormNonChannelAxes(r), keepDims: false));
    }

    /// <summary>out[:, c] = Σ v[:, k] for k in [c − before, c + after] ∩ [0, C): a zero-padded sum of shifted slices along axis 1.</summary>
    static string ChannelWindowSum(GradContext c, string v, long before, long after)
    {
        var b = c.B; int r = c.Rank(c.X(0));
        var pads = new long[2 * r]; pads[1] = before; pads[r + 1] = after;
        var padded = before + after == 0 ? v : b.Op("Pad", [v, b.Ints(pads)]);
        var channels = c.Extent(c.X(0), 1);
        var terms = Enumerable.Range(0, (int)(before + after + 1))
            .Select(k => b.Op("Slice", [padded, b.Ints(k), b.Add(b.Ints(k), channels), b.Ints(1)])).ToList();
        return b.Sum(terms);
    }

    /// <summary>
    /// Gradient of NegativeLogLikelihoodLoss(<paramref name="x"/>, X(1), X(2)) with respect to x [N, C, d…], the loss's
    /// gradient being <paramref name="g"/>: −w[t]·[class = t ≠ ignore_index]·g, built from a class-index comparison (no
    /// gather, so ignored targets may lie outside [0, C)).
    /// </summary>
    static string NllBackward(GradContext c, string x, string g)
    {
        var b = c.B; var t = c.X(1); int r = c.Rank(x);
        var classes = b.Op("Range", [b.Int(0), b.Squeeze(c.Extent(x, 1), 0), b.Int(1)]);
        classes = b.Op("CastLike", [b.Reshape(classes, b.Ints([1, -1, .. Enumerable.Repeat(1L, r - 2)])), t]);
        var tk = b.Unsqueeze(t, 1);
        var hit = b.Op("Equal", [classes, tk]);
        if (c.HasAttr("ignore_index"))
            hit = b.Op("And", [hit, b.Op("Not", [b.Op("Equal", [tk, b.Op("CastLike", [b.Int(c.Int("ignore_index", 0)), t])])])]);
        var picked = b.Mask(hit, x);
        if (c.HasX(2)) picked = b.Mul(picked, NormPerChannel(b, c.X(2), r));
        var scale = c.Str("reduction", "mean") switch
        {
            "none" => b.Unsqueeze(g, 1),
            "sum" => g,
            "mean" => b.Div(g, b.Op("ReduceSum", [picked], ("keepdims", 0L))),
            var other => throw new UserError($"{Backprop.Describe(c.Node, c.Opset)}: unknown reduction '{other}'"),
        };
        return b.Neg(b.Mul(picked, scale));
    }

    static void OnlyFirstOutputDifferentiated(GradContext c, string others)
    {
        if (Enumerable.Range(1, c.Node.Output.Count - 1).Any(i => c.GradY(i) is not null))
            throw new UserError($"{Backprop.Describe(c.Node, c.Opset)}: the loss depends on its {others} outputs, which have no gradient rule; only its first output does");
    }

    /// <summary>Axes [from, rank).</summary>
    static long[] NormAxes(long from, int rank) => Enumerable.Range((int)from, rank - (int)from).Select(a => (long)a).ToArray();

    /// <summary>Every axis but the channel axis 1.</summary>
    static long[] NormNonChannelAxes(int rank) => [0, .. NormAxes(2, rank)];

    /// <summary>A per-channel vector [C] shaped [C, 1, …] to broadcast against an [N, C, …] tensor of the given rank.</summary>
    static string NormPerChannel(GraphBuilder b, string v, int rank) => rank > 2 ? b.Unsqueeze(v, NormAxes(1, rank - 1)) : v;

    /// <summary>x̂ = (X − μ)·σ⁻¹ and σ⁻¹ = 1/√(var + ε) over <paramref name="axes"/> (kept), ε the node's epsilon.</summary>
    static (string XHat, string InvStd) NormStandardise(GradContext c, string x, long[] axes)
    {
        var b = c.B;
        var centred = b.Sub(x, b.Reduce("ReduceMean", x, axes, keepDims: true));
        var variance = b.Reduce("ReduceMean", b.Mul(centred, centred), axes, keepDims: true);
        var invstd = b.Op("Reciprocal", [b.Sqrt(b.Add(variance, b.Scalar(c.Float("epsilon", 1e-5f), x)))]);
        return (b.Mul(centred, invstd), invstd);
    }

    /// <summary>Backward of x̂ = (X − μ)·σ⁻¹ over <paramref name="axes"/>: dX = σ⁻¹·(dx̂ − mean(dx̂) − x̂·mean(dx̂⊙x̂)).</summary>
    static string NormBackward(GraphBuilder b, string dxh, string xh, string invstd, long[] axes)
    {
        var m1 = b.Reduce("ReduceMean", dxh, axes, keepDims: true);
        var m2 = b.Reduce("ReduceMean", b.Mul(dxh, xh), axes, keepDims: true);
        return b.Mul(invstd, b.Sub(b.Sub(dxh, m1), b.Mul(xh, m2)));
    }
}
