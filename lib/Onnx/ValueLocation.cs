namespace OnnxUnlearn.Onnx;

/// <summary>Element type of a parameter as stored in the file (Int8/UInt8: a quantized weight's codes, patched with integer values).</summary>
public enum StoredType { Float32, Float16, BFloat16, Float64, Int8, UInt8 }

/// <summary>Which protobuf field (or external file) holds a parameter's values; decides the byte format.</summary>
public enum ValueStorage
{
    /// <summary>TensorProto.raw_data: little-endian, fixed width.</summary>
    RawData,
    /// <summary>TensorProto.float_data, packed or one fixed32 field per element.</summary>
    FloatData,
    /// <summary>TensorProto.double_data, packed or one fixed64 field per element.</summary>
    DoubleData,
    /// <summary>TensorProto.int32_data holding float16/bfloat16 bits as varints (width varies per element).</summary>
    Int32Data,
    /// <summary>A byte range of an external data file, little-endian, fixed width.</summary>
    ExternalData,
    /// <summary>AttributeProto.f (Constant value_float).</summary>
    AttributeFloat,
    /// <summary>AttributeProto.floats, packed or one fixed32 field per element.</summary>
    AttributeFloats,
}

/// <summary>
/// Consecutive elements at a regular spacing: element k (0 ≤ k &lt; Count) occupies
/// [Offset + k·Stride, Offset + k·Stride + Width). Stride exceeds Width when each element carries its
/// own field tag (non-packed repeated fields).
/// </summary>
public readonly record struct ValueRun(long Offset, long Count, int Stride, int Width);

/// <summary>Where one parameter's values sit: in the model file (<see cref="DataFile"/> null) or an external data file.</summary>
public sealed class ValueLocation
{
    readonly long[] firstElement; // element index at which each run starts, for binary search

    public ValueLocation(string name, string? dataFile, ValueStorage storage, StoredType type, IReadOnlyList<ValueRun> runs)
    {
        Name = name;
        DataFile = dataFile;
        Storage = storage;
        Type = type;
        Runs = runs;
        firstElement = new long[runs.Count];
        long count = 0;
        for (var i = 0; i < runs.Count; i++)
        {
            firstElement[i] = count;
            count += runs[i].Count;
        }
        ElementCount = count;
    }

    public string Name { get; }

    /// <summary>External data file relative to the model's folder, or null when the values are in the model file.</summary>
    public string? DataFile { get; }

    public ValueStorage Storage { get; }
    public StoredType Type { get; }
    public IReadOnlyList<ValueRun> Runs { get; }
    public long ElementCount { get; }

    /// <summary>Byte range of element <paramref name="index"/> (flat, C order) in its file.</summary>
    public (long Offset, int Length) ElementRange(long index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, ElementCount);
        var run = Array.BinarySearch(firstElement, index);
        if (run < 0) run = ~run - 1;
        var r = Runs[run];
        return (r.Offset + (index - firstElement[run]) * r.Stride, r.Width);
    }

    public override string ToString() =>
        $"{Name}: {ElementCount} × {Type} in {Storage} of {DataFile ?? "the model file"}";
}

