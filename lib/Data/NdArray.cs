namespace OnnxUnlearn.Data;

public enum ElementType { Float32, Float64, Int64, Int32, UInt8, Bool }

/// <summary>
/// An n-dimensional array stored flat in C (row-major) order. Samples run along axis 0.
/// <see cref="Data"/> is a float[], double[], long[], int[], byte[] or bool[] matching <see cref="Type"/>.
/// </summary>
public sealed class NdArray
{
    public ElementType Type { get; }
    public long[] Shape { get; }
    public Array Data { get; }

    public long Length => Data.LongLength;

    public long Rows => Shape.Length > 0 ? Shape[0] : throw new InvalidOperationException("A scalar array has no rows.");

    private NdArray(ElementType type, Array data, long[] shape)
    {
        long count = ElementCount(shape);
        if (count != data.LongLength)
            throw new ArgumentException($"Shape {FormatShape(shape)} holds {count} elements but the data has {data.LongLength}.");
        Type = type;
        Data = data;
        Shape = shape;
    }

    public static NdArray FromFloat(float[] data, params long[] shape) => new(ElementType.Float32, data, shape);
    public static NdArray FromDouble(double[] data, params long[] shape) => new(ElementType.Float64, data, shape);
    public static NdArray FromInt64(long[] data, params long[] shape) => new(ElementType.Int64, data, shape);
    public static NdArray FromInt32(int[] data, params long[] shape) => new(ElementType.Int32, data, shape);
    public static NdArray FromUInt8(byte[] data, params long[] shape) => new(ElementType.UInt8, data, shape);
    public static NdArray FromBool(bool[] data, params long[] shape) => new(ElementType.Bool, data, shape);

    /// <summary>A zero-filled array of the given type and shape.</summary>
    public static NdArray Zeros(ElementType type, params long[] shape) => new(type, Allocate(type, ElementCount(shape)), shape);

    /// <summary>Bytes per element, as stored in .npy files and ONNX raw_data.</summary>
    public static int ElementSize(ElementType type) => type switch
    {
        ElementType.Float64 or ElementType.Int64 => 8,
        ElementType.Float32 or ElementType.Int32 => 4,
        _ => 1,
    };

    /// <summary>Product of the dimensions; throws if a dimension is negative or the product overflows.</summary>
    public static long ElementCount(IReadOnlyList<long> shape)
    {
        long count = 1;
        foreach (long d in shape)
        {
            if (d < 0) throw new ArgumentException($"Shape {FormatShape(shape)} has a negative dimension.");
            if (d != 0 && count > long.MaxValue / d) throw new ArgumentException($"Shape {FormatShape(shape)} has more elements than an int64 can count.");
            count *= d;
        }
        return count;
    }

    /// <summary>
    /// Element count for a shape read from a file: false if a dimension is negative or the array would not fit
    /// in a .NET array, so damaged headers give an error message rather than an overflow or a huge allocation.
    /// </summary>
    internal static bool TryElementCount(IReadOnlyList<long> shape, out long count)
    {
        count = 1;
        foreach (long d in shape)
        {
            if (d < 0) return false;
            count = d == 0 || count <= Array.MaxLength / d ? count * d : long.MaxValue;
        }
        return count <= Array.MaxLength;
    }

    /// <summary>
    /// Element count of a shape declared by a model (a tensor's dims): a negative dimension, or a product beyond
    /// int64 (or beyond <paramref name="max"/>), is refused as a damaged file naming <paramref name="what"/>.
    /// </summary>
    internal static long CheckedElementCount(IReadOnlyList<long> shape, string what, long max = long.MaxValue)
    {
        long count = 1;
        foreach (long d in shape)
        {
            if (d < 0) throw new UserError($"{what} has shape {FormatShape(shape)} with a negative dimension; the model file is damaged: re-export it.");
            if (d != 0 && count > long.MaxValue / d)
                throw new UserError($"{what} has shape {FormatShape(shape)}, whose element count overflows int64; the model file is damaged: re-export it.");
            count *= d;
        }
        if (count > max)
            throw new UserError($"{what} has shape {FormatShape(shape)}: {count} elements, more than the {max} one tensor may hold here; the model file is damaged, or the tensor is too large.");
        return count;
    }

    /// <summary>numpy's name of an element type (float32, int64, bool, ...).</summary>
    public static string Dtype(ElementType type) => type switch
    {
        ElementType.Float32 => "float32", ElementType.Float64 => "float64", ElementType.Int64 => "int64", ElementType.Int32 => "int32",
        ElementType.UInt8 => "uint8", ElementType.Bool => "bool", _ => type.ToString(),
    };

    public static string FormatShape(IReadOnlyList<long> shape) => "(" + string.Join(", ", shape) + ")";

    /// <summary>A new float array holding every element converted to float (bool becomes 0 or 1).</summary>
    public float[] ToFloat() => Data switch
    {
        float[] f => (float[])f.Clone(),
        double[] d => Array.ConvertAll(d, v => (float)v),
        long[] l => Array.ConvertAll(l, v => (float)v),
        int[] i => Array.ConvertAll(i, v => (float)v),
        byte[] b => Array.ConvertAll(b, v => (float)v),
        bool[] b => Array.ConvertAll(b, v => v ? 1f : 0f),
        _ => throw new InvalidOperationException($"Unexpected data array {Data.GetType()}."),
    };

    /// <summary>A new double array holding every element converted to double (bool becomes 0 or 1).</summary>
    public double[] ToDouble() => Data switch
    {
        float[] f => Array.ConvertAll(f, v => (double)v),
        double[] d => (double[])d.Clone(),
        long[] l => Array.ConvertAll(l, v => (double)v),
        int[] i => Array.ConvertAll(i, v => (double)v),
        byte[] b => Array.ConvertAll(b, v => (double)v),
        bool[] b => Array.ConvertAll(b, v => v ? 1d : 0d),
        _ => throw new InvalidOperationException($"Unexpected data array {Data.GetType()}."),
    };

    /// <summary>
    /// A new long array holding every element (bool becomes 0 or 1). Floating-point values must be
    /// whole numbers, since silently truncating class labels would corrupt them; otherwise this throws
    /// <see cref="InvalidOperationException"/>.
    /// </summary>
    public long[] ToInt64() => Data switch
    {
        float[] f => Array.ConvertAll(f, v => WholeNumber(v)),
        double[] d => Array.ConvertAll(d, WholeNumber),
        long[] l => (long[])l.Clone(),
        int[] i => Array.ConvertAll(i, v => (long)v),
        byte[] b => Array.ConvertAll(b, v => (long)v),
        bool[] b => Array.ConvertAll(b, v => v ? 1L : 0L),
        _ => throw new InvalidOperationException($"Unexpected data array {Data.GetType()}."),
    };

    private static long WholeNumber(double v) =>
        // 2^63 itself is out of range, so compare with < on the upper end.
        Math.Floor(v) == v && v >= long.MinValue && v < 9223372036854775808.0
            ? (long)v
            : throw new InvalidOperationException($"Value {v} is not a whole number that fits in int64.");

    /// <summary>Elements per row: the product of all dimensions after the first.</summary>
    private long RowSize => Shape.Length > 0 ? ElementCount(Shape[1..]) : throw new InvalidOperationException("A scalar array has no rows.");

    /// <summary>A copy of rows [start, start + count) along axis 0.</summary>
    public NdArray SliceRows(long start, long count)
    {
        if (start < 0 || count < 0 || start > Rows - count)
            throw new ArgumentOutOfRangeException(nameof(start), $"Rows [{start}, {start + count}) are outside 0..{Rows}.");
        long rowSize = RowSize;
        var data = Allocate(Type, count * rowSize);
        Array.Copy(Data, start * rowSize, data, 0, count * rowSize);
        return new NdArray(Type, data, WithRows(count));
    }

    /// <summary>A copy holding the given rows, in the given order (repeats allowed).</summary>
    public NdArray TakeRows(IReadOnlyList<long> rows)
    {
        long rowSize = RowSize, n = Rows;
        var data = Allocate(Type, rows.Count * rowSize);
        for (int i = 0; i < rows.Count; i++)
        {
            long r = rows[i];
            if (r < 0 || r >= n) throw new ArgumentOutOfRangeException(nameof(rows), $"Row {r} is outside 0..{n}.");
            Array.Copy(Data, r * rowSize, data, i * rowSize, rowSize);
        }
        return new NdArray(Type, data, WithRows(rows.Count));
    }

    /// <summary>A copy holding the given indices along <paramref name="axis"/>, in the given order (axis 0: <see cref="TakeRows"/>).</summary>
    public NdArray TakeAlong(int axis, IReadOnlyList<long> indices)
    {
        if (axis == 0) return TakeRows(indices);
        if (axis < 0 || axis >= Shape.Length) throw new ArgumentOutOfRangeException(nameof(axis), $"Axis {axis} is outside an array of shape {FormatShape(Shape)}.");
        // Blocks of `inner` elements: `outer` of them before the axis, `n` along it.
        long outer = ElementCount(Shape[..axis]), n = Shape[axis], inner = ElementCount(Shape[(axis + 1)..]);
        var data = Allocate(Type, outer * indices.Count * inner);
        for (long o = 0; o < outer; o++)
            for (int i = 0; i < indices.Count; i++)
            {
                long r = indices[i];
                if (r < 0 || r >= n) throw new ArgumentOutOfRangeException(nameof(indices), $"Index {r} is outside 0..{n} on axis {axis}.");
                Array.Copy(Data, (o * n + r) * inner, data, (o * indices.Count + i) * inner, inner);
            }
        var shape = (long[])Shape.Clone();
        shape[axis] = indices.Count;
        return new NdArray(Type, data, shape);
    }

    /// <summary>A copy of [start, start + count) along <paramref name="axis"/>.</summary>
    public NdArray SliceAlong(int axis, long start, long count)
    {
        if (axis == 0) return SliceRows(start, count);
        if (axis < 0 || axis >= Shape.Length || start < 0 || count < 0 || start > Shape[axis] - count)
            throw new ArgumentOutOfRangeException(nameof(start), $"[{start}, {start + count}) on axis {axis} is outside an array of shape {FormatShape(Shape)}.");
        var indices = new long[count];
        for (long i = 0; i < count; i++) indices[i] = start + i;
        return TakeAlong(axis, indices);
    }

    /// <summary>Joins arrays of the same type and trailing shape along axis 0.</summary>
    public static NdArray ConcatRows(IReadOnlyList<NdArray> parts)
    {
        if (parts.Count == 0) throw new ArgumentException("Nothing to concatenate.", nameof(parts));
        var first = parts[0];
        long[] tail = first.Shape.Length > 0 ? first.Shape[1..] : throw new ArgumentException("Cannot concatenate scalars.", nameof(parts));
        long rows = 0;
        foreach (var p in parts)
        {
            if (p.Type != first.Type || p.Shape.Length == 0 || !p.Shape.AsSpan(1).SequenceEqual(tail))
                throw new ArgumentException(
                    $"Cannot concatenate {p.Type} {FormatShape(p.Shape)} with {first.Type} {FormatShape(first.Shape)}.", nameof(parts));
            rows += p.Rows;
        }
        var data = Allocate(first.Type, rows * ElementCount(tail));
        long offset = 0;
        foreach (var p in parts)
        {
            Array.Copy(p.Data, 0, data, offset, p.Length);
            offset += p.Length;
        }
        return new NdArray(first.Type, data, [rows, .. tail]);
    }

    private long[] WithRows(long rows) => [rows, .. Shape.AsSpan(1)];

    private static Array Allocate(ElementType type, long count) => type switch
    {
        ElementType.Float32 => new float[count],
        ElementType.Float64 => new double[count],
        ElementType.Int64 => new long[count],
        ElementType.Int32 => new int[count],
        ElementType.UInt8 => new byte[count],
        ElementType.Bool => new bool[count],
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };
}
