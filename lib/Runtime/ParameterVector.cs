using System.Numerics.Tensors;
using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Runtime;

/// <summary>
/// Values over the trainable parameters, laid out by <see cref="Layout"/> (float32, flat, tensor after tensor): θ itself,
/// a shifted θ ± εv, or the parameters after an update. The evaluator reads θ from one of these on every call and keeps
/// no parameter state of its own, so nobody has to save and restore anything.
/// Storage is a <see cref="Memory{T}"/>: a managed array today; a <see cref="System.Buffers.MemoryManager{T}"/> over
/// memory-mapped or native (pinned, device-visible) memory needs no change to the callers. ONNX Runtime reads each
/// tensor's slice in place (no copy).
/// </summary>
public sealed class ParameterVector
{
    public ParameterLayout Layout { get; }
    public Memory<float> Values { get; }
    public Span<float> Span => Values.Span;
    public int Length => Values.Length;

    public ParameterVector(ParameterLayout layout) : this(layout, new float[layout.Size]) { }

    public ParameterVector(ParameterLayout layout, Memory<float> values)
    {
        if (values.Length != layout.Size) throw new ArgumentException($"{values.Length} values for a layout of {layout.Size} elements", nameof(values));
        Layout = layout; Values = values;
    }

    /// <summary>The parameters' values as stored in the model file.</summary>
    public static ParameterVector Read(ParameterLayout layout, ModelFile file) => new(layout, layout.ReadValues(file));

    /// <summary>Tensor <paramref name="i"/> of the layout.</summary>
    public Memory<float> Tensor(int i) => Values.Slice(Layout.Offset(i), (int)Layout.Parameters[i].Elements);

    public ParameterVector Clone() => new(Layout, Values.ToArray());

    public void CopyTo(ParameterVector destination) => Values.CopyTo(destination.Values);

    /// <summary>Root mean square of the values (the scale the finite-difference step is relative to).</summary>
    public double Rms() => Math.Sqrt(TensorPrimitives.SumOfSquares<float>(Span) / Math.Max(1, Length));
}
