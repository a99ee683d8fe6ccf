using Onnx;
using OnnxUnlearn.Autodiff.Lowering;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Tests.Autodiff;

/// <summary>
/// The transformer optimizer's ops (EmbedLayerNormalization, Attention, MultiHeadAttention, RotaryEmbedding,
/// GroupQueryAttention) lowered: outputs against ONNX Runtime's CPU kernels, gradients of every float input against
/// central differences of the kernel. Integer inputs (ids, masks, lengths) are int32 where the kernels ask for it.
/// </summary>
public partial class ContribLoweringTests
{
    /// <summary>The node's integer data inputs fed as int32 (the kernels' T1/M types), except those listed.</summary>
    static Func<(ModelProto, Dictionary<string, NdArray>, List<string>)> Int32(NodeModel node, params string[] keep64) => () =>
    {
        var (model, feeds, wrt) = node.Build();
        foreach (var i in model.Graph.Input.Where(i => i.Type.TensorType.ElemType == DataTypes.Int64 && !keep64.Contains(i.Name)))
        {
            i.Type.TensorType.ElemType = DataTypes.Int32;
            var v = (long[])feeds[i.Name].Data;
            feeds[i.Name] = NdArray.FromInt32(v.Select(x => (int)x).ToArray(), feeds[i.Name].Shape);
        }
        return (model, feeds, wrt);
    };

    static Dictionary<int, (long[], long[])> Indices(params (int At, long[] Shape, long[] Values)?[] inputs) =>
        inputs.OfType<(int At, long[] Shape, long[] Values)>().ToDictionary(i => i.At, i => (i.Shape, i.Values));

    void Check32(NodeModel node, double tolerance = 1e-5) => Check(Int32(node), node.Op, node.Seed, tolerance);

    // ---- EmbedLayerNormalization (outputs: y, mask_index, embedding_sum) ----
    static readonly long[] Ids = [3, 7, 1, 9, 0, 4, 4, 2], Segments = [0, 0, 1, 1, 0, 1, 1, 1], PaddingMask = [1, 1, 1, 0, 1, 1, 0, 0];

    void EmbedLayerNorm(bool segment = true, bool mask = true, long[]? positions = null) => Check32(new NodeModel
    {
        Op = "EmbedLayerNormalization", Domain = MS, Outputs = 3, Attrs = [("epsilon", 1e-5f)],
        Inputs = [null, null, ("word", [10, 8]), ("position", [6, 8]), segment ? ("segment", [2, 8]) : null, ("gamma", [8]), ("beta", [8])],
        IndexInputs = Indices((0, [2, 4], Ids), segment ? (1, [2, 4], Segments) : null, mask ? (7, [2, 4], PaddingMask) : null,
            positions is null ? null : (8, [positions.Length / 4, 4], positions)),
    }, 2e-5);

    [Fact] public void EmbedLayerNormalization() => EmbedLayerNorm();
    [Fact] public void EmbedLayerNormalizationNoSegmentNoMask() => EmbedLayerNorm(segment: false, mask: false);   // mask_index is zeros
    [Fact] public void EmbedLayerNormalizationPositionIds() => EmbedLayerNorm(positions: [5, 0, 2, 1, 3, 3, 4, 0]);
    [Fact] public void EmbedLayerNormalizationSharedPositionIds() => EmbedLayerNorm(mask: false, positions: [2, 3, 4, 5]);   // (1, S)

    // ---- Attention: X·W (+ bias) split into Q, K, V; mask_index forms, unidirectional, qkv_hidden_sizes, attention_bias ----
    void Attention(long[]? mask = null, long[]? maskShape = null, long[]? sizes = null, bool bias = true, bool attentionBias = false, params (string, object)[] attrs)
    {
        long width = sizes?.Sum() ?? 18;
        Check32(new NodeModel
        {
            Op = "Attention", Domain = MS,
            Inputs = [("x", [2, 4, 6]), ("w", [6, width]), bias ? ("b", [width]) : null, null, null, attentionBias ? ("attention_bias", [1, 2, 4, 4]) : null],
            IndexInputs = mask is null ? [] : new() { [3] = (maskShape ?? [mask.Length], mask) },
            Attrs = [("num_heads", 2L), .. sizes is null ? [] : new (string, object)[] { ("qkv_hidden_sizes", sizes) }, .. attrs],
        });
    }

    [Fact] public void AttentionNoMask() => Attention();
    [Fact] public void AttentionNoBias() => Attention(bias: false);
    [Fact] public void AttentionKeyEnds() => Attention(mask: [4, 2]);                                    // 1-D (B): right padding
    [Fact] public void AttentionKeyEndsAndStarts() => Attention(mask: [4, 3, 0, 1]);                     // 1-D (2B): and left padding
    [Fact] public void AttentionRawMask() => Attention(mask: PaddingMask, maskShape: [2, 4]);            // 2-D (B, T)
    [Fact] public void AttentionMask3D() => Attention(mask: [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 1], maskShape: [2, 4, 4]);
    [Fact] public void AttentionUnidirectional() => Attention(attrs: ("unidirectional", 1L));
    [Fact] public void AttentionUnidirectionalRawMask() => Attention(mask: PaddingMask, maskShape: [2, 4], attrs: ("unidirectional", 1L));
    [Fact] public void AttentionQkvHiddenSizes() => Attention(sizes: [4, 4, 8]);
    [Fact] public void AttentionScaleAndFilter() => Attention(mask: [3, 2], attrs: [("scale", 0.3f), ("mask_filter_value", -30f)]);
    [Fact] public void AttentionBias() => Attention(attentionBias: true, mask: [4, 3]);

    // ---- MultiHeadAttention: separate Q, K, V (+ bias), key_padding_mask, attention_bias; outputs y, present_key, present_value ----
    void Mha(long[]? mask = null, long[]? maskShape = null, bool bias = true, bool attentionBias = false, long keys = 5, params (string, object)[] attrs) => Check32(new NodeModel
    {
        Op = "MultiHeadAttention", Domain = MS, Outputs = 3,
        Inputs = [("q", [2, 4, 6]), ("k", [2, keys, 6]), ("v", [2, keys, 8]), bias ? ("b", [20]) : null, null, attentionBias ? ("attention_bias", [2, 1, 4, keys]) : null],
        IndexInputs = mask is null ? [] : new() { [4] = (maskShape ?? [mask.Length], mask) },
        Attrs = [("num_heads", 2L), .. attrs],
    });

    [Fact] public void MultiHeadAttention() => Mha();
    [Fact] public void MultiHeadAttentionNoBias() => Mha(bias: false);
    [Fact] public void MultiHeadAttentionKeyPaddingMask() => Mha(mask: [1, 1, 1, 0, 0, 1, 1, 1, 1, 1], maskShape: [2, 5]);
    [Fact] public void MultiHeadAttentionKeyEnds() => Mha(mask: [5, 3]);
    [Fact] public void MultiHeadAttentionAttentionBiasScale() => Mha(attentionBias: true, attrs: ("scale", 0.25f));
    [Fact] public void MultiHeadAttentionUnidirectional() => Mha(keys: 4, attrs: ("unidirectional", 1L));

    // ---- RotaryEmbedding: halves or interleaved pairs, position ids (B, S) or an offset, partial rotary width ----
    void Rotary(long[] x, long interleaved, long heads = 0, long rotaryDim = 0, long[]? positions = null, long half = 2) => Check(new NodeModel
    {
        Op = "RotaryEmbedding", Domain = MS,
        Inputs = [("x", x), null, ("cos", [8, half]), ("sin", [8, half])],
        IndexInputs = new() { [1] = positions is { Length: 1 } ? ([1], positions) : ([2, 3], positions ?? [0, 1, 2, 5, 3, 7]) },
        Attrs = [("interleaved", interleaved), .. heads > 0 ? new (string, object)[] { ("num_heads", heads) } : [], .. rotaryDim > 0 ? new (string, object)[] { ("rotary_embedding_dim", rotaryDim) } : []],
    });

    [Fact] public void RotaryEmbedding() => Rotary([2, 3, 8], 0);                                    // heads of 4 (2·cos width)
    [Fact] public void RotaryEmbeddingInterleaved() => Rotary([2, 3, 8], 1, heads: 2);
    [Fact] public void RotaryEmbeddingHeadsFirst() => Rotary([2, 2, 3, 4], 0);                       // (B, N, S, H)
    [Fact] public void RotaryEmbeddingHeadsFirstInterleaved() => Rotary([2, 2, 3, 4], 1);
    [Fact] public void RotaryEmbeddingPartial() => Rotary([2, 3, 12], 0, heads: 2, rotaryDim: 4);     // heads of 6, first 4 turned
    [Fact] public void RotaryEmbeddingPartialInterleaved() => Rotary([2, 3, 12], 1, heads: 2, rotaryDim: 4);
    [Fact] public void RotaryEmbeddingOffset() => Rotary([2, 3, 8], 0, positions: [2]);              // positions 2, 3, 4

    // ---- GroupQueryAttention without past: seqlens_k = S − 1 and total_sequence_length = S, the kernel's "no past" ----
    /// <summary>4 query heads reading 2 K/V heads of 8 (16 with rotary: the kernel's multiples).</summary>
    void Gqa(long[]? seqlens = null, bool rotary = false, params (string, object)[] attrs)
    {
        long h = rotary ? 16 : 8;
        Check32(new NodeModel
    {
        Op = "GroupQueryAttention", Domain = MS, Outputs = 3,
        Inputs = [("q", [2, 4, 4 * h]), ("k", [2, 4, 2 * h]), ("v", [2, 4, 2 * h]), null, null, null, null, rotary ? ("cos", [6, h / 2]) : null, rotary ? ("sin", [6, h / 2]) : null],
        IndexInputs = new() { [5] = ([2], seqlens ?? [3, 3]), [6] = ([], [4]) },
        Attrs = [("num_heads", 4L), ("kv_num_heads", 2L), .. rotary ? new (string, object)[] { ("do_rotary", 1L) } : [], .. attrs],
    });
    }

    [Fact] public void GroupQueryAttention() => Gqa();
    [Fact] public void GroupQueryAttentionRotary() => Gqa(rotary: true);
    [Fact] public void GroupQueryAttentionRotaryInterleaved() => Gqa(rotary: true, attrs: ("rotary_interleaved", 1L));
    [Fact] public void GroupQueryAttentionLocalWindow() => Gqa(attrs: ("local_window_size", 1L));   // w keys: (i − w, i]
    [Fact] public void GroupQueryAttentionLocalWindow2() => Gqa(attrs: ("local_window_size", 2L));
    [Fact] public void GroupQueryAttentionSoftcapScale() => Gqa(attrs: [("softcap", 2f), ("scale", 0.4f)]);
    [Fact] public void GroupQueryAttentionRightPadding() => Gqa(seqlens: [3, 1]);

    /// <summary>Rotary positions given (int64) rather than 0 … S−1: without past the kernel counts on from position_ids[0, 0] in every row.</summary>
    [Fact]
    public void GroupQueryAttentionRotaryPositionIds() => Check(Int32(new NodeModel
    {
        Op = "GroupQueryAttention", Domain = MS, Outputs = 3,
        Inputs = [("q", [2, 4, 64]), ("k", [2, 4, 32]), ("v", [2, 4, 32]), null, null, null, null, ("cos", [8, 8]), ("sin", [8, 8])],
        IndexInputs = new() { [5] = ([2], [3, 3]), [6] = ([], [4]), [9] = ([2, 4], [2, 3, 4, 5, 0, 1, 2, 3]) },
        Attrs = [("num_heads", 4L), ("kv_num_heads", 2L), ("do_rotary", 1L)],
    }, "index9"), "GroupQueryAttention");

    /// <summary>One token a row, without past: still position_ids[0, 0] for every row (row 1's 6 is not read).</summary>
    [Fact]
    public void GroupQueryAttentionRotaryOneTokenPositions() => Check(Int32(new NodeModel
    {
        Op = "GroupQueryAttention", Domain = MS, Outputs = 3,
        Inputs = [("q", [2, 1, 64]), ("k", [2, 1, 32]), ("v", [2, 1, 32]), null, null, null, null, ("cos", [8, 8]), ("sin", [8, 8])],
        IndexInputs = new() { [5] = ([2], [0, 0]), [6] = ([], [1]), [9] = ([2, 1], [3, 6]) },
        Attrs = [("num_heads", 4L), ("kv_num_heads", 2L), ("do_rotary", 1L)],
    }, "index9"), "GroupQueryAttention");

    // ---- as the optimizer saves them: values between nodes carry no value_info, so ranks follow from the producers ----
    /// <summary>Feeds <paramref name="node"/>'s input <paramref name="at"/> from a new node on new float graph inputs instead.</summary>
    static Func<(ModelProto, Dictionary<string, NdArray>, List<string>)> Fed(Func<(ModelProto, Dictionary<string, NdArray>, List<string>)> build, int at,
        NodeProto producer, (string Name, long[] Shape)[] inputs, params (string Name, object Value)[] attrs) => () =>
    {
        var (model, feeds, wrt) = build();
        var g = model.Graph; var rng = new Random(11);
        var old = g.Node[^1].Input[at];
        g.Node[^1].Input[at] = producer.Output[0];
        if (g.Input.FirstOrDefault(i => i.Name == old) is { } gone) { g.Input.Remove(gone); feeds.Remove(old); wrt.Remove(old); }
        foreach (var (name, shape) in inputs)
        {
            var t = new TypeProto.Types.Tensor { ElemType = DataTypes.Float, Shape = new TensorShapeProto() };
            foreach (var d in shape) t.Shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
            g.Input.Add(new global::Onnx.ValueInfoProto { Name = name, Type = new TypeProto { TensorType = t } });
            feeds[name] = NdArray.FromFloat(Enumerable.Range(0, (int)shape.Aggregate(1L, (a, d) => a * d)).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray(), shape);
            wrt.Add(name);
        }
        foreach (var (name, value) in attrs) producer.Attribute.Add(Attributes.Make(name, value));
        g.Node.Insert(g.Node.Count - 1, producer);
        return (model, feeds, wrt);
    };

    /// <summary>RotaryEmbedding on a projection (its input's rank recorded nowhere): the rank follows from the MatMul.</summary>
    [Fact]
    public void RotaryEmbeddingOfAProjection() => Check(Fed(() => new NodeModel
    {
        Op = "RotaryEmbedding", Domain = MS, Inputs = [("x", [2, 3, 8]), null, ("cos", [8, 2]), ("sin", [8, 2])],
        IndexInputs = new() { [1] = ([2, 3], [0, 1, 2, 5, 3, 7]) }, Attrs = [("interleaved", 1L)],
    }.Build(), 0, new NodeProto { OpType = "MatMul", Name = "project", Input = { "a", "m" }, Output = { "h" } }, [("a", [2, 3, 5]), ("m", [5, 8])]), "RotaryEmbedding");

    /// <summary>BERT's first layer: Attention reads EmbedLayerNormalization's output and its 1-D mask_index (unrecorded ranks).</summary>
    [Fact]
    public void AttentionOnEmbedLayerNormalization()
    {
        var embed = new NodeProto
        {
            OpType = "EmbedLayerNormalization", Domain = MS, Name = "embed", Input = { "ids", "", "word", "position", "", "gamma", "beta", "mask" }, Output = { "h", "mask_index" },
        };
        var attention = new NodeModel { Op = "Attention", Domain = MS, Inputs = [("x", [2, 4, 8]), ("w", [8, 24]), ("b", [24])], IndexInputs = new() { [3] = ([2], [4, 2]) }, Attrs = [("num_heads", 2L)] };
        var fed = Fed(Int32(attention), 0, embed, [("word", [10, 8]), ("position", [6, 8]), ("gamma", [8]), ("beta", [8])], ("epsilon", 1e-5f));
        Check(() =>
        {
            var (model, feeds, wrt) = fed();
            var g = model.Graph;
            g.Node[^1].Input[3] = "mask_index";
            g.Input.Remove(g.Input.First(i => i.Name == "index3")); feeds.Remove("index3");
            foreach (var (name, v) in new[] { ("ids", Ids), ("mask", PaddingMask) })
            {
                var t = new TypeProto.Types.Tensor { ElemType = DataTypes.Int32, Shape = new TensorShapeProto { Dim = { new TensorShapeProto.Types.Dimension { DimValue = 2 }, new TensorShapeProto.Types.Dimension { DimValue = 4 } } } };
                g.Input.Add(new global::Onnx.ValueInfoProto { Name = name, Type = new TypeProto { TensorType = t } });
                feeds[name] = NdArray.FromInt32(v.Select(x => (int)x).ToArray(), 2, 4);
            }
            return (model, feeds, wrt);
        }, "Attention");
    }

    // ---- refusals ----
    [Fact]
    public void AttentionPastIsRefused()
    {
        var (model, _, _) = new NodeModel { Op = "Attention", Domain = MS, Inputs = [("x", [2, 4, 6]), ("w", [6, 18]), ("b", [18]), null, ("past", [2, 2, 2, 1, 3])], Attrs = [("num_heads", 2L)] }.Build();
        var e = Assert.Throws<UserError>(() => Contrib.Lower(OpsetUpgrade.Apply(model), "m.onnx"));
        Assert.Equal("Attention 'Attention_0' of 'm.onnx' has input 4 (past); past state cannot be lowered: export the model without a KV cache", e.Message);
    }

    [Fact]
    public void PackedMultiHeadAttentionIsRefused()
    {
        var (model, _, _) = new NodeModel { Op = "MultiHeadAttention", Domain = MS, Inputs = [("qkv", [2, 4, 2, 3, 3])], Attrs = [("num_heads", 2L)] }.Build();
        var e = Assert.Throws<UserError>(() => Contrib.Lower(OpsetUpgrade.Apply(model), "m.onnx"));
        Assert.StartsWith("MultiHeadAttention 'MultiHeadAttention_0' of 'm.onnx' has a 5-D query; only separate 3-D query", e.Message);
    }

    [Fact]
    public void PackedBatchingIsRefused()
    {
        var (model, _, _) = new NodeModel { Op = "RotaryEmbedding", Domain = MS, Inputs = [("x", [2, 3, 8]), null, ("cos", [8, 2]), ("sin", [8, 2])], IndexInputs = new() { [1] = ([2, 3], [0, 1, 2, 0, 1, 2]) }, Attrs = [("is_packed_batching", 1L)] }.Build();
        var e = Assert.Throws<UserError>(() => Contrib.Lower(OpsetUpgrade.Apply(model), "m.onnx"));
        Assert.Equal("RotaryEmbedding 'RotaryEmbedding_0' of 'm.onnx' sets attribute is_packed_batching = 1; only is_packed_batching = 0 can be lowered", e.Message);
    }

    /// <summary>A 1-D mask of another length than B or 2B (MultiHeadAttention's 3B + 2 form) fails in ONNX Runtime instead of
    /// being read as key ends and starts.</summary>
    [Fact]
    public void AOneDimensionalMaskOfAnotherLengthFailsLoudly()
    {
        var (model, feeds, _) = Int32(new NodeModel
        {
            Op = "MultiHeadAttention", Domain = MS, Outputs = 3,
            Inputs = [("q", [2, 4, 6]), ("k", [2, 5, 6]), ("v", [2, 5, 8]), null, null],
            IndexInputs = new() { [4] = ([8], [5, 3, 0, 1, 4, 4, 0, 0]) },
            Attrs = [("num_heads", 2L)],
        })();
        var lowered = Contrib.Lower(OpsetUpgrade.Apply(model), "m.onnx");
        Assert.ThrowsAny<Microsoft.ML.OnnxRuntime.OnnxRuntimeException>(() => Run(lowered, feeds));
    }

    [Fact]
    public void FourDimensionalAttentionMaskIsRefused()
    {
        var (model, _, _) = new NodeModel { Op = "Attention", Domain = MS, Inputs = [("x", [2, 4, 6]), ("w", [6, 18])], IndexInputs = new() { [3] = ([2, 1, 4, 4], new long[32]) }, Attrs = [("num_heads", 2L)] }.Build();
        var e = Assert.Throws<UserError>(() => Contrib.Lower(OpsetUpgrade.Apply(model), "m.onnx"));
        Assert.StartsWith("Attention 'Attention_0' of 'm.onnx' has a 4-D mask 'index3'; only 1-D (key ends, or ends and starts)", e.Message);
    }

    [Fact]
    public void SmoothSoftmaxIsRefused()
    {
        var (model, _, _) = new NodeModel { Op = "GroupQueryAttention", Domain = MS, Inputs = [("q", [2, 4, 16]), ("k", [2, 4, 8]), ("v", [2, 4, 8])], Attrs = [("num_heads", 4L), ("kv_num_heads", 2L), ("smooth_softmax", 1L)] }.Build();
        var e = Assert.Throws<UserError>(() => Contrib.Lower(OpsetUpgrade.Apply(model), "m.onnx"));
        Assert.Equal("GroupQueryAttention 'GroupQueryAttention_0' of 'm.onnx' sets attribute smooth_softmax = 1; only smooth_softmax = 0 can be lowered", e.Message);
    }
}
