using Onnx;
using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Autodiff;

/// <summary>
/// Float16 and bfloat16 models (a PyTorch <c>model.half()</c> export; weights kept in bfloat16 behind Cast nodes) are
/// differentiated in float32: <see cref="Upcast"/> turns every float16/bfloat16 tensor and type of the forward graph into
/// float32, so θ, the activations, the gradient graph and the finite-difference steps of Hessian-vector products are all
/// float32. The other choice, casting float32 parameter inputs to the stored type where the model reads them, keeps the
/// model's own forward but rounds θ ± εv back to float16 (a relative step of 1e-3 or less is below one ulp: the difference
/// is 0 or one ulp) and runs the backward pass in float16 (1e-3 relative error, gradients of small losses underflow).
/// The upcast forward differs from the float16 one only by the rounding of intermediate values to float16, which ONNX
/// Runtime's CPU kernels do after each node (they compute float16 Conv, Gemm, ... in float32 and round the result).
/// Figures a user reads (loss, accuracy) are measured by the loss-only artifact, which keeps the model's own precision.
/// </summary>
public static class Precision
{
    public static bool IsReduced(int type) => type is DataTypes.Float16 or DataTypes.BFloat16;

    /// <summary>Whether the model stores or computes any float16/bfloat16 value (then its gradient artifact is upcast).</summary>
    public static bool HasReduced(GraphProto g) =>
        g.Initializer.Any(t => IsReduced(t.DataType)) || g.Input.Concat(g.Output).Any(v => IsReduced(v.Type?.TensorType?.ElemType ?? 0))
        || g.Node.Any(n => n.Attribute.Any(a => a.T is { } t && IsReduced(t.DataType) || a.Name == "to" && n.OpType == "Cast" && IsReduced((int)a.I)));

    /// <summary>
    /// A copy of <paramref name="forward"/> computing in float32: float16/bfloat16 initializers, Constant-node values and
    /// tensor attributes widened (exactly), Casts to them made Casts to float32, declared types float32. Data inputs keep
    /// their declared type (the data is fed as the model takes it: rounded to float16 as the model would see it) and are
    /// cast to float32 where the graph reads them. Control-flow bodies are left as they are (they are not differentiated).
    /// </summary>
    public static ModelProto Upcast(ModelProto forward, ModelFile file)
    {
        var m = forward.Clone();
        var g = m.Graph;
        if (!HasReduced(g)) return m;
        var initializers = g.Initializer.Select(t => t.Name).ToHashSet();
        for (int i = 0; i < g.Initializer.Count; i++)
            if (IsReduced(g.Initializer[i].DataType)) g.Initializer[i] = Widened(g.Initializer[i], file);
        foreach (var n in g.Node)
        {
            foreach (var a in n.Attribute)
            {
                if (a.T is { } t && IsReduced(t.DataType)) a.T = Widened(t, file);
                if (n.OpType == "Cast" && Domains.IsDefault(n.Domain) && a.Name == "to" && IsReduced((int)a.I)) a.I = DataTypes.Float;
            }
        }
        var taken = g.Node.SelectMany(n => n.Input.Concat(n.Output)).Concat(g.Input.Select(i => i.Name)).Concat(initializers).ToHashSet();
        var casts = new List<NodeProto>();
        foreach (var input in g.Input)
        {
            if (input.Type?.TensorType is not { } tt || !IsReduced(tt.ElemType)) continue;
            if (initializers.Contains(input.Name)) { tt.ElemType = DataTypes.Float; continue; }
            var wide = input.Name + "_float32";
            while (taken.Contains(wide)) wide += "_";
            taken.Add(wide);
            foreach (var n in g.Node) for (int k = 0; k < n.Input.Count; k++) if (n.Input[k] == input.Name) n.Input[k] = wide;
            casts.Add(new NodeProto { OpType = "Cast", Name = wide + "_cast", Input = { input.Name }, Output = { wide }, Attribute = { Attributes.Make("to", (long)DataTypes.Float) } });
        }
        for (int k = 0; k < casts.Count; k++) g.Node.Insert(k, casts[k]);
        foreach (var v in g.Output.Concat(g.ValueInfo))
            if (v.Type?.TensorType is { } t && IsReduced(t.ElemType)) t.ElemType = DataTypes.Float;
        return m;
    }

    /// <summary>A float32 value rounded to a stored type as the write-back rounds it (to nearest even), back in float32.</summary>
    public static float Round(float value, int type) => type switch
    {
        DataTypes.Float16 => (float)(Half)value,
        DataTypes.BFloat16 => OnnxUnlearn.Onnx.TensorProtoExtensions.BFloat16ToFloat(WeightPatch.ToBFloat16(value)),
        _ => value,
    };

    /// <summary>Element <paramref name="element"/> of parameter <paramref name="p"/> as stored once written: rounded to its
    /// float type, or for a quantized weight snapped to its integer grid (<see cref="QuantGrid.Snap"/>).</summary>
    public static float Round(Parameter p, long element, float value) => p.Grid is { } grid ? grid.Snap(value, element) : Round(value, p.DataType);

    /// <summary>
    /// θ with each float16/bfloat16 parameter's elements rounded to its stored type, and each quantized weight's snapped to
    /// its integer grid: the values the model holds once θ is written. The loss-only artifact casts its float32 parameter
    /// inputs to the stored type itself, but ONNX Runtime's CPU provider may drop a float32→float16→float32 Cast pair it
    /// inserted around a float16 node, so θ is rounded here. Null when no parameter is stored in a reduced or integer type.
    /// </summary>
    public static float[]? RoundedToStored(ParameterLayout layout, ReadOnlySpan<float> theta)
    {
        if (!layout.Parameters.Any(p => IsReduced(p.DataType) || p.Grid is not null)) return null;
        var rounded = theta.ToArray();
        for (int t = 0; t < layout.Count; t++)
        {
            var p = layout.Parameters[t];
            if (!IsReduced(p.DataType) && p.Grid is null) continue;
            var values = layout.Of(rounded.AsSpan(), t);
            for (int k = 0; k < values.Length; k++) values[k] = Round(p, k, values[k]);
        }
        return rounded;
    }

    /// <summary>The tensor as float32 (float16 and bfloat16 values are exactly float32 values), same name and shape.</summary>
    static TensorProto Widened(TensorProto t, ModelFile file)
    {
        var values = t.ReadFloats(file);
        var wide = new TensorProto { Name = t.Name, DataType = DataTypes.Float, RawData = Google.Protobuf.ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan())) };
        wide.Dims.AddRange(t.Dims);
        return wide;
    }
}
