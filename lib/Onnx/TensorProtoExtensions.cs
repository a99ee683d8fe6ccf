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
}

/// <summary>Reading TensorProto values in every storage form: raw_data, typed fields, external data.</summary>
public static class TensorProtoExtensions
{
    public static long[] Shape(this TensorProto t) => t.Dims.ToArray();

    public static long ElementCount(this TensorProto t) => t.Dims.Aggregate(1L, (a, d) => a * d);

    public static bool IsExternal(this TensorProto t) => ExternalData.IsExternal(t);

    /// <summary>The values as float32, whatever the stored float type (or integer type, widened).</summary>
    public static float[] ReadFloats(this TensorProto t, string modelFolder)
    {
        long n = t.ElementCount();
        if (t.DataType == DataTypes.String || DataTypes.Size(t.DataType) == 0)
            throw new UserError($"tensor '{t.Name}' has type {DataTypes.Name(t.DataType)}, which has no numeric values");
        var raw = RawBytes(t, modelFolder);
        var result = new float[n];
        if (raw is not null)
        {
            if (raw.Length != n * DataTypes.Size(t.DataType))
                throw new UserError($"tensor '{t.Name}' holds {raw.Length} bytes of data but its shape [{string.Join(", ", t.Dims)}] and type {DataTypes.Name(t.DataType)} need {n * DataTypes.Size(t.DataType)}");
            DecodeRaw(raw, t.DataType, result);
            return result;
        }
        switch (t.DataType)
        {
            case DataTypes.Float: Check(t, t.FloatData.Count, n); t.FloatData.CopyTo(result, 0); break;
            case DataTypes.Double: Check(t, t.DoubleData.Count, n); for (int i = 0; i < n; i++) result[i] = (float)t.DoubleData[i]; break;
            case DataTypes.Int64: Check(t, t.Int64Data.Count, n); for (int i = 0; i < n; i++) result[i] = t.Int64Data[i]; break;
            case DataTypes.UInt32 or DataTypes.UInt64: Check(t, t.Uint64Data.Count, n); for (int i = 0; i < n; i++) result[i] = t.Uint64Data[i]; break;
            case DataTypes.Float16: Check(t, t.Int32Data.Count, n); for (int i = 0; i < n; i++) result[i] = (float)BitConverter.UInt16BitsToHalf((ushort)t.Int32Data[i]); break;
            case DataTypes.BFloat16: Check(t, t.Int32Data.Count, n); for (int i = 0; i < n; i++) result[i] = BFloat16ToFloat((ushort)t.Int32Data[i]); break;
            default: Check(t, t.Int32Data.Count, n); for (int i = 0; i < n; i++) result[i] = t.Int32Data[i]; break;
        }
        return result;
    }

    /// <summary>Integer values (shapes, axes, indices), widened to int64.</summary>
    public static long[] ReadInt64s(this TensorProto t, string modelFolder)
    {
        if (t.DataType is DataTypes.Int64 && t.Int64Data.Count > 0) return t.Int64Data.ToArray();
        if (t.DataType is DataTypes.Int32 && t.Int32Data.Count > 0) return t.Int32Data.Select(v => (long)v).ToArray();
        var raw = RawBytes(t, modelFolder);
        if (raw is not null && t.DataType == DataTypes.Int64) return MemoryMarshal.Cast<byte, long>(raw).ToArray();
        if (raw is not null && t.DataType == DataTypes.Int32) return MemoryMarshal.Cast<byte, int>(raw).ToArray().Select(v => (long)v).ToArray();
        return t.ReadFloats(modelFolder).Select(v => (long)v).ToArray();
    }

    /// <summary>raw_data or the external bytes; null when values are in a typed field.</summary>
    public static byte[]? RawBytes(this TensorProto t, string modelFolder)
    {
        if (t.IsExternal())
            return ExternalData.Resolve(t, modelFolder, t.ElementCount() * DataTypes.Size(t.DataType)).ReadAll();
        if (!t.RawData.IsEmpty || t.ElementCount() == 0) return t.RawData.ToByteArray();
        return null;
    }

    /// <summary>Moves external data into raw_data, so the tensor can travel in a model loaded from memory.</summary>
    public static void Inline(this TensorProto t, string modelFolder)
    {
        if (!t.IsExternal()) return;
        var raw = t.RawBytes(modelFolder)!;
        t.ExternalData.Clear();
        t.DataLocation = TensorProto.Types.DataLocation.Default;
        t.RawData = Google.Protobuf.ByteString.CopyFrom(raw);
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

    static void Check(TensorProto t, int count, long n)
    {
        if (count != n)
            throw new UserError($"tensor '{t.Name}' holds {count} values but its shape [{string.Join(", ", t.Dims)}] needs {n}; the model file is damaged");
    }
}
