using System.Buffers.Binary;
using System.Text;
using System.Text.RegularExpressions;

namespace OnnxUnlearn.Data;

/// <summary>
/// Reads and writes NumPy .npy arrays (format versions 1.0, 2.0 and 3.0), see
/// https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
/// </summary>
public static partial class Npy
{
    // 0x93 followed by "NUMPY"; a u8 string literal would encode U+0093 as two bytes.
    private static ReadOnlySpan<byte> Magic => [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    // Header alignment numpy uses so the data can be memory-mapped.
    private const int Alignment = 64;

    // dtype codes without the byte-order character.
    private static readonly Dictionary<string, ElementType> Types = new()
    {
        ["f4"] = ElementType.Float32,
        ["f8"] = ElementType.Float64,
        ["i8"] = ElementType.Int64,
        ["i4"] = ElementType.Int32,
        ["u1"] = ElementType.UInt8,
        ["b1"] = ElementType.Bool,
    };

    private const string Supported = "'<f2', '<f4', '<f8', '<i8', '<i4', '|u1', '|b1'";

    // float16 arrays (the data of a float16 model) are widened to float32 when read: every float16 value is one exactly.
    private const string HalfCode = "f2";

    /// <summary>Reads one array. <paramref name="nameForErrors"/> names the file (and key) in error messages.</summary>
    public static NdArray Read(Stream s, string nameForErrors)
    {
        var header = ReadHeader(s, nameForErrors);
        // Checking before allocating stops a damaged header from requesting gigabytes.
        if (s.CanSeek && s.Length - s.Position < header.DataBytes)
            throw Truncated(nameForErrors, header.Shape, header.DataBytes, s.Length - s.Position);
        DataLimits.Check(header.DataBytes, nameForErrors, $"array of shape {NdArray.FormatShape(header.Shape)}");
        return ReadData(s, header, nameForErrors);
    }

    /// <summary>What an .npy header declares: element type, shape, the bytes of the header itself and of the data after it.</summary>
    /// <remarks><paramref name="Half"/>: the file holds float16 values (2 bytes each), read into a float32 array.</remarks>
    internal readonly record struct Header(ElementType Type, long[] Shape, long HeaderBytes, long DataBytes, bool Half = false)
    {
        public long TotalBytes => HeaderBytes + DataBytes;
    }

    /// <summary>Reads and checks the header only (the stream is left at the first data byte).</summary>
    internal static Header ReadHeader(Stream s, string name)
    {
        Span<byte> prefix = stackalloc byte[8];
        if (s.ReadAtLeast(prefix, prefix.Length, throwOnEndOfStream: false) < prefix.Length || !prefix[..6].SequenceEqual(Magic))
            throw new UserError($"{name}: not a .npy array (it does not start with the NumPy magic bytes); save it with numpy.save.");

        byte major = prefix[6];
        int lengthSize = major switch
        {
            1 => 2,
            2 or 3 => 4,
            _ => throw new UserError($"{name}: .npy format version {major}.{prefix[7]} is not supported (1.0, 2.0 and 3.0 are); re-save it with numpy.save."),
        };
        Span<byte> lengthBytes = stackalloc byte[lengthSize];
        ReadHeaderBytes(s, lengthBytes, name);
        long headerLength = lengthSize == 2 ? BinaryPrimitives.ReadUInt16LittleEndian(lengthBytes) : BinaryPrimitives.ReadUInt32LittleEndian(lengthBytes);
        if (headerLength > 1 << 24)
            throw new UserError($"{name}: .npy header claims {headerLength} bytes, so the file is damaged; re-save it with numpy.save.");
        var header = new byte[headerLength];
        ReadHeaderBytes(s, header, name);

        // Versions 1 and 2 store the header as latin-1, version 3 as UTF-8.
        string text = major == 3 ? Encoding.UTF8.GetString(header) : Encoding.Latin1.GetString(header);
        var (type, shape, half) = ParseHeader(text, name);

        if (!NdArray.TryElementCount(shape, out long count))
            throw new UserError($"{name}: array of shape {NdArray.FormatShape(shape)} has more elements than .NET can hold ({Array.MaxLength}); split it into smaller files.");
        // count <= Array.MaxLength, so the product cannot overflow.
        return new Header(type, shape, prefix.Length + lengthSize + headerLength, count * (half ? 2 : NdArray.ElementSize(type)), half);
    }

    /// <summary>
    /// Reads the data a header declared: exactly <see cref="Header.DataBytes"/> bytes, never more, so a stream that
    /// holds (or decompresses to) more cannot make it read or allocate beyond what was declared and checked.
    /// </summary>
    internal static NdArray ReadData(Stream s, Header header, string name)
    {
        NdArray array;
        try { array = NdArray.Zeros(header.Type, header.Shape); }
        catch (OutOfMemoryException)
        {
            throw new UserError($"{name}: not enough memory for an array of shape {NdArray.FormatShape(header.Shape)} " +
                $"({DataLimits.Format(header.DataBytes)}); split the file or run where more memory is available.");
        }
        if (header.Half)
        {
            var bits = new byte[header.DataBytes];
            int got = s.ReadAtLeast(bits, bits.Length, throwOnEndOfStream: false);
            if (got < bits.Length) throw Truncated(name, header.Shape, header.DataBytes, got);
            var wide = (float[])array.Data;
            var halves = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(bits);
            for (int i = 0; i < wide.Length; i++) wide[i] = (float)halves[i];
            return array;
        }
        long read = RawBytes.Read(s, array.Data);
        if (read < header.DataBytes) throw Truncated(name, header.Shape, header.DataBytes, read);
        return array;
    }

    private static void ReadHeaderBytes(Stream s, Span<byte> buffer, string name)
    {
        if (s.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false) < buffer.Length)
            throw new UserError($"{name}: file is truncated inside the .npy header; re-save it with numpy.save.");
    }

    private static UserError Truncated(string name, long[] shape, long needed, long present) =>
        new($"{name}: file is truncated: shape {NdArray.FormatShape(shape)} needs {needed} data bytes but only {present} are present; re-save it with numpy.save.");

    [GeneratedRegex(@"['""]descr['""]\s*:\s*(?:['""](?<descr>[^'""]*)['""]|(?<structured>\[))")]
    private static partial Regex DescrPattern();

    [GeneratedRegex(@"['""]fortran_order['""]\s*:\s*(?<value>True|False)")]
    private static partial Regex FortranPattern();

    [GeneratedRegex(@"['""]shape['""]\s*:\s*\((?<dims>[^)]*)\)")]
    private static partial Regex ShapePattern();

    private static (ElementType Type, long[] Shape, bool Half) ParseHeader(string text, string name)
    {
        var descr = DescrPattern().Match(text);
        var fortran = FortranPattern().Match(text);
        var shapeMatch = ShapePattern().Match(text);
        if (!descr.Success || !fortran.Success || !shapeMatch.Success)
            throw new UserError($"{name}: .npy header is malformed ({UserError.Escape(Shorten(text.Trim()))}); re-save it with numpy.save.");

        if (descr.Groups["structured"].Success)
            throw new UserError($"{name}: structured (record) dtypes are not supported; save each field as its own array with one of {Supported}.");
        if (fortran.Groups["value"].Value == "True")
            throw new UserError($"{name}: array is stored in Fortran (column-major) order; re-save it with numpy.save(path, np.ascontiguousarray(arr)).");

        var code = descr.Groups["descr"].Value;
        bool half = code == "<" + HalfCode;
        var type = half ? ElementType.Float32 : ParseDescr(code, name);

        var dims = shapeMatch.Groups["dims"].Value.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var shape = new long[dims.Length];
        for (int i = 0; i < dims.Length; i++)
        {
            // Files written by Python 2 spell dimensions as long literals, e.g. "3L".
            if (!long.TryParse(dims[i].TrimEnd('L'), out shape[i]) || shape[i] < 0)
                throw new UserError($"{name}: .npy header has an invalid shape ({UserError.Escape(Shorten(shapeMatch.Groups["dims"].Value))}); re-save it with numpy.save.");
        }
        return (type, shape, half);
    }

    private static string Shorten(string text) => text.Length <= 200 ? text : text[..200] + "...";

    private static ElementType ParseDescr(string descr, string name)
    {
        if (descr.Length >= 2 && descr[1] == 'O')
            throw new UserError($"{name}: array has dtype object ({UserError.Quote(descr)}), which holds pickled Python objects; convert it to a numeric array, e.g. arr.astype('<f4'), and re-save it.");
        if (descr.Length >= 3 && Types.TryGetValue(descr[1..], out var type))
        {
            char order = descr[0];
            bool singleByte = NdArray.ElementSize(type) == 1;
            if (order == '<' || (singleByte && order is '|' or '>'))
                return type;
            if (order == '>')
                throw new UserError($"{name}: array is big-endian ({UserError.Quote(descr)}); convert it with arr.astype('<{descr[1..]}') and re-save it.");
        }
        throw new UserError($"{name}: dtype {UserError.Quote(Shorten(descr))} is not supported; convert the array to one of {Supported}, e.g. arr.astype('<f4'), and re-save it.");
    }

    /// <summary>Writes a little-endian, C-order array as format version 1.0 (2.0 if the header needs more than 64 KiB).</summary>
    public static void Write(Stream s, NdArray a)
    {
        string descr = a.Type switch
        {
            ElementType.Float32 => "<f4",
            ElementType.Float64 => "<f8",
            ElementType.Int64 => "<i8",
            ElementType.Int32 => "<i4",
            ElementType.UInt8 => "|u1",
            ElementType.Bool => "|b1",
            _ => throw new ArgumentOutOfRangeException(nameof(a), a.Type, null),
        };
        // Python tuple syntax: a one-element tuple needs a trailing comma.
        string shape = a.Shape.Length == 1 ? $"({a.Shape[0]},)" : NdArray.FormatShape(a.Shape);
        string dict = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}";

        int lengthSize = 2;
        int headerLength = PaddedHeaderLength(dict.Length, lengthSize);
        if (headerLength > ushort.MaxValue)
        {
            lengthSize = 4;
            headerLength = PaddedHeaderLength(dict.Length, lengthSize);
        }

        var prefix = new byte[Magic.Length + 2 + lengthSize + headerLength];
        Magic.CopyTo(prefix);
        prefix[6] = (byte)(lengthSize == 2 ? 1 : 2);
        prefix[7] = 0;
        var lengthField = prefix.AsSpan(8, lengthSize);
        if (lengthSize == 2) BinaryPrimitives.WriteUInt16LittleEndian(lengthField, (ushort)headerLength);
        else BinaryPrimitives.WriteUInt32LittleEndian(lengthField, (uint)headerLength);
        var headerBytes = prefix.AsSpan(8 + lengthSize);
        headerBytes.Fill((byte)' ');
        Encoding.Latin1.GetBytes(dict, headerBytes);
        headerBytes[^1] = (byte)'\n';

        s.Write(prefix);
        RawBytes.Write(s, a.Data);
    }

    /// <summary>Header length including space padding and the final newline, so the data starts on an aligned offset.</summary>
    private static int PaddedHeaderLength(int dictLength, int lengthSize)
    {
        int unpadded = Magic.Length + 2 + lengthSize + dictLength + 1;
        return dictLength + 1 + (Alignment - unpadded % Alignment) % Alignment;
    }
}
