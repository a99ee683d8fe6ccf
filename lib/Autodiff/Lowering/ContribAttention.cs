using Onnx;

namespace OnnxUnlearn.Autodiff.Lowering;

/// <summary>
/// The transformer optimizer's com.microsoft ops (EmbedLayerNormalization, Attention, MultiHeadAttention,
/// RotaryEmbedding, GroupQueryAttention) without past state, in standard ops. Heads are laid out (B, N, S, H) as the
/// CPU kernels lay them out; masks become additive biases (the kernels' mask_filter_value) or excluded keys (GQA).
/// </summary>
public static partial class Contrib
{
    static string? Input(NodeProto n, int i) => i < n.Input.Count && n.Input[i].Length > 0 ? n.Input[i] : null;
    static bool Wants(NodeProto n, int o) => o < n.Output.Count && n.Output[o].Length > 0;

    static void Refuse(NodeProto n, string what, int input, string name, string why)
    {
        if (Input(n, input) is not null) throw new UserError($"{what} has input {input} ({name}); {why}");
    }

    static void RefuseOutput(NodeProto n, string what, int output, string name, string why)
    {
        if (Wants(n, output)) throw new UserError($"{what} requests output {output} ({name}); {why}");
    }

    static void RefuseAttr(NodeProto n, string what, string attr, long allowed = 0)
    {
        if (Int(n, attr) != allowed) throw new UserError($"{what} sets attribute {attr} = {Int(n, attr)}; only {attr} = {allowed} can be lowered");
    }

    static long Heads(NodeProto n, string attr, string what) =>
        Int(n, attr) is > 0 and var h ? h : throw new UserError($"{what} has no positive attribute {attr}; the file is damaged, re-export it");

    /// <summary>Extent of one axis as a rank-0 int64 (Range's bounds).</summary>
    static string Dim(GraphBuilder b, string x, long axis) => b.Squeeze(b.Shape(x, axis, axis + 1), 0);

    /// <summary>(B, S, N·H) → (B, N, S, H).</summary>
    static string SplitHeads(GraphBuilder b, string x, long heads) => b.Transpose(b.Reshape(x, b.Ints(0, 0, heads, -1)), [0, 2, 1, 3]);

    /// <summary>(B, N, S, H) → (B, S, N·H).</summary>
    static string MergeHeads(GraphBuilder b, string x) => b.Reshape(b.Transpose(x, [0, 2, 1, 3]), b.Ints(0, 0, -1));

    /// <summary>x[..., start:end] on the last axis, bounds as 1-D int64 tensors.</summary>
    static string LastAxis(GraphBuilder b, string x, string start, string end) => b.Op("Slice", [x, start, end, b.Ints(-1)]);

    /// <summary>The scale default: 1/√H of the query heads (H their last extent), in the query's type.</summary>
    static string Scale(GraphBuilder b, NodeProto n, string q)
    {
        float s = Float(n, "scale", 0f);
        if (s != 0f) return b.Scalar(s, q);
        var h = b.Op("CastLike", [b.Shape(q, 3, 4), q]);
        return b.Op("Reciprocal", [b.Sqrt(h)]);
    }

    /// <summary>softmax(scale·QKᵀ + bias)·V over heads (B, N, S, H), the bias broadcast to (B, N, S, T); merged to (B, S, N·Hv).</summary>
    static string Attend(GraphBuilder b, string q, string k, string v, string scale, string? bias)
    {
        var scores = b.Mul(b.MatMul(q, b.Transpose(k, [0, 1, 3, 2])), scale);
        if (bias is not null) scores = b.Add(scores, bias);
        return MergeHeads(b, b.MatMul(b.Op("Softmax", [scores], ("axis", -1L)), v));
    }

    /// <summary>
    /// The kernels' additive mask, broadcastable to (B, N, S, T): mask_filter_value where a key is masked (1-D key
    /// ends, or ends then starts; 2-D (B, T) or 3-D (B, S, T) masks where the value is 0) plus mask_filter_value
    /// above the diagonal when unidirectional. Null when neither applies.
    /// </summary>
    static string? MaskBias(GraphBuilder b, NodeProto n, string what, string? mask, Dictionary<string, int> ranks, string q, string k, bool causal)
    {
        if (mask is null && !causal) return null;
        float filter = Float(n, "mask_filter_value", -10000f);
        var t = b.Op("Range", [b.Int(0), Dim(b, k, 2), b.Int(1)]);   // key positions
        string? bias = null;
        if (mask is not null)
        {
            if (!ranks.TryGetValue(mask, out var r))
                throw new UserError($"{what} reads a mask '{mask}' whose rank the model does not record; run ONNX Runtime's shape inference on the model");
            var m = b.Op("Cast", [mask], ("to", 7L));
            string masked = r switch
            {
                1 => KeyRange(b, m, q, t),
                2 => b.Unsqueeze(b.Op("Equal", [m, b.Int(0)]), 1, 2),
                3 => b.Unsqueeze(b.Op("Equal", [m, b.Int(0)]), 1),
                _ => throw new UserError($"{what} has a {r}-D mask '{mask}'; only 1-D (key ends, or ends and starts), 2-D (batch, keys) and 3-D (batch, queries, keys) masks can be lowered"),
            };
            bias = b.Mul(b.Mask(masked, q), b.Scalar(filter, q));
        }
        if (causal)
        {   // key j masked for query i when j > i (no past: queries and keys share positions)
            var s = b.Op("Range", [b.Int(0), Dim(b, q, 2), b.Int(1)]);
            var above = b.Op("Greater", [b.Unsqueeze(t, 0), b.Unsqueeze(s, 1)]);
            var c = b.Mul(b.Mask(above, q), b.Scalar(filter, q));
            bias = bias is null ? c : b.Add(bias, c);
        }
        return bias;
    }

    /// <summary>
    /// A 1-D mask of B key ends (or B ends then B starts): key j masked when j ≥ end or j &lt; start; (B, 1, 1, T). The
    /// mask is padded with zero starts to 2B: a longer mask (another 1-D form) asks for a negative pad and fails in
    /// ONNX Runtime rather than being read wrongly.
    /// </summary>
    static string KeyRange(GraphBuilder b, string m, string q, string t)
    {
        var batch = b.Shape(q, 0, 1);
        var pad = b.Op("ConstantOfShape", [b.Sub(b.Add(batch, batch), b.Shape(m))],
            ("value", new global::Onnx.TensorProto { DataType = 7, Dims = { 1 }, Int64Data = { 0 } }));
        var rows = b.Reshape(b.Op("Concat", [m, pad], ("axis", 0L)), b.Op("Concat", [b.Ints(2), batch], ("axis", 0L)));   // (2, B)
        var end = b.Op("Gather", [rows, b.Int(0)], ("axis", 0L));
        var start = b.Op("Gather", [rows, b.Int(1)], ("axis", 0L));                                  // 0 when no starts
        var tt = b.Unsqueeze(t, 0);
        var masked = b.Op("Or", [b.Op("GreaterOrEqual", [tt, b.Unsqueeze(end, 1)]), b.Op("Less", [tt, b.Unsqueeze(start, 1)])]);
        return b.Unsqueeze(masked, 1, 2);
    }

    static string[] EmbedLayerNorm(GraphBuilder b, NodeProto n, string what)
    {   // s = word[ids] + position[pos] (+ segment[seg]); y = layer norm of s (variance as E[s²] − μ²); mask_index = Σ mask per row
        string Need(int i, string name) => Input(n, i) ?? throw new UserError($"{what} has no input {i} ({name}); the file is damaged, re-export it");
        string Ids(string x) => b.Op("Cast", [x], ("to", 7L));
        var ids = Ids(Need(0, "input_ids"));
        var s = b.Op("Gather", [Need(2, "word_embedding"), ids]);
        var pos = Input(n, 8) is { } p ? Ids(p) : b.Op("Range", [b.Int(0), Dim(b, ids, 1), b.Int(1)]);   // default 0 … S−1
        s = b.Add(s, b.Op("Gather", [Need(3, "position_embedding"), pos]));
        if (Input(n, 1) is { } seg && Input(n, 4) is { } segTable) s = b.Add(s, b.Op("Gather", [segTable, Ids(seg)]));
        var mean = b.Reduce("ReduceMean", s, [-1], keepDims: true);
        var meanSquare = b.Reduce("ReduceMean", b.Mul(s, s), [-1], keepDims: true);
        var std = b.Sqrt(b.Add(b.Sub(meanSquare, b.Mul(mean, mean)), b.Scalar(Float(n, "epsilon", 1e-12f), s)));
        var y = b.Add(b.Mul(b.Div(b.Sub(s, mean), std), Need(5, "gamma")), Need(6, "beta"));
        // mask_index counts the mask's ones per row (zeros when there is no mask), as int32
        var ones = Input(n, 7) is { } mask ? b.Op("Cast", [b.Op("Not", [b.Op("Equal", [Ids(mask), b.Int(0)])])], ("to", 7L)) : b.ZerosLike(ids);
        var maskIndex = b.Op("Cast", [b.ReduceSum(ones, [1], keepDims: false)], ("to", 6L));
        return [y, maskIndex, s];
    }

    static string[] Attention(GraphBuilder b, NodeProto n, string what, Dictionary<string, int> ranks)
    {   // qkv = X·W + bias split into Q, K, V (qkv_hidden_sizes, else thirds); softmax(scale·QKᵀ + mask + attention_bias)·V
        Refuse(n, what, 4, "past", "past state cannot be lowered: export the model without a KV cache");
        Refuse(n, what, 6, "past_sequence_length", "past state cannot be lowered: export the model without a KV cache");
        RefuseOutput(n, what, 1, "present", "past state cannot be lowered: export the model without a KV cache");
        RefuseAttr(n, what, "do_rotary");
        long heads = Heads(n, "num_heads", what);
        var qkv = b.MatMul(Input(n, 0)!, Input(n, 1) ?? throw new UserError($"{what} has no weights"));
        if (Input(n, 2) is { } bias) qkv = b.Add(qkv, bias);
        string q, k, v;
        var sizes = n.Attribute.FirstOrDefault(a => a.Name == "qkv_hidden_sizes")?.Ints.ToArray();
        if (sizes is { Length: > 0 })
        {
            if (sizes.Length != 3 || sizes[0] != sizes[1] || sizes.Any(x => x <= 0 || x % heads != 0))
                throw new UserError($"{what} has qkv_hidden_sizes [{string.Join(", ", sizes)}]; it needs three positive sizes, Q's equal to K's, each a multiple of num_heads = {heads}");
            var parts = b.OpN("Split", [qkv, b.Ints(sizes)], 3, ("axis", -1L));
            (q, k, v) = (SplitHeads(b, parts[0], heads), SplitHeads(b, parts[1], heads), SplitHeads(b, parts[2], heads));
        }
        else
        {   // (B, S, 3·N·H) → (3, B, N, S, H)
            var all = b.Transpose(b.Reshape(qkv, b.Ints(0, 0, 3, heads, -1)), [2, 0, 3, 1, 4]);
            string Part(long i) => b.Op("Gather", [all, b.Int(i)], ("axis", 0L));
            (q, k, v) = (Part(0), Part(1), Part(2));
        }
        var mask = MaskBias(b, n, what, Input(n, 3), ranks, q, k, Int(n, "unidirectional") != 0);
        if (Input(n, 5) is { } attentionBias) mask = mask is null ? attentionBias : b.Add(mask, attentionBias);
        return [Attend(b, q, k, v, Scale(b, n, q), mask)];
    }

    static string[] MultiHeadAttention(GraphBuilder b, NodeProto n, string what, Dictionary<string, int> ranks)
    {   // Q, K, V (+ their thirds of bias) split into heads; softmax(scale·QKᵀ + key_padding_mask + attention_bias)·V
        for (int i = 6; i < n.Input.Count; i++)
            Refuse(n, what, i, i switch { 6 => "past_key", 7 => "past_value", 8 => "past_sequence_length", _ => "cache_indirection" },
                "past state cannot be lowered: export the model without a KV cache");
        RefuseOutput(n, what, 3, "qk", "only output, present_key and present_value can be lowered");
        long heads = Heads(n, "num_heads", what);
        var query = Input(n, 0)!;
        var key = Input(n, 1);
        var value = Input(n, 2);
        foreach (var (x, name) in new[] { (query, "query"), (key, "key"), (value, "value") })
            if (x is null || ranks.TryGetValue(x, out var r) && r != 3)
                throw new UserError($"{what} has {(x is null ? $"no {name}" : $"a {ranks[x]}-D {name}")}; only separate 3-D query, key and value (batch, sequence, hidden) can be lowered, not packed QKV/KV or keys already split into heads");
        string kk = key!, vv = value!;
        if (Input(n, 3) is { } bias)
        {   // bias = [Q's | K's | V's], Q's and K's the query's width
            var d = b.Shape(query, 2, 3);
            var d2 = b.Add(d, d);
            query = b.Add(query, LastAxis(b, bias, b.Ints(0), d));
            kk = b.Add(kk, LastAxis(b, bias, d, d2));
            vv = b.Add(vv, LastAxis(b, bias, d2, b.Ints(long.MaxValue)));
        }
        var (q, k, v) = (SplitHeads(b, query, heads), SplitHeads(b, kk, heads), SplitHeads(b, vv, heads));
        var mask = MaskBias(b, n, what, Input(n, 4), ranks, q, k, Int(n, "unidirectional") != 0);
        if (Input(n, 5) is { } attentionBias) mask = mask is null ? attentionBias : b.Add(mask, attentionBias);
        return [Attend(b, q, k, v, Scale(b, n, q), mask), k, v];
    }

    /// <summary>
    /// RoPE on heads whose last axis is the head: the first rotary_dim elements turn by the cached angles, the rest pass.
    /// Halves: (x₁, x₂) → (x₁c − x₂s, x₂c + x₁s); interleaved: each pair (x₂ᵢ, x₂ᵢ₊₁) the same way. c, s broadcast to (…, rotary_dim/2).
    /// </summary>
    static string Rotate(GraphBuilder b, string x, string cos, string sin, bool interleaved, string half)
    {
        var rot = b.Add(half, half);
        var xr = LastAxis(b, x, b.Ints(0), rot);
        var rest = LastAxis(b, x, rot, b.Ints(long.MaxValue));
        string turned;
        if (interleaved)
        {   // (…, rot) → (…, rot/2, 2): pairs on the last axis
            var pairs = b.Reshape(xr, b.Op("Concat", [b.Shape(xr, 0, -1), b.Ints(-1, 2)], ("axis", 0L)));
            var x1 = LastAxis(b, pairs, b.Ints(0), b.Ints(1));
            var x2 = LastAxis(b, pairs, b.Ints(1), b.Ints(2));
            var (c, s) = (b.Unsqueeze(cos, -1), b.Unsqueeze(sin, -1));
            var both = b.Op("Concat", [b.Sub(b.Mul(x1, c), b.Mul(x2, s)), b.Add(b.Mul(x2, c), b.Mul(x1, s))], ("axis", -1L));
            turned = b.Reshape(both, b.Shape(xr));
        }
        else
        {
            var x1 = LastAxis(b, xr, b.Ints(0), half);
            var x2 = LastAxis(b, xr, half, rot);
            turned = b.Op("Concat", [b.Sub(b.Mul(x1, cos), b.Mul(x2, sin)), b.Add(b.Mul(x2, cos), b.Mul(x1, sin))], ("axis", -1L));
        }
        return b.Op("Concat", [turned, rest], ("axis", -1L));
    }

    static string RotaryEmbedding(GraphBuilder b, NodeProto n, string what, Dictionary<string, int> ranks)
    {   // y = RoPE(x) per head at positions position_ids (B, S), or offset + 0 … S−1 for a 1-D position_ids
        RefuseAttr(n, what, "is_packed_batching");
        var x = Input(n, 0)!;
        string Need(int i, string name) => Input(n, i) ?? throw new UserError($"{what} has no input {i} ({name}); the file is damaged, re-export it");
        var (ids, cosCache, sinCache) = (Need(1, "position_ids"), Need(2, "cos_cache"), Need(3, "sin_cache"));
        if (!ranks.TryGetValue(x, out var r) || r is not (3 or 4))
            throw new UserError($"{what} rotates an input '{x}' of {(ranks.ContainsKey(x) ? $"rank {r}" : "unrecorded rank")}; only 3-D (batch, sequence, hidden) or 4-D (batch, heads, sequence, head) inputs can be lowered (run ONNX Runtime's shape inference if the rank is unrecorded)");
        if (!ranks.TryGetValue(ids, out var ri) || ri is not (1 or 2))
            throw new UserError($"{what} has position_ids '{ids}' of {(ranks.ContainsKey(ids) ? $"rank {ri}" : "unrecorded rank")}; it must be 1-D (an offset) or 2-D (batch, sequence)");
        var half = b.Shape(cosCache, 1, 2);
        var seqAxis = r == 3 ? 1 : 2;
        var pos = ri == 2 ? ids : b.Unsqueeze(b.Add(b.Op("Range", [b.Int(0), Dim(b, x, seqAxis), b.Int(1)]), b.Squeeze(ids, 0)), 0);
        var (cos, sin) = (b.Op("Gather", [cosCache, pos]), b.Op("Gather", [sinCache, pos]));   // (B, S, rot/2)
        if (r == 4) return Rotate(b, x, b.Unsqueeze(cos, 1), b.Unsqueeze(sin, 1), Int(n, "interleaved") != 0, half);
        // 3-D: heads of num_heads, or of the rotary width (2·cos_cache's width) when num_heads is 0
        long heads = Int(n, "num_heads");
        var shape = heads > 0 ? b.Ints(0, 0, heads, -1) : b.Op("Concat", [b.Ints(0, 0, -1), b.Add(half, half)], ("axis", 0L));
        var y = Rotate(b, b.Reshape(x, shape), b.Unsqueeze(cos, 2), b.Unsqueeze(sin, 2), Int(n, "interleaved") != 0, half);
        return b.Reshape(y, b.Shape(x));
    }

    static string[] GroupQueryAttention(GraphBuilder b, NodeProto n, string what, Dictionary<string, int> ranks)
    {   // causal attention, each group of num_heads/kv_num_heads query heads reading one K/V head; keys beyond seqlens_k[b] excluded
        Refuse(n, what, 3, "past_key", "past state cannot be lowered: export the model without a KV cache (feed seqlens_k = S − 1, total_sequence_length = S)");
        Refuse(n, what, 4, "past_value", "past state cannot be lowered: export the model without a KV cache");
        Refuse(n, what, 10, "attention_bias", "only GroupQueryAttention without attention_bias can be lowered");
        Refuse(n, what, 11, "head_sink", "only GroupQueryAttention without head_sink can be lowered");
        RefuseOutput(n, what, 3, "output_qk", "only output, present_key and present_value can be lowered");
        RefuseAttr(n, what, "smooth_softmax");
        long heads = Heads(n, "num_heads", what), kvHeads = Heads(n, "kv_num_heads", what);
        if (heads % kvHeads != 0) throw new UserError($"{what} has num_heads = {heads} not a multiple of kv_num_heads = {kvHeads}; the file is damaged, re-export it");
        var (query, key, value) = (Input(n, 0)!, Input(n, 1), Input(n, 2));
        if (key is null || value is null)
            throw new UserError($"{what} reads packed QKV (no key/value inputs); only separate query, key and value can be lowered");
        var seqlens = Input(n, 5) ?? throw new UserError($"{what} has no seqlens_k; the file is damaged, re-export it");
        var (q, k, v) = (SplitHeads(b, query, heads), SplitHeads(b, key, kvHeads), SplitHeads(b, value, kvHeads));
        if (Int(n, "do_rotary") != 0)
        {
            var (cosCache, sinCache) = (Input(n, 7), Input(n, 8));
            if (cosCache is null || sinCache is null) throw new UserError($"{what} sets do_rotary without cos_cache and sin_cache; the file is damaged, re-export it");
            var steps = b.Op("Range", [b.Int(0), Dim(b, query, 1), b.Int(1)]);
            var pos = b.Unsqueeze(steps, 0);   // first prompt: 0 … S−1
            if (Input(n, 9) is { } ids)
            {   // without past the CPU kernel counts on from position_ids[0, 0] in every row
                var first = b.Op("Gather", [b.Reshape(ids, b.Ints(-1)), b.Int(0)], ("axis", 0L));
                pos = b.Unsqueeze(b.Add(steps, first), 0);
            }
            var (cos, sin) = (b.Unsqueeze(b.Op("Gather", [cosCache, pos]), 1), b.Unsqueeze(b.Op("Gather", [sinCache, pos]), 1));
            var half = b.Shape(cosCache, 1, 2);
            bool inter = Int(n, "rotary_interleaved") != 0;
            (q, k) = (Rotate(b, q, cos, sin, inter, half), Rotate(b, k, cos, sin, inter, half));
        }
        // (B, Nkv, T, H) → (B, Nkv, N/Nkv, T, H) → (B, N, T, H)
        string Repeat(string x) => heads == kvHeads ? x :
            b.Reshape(b.Op("Tile", [b.Unsqueeze(x, 2), b.Ints(1, 1, heads / kvHeads, 1, 1)]),
                b.Op("Concat", [b.Shape(x, 0, 1), b.Ints(heads), b.Shape(x, 2, 4)], ("axis", 0L)));
        var scores = b.Mul(b.MatMul(q, b.Transpose(Repeat(k), [0, 1, 3, 2])), Scale(b, n, q));
        float softcap = Float(n, "softcap", 0f);
        if (softcap > 0) scores = b.Scale(b.Op("Tanh", [b.Scale(scores, 1 / softcap)]), softcap);   // softcap·tanh(scores/softcap)
        // key j is read by query i when j ≤ i, j ≤ seqlens_k[b] and (local_window_size ≥ 0) j > i − local_window_size
        var t = b.Op("Range", [b.Int(0), Dim(b, k, 2), b.Int(1)]);
        var s = b.Op("Range", [b.Int(0), Dim(b, q, 2), b.Int(1)]);
        var (tt, ss) = (b.Unsqueeze(t, 0), b.Unsqueeze(s, 1));
        var valid = b.Op("LessOrEqual", [tt, ss]);
        long window = Int(n, "local_window_size", -1);
        if (window >= 0) valid = b.Op("And", [valid, b.Op("Greater", [tt, b.Sub(ss, b.Int(window))])]);
        var inLength = b.Op("LessOrEqual", [b.Unsqueeze(t, 0), b.Unsqueeze(b.Op("Cast", [seqlens], ("to", 7L)), 1)]);   // (B, T)
        valid = b.Op("And", [b.Unsqueeze(valid, 0, 1), b.Unsqueeze(inLength, 1, 2)]);
        scores = b.Where(valid, scores, b.Scalar(float.MinValue, scores));
        var y = MergeHeads(b, b.MatMul(b.Op("Softmax", [scores], ("axis", -1L)), Repeat(v)));
        return [y, k, v];
    }
}
