namespace OnnxUnlearn.Autodiff;

// Sliding windows (Conv, ConvTranspose, pools) and resampling (Resize, Upsample). Window geometry comes from the
// measured static shapes: spatial extents must be known when the gradient graph is built.
public static partial class GradientRegistry
{
    static void Convolution(Dictionary<string, OpGradient> d)
    {
        Rule(d, "Conv", c =>
        {   // Y[n,m,o] = Σ_{c∈group(m), k} X[n,c, o·s + k·d − pb]·W[m,c,k] + B[m]
            var win = SlidingWindows(c, StaticDims(c, c.X(1))[2..]);
            long g = c.Int("group", 1);
            if (c.Needs(0)) c.Give(0, WindowsTransposed(c.B, c.dY, c.X(1), g, win));  // dX = ConvTranspose(dY, W)
            if (c.Needs(1)) c.Give(1, KernelGrad(c, c.X(0), c.dY, g, win));           // dW[m,c,k] = Σ X[·, o·s + k·d − pb]·dY[·,m,o]
            if (c.Needs(2)) c.Give(2, ChannelSum(c));
        });
        Rule(d, "ConvTranspose", c =>
        {   // The transpose of Conv: Y[n,m, i·s + k·d − pb] += X[n,c,i]·W[c,m,k], so the windows run over Y (long side).
            var win = TransposedWindows(c);
            long g = c.Int("group", 1);
            if (c.Needs(0)) c.Give(0, WindowSum(c.B, c.dY, c.X(1), g, win));         // dX = Conv(dY, W)
            if (c.Needs(1)) c.Give(1, KernelGrad(c, c.dY, c.X(0), g, win));           // dW[c,m,k] = Σ dY[·, i·s + k·d − pb]·X[·,c,i]
            if (c.Needs(2)) c.Give(2, ChannelSum(c));
        });
        RuleOnly(d, "MaxPool", MaxPoolRule, 0);
        RuleOnly(d, "AveragePool", AveragePoolRule, 0);
        Rule(d, "GlobalAveragePool", c =>
        {   // Y[n,c] = mean over the spatial axes: dX = dY / (H·W…), broadcast back
            var n = StaticDims(c, c.X(0))[2..].Aggregate(1L, (a, e) => a * e);
            c.Give(0, c.B.Expand(c.B.Scale(c.dY, 1.0 / n), c.B.Shape(c.X(0))));
        });
        Rule(d, "GlobalMaxPool", c =>
        {   // Y[n,c] = X[n,c,argmax]: dX = dY at the (first) maximal element of each (n,c) plane, 0 elsewhere
            var b = c.B;
            var flat = b.Reshape(c.X(0), b.Ints(0, 0, -1));
            var at = b.Op("ArgMax", [flat], ("axis", 2L), ("keepdims", 1L));
            var grad = b.Op("ScatterElements", [b.Expand(b.Scalar(0, flat), b.Shape(flat)), at, b.Reshape(c.dY, b.Ints(0, 0, 1))], ("axis", 2L));
            c.Give(0, b.Reshape(grad, b.Shape(c.X(0))));
        });
        RuleOnly(d, "Resize", c =>
            ResizeRule(c, c.Str("mode", "nearest"), c.Str("coordinate_transformation_mode", "half_pixel"),
                ramp => c.B.Like(c.Node, [ramp, .. c.Node.Input.Skip(1)])[0]), 0);
        RuleOnly(d, "Upsample", c =>
        {   // Upsample (opsets 7–9) is Resize with asymmetric coordinates and floor rounding; scales by attribute (7) or input (9).
            var b = c.B;
            var scales = c.Floats("scales") is { } f
                ? b.Op("Constant", [], ("value", new global::Onnx.TensorProto { DataType = 1, Dims = { f.Length }, FloatData = { f } }))
                : c.X(1);
            var mode = c.Str("mode", "nearest") == "bilinear" ? "linear" : c.Str("mode", "nearest");
            ResizeRule(c, mode, "asymmetric", ramp => b.Op("Resize", [ramp, "", scales],
                ("mode", mode), ("coordinate_transformation_mode", "asymmetric"), ("nearest_mode", "floor")));
        }, 0);
    }

    /// <summary>
    /// Geometry of a sliding-window op per spatial axis: window o covers the long-side positions o·S + k·Dil − Pb
    /// (k &lt; K); the long side has extent Long, the short side (one entry per window) extent Short.
    /// </summary>
    sealed record Windows(long[] K, long[] S, long[] Dil, long[] Pb, long[] Long, long[] Short)
    {
        public int Rank => K.Length;
        public long Span(int a) => (K[a] - 1) * Dil[a] + 1;
    }

    /// <summary>Conv and pools: windows over X (long side), one per element of Y. auto_pad is resolved from X's extents.</summary>
    static Windows SlidingWindows(GradContext c, long[] kernel)
    {
        int n = kernel.Length;
        var x = StaticDims(c, c.X(0))[2..];
        var s = c.Ints("strides") ?? Ones(n);
        var dil = c.Ints("dilations") ?? Ones(n);
        var pads = c.Ints("pads");
        var autoPad = c.Str("auto_pad", "NOTSET");
        var pb = new long[n];
        for (int a = 0; a < n; a++)
        {
            // SAME: pad to ceil(D/s) windows, the odd element at the end (UPPER) or at the beginning (LOWER)
            long total = Math.Max(0, (CeilDiv(x[a], s[a]) - 1) * s[a] + (kernel[a] - 1) * dil[a] + 1 - x[a]);
            pb[a] = autoPad switch
            {
                "SAME_UPPER" => total / 2,
                "SAME_LOWER" => (total + 1) / 2,
                "VALID" => 0,
                _ => pads?[a] ?? 0,
            };
        }
        return new Windows(kernel, s, dil, pb, x, StaticDims(c, c.Y())[2..]);
    }

    /// <summary>ConvTranspose: windows over Y (long side), one per element of X, leading pads as ONNX Runtime derives them.</summary>
    static Windows TransposedWindows(GradContext c)
    {
        var kernel = StaticDims(c, c.X(1))[2..];
        int n = kernel.Length;
        var x = StaticDims(c, c.X(0))[2..];
        var y = StaticDims(c, c.Y())[2..];
        var s = c.Ints("strides") ?? Ones(n);
        var dil = c.Ints("dilations") ?? Ones(n);
        var outPad = c.Ints("output_padding") ?? new long[n];
        var pads = c.Ints("pads");
        var autoPad = c.Str("auto_pad", "NOTSET");
        var pb = new long[n];
        for (int a = 0; a < n; a++)
        {
            if (c.HasAttr("output_shape"))
            {   // the total padding split with the odd element at the end for SAME_UPPER, at the start otherwise (spec and ORT)
                long total = Math.Max(0, (x[a] - 1) * s[a] + outPad[a] + (kernel[a] - 1) * dil[a] + 1 - y[a]);
                pb[a] = autoPad == "SAME_UPPER" ? total / 2 : total - total / 2;
            }
            else pb[a] = autoPad == "NOTSET" ? pads?[a] ?? 0 : 0;   // ONNX Runtime does not pad for auto_pad without output_shape
        }
        return new Windows(kernel, s, dil, pb, y, x);
    }

    /// <summary>
    /// Z[o] = Σ_k V[o·S + k·Dil − Pb]·w[k] (grouped): Conv from the long side to exactly the short side's extent, the end
    /// padded as far as the last window needs, then cut.
    /// </summary>
    static string WindowSum(GraphBuilder b, string v, string w, long group, Windows win)
    {
        int n = win.Rank;
        var pads = new long[2 * n];
        var produced = new long[n];
        for (int a = 0; a < n; a++)
        {
            pads[a] = win.Pb[a];
            pads[n + a] = Math.Max(0, (win.Short[a] - 1) * win.S[a] + win.Span(a) - win.Long[a] - win.Pb[a]);
            produced[a] = (win.Long[a] + pads[a] + pads[n + a] - win.Span(a)) / win.S[a] + 1;
        }
        var z = b.Op("Conv", [v, w], ("strides", win.S), ("dilations", win.Dil), ("pads", pads), ("group", group));
        return CutTo(b, z, produced, win.Short);
    }

    /// <summary>
    /// The transpose of <see cref="WindowSum"/>: Z[i] = Σ_{o,k: o·S + k·Dil − Pb = i} G[o]·w[k], by ConvTranspose, exactly the
    /// long side's extent. Long-side elements past the last window (when the stride does not divide the padded extent)
    /// get zeros through output_padding; window parts in the end padding are cut by the end pads.
    /// </summary>
    static string WindowsTransposed(GraphBuilder b, string g, string w, long group, Windows win)
    {
        int n = win.Rank;
        var pads = new long[2 * n];
        var outPad = new long[n];
        for (int a = 0; a < n; a++)
        {
            long reach = (win.Short[a] - 1) * win.S[a] + win.Span(a) - win.Pb[a];   // long-side extent the windows cover
            pads[a] = win.Pb[a];
            if (reach >= win.Long[a]) pads[n + a] = reach - win.Long[a]; else outPad[a] = win.Long[a] - reach;
        }
        return b.Op("ConvTranspose", [g, w], ("strides", win.S), ("dilations", win.Dil), ("pads", pads), ("output_padding", outPad), ("group", group));
    }

    /// <summary>
    /// ∂/∂W of Σ Sh[n,cs,j]·Lo[n, group(cs)·CLg + cl, j·S + k·Dil − Pb], shaped [CS, CLg, K…]. It is a Conv of the long
    /// tensor against the short one with strides and dilations exchanged: batch and channel axes swap (the sum over n becomes
    /// the channel sum) and each group's channels are folded into the batch axis (long) or the filter axis (short), so
    /// that a Conv with the same group count pairs each group with its own channels.
    /// </summary>
    static string KernelGrad(GradContext c, string longSide, string shortSide, long group, Windows win)
    {
        var b = c.B;
        int n = win.Rank;
        var w = StaticDims(c, c.X(1));   // [CS, CL/g, K…] for Conv ([M, C/g, K…]) and ConvTranspose ([C, M/g, K…]) alike
        long cs = w[0], cl = w[1] * group;
        var spatial = Enumerable.Range(3, n).Select(a => (long)a).ToArray();
        // [N, CL, Dl…] → [N, g, CL/g, Dl…] → [CL/g, g, N, Dl…] → [CL/g, g·N, Dl…]
        var lo = b.Reshape(b.Transpose(b.Reshape(longSide, b.Ints([0, group, cl / group, .. win.Long])), [2, 1, 0, .. spatial]),
            b.Ints([cl / group, -1, .. win.Long]));
        // [N, CS, Ds…] → [N, g, CS/g, Ds…] → [g, CS/g, N, Ds…] → [CS, N, Ds…]
        var sh = b.Reshape(b.Transpose(b.Reshape(shortSide, b.Ints([0, group, cs / group, .. win.Short])), [1, 2, 0, .. spatial]),
            b.Ints([cs, -1, .. win.Short]));
        var pads = new long[2 * n];
        var produced = new long[n];
        for (int a = 0; a < n; a++)
        {
            long span = (win.Short[a] - 1) * win.S[a] + 1;   // the short side as a kernel dilated by the stride
            pads[a] = win.Pb[a];
            pads[n + a] = Math.Max(0, (win.K[a] - 1) * win.Dil[a] + span - win.Long[a] - win.Pb[a]);
            produced[a] = (win.Long[a] + pads[a] + pads[n + a] - span) / win.Dil[a] + 1;
        }
        var z = b.Op("Conv", [lo, sh], ("strides", win.Dil), ("dilations", win.S), ("pads", pads), ("group", group));
        return b.Transpose(CutTo(b, z, produced, win.K), [1, 0, .. spatial.Select(a => a - 1)]);   // [CL/g, CS, K…] → [CS, CL/g, K…]
    }

    /// <summary>dB = Σ dY over every axis but the channel axis.</summary>
    static string ChannelSum(GradContext c) =>
        c.B.ReduceSum(c.dY, [0, .. Enumerable.Range(2, c.Rank(c.Y()) - 2).Select(a => (long)a)], keepDims: false);

    /// <summary>
    /// Y[o] = X[I[o]], I the element the forward picked (ONNX Runtime's own Indices, so ties go where the forward sent them):
    /// dX[i] = Σ_{o: I[o] = i} dY[o], a scatter-add into the flattened input (overlapping windows may pick one element twice).
    /// </summary>
    static void MaxPoolRule(GradContext c)
    {
        var b = c.B;
        var kernel = c.Ints("kernel_shape")!;
        var win = SlidingWindows(c, kernel);
        var indices = c.Node.Output.Count > 1 && c.Y(1).Length > 0 && c.Int("storage_order", 0) == 0 ? c.Y(1)
            : b.Like(c.Node, [c.X(0)], 2, "storage_order")[1];
        var zeros = b.Expand(b.Scalar(0, c.X(0)), b.Reshape(b.Op("Size", [c.X(0)]), b.Ints(1)));
        string Scatter(string dy, string at, bool add) => add
            ? b.Op("ScatterElements", [zeros, b.Reshape(at, b.Ints(-1)), b.Reshape(dy, b.Ints(-1))], ("axis", 0L), ("reduction", "add"))
            : b.Op("ScatterElements", [zeros, b.Reshape(at, b.Ints(-1)), b.Reshape(dy, b.Ints(-1))], ("axis", 0L));

        // Windows o, o' with o ≡ o' (mod ⌈span/s⌉) on every axis are disjoint: such phases need no add.
        var phases = Enumerable.Range(0, win.Rank).Select(a => CeilDiv(win.Span(a), win.S[a])).ToArray();
        string grad;
        if (phases.All(p => p == 1)) grad = Scatter(c.dY, indices, add: false);
        else if (b.Opset >= 16) grad = Scatter(c.dY, indices, add: true);
        else
        {   // opset 15 has no scatter-add: scatter each phase separately and sum
            var axes = b.Ints([.. Enumerable.Range(2, win.Rank).Select(a => (long)a)]);
            var parts = new List<string>();
            foreach (var start in Phases(phases))
            {
                var args = new[] { b.Ints(start), b.Ints([.. start.Select(_ => long.MaxValue)]), axes, b.Ints(phases) };
                parts.Add(Scatter(b.Op("Slice", [c.dY, .. args]), b.Op("Slice", [indices, .. args]), add: false));
            }
            grad = b.Sum(parts);
        }
        c.Give(0, b.Reshape(grad, b.Shape(c.X(0))));
    }

    static IEnumerable<long[]> Phases(long[] counts) => counts.Aggregate(
        (IEnumerable<long[]>)[[]], (acc, count) => acc.SelectMany(p => Enumerable.Range(0, (int)count).Select(i => (long[])[.. p, i])));

    /// <summary>
    /// Y[o] = Σ_{i∈win(o)} X[i] / div[o], div the window size or (count_include_pad = 0) its count of real elements, clipped
    /// at the end by ceil_mode: dX[i] = Σ_{o∋i} dY[o] / div[o] = ConvTranspose(dY / div, ones). 1/div is measured on a ones
    /// image [1,1,D…] as AveragePool(1) / SumPool(1), the forward op itself giving the divisor ONNX Runtime uses.
    /// </summary>
    static void AveragePoolRule(GradContext c)
    {
        var b = c.B;
        var kernel = c.Ints("kernel_shape")!;
        var win = SlidingWindows(c, kernel);
        long channels = StaticDims(c, c.X(0))[1];
        var ones = b.Expand(b.Scalar(1, c.X(0)), b.Ints([1, 1, .. win.Long]));
        var sumPool = WindowSum(b, ones, b.Expand(b.Scalar(1, c.X(0)), b.Ints([1, 1, .. kernel])), 1, win);
        var inverseDivisor = b.Div(b.Like(c.Node, [ones])[0], sumPool);
        var depthwiseOnes = b.Expand(b.Scalar(1, c.X(0)), b.Ints([channels, 1, .. kernel]));
        c.Give(0, WindowsTransposed(b, b.Mul(c.dY, inverseDivisor), depthwiseOnes, channels, win));
    }

    /// <summary>
    /// Resize is linear and separable: along each resized axis Y[…o…] = Σ_t w_t(o)·X[…i_t(o)…] (one tap for nearest, two
    /// for linear), so dX = Aᵀ·dY, axis by axis, a scatter-add of dY·w_t at i_t. The taps come from the forward op itself
    /// applied to an index ramp along the axis: nearest returns i(o) exactly, linear the position p(o) = i₀ + w between
    /// i₀ = ⌊p⌋ and i₀ + 1, so coordinate modes, rounding modes, scales and sizes are exactly ONNX Runtime's.
    /// </summary>
    static void ResizeRule(GradContext c, string mode, string coordinates, Func<string, string> resizeLike)
    {
        var b = c.B;
        if (mode is not ("nearest" or "linear") || coordinates == "tf_crop_and_resize" || c.Int("antialias", 0) != 0)
            throw new UserError($"no gradient rule for {Backprop.Describe(c.Node, c.Opset)} with mode '{mode}', coordinate_transformation_mode " +
                $"'{coordinates}', antialias {c.Int("antialias", 0)}: supported are nearest and linear (no antialias, no tf_crop_and_resize)");
        var (xs, ys) = (c.Shapes[c.X(0)]!, c.Shapes[c.Y()]!);
        int rank = xs.Rank;
        // An axis of unchanged extent is taken as unscaled: the identity. (The one exception, tf_half_pixel_for_nearest
        // rounding x + ½ up, ONNX Runtime does not run.)
        var grad = c.dY;
        for (int a = rank - 1; a >= 0; a--)
        {
            if (xs.SameExtent(a, ys, a)) continue;
            var extent = xs.Dims[a] >= 0 ? b.Int(xs.Dims[a]) : b.Squeeze(b.Op("Shape", [c.X(0)], ("start", (long)a), ("end", a + 1L)), 0);
            var along = Enumerable.Repeat(1L, rank).ToArray();
            along[a] = -1;
            var ramp = b.Reshape(b.Op("Cast", [b.Op("Range", [b.Int(0), extent, b.Int(1)])], ("to", 1L)), b.Ints(along));
            var resized = resizeLike(b.Expand(ramp, b.Shape(c.X(0))));
            along[a] = long.MaxValue;
            var p = b.Op("Slice", [resized, b.Ints(new long[rank]), b.Ints(along)]);   // one line along axis a: [1…, O_a, …1]
            List<(string Index, string? Weight)> taps;
            if (mode == "nearest") taps = [(b.Op("Cast", [p], ("to", 7L)), null)];
            else
            {   // p ∈ [0, D−1] up to rounding; clamping keeps a p just below 0 on index 0
                var floor = b.Op("Floor", [p]);
                var w = b.Op("CastLike", [b.Sub(p, floor), grad]);
                var i = b.Op("Cast", [floor], ("to", 7L));
                taps = [(b.Op("Max", [i, b.Int(0)]), b.Sub(b.Scalar(1, w), w)),
                        (b.Op("Min", [b.Add(i, b.Int(1)), b.Sub(extent, b.Int(1))]), w)];
            }
            grad = AxisTranspose(b, grad, a, rank, extent, taps);
        }
        c.Give(0, grad);
    }

    /// <summary>G'[…i…] = Σ_{o,t: i_t(o) = i} w_t(o)·G[…o…] along axis a (indices and weights shaped [1…, O, …1]).</summary>
    static string AxisTranspose(GraphBuilder b, string g, int a, int rank, string extent, List<(string Index, string? Weight)> taps)
    {
        if (b.Opset >= 16)
        {
            var shape = b.Op("Concat", [b.Op("Shape", [g], ("end", (long)a)), b.Reshape(extent, b.Ints(1)), b.Op("Shape", [g], ("start", a + 1L))], ("axis", 0L));
            var at = taps.Select(t => b.Expand(t.Index, b.Shape(g))).ToList();
            var updates = taps.Select(t => t.Weight is null ? g : b.Mul(g, t.Weight)).ToList();
            string Join(List<string> parts) => parts.Count == 1 ? parts[0] : b.Op("Concat", parts, ("axis", (long)a));
            return b.Op("ScatterElements", [b.Expand(b.Scalar(0, g), shape), Join(at), Join(updates)], ("axis", (long)a), ("reduction", "add"));
        }
        // Opset 15 has no scatter-add: multiply by the dense matrix A[o, i] = Σ_t w_t(o)·[i_t(o) = i] instead.
        var column = b.Op("Range", [b.Int(0), extent, b.Int(1)]);
        var matrix = b.Sum(taps.Select(t =>
        {
            var hit = b.Op("CastLike", [b.Op("Equal", [b.Reshape(t.Index, b.Ints(-1, 1)), column]), g]);
            return t.Weight is null ? hit : b.Mul(hit, b.Reshape(t.Weight, b.Ints(-1, 1)));
        }).ToList());
        long[] last = [.. Enumerable.Range(0, rank).Where(k => k != a).Select(k => (long)k), a];
        long[] back = [.. Enumerable.Range(0, rank).Select(k => (long)Array.IndexOf(last, k))];
        return b.Transpose(b.MatMul(b.Transpose(g, last), matrix), back);
    }

    /// <summary>Slices spatial axes (2…) from the extents produced down to the wanted ones, where they differ.</summary>
    static string CutTo(GraphBuilder b, string x, long[] produced, long[] wanted)
    {
        if (produced.SequenceEqual(wanted)) return x;
        return b.Op("Slice", [x, b.Ints(new long[wanted.Length]), b.Ints(wanted), b.Ints([.. Enumerable.Range(2, wanted.Length).Select(a => (long)a)])]);
    }

    /// <summary>A value's measured shape, which must be static from axis 1 on (channels and spatial extents).</summary>
    static long[] StaticDims(GradContext c, string value)
    {
        var dims = c.Dims(value);
        if (dims.Skip(1).Any(e => e < 0))
            throw new UserError($"the gradient of {Backprop.Describe(c.Node, c.Opset)} needs static channel and spatial extents, " +
                $"but '{value}' has shape [{string.Join(", ", dims.Select(e => e < 0 ? "?" : e.ToString()))}] (varies between batches)");
        return dims;
    }

    static long[] Ones(int n) => Enumerable.Repeat(1L, n).ToArray();
    static long CeilDiv(long a, long b) => (a + b - 1) / b;
}
