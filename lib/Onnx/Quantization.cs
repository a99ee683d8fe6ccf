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
        if (node is null) return (null, null);
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
        // A graph input of the same name (an initializer listed as input) now holds floats.
        foreach (var v in g.Input.Where(v => grids.ContainsKey(v.Name) && v.Type?.TensorType is not null)) v.Type.TensorType.ElemType = DataTypes.Float;
        foreach (var v in g.ValueInfo.Where(v => grids.ContainsKey(v.Name) && v.Type?.TensorType is not null)) v.Type.TensorType.ElemType = DataTypes.Float;
        return m;
    }

    static bool IsDequantize(NodeProto n) => n.OpType == "DequantizeLinear" && Domains.IsDefault(n.Domain) && n.Input.Count > 0;

    static TensorProto? Initializer(GraphProto g, string? name) =>
        string.IsNullOrEmpty(name) ? null : g.Initializer.FirstOrDefault(t => t.Name == name);
}
