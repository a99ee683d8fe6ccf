using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Onnx;

namespace OnnxUnlearn.Onnx;

/// <summary>Element types as stored in TensorProto.data_type (onnx.proto numbering).</summary>
public static class DataTypes
{
    public const int Float = 1, UInt8 = 2, Int8 = 3, UInt16 = 4, Int16 = 5, Int32 = 6, Int64 = 7, String = 8, Bool = 9,
        Float16 = 10, Double = 11, UInt32 = 12, UInt64 = 13, BFloat16 = 16;

    public static bool IsFloat(int t) => t is Float or Float16 or Double or BFloat16;

    public static string Name(int t) => t switch
    {
        Float => "float32", UInt8 => "uint8", Int8 => "int8", UInt16 => "uint16", Int16 => "int16", Int32 => "int32",
        Int64 => "int64", String => "string", Bool => "bool", Float16 => "float16", Double => "float64",
        UInt32 => "uint32", UInt64 => "uint64", BFloat16 => "bfloat16", _ => $"type{t}",
    };

    /// <summary>A value's type in words: <c>float32</c> for a tensor, <c>seq(map(int64, float32))</c> for ZipMap's output, ...</summary>
    public static string Describe(TypeProto? t) => t?.ValueCase switch
    {
        TypeProto.ValueOneofCase.TensorType => Name(t.TensorType.ElemType),
        TypeProto.ValueOneofCase.SequenceType => $"seq({Describe(t.SequenceType.ElemType)})",
        TypeProto.ValueOneofCase.MapType => $"map({Name(t.MapType.KeyType)}, {Describe(t.MapType.ValueType)})",
        TypeProto.ValueOneofCase.OptionalType => $"optional({Describe(t.OptionalType.ElemType)})",
        null or TypeProto.ValueOneofCase.None => "unknown",
        _ => t.ValueCase.ToString().ToLowerInvariant(),
    };

    /// <summary>Bytes per element in raw_data; 0 for variable-size types.</summary>
    public static int Size(int t) => t switch
    {
        UInt8 or Int8 or Bool => 1, UInt16 or Int16 or Float16 or BFloat16 => 2, Float or Int32 or UInt32 => 4,
        Int64 or Double or UInt64 => 8, _ => 0,
    };

    public const int Complex64 = 14, Complex128 = 15, Float8First = 17, Float8Last = 20, UInt4 = 21, Int4 = 22, Float4E2M1 = 23, Float8E8M0 = 24;

    /// <summary>Bits per element in raw_data or an external file; 0 for strings and types this tool does not know.</summary>
    public static int Bits(int t) => t switch
    {
        Complex64 => 64, Complex128 => 128, >= Float8First and <= Float8Last or Float8E8M0 => 8, UInt4 or Int4 or Float4E2M1 => 4,
        _ => 8 * Size(t),
    };

    /// <summary>The typed field that holds a tensor's values when it has no raw_data, and how many entries n elements take.</summary>
    public static (TypedField Field, long Entries) Typed(int t, long n) => t switch
    {
        Float => (TypedField.Float, n), Complex64 => (TypedField.Float, 2 * n),
        Double => (TypedField.Double, n), Complex128 => (TypedField.Double, 2 * n),
        Int64 => (TypedField.Int64, n), UInt32 or UInt64 => (TypedField.UInt64, n), String => (TypedField.String, n),
        Int32 or Int16 or Int8 or UInt16 or UInt8 or Bool or Float16 or BFloat16 or (>= Float8First and <= Float8Last) or Float8E8M0 => (TypedField.Int32, n),
        UInt4 or Int4 or Float4E2M1 => (TypedField.Int32, (n + 1) / 2),
        _ => (TypedField.None, 0),
    };
}

/// <summary>TensorProto's repeated value fields.</summary>
public enum TypedField { None, Float, Int32, String, Int64, Double, UInt64 }

/// <summary>
/// The checks every tensor passes, wherever it is read from (<see cref="WireLayout"/> on the serialized model,
/// <see cref="TensorProtoExtensions"/> on a parsed one): dimensions non-negative, an element count and byte size that do
/// not overflow and stay below <see cref="MaxElements"/>, and exactly one value field holding exactly that many values.
/// </summary>
internal static class TensorChecks
{
    /// <summary>No real tensor has more elements (2^50: a petabyte of float32); a larger shape is damage or an attack.</summary>
    public const long MaxElements = 1L << 50;

    /// <summary>Product of <paramref name="dims"/>, checked; <paramref name="bad"/> words a problem as the caller's error.</summary>
    public static long ElementCount(IReadOnlyList<long> dims, Func<string, UserError> bad)
    {
        long count = 1;
        var zero = false;
        foreach (var d in dims)
        {
            if (d < 0) throw bad($"has negative dimension {d} in its shape {Shape(dims)}; the model file is damaged: re-export it");
            if (d > MaxElements) throw TooLarge(dims, bad);
            if (d == 0) zero = true;
            else if (!zero && count > MaxElements / d) throw TooLarge(dims, bad); // checked before multiplying: never overflows
            else if (!zero) count *= d;
        }
        return zero ? 0 : count;
    }

    static UserError TooLarge(IReadOnlyList<long> dims, Func<string, UserError> bad) =>
        bad($"has shape {Shape(dims)}, more than {MaxElements} elements (2^50); the model file is damaged or hostile: re-export it");

    /// <summary>Bytes of <paramref name="n"/> elements in raw_data or an external file; null for strings and unknown types.</summary>
    public static long? Bytes(int dataType, long n) => DataTypes.Bits(dataType) is var bits and > 0 ? (n * bits + 7) / 8 : null;

    public static string Shape(IEnumerable<long> dims) => "[" + string.Join(", ", dims) + "]";

    /// <summary>
    /// Checks that a tensor with <paramref name="n"/> elements keeps its values in exactly one place, holding exactly that
    /// many: <paramref name="rawBytes"/> (null: no raw_data), <paramref name="typedCounts"/> entries per typed field,
    /// external data (checked separately).
    /// </summary>
    public static void CheckValues(int dataType, IReadOnlyList<long> dims, long n, long? rawBytes, IReadOnlyDictionary<TypedField, long> typedCounts,
        bool external, Func<string, UserError> bad)
    {
        var typed = typedCounts.Where(kv => kv.Value > 0).ToList();
        var fields = (rawBytes is > 0 ? 1 : 0) + (external ? 1 : 0) + typed.Count;
        if (fields > 1)
            throw bad("keeps values in more than one place (raw_data, external data, typed fields); the model file is damaged: re-export it");
        if (external) return;
        var type = DataTypes.Name(dataType);
        if (fields == 0)
        {
            if (n > 0) throw bad($"holds no values but its shape {Shape(dims)} needs {n}; the model file is damaged: re-export it");
            return;
        }
        if (rawBytes is { } raw and > 0)
        {
            if (Bytes(dataType, n) is { } need && raw != need)
                throw bad($"holds {raw} bytes of raw_data but its shape {Shape(dims)} and type {type} need {need}; the model file is damaged: re-export it");
            return;
        }
        var (field, entries) = DataTypes.Typed(dataType, n);
        if (field == TypedField.None) return; // a type this tool does not know: ONNX Runtime will judge it
        var (key, have) = typed[0];
        if (key != field)
            throw bad($"keeps its {type} values in the {key.ToString().ToLowerInvariant()}_data field, which holds another type; the model file is damaged: re-export it");
        if (have != entries)
            throw bad($"holds {have} values but its shape {Shape(dims)} and type {type} need {entries}; the model file is damaged: re-export it");
    }
}


/// <summary>Reading TensorProto values in every storage form: raw_data, typed fields, external data.</summary>
public static class TensorProtoExtensions
{
    public static long[] Shape(this TensorProto t) => t.Dims.ToArray();

    /// <summary>The number of elements, checked: negative dimensions, overflow and absurd sizes are user errors.</summary>
    public static long ElementCount(this TensorProto t) =>
        TensorChecks.ElementCount(t.Dims, problem => new UserError($"tensor '{t.Name}' {problem}"));

    public static bool IsExternal(this TensorProto t) => ExternalData.IsExternal(t);

    /// <summary>The values as float32 (see <see cref="ReadFloats(TensorProto, string, ExternalDataPolicy, string)"/>), external data
    /// resolved against the model's folder under its policy.</summary>
    public static float[] ReadFloats(this TensorProto t, ModelFile file) => t.ReadFloats(file.Folder, file.Policy, file.Path);

    /// <summary>The values as float32, whatever the stored float type (or integer type, widened).</summary>
    public static float[] ReadFloats(this TensorProto t, string modelFolder, ExternalDataPolicy? policy = null, string? model = null)
    {
        if (t.DataType == DataTypes.String || DataTypes.Size(t.DataType) == 0)
            throw new UserError($"tensor '{t.Name}' has type {DataTypes.Name(t.DataType)}, which has no numeric values");
        var n = Checked(t, modelFolder, model);
        if (n > Array.MaxLength)
            throw new UserError($"tensor '{t.Name}' has {n} elements, more than one array can hold; this tool cannot read it into memory");
        var raw = RawBytes(t, modelFolder, policy, model);
        var result = new float[n];
        if (raw is not null)
        {
            DecodeRaw(raw, t.DataType, result);
            return result;
        }
        switch (t.DataType)
        {
            case DataTypes.Float: t.FloatData.CopyTo(result, 0); break;
            case DataTypes.Double: for (int i = 0; i < n; i++) result[i] = (float)t.DoubleData[i]; break;
            case DataTypes.Int64: for (int i = 0; i < n; i++) result[i] = t.Int64Data[i]; break;
            case DataTypes.UInt32 or DataTypes.UInt64: for (int i = 0; i < n; i++) result[i] = t.Uint64Data[i]; break;
            case DataTypes.Float16: for (int i = 0; i < n; i++) result[i] = (float)BitConverter.UInt16BitsToHalf((ushort)t.Int32Data[i]); break;
            case DataTypes.BFloat16: for (int i = 0; i < n; i++) result[i] = BFloat16ToFloat((ushort)t.Int32Data[i]); break;
            default: for (int i = 0; i < n; i++) result[i] = t.Int32Data[i]; break;
        }
        return result;
    }

    /// <summary>Integer values (shapes, axes, indices), widened to int64; external data under the model's policy.</summary>
    public static long[] ReadInt64s(this TensorProto t, ModelFile file) => t.ReadInt64s(file.Folder, file.Policy, file.Path);

    /// <summary>Integer values (shapes, axes, indices), widened to int64.</summary>
    public static long[] ReadInt64s(this TensorProto t, string modelFolder, ExternalDataPolicy? policy = null, string? model = null)
    {
        Checked(t, modelFolder, model);
        if (t.DataType is DataTypes.Int64 && t.Int64Data.Count > 0) return t.Int64Data.ToArray();
        if (t.DataType is DataTypes.Int32 && t.Int32Data.Count > 0) return t.Int32Data.Select(v => (long)v).ToArray();
        var raw = RawBytes(t, modelFolder, policy, model);
        if (raw is not null && t.DataType == DataTypes.Int64) return MemoryMarshal.Cast<byte, long>(raw).ToArray();
        if (raw is not null && t.DataType == DataTypes.Int32) return MemoryMarshal.Cast<byte, int>(raw).ToArray().Select(v => (long)v).ToArray();
        return t.ReadFloats(modelFolder, policy, model).Select(v => (long)v).ToArray();
    }

    /// <summary>raw_data or the external bytes (checked against the shape and type); null when values are in a typed field.</summary>
    public static byte[]? RawBytes(this TensorProto t, string modelFolder, ExternalDataPolicy? policy = null, string? model = null)
    {
        var n = Checked(t, modelFolder, model);
        if (t.IsExternal())
            return ExternalData.Resolve(t, modelFolder, TensorChecks.Bytes(t.DataType, n), policy, model).ReadAll();
        if (!t.RawData.IsEmpty || n == 0) return t.RawData.ToByteArray();
        return null;
    }

    /// <summary>Moves external data into raw_data (see <see cref="Inline(TensorProto, string, ExternalDataPolicy, string)"/>), under the model's policy.</summary>
    public static void Inline(this TensorProto t, ModelFile file) => t.Inline(file.Folder, file.Policy, file.Path);

    /// <summary>Moves external data into raw_data, so the tensor can travel in a model loaded from memory.</summary>
    public static void Inline(this TensorProto t, string modelFolder, ExternalDataPolicy? policy = null, string? model = null)
    {
        if (!t.IsExternal()) return;
        var raw = t.RawBytes(modelFolder, policy, model)!;
        t.ExternalData.Clear();
        t.DataLocation = TensorProto.Types.DataLocation.Default;
        t.RawData = Google.Protobuf.ByteString.CopyFrom(raw);
    }

    /// <summary>The element count, after checking the shape and that the values (inline or external) match it.</summary>
    static long Checked(TensorProto t, string folder, string? model)
    {
        UserError Bad(string problem) =>
            new($"tensor '{t.Name}' in {(model is null ? $"the model in folder '{folder}'" : $"model file '{model}'")} {problem}");
        var n = TensorChecks.ElementCount(t.Dims, Bad);
        var typed = new Dictionary<TypedField, long>
        {
            [TypedField.Float] = t.FloatData.Count, [TypedField.Int32] = t.Int32Data.Count, [TypedField.String] = t.StringData.Count,
            [TypedField.Int64] = t.Int64Data.Count, [TypedField.Double] = t.DoubleData.Count, [TypedField.UInt64] = t.Uint64Data.Count,
        };
        TensorChecks.CheckValues(t.DataType, t.Dims, n, t.RawData.IsEmpty ? null : t.RawData.Length, typed, t.IsExternal(), Bad);
        return n;
    }

    public static void DecodeRaw(ReadOnlySpan<byte> raw, int dataType, Span<float> dst)
    {
        switch (dataType)
        {
            case DataTypes.Float: MemoryMarshal.Cast<byte, float>(raw).CopyTo(dst); break;
            case DataTypes.Double: { var s = MemoryMarshal.Cast<byte, double>(raw); for (int i = 0; i < dst.Length; i++) dst[i] = (float)s[i]; break; }
            case DataTypes.Float16: { var s = MemoryMarshal.Cast<byte, Half>(raw); for (int i = 0; i < dst.Length; i++) dst[i] = (float)s[i]; break; }
            case DataTypes.BFloat16: for (int i = 0; i < dst.Length; i++) dst[i] = BFloat16ToFloat(BinaryPrimitives.ReadUInt16LittleEndian(raw[(2 * i)..])); break;
            case DataTypes.Int64: { var s = MemoryMarshal.Cast<byte, long>(raw); for (int i = 0; i < dst.Length; i++) dst[i] = s[i]; break; }
            case DataTypes.Int32: { var s = MemoryMarshal.Cast<byte, int>(raw); for (int i = 0; i < dst.Length; i++) dst[i] = s[i]; break; }
            case DataTypes.UInt8 or DataTypes.Bool: for (int i = 0; i < dst.Length; i++) dst[i] = raw[i]; break;
            case DataTypes.Int8: for (int i = 0; i < dst.Length; i++) dst[i] = (sbyte)raw[i]; break;
            default: throw new UserError($"cannot convert tensor data of type {DataTypes.Name(dataType)} to float");
        }
    }

    public static float BFloat16ToFloat(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);
}
