using Onnx;

namespace OnnxUnlearn.Onnx;

// One rule per op type whose meaning or signature changed between opset 1 and 15. Each rule looks at the model's opset
// (Step.From) and rewrites the node in place, emitting helper nodes and constants where the new form needs them.
public static partial class OpsetUpgrade
{
    static readonly Dictionary<string, Action<Step>> Rules = BuildRules();

    static Dictionary<string, Action<Step>> BuildRules()
    {
        var d = new Dictionary<string, Action<Step>>();
        // opset 7: numpy broadcasting replaces the broadcast/axis attributes.
        foreach (var op in new[] { "Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Greater", "Less", "Sum", "Max", "Min", "Mean" })
            d[op] = LegacyBroadcast;
        d["PRelu"] = LegacyPRelu;
        d["Gemm"] = s => { if (s.From < 7) s.Take("broadcast"); };
        d["BatchNormalization"] = BatchNormalization;
        d["Dropout"] = Dropout;
        // opset 13: Softmax family normalises along one axis instead of a 2-D coercion.
        foreach (var op in new[] { "Softmax", "LogSoftmax", "Hardmax" }) d[op] = Softmax2D;
        // Attributes that became inputs.
        d["Squeeze"] = AttributeToInput(13, ("axes", 1));
        d["Unsqueeze"] = AttributeToInput(13, ("axes", 1));
        d["ReduceSum"] = AttributeToInput(13, ("axes", 1));
        d["Split"] = AttributeToInput(13, ("split", 1));
        d["Slice"] = AttributeToInput(10, ("starts", 1), ("ends", 2), ("axes", 3));
        d["Reshape"] = AttributeToInput(5, ("shape", 1));
        d["TopK"] = s => { if (s.From < 10 && s.Take("k") is { } k) s.SetInput(1, s.Ints([k.I])); };
        d["Clip"] = Clip;
        d["Pad"] = Pad;
        // Resampling: Upsample is gone at opset 10, Resize-10 has no roi and no coordinate modes.
        d["Upsample"] = Upsample;
        d["Resize"] = Resize10;
        d["Scatter"] = s => s.Node.OpType = "ScatterElements";
        // RoiAlign-16 added coordinate_transformation_mode with a new default (half_pixel); older models meant output_half_pixel.
        d["RoiAlign"] = s => { if (s.From < 16 && s.Attr("coordinate_transformation_mode") is null) s.Set("coordinate_transformation_mode", "output_half_pixel"); };
        d["Scan"] = Scan8;
        // Before opset 6/7.
        d["Concat"] = s => { if (s.From < 4 && s.Attr("axis") is null) s.Set("axis", 1L); };
        d["Cast"] = Cast;
        foreach (var op in new[] { "RNN", "GRU", "LSTM" }) d[op] = s => { if (s.From < 7) s.Take("output_sequence"); };
        d["Tile"] = s =>
        {
            if (s.From < 6)
                throw new UserError($"{s.Describe()}: Tile before opset 6 (tiles and axis inputs) is not supported; re-export the model with a newer opset");
        };
        foreach (var op in new[] { "LpPool", "GlobalLpPool" })
            d[op] = s => { if (s.From < 2 && s.Attr("p") is { Type: AttributeProto.Types.AttributeType.Float } p) s.Set("p", (long)p.F); };
        d["ImageScaler"] = ImageScaler;
        d["Scale"] = s => { s.OpTo(s.Node.Output[0], "Mul", [s.Input(0), s.Typed([s.Attr("scale")?.F ?? 1f], s.Input(0))]); s.Drop(); };
        return d;
    }

    /// <summary>Before opset 7, <c>broadcast=1</c> with <c>axis</c> lays B onto A starting at that axis: B gets trailing unit axes so numpy broadcasting agrees.</summary>
    static void LegacyBroadcast(Step s)
    {
        if (s.From >= 7) return;
        var broadcast = s.Take("broadcast");
        var axisAttr = s.Take("axis");
        // Without an axis, B's shape is a suffix of A's (or B is a scalar): numpy broadcasting gives the same.
        if (broadcast is null || broadcast.I == 0 || axisAttr is null) return;
        string a = s.Input(0), b = s.Input(1);
        long axis = axisAttr.I;
        int ra = s.Facts.Rank(a), rb = s.Facts.Rank(b);
        if (rb >= 0 && (axis < 0 || ra >= 0))
        {
            long t = axis < 0 ? -axis - rb : ra - axis - rb;
            if (t > 0) s.SetInput(1, s.Op("Unsqueeze", [b, s.Ints(TrailingAxes(t))]));
            return;
        }
        var rankB = Rank(s, b);
        var count = axis < 0
            ? s.Op("Sub", [s.Ints([-axis], scalar: true), rankB])
            : s.Op("Sub", [s.Op("Sub", [Rank(s, a), s.Ints([axis], scalar: true)]), rankB]);
        s.SetInput(1, AppendUnitAxes(s, b, count));
    }

    /// <summary>Before opset 7, a 1-D slope applies along the channel axis (1) of X, not its last axis.</summary>
    static void LegacyPRelu(Step s)
    {
        if (s.From >= 7) return;
        string x = s.Input(0), slope = s.Input(1);
        int rs = s.Facts.Rank(slope), rx = s.Facts.Rank(x);
        if (rs >= 0 && rs != 1) return;
        if (s.Facts.Constant(slope) is { } c && c.ElementCount() == 1) return;
        if (rx >= 0)
        {
            if (rx > 2) s.SetInput(1, s.Op("Unsqueeze", [slope, s.Ints(TrailingAxes(rx - 2))]));
            return;
        }
        var count = s.Op("Max", [s.Op("Sub", [Rank(s, x), s.Ints([2], scalar: true)]), s.Ints([0], scalar: true)]);
        s.SetInput(1, AppendUnitAxes(s, slope, count));
    }

    static IEnumerable<long> TrailingAxes(long count) => Enumerable.Range(1, (int)count).Select(i => (long)-i);

    static string Rank(Step s, string x) => s.Op("Size", [s.Op("Shape", [x])]);

    /// <summary>Reshapes <paramref name="x"/> to its shape followed by <paramref name="count"/> (a rank-0 int64 value) ones.</summary>
    static string AppendUnitAxes(Step s, string x, string count)
    {
        var ones = s.Op("ConstantOfShape", [s.Op("Reshape", [count, s.Ints([1])])],
            ("value", new TensorProto { DataType = DataTypes.Int64, Dims = { 1 }, Int64Data = { 1 } }));
        return s.Op("Reshape", [x, s.Op("Concat", [s.Op("Shape", [x]), ones], ("axis", 0L))]);
    }

    static void BatchNormalization(Step s)
    {
        if (s.From < 9 && s.Take("spatial") is { I: 0 })
            throw new UserError($"{s.Describe()}: spatial=0 (statistics per activation rather than per channel) has no opset-{MinOpset} form; re-export the model with a newer opset");
        if (s.From < 7) s.Take("is_test");
        if (s.From >= 14) return;
        // Outputs after Y were training-mode statistics before opset 14, and mean something else from then on.
        var n = s.Node;
        for (int i = n.Output.Count - 1; i >= 1; i--)
        {
            if (s.IsUsed(n.Output[i]))
                throw new UserError($"{s.Describe()}: output {i} ('{n.Output[i]}') is a training-mode batch statistic, which has no opset-{MinOpset} form; export the model in inference (eval) mode");
            n.Output.RemoveAt(i);
        }
    }

    /// <summary>
    /// Dropout before opset 12 is the identity at inference. Its mask, where read, is what ONNX Runtime writes for these
    /// versions: all zeros (false from opset 10, of X's type before).
    /// </summary>
    static void Dropout(Step s)
    {
        if (s.From >= 12) return;
        var n = s.Node;
        string x = s.Input(0);
        string? mask = n.Output.Count > 1 && s.IsUsed(n.Output[1]) ? n.Output[1] : null;
        n.OpType = "Identity";
        n.Attribute.Clear();
        while (n.Input.Count > 1) n.Input.RemoveAt(n.Input.Count - 1);
        while (n.Output.Count > 1) n.Output.RemoveAt(n.Output.Count - 1);
        s.Keep();
        if (mask is null) return;
        if (s.From >= 10)
            s.OpTo(mask, "ConstantOfShape", [s.Op("Shape", [x])], ("value", new TensorProto { DataType = DataTypes.Bool, Dims = { 1 }, Int32Data = { 0 } }));
        else s.OpTo(mask, "CastLike", [s.Op("ConstantOfShape", [s.Op("Shape", [x])]), x]);
    }

    /// <summary>
    /// Before opset 13, Softmax/LogSoftmax/Hardmax flatten X to 2-D at <c>axis</c> and normalise rows. Along the last axis
    /// that is the opset-13 op with axis -1; otherwise Flatten → op(axis=1) → Reshape to X's shape.
    /// </summary>
    static void Softmax2D(Step s)
    {
        if (s.From >= 13) return;
        string x = s.Input(0);
        long axis = s.Int("axis", 1);
        int r = s.Facts.Rank(x);
        if (axis == -1 || (r >= 0 && (axis < 0 ? axis + r : axis) == r - 1)) { s.Set("axis", -1L); return; }
        var y = s.Node.Output[0];
        s.Node.Input[0] = s.Op("Flatten", [x], ("axis", axis));
        var rows = s.RenameOutput(0);
        s.Set("axis", 1L);
        s.Keep();
        s.OpTo(y, "Reshape", [rows, s.Op("Shape", [x])]);
    }

    /// <summary>Integer-list attributes that became inputs (axes, split, starts/ends, shape) before opset <paramref name="until"/>.</summary>
    static Action<Step> AttributeToInput(long until, params (string Attribute, int Input)[] moves) => s =>
    {
        if (s.From >= until) return;
        foreach (var (attribute, input) in moves)
            if (s.Take(attribute) is { } a) s.SetInput(input, s.Ints(a.Ints));
    };

    /// <summary>Clip bounds became optional inputs of X's element type at opset 11; an omitted bound stays omitted.</summary>
    static void Clip(Step s)
    {
        if (s.From >= 11) return;
        var min = s.Take("min");
        var max = s.Take("max");
        string x = s.Input(0);
        if (min is not null) s.SetInput(1, s.Typed([min.F], x));
        if (max is not null) s.SetInput(2, s.Typed([max.F], x));
    }

    /// <summary>Pads (and the constant value) became inputs at opset 11; opset 1 called them <c>paddings</c>.</summary>
    static void Pad(Step s)
    {
        if (s.From >= 11) return;
        var pads = s.Take("pads") ?? s.Take("paddings")
            ?? throw new UserError($"{s.Describe()}: Pad without a pads attribute; the model is damaged");
        var value = s.Take("value");
        string x = s.Input(0);
        s.SetInput(1, s.Ints(pads.Ints));
        if (s.Str("mode", "constant") == "constant" && value is not null && value.F != 0) s.SetInput(2, s.Typed([value.F], x));
    }

    static (string Name, object Value)[] LegacyResizeAttrs(string mode, string? nearest) => nearest is null
        ? [("mode", mode), ("coordinate_transformation_mode", "asymmetric")]
        : [("mode", mode), ("coordinate_transformation_mode", "asymmetric"), ("nearest_mode", nearest)];

    static void SetResize(Step s, string x, string scales, string mode, string? nearest)
    {
        var n = s.Node;
        n.OpType = "Resize";
        n.Attribute.Clear();
        n.Input.Clear();
        n.Input.Add([x, "", scales]);
        foreach (var (name, value) in LegacyResizeAttrs(mode, nearest)) n.Attribute.Add(Attributes.Make(name, value));
    }

    /// <summary>
    /// Upsample (gone at opset 10) is Resize with the asymmetric coordinate transform; its scales are ≥ 1, where ONNX
    /// Runtime's legacy nearest pick truncates, i.e. nearest_mode=floor.
    /// </summary>
    static void Upsample(Step s)
    {
        var n = s.Node;
        string x = s.Input(0);
        string mode = s.Str("mode", "nearest");
        if (mode == "bilinear") mode = "linear";
        string scales;
        if (s.Input(1).Length > 0) scales = s.Input(1);
        else if (s.Attr("scales") is { } a) scales = s.Floats(a.Floats);
        else if (s.Attr("height_scale") is { } h && s.Attr("width_scale") is { } w) scales = s.Floats([1, 1, h.F, w.F]);
        else throw new UserError($"{s.Describe()}: Upsample without scales; the model is damaged");
        SetResize(s, x, scales, mode, mode == "nearest" ? "floor" : null);
    }

    /// <summary>
    /// Resize-10 (X, scales) is Resize-11+ (X, roi, scales) with the asymmetric transform. Its nearest pick, as ONNX Runtime
    /// implements it, rounds up along axes that shrink (scale &lt; 1) and down along the others: nearest_mode ceil or
    /// floor, or one Resize of each where the scales (known constants) go both ways. Scales known only at run time are
    /// taken to enlarge.
    /// </summary>
    static void Resize10(Step s)
    {
        if (s.From >= 11) return;
        string x = s.Input(0), scales = s.Input(1);
        string mode = s.Str("mode", "nearest");
        if (mode != "nearest") { SetResize(s, x, scales, mode, null); return; }
        var values = s.Facts.Floats(scales);
        bool down = values?.Any(v => v < 1) ?? false, up = values?.Any(v => v > 1) ?? false;
        if (down && up)
        {
            var shrunk = s.Op("Resize", [x, "", s.Floats(values!.Select(v => v < 1 ? v : 1f))], LegacyResizeAttrs(mode, "ceil"));
            SetResize(s, shrunk, s.Floats(values!.Select(v => v < 1 ? 1f : v)), mode, "floor");
        }
        else SetResize(s, x, scales, mode, down ? "ceil" : "floor");
    }

    /// <summary>
    /// Scan-8 runs over a batch axis and takes optional sequence lengths first; Scan-9 has neither. The batch becomes an
    /// outer Scan over axis 0 of every input whose body is the Scan-9 form of the original: per-sample final states and
    /// scan outputs stack back along axis 0, as Scan-8 laid them out.
    /// </summary>
    static void Scan8(Step s)
    {
        if (s.From >= 9) return;
        var n = s.Node;
        if (s.Input(0).Length > 0)
            throw new UserError($"{s.Describe()}: Scan-8 with sequence_lens (per-sample lengths) has no opset-{MinOpset} form; re-export the model with a newer opset");
        var body = s.Take("body")?.G ?? throw new UserError($"{s.Describe()}: Scan without a body; the model is damaged");
        long scanInputs = s.Take("num_scan_inputs")?.I ?? 0;
        var directions = s.Take("directions");
        var inputs = n.Input.Skip(1).ToList();
        int states = inputs.Count - (int)scanInputs;

        var inner = new NodeProto { OpType = "Scan", Name = s.Fresh("upgrade_Scan") };
        inner.Attribute.Add(new AttributeProto { Name = "body", Type = AttributeProto.Types.AttributeType.Graph, G = body });
        inner.Attribute.Add(Attributes.Make("num_scan_inputs", scanInputs));
        if (directions is not null) inner.Attribute.Add(Attributes.Make("scan_input_directions", directions.Ints.ToArray()));
        var batch = new GraphProto { Name = s.Fresh(body.Name.Length > 0 ? body.Name : "scan_body") };
        // Per-sample slices: states keep their body type; scan inputs gain the sequence axis (shape left open).
        for (int i = 0; i < inputs.Count; i++)
        {
            var name = s.Fresh("sample_input");
            inner.Input.Add(name);
            batch.Input.Add(new global::Onnx.ValueInfoProto { Name = name, Type = i < states ? body.Input.ElementAtOrDefault(i)?.Type?.Clone() : ElementTypeOnly(body.Input.ElementAtOrDefault(i)?.Type) });
        }
        for (int i = 0; i < n.Output.Count; i++)
        {
            var name = s.Fresh("sample_output");
            inner.Output.Add(name);
            batch.Output.Add(new global::Onnx.ValueInfoProto { Name = name, Type = i < states ? body.Output.ElementAtOrDefault(i)?.Type?.Clone() : ElementTypeOnly(body.Output.ElementAtOrDefault(i)?.Type) });
        }
        batch.Node.Add(inner);
        n.Input.Clear();
        n.Input.AddRange(inputs);
        n.Attribute.Add(new AttributeProto { Name = "body", Type = AttributeProto.Types.AttributeType.Graph, G = batch });
        n.Attribute.Add(Attributes.Make("num_scan_inputs", (long)inputs.Count));
    }

    static TypeProto? ElementTypeOnly(TypeProto? t) =>
        t?.TensorType is { } tensor ? new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = tensor.ElemType } } : null;

    static readonly Dictionary<string, long> CastNames = new()
    {
        ["FLOAT"] = DataTypes.Float, ["UINT8"] = DataTypes.UInt8, ["INT8"] = DataTypes.Int8, ["UINT16"] = DataTypes.UInt16,
        ["INT16"] = DataTypes.Int16, ["INT32"] = DataTypes.Int32, ["INT64"] = DataTypes.Int64, ["STRING"] = DataTypes.String,
        ["BOOL"] = DataTypes.Bool, ["FLOAT16"] = DataTypes.Float16, ["DOUBLE"] = DataTypes.Double, ["UINT32"] = DataTypes.UInt32,
        ["UINT64"] = DataTypes.UInt64,
    };

    /// <summary>Cast before opset 6 names its target type as a string.</summary>
    static void Cast(Step s)
    {
        if (s.From >= 6 || s.Attr("to") is not { Type: AttributeProto.Types.AttributeType.String } to) return;
        var name = to.S.ToStringUtf8().ToUpperInvariant();
        if (!CastNames.TryGetValue(name, out var type))
            throw new UserError($"{s.Describe()}: unknown Cast target type '{name}'");
        s.Set("to", type);
    }

    /// <summary>ImageScaler (experimental, gone at opset 10): Y = scale·X + bias[c] along the channel axis.</summary>
    static void ImageScaler(Step s)
    {
        string x = s.Input(0), y = s.Node.Output[0];
        float scale = s.Attr("scale")?.F ?? 1f;
        var bias = s.Attr("bias")?.Floats.ToArray() ?? [];
        var scaled = scale == 1 ? x : s.Op("Mul", [x, s.Typed([scale], x)]);
        if (bias.Length > 0) s.OpTo(y, "Add", [scaled, s.Typed(bias, x, [bias.Length, 1, 1])]);
        else s.OpTo(y, "Identity", [scaled]);
        s.Drop();
    }
}
