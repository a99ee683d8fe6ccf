namespace OnnxUnlearn.Autodiff;

// Ops that move, pick or copy elements: each gradient puts dY back where the forward took X's elements from, summing
// where one element was used several times. Shape, index and comparison ops stop the gradient.
public static partial class GradientRegistry
{
    static void Shapes(Dictionary<string, OpGradient> d)
    {
        // Same elements, new shape: dX = Reshape(dY, Shape(X)).
        GradRule reshapeBack = c => c.Give(0, c.B.Reshape(c.dY, c.B.Shape(c.X(0))));
        Rule(d, "Reshape", reshapeBack, 1);
        Rule(d, "Flatten", reshapeBack);
        Rule(d, "Squeeze", reshapeBack, 1);
        Rule(d, "Unsqueeze", reshapeBack, 1);
        Rule(d, "Transpose", c =>
        {   // Y = X with axes permuted by p (default: reversed): dX = dY permuted by p⁻¹
            var perm = c.Ints("perm") ?? Seq(0, c.Rank(c.X(0))).Reverse().ToArray();
            c.Give(0, c.B.Transpose(c.dY, GraphBuilder.InversePerm(perm)));
        });
        Rule(d, "Concat", c =>
        {   // Y = [X₀ | X₁ | …] along axis: dXᵢ = the piece of dY at Xᵢ's place
            int axis = (int)GradContext.Axis(c.Int("axis", 0), c.Rank(c.Y()));
            var sizes = c.B.Op("Concat", Enumerable.Range(0, c.Inputs).Select(i => c.Extent(c.X(i), axis)).ToArray(), ("axis", 0L));
            var pieces = c.B.OpN("Split", [c.dY, sizes], c.Inputs, ("axis", (long)axis));
            for (int i = 0; i < c.Inputs; i++) c.Give(i, pieces[i]);
        });
        Rule(d, "Split", c =>
        {   // Y₀, Y₁, … = pieces of X along axis: dX = [dY₀ | dY₁ | …], zeros for pieces nothing downstream used
            var parts = Enumerable.Range(0, c.Node.Output.Count).Select(i => c.GradY(i) ?? c.B.ZerosLike(c.Y(i))).ToArray();
            c.Give(0, c.B.Op("Concat", parts, ("axis", c.Int("axis", 0))));
        }, 1);
        Rule(d, "Slice", c =>
        {   // Y = X[starts:ends:steps]: dX = zeros with dY where Y came from (a Pad when the bounds are known and steps are 1)
            c.Give(0, SlicePads(c) is { } pads ? c.B.Op("Pad", [c.dY, c.B.Ints(pads)]) : SliceBack(c));
        }, 1, 2, 3, 4);
        Rule(d, "Pad", c =>
        {   // constant mode: Y = X padded by p (negative p crops): dX = dY padded by −p
            var b = c.B;
            if (c.Str("mode", "constant") != "constant")
            {   // reflect/edge/wrap: pad a map of X's flat indices the same way, then scatter-add dY back through it
                var shape = b.Shape(c.X(0));
                var index = b.Reshape(b.Op("Range", [b.Int(0), b.Op("Size", [c.X(0)]), b.Int(1)]), shape);
                var padInputs = new List<string> { index, c.HasX(1) ? c.X(1) : b.Ints(c.Ints("pads")!) };
                if (c.HasX(3)) padInputs.AddRange(["", c.X(3)]);
                var source = b.Reshape(b.Op("Pad", padInputs, ("mode", c.Str("mode", "constant"))), b.Ints(-1));
                var zeros = b.Reshape(b.ZerosLike(c.X(0)), b.Ints(-1));
                var summed = b.Op("ScatterElements", [zeros, source, b.Reshape(c.dY, b.Ints(-1))], ("axis", 0L), ("reduction", "add"));
                c.Give(0, b.Reshape(summed, shape));
                return;
            }
            var pads = c.IntsFromAttrOrInput("pads", 1) is { } p ? b.Ints(p.Select(v => -v).ToArray()) : b.Neg(c.X(1));
            c.Give(0, c.HasX(3) ? b.Op("Pad", [c.dY, pads, "", c.X(3)]) : b.Op("Pad", [c.dY, pads]));
        }, 1, 2, 3);
        // Y = cumulative sum along an axis: dX = the cumulative sum of dY in the opposite direction (same exclusivity)
        Rule(d, "CumSum", c => c.Give(0, c.B.Op("CumSum", [c.dY, c.X(1)], ("exclusive", c.Int("exclusive", 0)), ("reverse", 1 - c.Int("reverse", 0)))), 1);
        Rule(d, "Expand", c => c.Give(0, c.Unbroadcast(c.dY, 0)), 1);
        Rule(d, "Tile", c =>
        {   // Y = X repeated rᵢ times along axis i: view dY as [r₀, d₀, r₁, d₁, …] and sum over the r axes
            var b = c.B;
            var pairs = b.Reshape(b.Op("Concat", [b.Unsqueeze(c.X(1), 1), b.Unsqueeze(b.Shape(c.X(0)), 1)], ("axis", 1L)), b.Ints(-1));
            c.Give(0, b.ReduceSum(b.Reshape(c.dY, pairs), Seq(0, c.Rank(c.X(0))).Select(a => 2 * a).ToArray(), keepDims: false));
        }, 1);
        Rule(d, "Gather", GatherRule, 1);
        Rule(d, "GatherElements", c =>
        {   // Y[…i…] = X[…idx[…i…]…] along axis: dX = zeros with dY added at idx
            RequireScatterAdd(c);
            var b = c.B; int axis = (int)GradContext.Axis(c.Int("axis", 0), c.Rank(c.X(0)));
            var at = b.NonNegative(c.X(1), c.Extent(c.X(0), axis));
            c.Give(0, b.Op("ScatterElements", [b.ZerosLike(c.X(0)), at, c.dY], ("axis", (long)axis), ("reduction", "add")));
        }, 1);
        Rule(d, "GatherND", GatherNDRule, 1);
        Rule(d, "TopK", c =>
        {   // Y = X at the k picked positions (distinct) along axis: dX = zeros with dY at those positions
            if (c.GradY(0) is not { } g) return;
            c.Give(0, c.B.Op("ScatterElements", [c.B.ZerosLike(c.X(0)), c.Y(1), g], ("axis", c.Int("axis", -1))));
        }, 1);
        Rule(d, "DepthToSpace", c =>
        {   // DCR is undone by SpaceToDepth; CRD by SpaceToDepth, then regrouping channels (b², C) → (C, b²)
            var b = c.B; long bs = c.Int("blocksize", 1);
            var g = b.Op("SpaceToDepth", [c.dY], ("blocksize", bs));
            if (c.Str("mode", "DCR") == "CRD")
            {
                var grouped = b.Reshape(g, b.Op("Concat", [b.Ints(0, bs * bs), c.Extent(c.Y(), 1), b.Ints(-1)], ("axis", 0L)));
                g = b.Reshape(b.Transpose(grouped, [0, 2, 1, 3]), b.Shape(c.X(0)));
            }
            c.Give(0, g);
        });
        Rule(d, "SpaceToDepth", c => c.Give(0, c.B.Op("DepthToSpace", [c.dY], ("blocksize", c.Int("blocksize", 1)), ("mode", "DCR"))));
        Rule(d, "Einsum", EinsumRule);
        // Y = data with updates written (none) or added (add) at the indexed positions: dData = dY, less the overwritten
        // positions for none; dUpdates = dY read at the indices. With none, duplicate indices leave the forward undefined
        // (the spec fixes no order): refused where the indices are constant, assumed absent otherwise.
        Rule(d, "ScatterElements", c =>
        {
            var b = c.B; long axis = c.Int("axis", 0); bool overwrite = ScatterReduction(c);
            if (overwrite && c.ConstInts(1) is { } idx && ScatterElementsHasDuplicates(c, idx, (int)GradContext.Axis(axis, c.Rank(c.X(0)))))
                throw new UserError($"no gradient for {Backprop.Describe(c.Node, c.Opset)}: two updates go to the same position, and with reduction 'none' ONNX leaves which one wins undefined");
            if (c.Needs(0)) c.Give(0, overwrite ? b.Op("ScatterElements", [c.dY, c.X(1), b.ZerosLike(c.X(2))], ("axis", axis)) : c.dY);
            if (c.Needs(2)) c.Give(2, b.Op("GatherElements", [c.dY, c.X(1)], ("axis", axis)));
        }, 1);
        Rule(d, "ScatterND", c =>
        {   // the same with the last index axis holding coordinates: a slice of data per index tuple
            var b = c.B; bool overwrite = ScatterReduction(c);
            if (overwrite && c.ConstInts(1) is { } idx && ScatterNDHasDuplicates(c, idx))
                throw new UserError($"no gradient for {Backprop.Describe(c.Node, c.Opset)}: two updates go to the same position, and with reduction 'none' ONNX leaves which one wins undefined");
            if (c.Needs(0)) c.Give(0, overwrite ? b.Op("ScatterND", [c.dY, c.X(1), b.ZerosLike(c.X(2))]) : c.dY);
            if (c.Needs(2)) c.Give(2, b.Op("GatherND", [c.dY, c.X(1)]));
        }, 1);
        Rule(d, "Compress", c =>
        {   // Y = the slices of X (of flattened X without axis) where the condition holds: compress a map of X's flat
            // positions the same way, and scatter dY to the positions it kept
            var b = c.B; var x = c.X(0);
            var positions = b.Reshape(b.Op("Range", [b.Int(0), b.Op("Size", [x]), b.Int(1)]), b.Shape(x));
            var kept = b.Like(c.Node, [positions, c.X(1)])[0];
            var flat = b.Op("ScatterElements", [b.Reshape(b.ZerosLike(x), b.Ints(-1)), b.Reshape(kept, b.Ints(-1)), b.Reshape(c.dY, b.Ints(-1))]);
            c.Give(0, b.Reshape(flat, b.Shape(x)));
        }, 1);
        // Y = X with the first lens[b] steps of each batch entry reversed along the time axis: its own inverse.
        Rule(d, "ReverseSequence", c => c.Give(0, c.B.Like(c.Node, [c.dY, c.X(1)])[0]), 1);
        Rule(d, "MaxUnpool", c =>
        {   // Y = zeros with X[k] at flat position I[k] (MaxPool's indices): dX = flattened dY read at I. Indices are taken as
            // distinct; where overlapping pooling windows repeat one, each copy gets that position's dY (the spec leaves
            // which write wins undefined)
            var b = c.B;
            c.Give(0, b.Op("Gather", [b.Reshape(c.dY, b.Ints(-1)), c.X(1)]));
        }, 1, 2);

        NonDifferentiable(d, "Shape", "Size", "Constant", "ConstantOfShape", "Range", "NonZero", "EyeLike", "OneHot",
            "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf",
            "ArgMax", "ArgMin", "Floor", "Ceil", "Round", "Sign", "Hardmax",
            "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli");
    }

    static long[] Seq(int from, int to) => Enumerable.Range(from, Math.Max(0, to - from)).Select(i => (long)i).ToArray();

    static void RequireScatterAdd(GradContext c)
    {
        if (c.B.Opset < 16)
            throw new UserError($"the gradient of {Backprop.Describe(c.Node, c.Opset)} needs a scatter that adds (ScatterND/ScatterElements reduction, opset 16); re-export the model with opset 16 or later");
    }

    /// <summary>True for reduction 'none' (updates overwrite), false for 'add'; the others are refused.</summary>
    static bool ScatterReduction(GradContext c) => c.Str("reduction", "none") switch
    {
        "none" => true,
        "add" => false,
        var r => throw new UserError($"no gradient rule for {Backprop.Describe(c.Node, c.Opset)} with reduction '{r}' (only 'none' and 'add')"),
    };

    /// <summary>Whether constant ScatterElements indices send two updates to one position of data.</summary>
    static bool ScatterElementsHasDuplicates(GradContext c, long[] idx, int axis)
    {
        var dims = c.Dims(c.X(1)); long n = c.Dims(c.X(0))[axis];
        var seen = new HashSet<string>();
        for (long flat = 0; flat < idx.Length; flat++)
        {
            var at = new long[dims.Length]; long rest = flat;
            for (int a = dims.Length - 1; a >= 0; a--) { at[a] = rest % dims[a]; rest /= dims[a]; }
            at[axis] = idx[flat] < 0 ? idx[flat] + n : idx[flat];
            if (!seen.Add(string.Join(",", at))) return true;
        }
        return false;
    }

    /// <summary>Whether constant ScatterND index tuples repeat (after counting negative coordinates from the end).</summary>
    static bool ScatterNDHasDuplicates(GradContext c, long[] idx)
    {
        var data = c.Dims(c.X(0)); int k = (int)c.Dims(c.X(1))[^1];
        if (k == 0) return c.Dims(c.X(1)).Take(c.Rank(c.X(1)) - 1).Aggregate(1L, (a, d) => a * d) > 1;
        var seen = new HashSet<string>();
        for (int t = 0; t < idx.Length; t += k)
            if (!seen.Add(string.Join(",", Enumerable.Range(0, k).Select(j => idx[t + j] < 0 ? idx[t + j] + data[j] : idx[t + j])))) return true;
        return false;
    }

    /// <summary>Pads that undo a slice with constant bounds and unit steps on axes of fixed extent; null otherwise.</summary>
    static long[]? SlicePads(GradContext c)
    {
        var dims = c.Shapes[c.X(0)]?.Dims;
        long[]? starts = c.ConstInts(1), ends = c.ConstInts(2);
        if (dims is null || starts is null || ends is null) return null;
        var axes = c.HasX(3) ? c.ConstInts(3) : Seq(0, starts.Length);
        if (axes is null || (c.HasX(4) && c.ConstInts(4)?.All(s => s == 1) != true)) return null;
        var pads = new long[2 * dims.Length];
        for (int k = 0; k < axes.Length; k++)
        {
            int a = (int)GradContext.Axis(axes[k], dims.Length); long n = dims[a];
            if (n < 0) return null;
            long s = Math.Clamp(starts[k] < 0 ? starts[k] + n : starts[k], 0, n), e = Math.Clamp(ends[k] < 0 ? ends[k] + n : ends[k], 0, n);
            pads[a] = s; pads[dims.Length + a] = n - Math.Max(s, e);
        }
        return pads;
    }

    /// <summary>Any slice: slice a map of X's flat positions the same way, and scatter dY to the positions it picked.</summary>
    static string SliceBack(GradContext c)
    {
        var b = c.B; var x = c.X(0);
        var positions = b.Reshape(b.Op("Range", [b.Int(0), b.Op("Size", [x]), b.Int(1)]), b.Shape(x));
        var picked = b.Op("Slice", [positions, .. c.Node.Input.Skip(1)]);
        var flat = b.Op("ScatterElements", [b.Reshape(b.ZerosLike(x), b.Ints(-1)), b.Reshape(picked, b.Ints(-1)), b.Reshape(c.dY, b.Ints(-1))]);
        return b.Reshape(flat, b.Shape(x));
    }

    /// <summary>
    /// Y = X[…, idx, …] along axis, indices possibly repeated (embedding lookups): dX = zeros with each dY slice added at
    /// its index. Worked with X's gathered axis and dY's index axes moved to the front.
    /// </summary>
    static void GatherRule(GradContext c)
    {
        var b = c.B; var x = c.X(0); var idx = c.X(1);
        int r = c.Rank(x), q = c.Rank(idx), axis = (int)GradContext.Axis(c.Int("axis", 0), r);
        var g = axis == 0 ? c.dY : b.Transpose(c.dY, [.. Seq(axis, axis + q), .. Seq(0, axis), .. Seq(axis + q, r + q - 1)]);
        var n = c.Extent(x, axis);
        var shape = b.Op("Concat", [n, b.Shape(g, q)], ("axis", 0L));
        var at = b.NonNegative(idx, n);
        string dx;
        if (b.Opset >= 16)
            dx = b.Op("ScatterND", [b.Expand(b.Scalar(0, g), shape), b.Reshape(at, b.Op("Concat", [b.Shape(idx), b.Ints(1)], ("axis", 0L))), g], ("reduction", "add"));
        else
        {   // before ScatterND could add: one-hot [n, N] · dY as [N, rest]
            var rows = b.Reshape(b.Op("Range", [b.Int(0), b.Op("Squeeze", [n]), b.Int(1)]), b.Ints(-1, 1));
            var hot = b.Mask(b.Op("Equal", [b.Reshape(at, b.Ints(1, -1)), rows]), g);
            dx = b.Reshape(b.MatMul(hot, b.Op("Flatten", [g], ("axis", (long)q))), shape);
        }
        c.Give(0, axis == 0 ? dx : b.Transpose(dx, GraphBuilder.InversePerm([axis, .. Seq(0, axis), .. Seq(axis + 1, r)])));
    }

    /// <summary>
    /// Y[i…] = X[idx[i…]] (the last index axis holds coordinates): dX = zeros with dY added at idx. With batch_dims b, the
    /// batch axes are folded into one whose coordinate is prepended to each index.
    /// </summary>
    static void GatherNDRule(GradContext c)
    {
        RequireScatterAdd(c);
        var b = c.B; var x = c.X(0); long bd = c.Int("batch_dims", 0);
        int q = c.Rank(c.X(1));
        // Coordinate j indexes axis bd + j.
        var limits = b.Op("Slice", [b.Shape(x), b.Ints(bd), b.Add(b.Ints(bd), b.Shape(c.X(1), q - 1))]);
        var idx = b.NonNegative(c.X(1), limits);
        string Fold(string v) => b.Reshape(v, b.Op("Concat", [b.Ints(-1), b.Shape(v, bd)], ("axis", 0L)));
        if (bd == 0)
        {
            c.Give(0, b.Op("ScatterND", [b.ZerosLike(x), idx, c.dY], ("reduction", "add")));
            return;
        }
        var zeros = Fold(b.ZerosLike(x));
        idx = Fold(idx); // [B, m…, k]
        var batch = b.Reshape(b.Op("Range", [b.Int(0), b.Op("Gather", [b.Shape(zeros), b.Int(0)]), b.Int(1)]), b.Ints([-1, .. Enumerable.Repeat(1L, q - (int)bd)]));
        batch = b.Expand(batch, b.Op("Concat", [b.Shape(idx, 0, q - bd), b.Ints(1)], ("axis", 0L)));
        idx = b.Op("Concat", [batch, idx], ("axis", -1L));
        c.Give(0, b.Reshape(b.Op("ScatterND", [zeros, idx, Fold(c.dY)], ("reduction", "add")), b.Shape(x)));
    }

    /// <summary>
    /// Y = einsum(T₀, …, Tₙ → out), no letter repeated within a term (products and contractions): dTᵢ = einsum(dY, Tⱼ≠ᵢ
    /// → Tᵢ's letters found elsewhere), then broadcast over the letters only Tᵢ has (the forward summed them away).
    /// </summary>
    static void EinsumRule(GradContext c)
    {
        var eq = c.Str("equation", "").Replace(" ", "");
        void Fail(string why) => throw new UserError($"no gradient for {Backprop.Describe(c.Node, c.Opset)}: equation '{eq}' {why}; only products and contractions are supported");
        var sides = eq.Split("->");
        var terms = sides[0].Split(',');
        var letters = string.Concat(terms).Replace("...", "");
        bool ellipsis = sides[0].Contains("...");
        var output = sides.Length > 1 ? sides[1] : (ellipsis ? "..." : "") + string.Concat(letters.Where(l => letters.Count(m => m == l) == 1).Order());
        var ys = c.Shapes[c.Y()]!;
        int Ellipsis(string term, string value) => c.Rank(value) - term.Replace("...", "").Length;
        foreach (var t in terms.Append(output))
            if (t.Replace("...", "").Distinct().Count() != t.Replace("...", "").Length) Fail($"repeats a letter within '{t}' (a diagonal or trace)");
        for (int i = 0; i < terms.Length; i++)
        {
            if (!terms[i].Contains("...")) { if (output.Contains("...")) Fail("broadcasts over '...'"); continue; }
            int e = Ellipsis(terms[i], c.X(i)), at = terms[i].IndexOf("..."), yAt = output.IndexOf("...");
            if (!output.Contains("...") || e != Ellipsis(output, c.Y()) || Enumerable.Range(0, e).Any(k => !c.Shapes[c.X(i)]!.SameExtent(at + k, ys, yAt + k)))
                Fail("broadcasts over '...'");
        }
        for (int i = 0; i < terms.Length; i++)
        {
            if (!c.Needs(i)) continue;
            var others = Enumerable.Range(0, terms.Length).Where(j => j != i).ToArray();
            var seen = output + string.Concat(others.Select(j => terms[j]));
            var kept = string.Concat(terms[i].Where(l => l == '.' || seen.Contains(l)));
            var g = c.B.Op("Einsum", [c.dY, .. others.Select(c.X)], ("equation", string.Join(",", [output, .. others.Select(j => terms[j])]) + "->" + kept));
            if (kept != terms[i])
            {   // axes of the letters only Tᵢ has ("..." stands for its run of axes)
                var dropped = new List<long>(); int pos = 0;
                for (int k = 0; k < terms[i].Length; k++)
                {
                    if (terms[i][k] == '.') { pos += Ellipsis(terms[i], c.X(i)); k += 2; continue; }
                    if (!seen.Contains(terms[i][k])) dropped.Add(pos);
                    pos++;
                }
                g = c.B.Expand(c.B.Unsqueeze(g, [.. dropped]), c.B.Shape(c.X(i)));
            }
            c.Give(i, g);
        }
    }
}
