using System.Buffers.Binary;
using Google.Protobuf;
using Onnx;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxUnlearn.Data;

/// <summary>
/// Reads and writes serialized ONNX TensorProto (.pb) files, the format of the ONNX test corpus
/// (test_data_set_0/input_0.pb). float16 and bfloat16 become Float32; int8, int16 and uint16 become Int32.
/// </summary>
public static class TensorFile
{
    public static (string Name, NdArray Array) Read(string path)
    {
        if (!File.Exists(path))
            throw new UserError($"{path}: file not found; check the path to the tensor .pb file.");
        TensorProto t;
        try
        {
            using var stream = File.OpenRead(path);
            t = TensorProto.Parser.ParseFrom(stream);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new UserError($"{path}: not a serialized ONNX TensorProto ({e.Message}); write it with onnx.numpy_helper.from_array(...).SerializeToString().", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UserError($"{path}: cannot read the file ({e.Message}); check that it is readable.", e);
        }
        catch (OutOfMemoryException e)
        {
            throw new UserError($"{path}: not enough memory to read the tensor file; the file is damaged or too large.", e);
        }
        return (t.Name, ToNdArray(t, $"{path}: tensor {UserError.Quote(t.Name)}"));
    }

    /// <summary>Writes the array as a TensorProto with its values in raw_data, as onnx.numpy_helper.from_array does.</summary>
    public static void Write(string path, string name, NdArray a)
    {
        using var stream = File.Create(path);
        ToTensorProto(name, a).WriteTo(stream);
    }

    public static NdArray ToNdArray(TensorProto t) => ToNdArray(t, $"tensor {UserError.Quote(t.Name)}");

    public static TensorProto ToTensorProto(string name, NdArray a)
    {
        var type = a.Type switch
        {
            ElementType.Float32 => DataType.Float,
            ElementType.Float64 => DataType.Double,
            ElementType.Int64 => DataType.Int64,
            ElementType.Int32 => DataType.Int32,
            ElementType.UInt8 => DataType.Uint8,
            ElementType.Bool => DataType.Bool,
            _ => throw new ArgumentOutOfRangeException(nameof(a), a.Type, null),
        };
        var t = new TensorProto { Name = name, DataType = (int)type, RawData = ByteString.CopyFrom(RawBytes.All(a.Data)) };
        t.Dims.AddRange(a.Shape);
        return t;
    }

    private static NdArray ToNdArray(TensorProto t, string name)
    {
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
            throw new UserError($"{name} uses external data; load it through the model loader.");

        long[] shape = [.. t.Dims];
        if (!NdArray.TryElementCount(shape, out long count))
            throw new UserError($"{name} has invalid or too large dims {NdArray.FormatShape(shape)}; the file is damaged or the tensor must be split.");

        bool raw = !t.RawData.IsEmpty;
        switch ((DataType)t.DataType)
        {
            case DataType.Float: return raw ? FromRaw(t, count, ElementType.Float32, shape, name) : NdArray.FromFloat(Values(t.FloatData, count, name), shape);
            case DataType.Double: return raw ? FromRaw(t, count, ElementType.Float64, shape, name) : NdArray.FromDouble(Values(t.DoubleData, count, name), shape);
            case DataType.Int64: return raw ? FromRaw(t, count, ElementType.Int64, shape, name) : NdArray.FromInt64(Values(t.Int64Data, count, name), shape);
            case DataType.Int32: return raw ? FromRaw(t, count, ElementType.Int32, shape, name) : NdArray.FromInt32(Values(t.Int32Data, count, name), shape);
            case DataType.Uint8: return NdArray.FromUInt8(Array.ConvertAll(Narrow(t, 1, false, count, name), v => (byte)v), shape);
            case DataType.Bool: return NdArray.FromBool(Array.ConvertAll(Narrow(t, 1, false, count, name), v => v != 0), shape);
            case DataType.Int8: return NdArray.FromInt32(Narrow(t, 1, true, count, name), shape);
            case DataType.Int16: return NdArray.FromInt32(Narrow(t, 2, true, count, name), shape);
            case DataType.Uint16: return NdArray.FromInt32(Narrow(t, 2, false, count, name), shape);
            case DataType.Float16:
                return NdArray.FromFloat(Array.ConvertAll(Narrow(t, 2, false, count, name), bits => (float)BitConverter.UInt16BitsToHalf((ushort)bits)), shape);
            case DataType.Bfloat16:
                // bfloat16 is the upper half of a float32's bit pattern.
                return NdArray.FromFloat(Array.ConvertAll(Narrow(t, 2, false, count, name), bits => BitConverter.Int32BitsToSingle(bits << 16)), shape);
            default:
                throw new UserError($"{name} has element type {(DataType)t.DataType}, which is not supported; " +
                    "use float, double, int64, int32, uint8 or bool (float16, bfloat16, int8, int16 and uint16 are converted).");
        }
    }

    private static NdArray FromRaw(TensorProto t, long count, ElementType type, long[] shape, string name)
    {
        CheckRawLength(t, count, NdArray.ElementSize(type), name);
        var array = NdArray.Zeros(type, shape);
        RawBytes.CopyTo(t.RawData.Span, array.Data);
        return array;
    }

    private static T[] Values<T>(Google.Protobuf.Collections.RepeatedField<T> field, long count, string name)
    {
        if (field.Count != count)
            throw new UserError($"{name} holds {field.Count} values but its dims need {count}; the file is damaged.");
        return [.. field];
    }

    /// <summary>
    /// Values of a type narrower than 32 bits, widened to int: packed little-endian in raw_data,
    /// or one per entry in int32_data (which holds float16 and bfloat16 as bit patterns).
    /// </summary>
    private static int[] Narrow(TensorProto t, int size, bool signed, long count, string name)
    {
        if (t.RawData.IsEmpty) return Values(t.Int32Data, count, name);
        CheckRawLength(t, count, size, name);
        var raw = t.RawData.Span;
        var result = new int[count];
        for (int i = 0; i < result.Length; i++)
        {
            result[i] = (size, signed) switch
            {
                (1, false) => raw[i],
                (1, true) => (sbyte)raw[i],
                (2, false) => BinaryPrimitives.ReadUInt16LittleEndian(raw[(2 * i)..]),
                _ => BinaryPrimitives.ReadInt16LittleEndian(raw[(2 * i)..]),
            };
        }
        return result;
    }

    private static void CheckRawLength(TensorProto t, long count, int size, string name)
    {
        if (t.RawData.Length != count * size)
            throw new UserError($"{name} has {t.RawData.Length} bytes of raw_data but its dims need {count * size}; the file is damaged.");
    }
}
