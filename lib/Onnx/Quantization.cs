using Google.Protobuf;
using Onnx;

namespace OnnxUnlearn.Onnx;

/// <summary>
/// The integer grid of a quantized weight: W = (q − zero point)·scale, per tensor or per slice along the DequantizeLinear's axis
/// (<see cref="Inner"/>: elements per step of that axis, C order). <see cref="Lo"/>..<see cref="Hi"/>: the stored type's range.
/// </summary>
public sealed record QuantGrid(int StoredType, float[] Scale, int[] ZeroPoint, long Inner, int Lo, int Hi)
{
    int Channel(long element) => Scale.Length == 1 ? 0 : (int)(element / Inner % Scale.Length);

    /// <summary>The real value of code <paramref name="q"/> at an element: float32 (q − zp)·scale, as DequantizeLinear computes it.</summary>
    public float Value(int q, long element) { int c = Channel(element); return (float)(q - ZeroPoint[c]) * Scale[c]; }

    /// <summary>The code a real value is written as: clamp(round(w/scale) + zp), rounding half to even as QuantizeLinear does.</summary>
    public int Code(float w, long element)
    {
        int c = Channel(element);
        float r = MathF.Round(w / Scale[c], MidpointRounding.ToEven);
        return float.IsNaN(r) ? ZeroPoint[c] : (int)Math.Clamp(r + ZeroPoint[c], Lo, Hi);
    }

    /// <summary>A real value moved to the nearest value the stored integers can hold.</summary>
    public float Snap(float w, long element) => Value(Code(w, element), element);

    /// <summary>One quantization step at an element (its scale).</summary>
    public float Step(long element) => Scale[Channel(element)];
}

/// <summary>
/// QDQ weights (ONNX Runtime's static quantizer, exporters' QDQ form): an int8/uint8 initializer read only by a
/// DequantizeLinear with constant scale and zero point. The parameter is the dequantized real weight W, named like the
/// integer initializer. <see cref="Lower"/> replaces that DequantizeLinear by an Identity of a float32 initializer holding
/// W (same name as the integers), so the gradient rules, θ and the artifacts treat W as any float weight; the integer
/// codes reappear only where values are stored: figures snap θ to the grid (<see cref="Autodiff.Precision.RoundedToStored"/>)
/// and the write-back stores <see cref="QuantGrid.Code"/>. Lowering instead of a DequantizeLinear gradient rule keeps θ
/// in real units (one step size for every tensor) and leaves the forward exact: W is what DequantizeLinear computes.
/// </summary>
public static class Quantization
{
    public static bool IsInteger(int type) => type is DataTypes.Int8 or DataTypes.UInt8;

    /// <summary>
    /// The grid of integer initializer <paramref name="q"/> when a DequantizeLinear dequantizes it: (grid, null) when W can be
    /// trained, (null, why) when it cannot, (null, null) when no DequantizeLinear reads it (not a weight).
    /// </summary>
    public static (QuantGrid? Grid, string? WhyNot) Weight(GraphProto g, TensorProto q, ModelFile file)
    {
        if (!IsInteger(q.DataType)) return (null, null);
        var readers = g.Node.Where(n => n.Input.Contains(q.Name)).ToList();
        var node = readers.FirstOrDefault(n => IsDequantize(n) && n.Input[0] == q.Name);
        if (node is null)
            return readers.FirstOrDefault(n => IsMatMulInteger(n) && n.Input[1] == q.Name) is { } mm ? DynamicWeight(g, q, mm, readers.Count, file) : (null, null);
        string what = $"DequantizeLinear '{node.Name}'";
        if (readers.Count > 1) return (null, $"read by {readers.Count} nodes; a quantized weight is trained when one DequantizeLinear alone reads it");
        if (node.Attribute.FirstOrDefault(a => a.Name == "block_size") is { I: > 0 })
            return (null, $"{what} dequantizes in blocks (block_size); blockwise quantization is not supported");
        var scale = Initializer(g, node.Input.ElementAtOrDefault(1));
        if (scale is null || !DataTypes.IsFloat(scale.DataType)) return (null, $"the scale of {what} is not a constant (an initializer)");
        // A float16 scale makes a float16 weight; the lowered W is float32, so only float32 scales are taken.
        if (scale.DataType != DataTypes.Float) return (null, $"the scale of {what} is {DataTypes.Name(scale.DataType)}; only float32 scales are supported");
        var zpName = node.Input.ElementAtOrDefault(2);
        var zp = string.IsNullOrEmpty(zpName) ? null : Initializer(g, zpName);
        if (!string.IsNullOrEmpty(zpName) && zp is null) return (null, $"the zero point of {what} is not a constant (an initializer)");
        var s = scale.ReadFloats(file);
        var z = zp is null ? new int[s.Length] : zp.ReadFloats(file).Select(v => (int)v).ToArray();
        if (z.Length != s.Length) return (null, $"{what} has {s.Length} scales but {z.Length} zero points");
        int rank = q.Dims.Count;
        long inner = 1;
        if (s.Length > 1)
        {
            long axis = node.Attribute.FirstOrDefault(a => a.Name == "axis")?.I ?? 1;
            if (axis < 0) axis += rank;
            if (axis < 0 || axis >= rank || q.Dims[(int)axis] != s.Length)
                return (null, $"{what} has {s.Length} scales, which do not match axis {axis} of the weight's shape [{string.Join(", ", q.Dims)}]");
            for (int a = (int)axis + 1; a < rank; a++) inner *= q.Dims[a];
        }
        var (lo, hi) = q.DataType == DataTypes.Int8 ? (-128, 127) : (0, 255);
        return (new QuantGrid(q.DataType, s, z, inner, lo, hi), null);
    }

    /// <summary>
    /// ONNX Runtime's dynamic quantization of a MatMul (its quantize_dynamic): x_q, x_scale, x_zp = DynamicQuantizeLinear(x);
    /// MatMulInteger(x_q, W_q, x_zp, w_zp) → Cast to float → Mul by Mul(x_scale, w_scale). The pieces of one such pattern.
    /// </summary>
    sealed record Dynamic(NodeProto Quantize, NodeProto Cast, NodeProto Rescale, string WScale);

    static (Dynamic? P, string? WhyNot) FindDynamic(GraphProto g, NodeProto mm)
    {
        string what = $"MatMulInteger '{mm.Name}'";
        const string form = "ONNX Runtime's dynamic form DynamicQuantizeLinear → MatMulInteger → Cast → Mul by Mul(x_scale, w_scale)";
        var quantize = g.Node.FirstOrDefault(n => n.OpType == "DynamicQuantizeLinear" && Domains.IsDefault(n.Domain) && n.Output[0] == mm.Input[0]);
        if (quantize is null || quantize.Output.Count < 3 || mm.Input.ElementAtOrDefault(2) != quantize.Output[2])
            return (null, $"{what} does not read a DynamicQuantizeLinear's codes and zero point; only {form} is supported");
        var casts = g.Node.Where(n => n.Input.Contains(mm.Output[0])).ToList();
        if (casts is not [{ OpType: "Cast" } cast] || cast.Attribute.FirstOrDefault(a => a.Name == "to")?.I != DataTypes.Float)
            return (null, $"the output of {what} is not read by one Cast to float; only {form} is supported");
        var muls = g.Node.Where(n => n.Input.Contains(cast.Output[0])).ToList();
        if (muls is not [{ OpType: "Mul" } rescale] || g.Output.Any(o => o.Name == mm.Output[0] || o.Name == cast.Output[0]))
            return (null, $"the Cast of {what} is not read by one Mul; only {form} is supported");
        var factor = rescale.Input[0] == cast.Output[0] ? rescale.Input[1] : rescale.Input[0];
        var scales = g.Node.FirstOrDefault(n => n.OpType == "Mul" && n.Output[0] == factor && n.Input.Contains(quantize.Output[1]));
        var wScale = scales?.Input.FirstOrDefault(i => i != quantize.Output[1] && Initializer(g, i) is not null);
        if (wScale is null) return (null, $"the Mul after {what} does not multiply by Mul(x_scale, w_scale) with a constant w_scale; only {form} is supported");
        return (new Dynamic(quantize, cast, rescale, wScale), null);
    }

    /// <summary>The weight scales of dynamically quantized MatMuls: constants of the grid, not parameters (the Mul reading them is lowered away).</summary>
    public static HashSet<string> DynamicScales(GraphProto g) =>
        g.Node.Where(IsMatMulInteger).Select(n => FindDynamic(g, n).P?.WScale).OfType<string>().ToHashSet();

    static (QuantGrid? Grid, string? WhyNot) DynamicWeight(GraphProto g, TensorProto q, NodeProto mm, int readers, ModelFile file)
    {
        string what = $"MatMulInteger '{mm.Name}'";
        if (readers > 1) return (null, $"read by {readers} nodes; a quantized weight is trained when one MatMulInteger alone reads it");
        if (q.Dims.Count != 2) return (null, $"{what} reads a weight of rank {q.Dims.Count}; only 2-D weights are supported");
        var (p, why) = FindDynamic(g, mm);
        if (p is null) return (null, why);
        var scale = Initializer(g, p.WScale)!;
        if (scale.DataType != DataTypes.Float) return (null, $"the weight scale of {what} is {DataTypes.Name(scale.DataType)}; only float32 scales are supported");
        var zpName = mm.Input.ElementAtOrDefault(3);
        var zp = string.IsNullOrEmpty(zpName) ? null : Initializer(g, zpName);
        if (!string.IsNullOrEmpty(zpName) && zp is null) return (null, $"the weight zero point of {what} is not a constant (an initializer)");
        var s = scale.ReadFloats(file);
        var z = zp is null ? [0] : zp.ReadFloats(file).Select(v => (int)v).ToArray();
        // Per output column (the last axis of [K, N]): scale and zero point have 1 or N entries each.
        long n = q.Dims[1];
        if (s.Length is not 1 && s.Length != n || z.Length is not 1 && z.Length != n)
            return (null, $"{what} has {s.Length} weight scales and {z.Length} zero points; expected 1 or {n} (one per output column)");
        int c = Math.Max(s.Length, z.Length);
        var sc = Enumerable.Range(0, c).Select(i => s[s.Length == 1 ? 0 : i]).ToArray();
        var zc = Enumerable.Range(0, c).Select(i => z[z.Length == 1 ? 0 : i]).ToArray();
        var (lo, hi) = q.DataType == DataTypes.Int8 ? (-128, 127) : (0, 255);
        return (new QuantGrid(q.DataType, sc, zc, 1, lo, hi), null);
    }

    /// <summary>The real weight W = (q − zp)·scale of an integer initializer, as float32.</summary>
    public static float[] Dequantize(TensorProto q, QuantGrid grid, ModelFile file)
    {
        var codes = q.ReadFloats(file);
        var w = new float[codes.Length];
        for (long i = 0; i < codes.Length; i++) w[i] = grid.Value((int)codes[i], i);
        return w;
    }

    /// <summary>
    /// A copy of <paramref name="model"/> with every DequantizeLinear of a quantized weight (<see cref="Weight"/>) replaced by
    /// an Identity of a float32 initializer named like the integer one, holding W. <paramref name="file"/>'s graph (the
    /// model before opset upgrade) says which tensors are weights; the nodes are found again by their inputs.
    /// </summary>
    public static ModelProto Lower(ModelProto model, ModelFile file)
    {
        var g = model.Graph;
        var grids = new Dictionary<string, QuantGrid>();
        foreach (var t in g.Initializer)
            if (Weight(g, t, file).Grid is { } grid) grids[t.Name] = grid;
        if (grids.Count == 0) return model;
        var m = model.Clone();
        g = m.Graph;
        for (int i = 0; i < g.Initializer.Count; i++)
        {
            var q = g.Initializer[i];
            if (!grids.TryGetValue(q.Name, out var grid)) continue;
            var w = new TensorProto { Name = q.Name, DataType = DataTypes.Float, RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(Dequantize(q, grid, file).AsSpan())) };
            w.Dims.AddRange(q.Dims);
            g.Initializer[i] = w;
        }
        for (int k = 0; k < g.Node.Count; k++)
        {
            var n = g.Node[k];
            if (!IsDequantize(n) || !grids.ContainsKey(n.Input[0])) continue;
            g.Node[k] = new NodeProto { OpType = "Identity", Name = n.Name, Input = { n.Input[0] }, Output = { n.Output[0] } };
        }
        // Dynamic quantization: MatMulInteger → Cast → Mul becomes MatMul(DequantizeLinear(x_q, x_scale, x_zp), W), writing the
        // Mul's output. The activation keeps its rounding in the forward and passes the gradient straight through
        // (DynamicQuantizeLinear's and DequantizeLinear's rules); the result differs from the integer product only by
        // float32 summation order. The scales' Mul stays, unread.
        for (int k = 0; k < g.Node.Count; k++)
        {
            var n = g.Node[k];
            if (!IsMatMulInteger(n) || !grids.ContainsKey(n.Input[1]) || FindDynamic(g, n).P is not { } p) continue;
            var q = p.Quantize;
            var xdq = n.Output[0] + "_dequantized";
            var matmul = new NodeProto { OpType = "MatMul", Name = n.Name, Input = { xdq, n.Input[1] }, Output = { p.Rescale.Output[0] } };
            g.Node[k] = matmul;
            g.Node.Insert(k, new NodeProto { OpType = "DequantizeLinear", Name = n.Name + "_x_dequantize", Input = { q.Output[0], q.Output[1], q.Output[2] }, Output = { xdq } });
            g.Node.Remove(p.Cast);
            g.Node.Remove(p.Rescale);
            k = g.Node.IndexOf(matmul);
        }
        // A graph input of the same name (an initializer listed as input) now holds floats.
        foreach (var v in g.Input.Where(v => grids.ContainsKey(v.Name) && v.Type?.TensorType is not null)) v.Type.TensorType.ElemType = DataTypes.Float;
        foreach (var v in g.ValueInfo.Where(v => grids.ContainsKey(v.Name) && v.Type?.TensorType is not null)) v.Type.TensorType.ElemType = DataTypes.Float;
        return m;
    }

    static bool IsMatMulInteger(NodeProto n) => n.OpType == "MatMulInteger" && Domains.IsDefault(n.Domain) && n.Input.Count > 1;

    static bool IsDequantize(NodeProto n) => n.OpType == "DequantizeLinear" && Domains.IsDefault(n.Domain) && n.Input.Count > 0;

    static TensorProto? Initializer(GraphProto g, string? name) =>
        string.IsNullOrEmpty(name) ? null : g.Initializer.FirstOrDefault(t => t.Name == name);
}
