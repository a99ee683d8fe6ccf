using Onnx;
using OnnxUnlearn.Data;
using static OnnxUnlearn.UserError;

namespace OnnxUnlearn.Onnx;

/// <summary>
/// Addresses a flat float32 vector over the trainable parameters: name → offset and shape. Parameter values, gradients,
/// scores, masks, probes and updates all use one layout, so a "vector over the parameters" is one type everywhere.
/// </summary>
public sealed class ParameterLayout
{
    public IReadOnlyList<Parameter> Parameters { get; }
    readonly long[] offsets;
    readonly Dictionary<string, int> index;

    public ParameterLayout(IReadOnlyList<Parameter> parameters)
    {
        Parameters = parameters;
        offsets = new long[parameters.Count + 1];
        for (int i = 0; i < parameters.Count; i++) offsets[i + 1] = offsets[i] + parameters[i].Elements;
        index = parameters.Select((p, i) => (p.Name, i)).ToDictionary(t => t.Name, t => t.i);
        if (Size > Array.MaxLength) throw new UserError($"{Size} trainable elements exceed one buffer; select fewer ({Setting("Params")})");
    }

    public int Size => (int)offsets[^1];
    public int Count => Parameters.Count;
    public int Offset(int i) => (int)offsets[i];
    public int IndexOf(string name) => index.TryGetValue(name, out var i) ? i : -1;
    public bool Contains(string name) => index.ContainsKey(name);
    public Memory<float> Of(float[] vector, int i) => vector.AsMemory(Offset(i), (int)Parameters[i].Elements);
    public Span<float> Of(Span<float> vector, int i) => vector.Slice(Offset(i), (int)Parameters[i].Elements);

    /// <summary>Which parameter holds flat element <paramref name="flat"/>, and its index inside that tensor.</summary>
    public (int Tensor, long Element) Locate(int flat)
    {
        int i = Array.BinarySearch(offsets, flat);
        if (i < 0) i = ~i - 1;
        while (i + 1 < offsets.Length - 1 && offsets[i + 1] == flat) i++; // skip empty tensors
        return (i, flat - offsets[i]);
    }

    /// <summary>The parameters' current values as stored in the model.</summary>
    public float[] ReadValues(ModelFile file)
    {
        var theta = new float[Size];
        var tensors = new Dictionary<string, TensorProto>();
        foreach (var c in Onnx.Parameters.Candidates(file.Graph)) tensors.TryAdd(c.Name, c.Tensor);
        for (int i = 0; i < Count; i++)
        {
            var t = tensors[Parameters[i].Name];
            (Parameters[i].Grid is { } grid ? Quantization.Dequantize(t, grid, file) : t.ReadFloats(file)).CopyTo(Of(theta, i).Span);
        }
        return theta;
    }

    /// <summary>Splits a flat vector into one array per parameter, keyed by name (for .npz outputs).</summary>
    public Dictionary<string, NdArray> Split(float[] vector, string prefix = "")
    {
        var result = new Dictionary<string, NdArray>();
        for (int i = 0; i < Count; i++) result[prefix + Parameters[i].Name] = NdArray.FromFloat(Of(vector, i).ToArray(), Parameters[i].Shape);
        return result;
    }

    /// <summary>Gathers per-parameter arrays (keyed by name) into a flat vector; every parameter must be present.</summary>
    public float[] Join(IReadOnlyDictionary<string, NdArray> arrays, string what, string prefix = "")
    {
        var v = new float[Size];
        for (int i = 0; i < Count; i++)
        {
            var p = Parameters[i];
            if (!arrays.TryGetValue(prefix + p.Name, out var a))
                throw new UserError($"{what} has no entry '{prefix + p.Name}' for trainable parameter '{p.Name}'");
            if (a.Length != p.Elements)
                throw new UserError($"{what}: entry '{prefix + p.Name}' has {a.Length} elements but parameter '{p.Name}' has {p.Elements} (shape [{string.Join(", ", p.Shape)}])");
            a.ToFloat().CopyTo(Of(v, i).Span);
        }
        return v;
    }

    /// <summary>New values of the selected elements (flat indices), grouped by tensor, for the surgical write-back; a quantized
    /// weight's values are its new integer codes (<see cref="QuantGrid.Code"/>).</summary>
    public Dictionary<string, TensorPatch> Patches(int[] selected, ReadOnlySpan<float> theta)
    {
        var patches = new Dictionary<string, TensorPatch>();
        foreach (var group in selected.GroupBy(i => Locate(i).Tensor))
        {
            var idx = group.Order().ToArray();
            int offset = Offset(group.Key);
            var values = new float[idx.Length];
            var grid = Parameters[group.Key].Grid;
            for (int k = 0; k < idx.Length; k++) values[k] = grid is null ? theta[idx[k]] : grid.Code(theta[idx[k]], idx[k] - offset);
            patches[Parameters[group.Key].Name] = new TensorPatch(idx.Select(i => (long)(i - offset)).ToArray(), values);
        }
        return patches;
    }
}
