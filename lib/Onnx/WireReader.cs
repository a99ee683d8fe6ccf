namespace OnnxUnlearn.Onnx;

/// <summary>
/// Minimal protobuf wire-format reader. Unlike a generated parser it reports the absolute byte offset of
/// everything it reads, which is what lets <see cref="WeightPatch"/> overwrite values in place.
/// Every malformed or truncated input ends in a <see cref="UserError"/>, never an index exception.
/// </summary>
internal ref struct WireReader(ReadOnlySpan<byte> data, long baseOffset, string source)
{
    public const int Varint = 0, Fixed64 = 1, LengthDelimited = 2, Fixed32 = 5;

    readonly ReadOnlySpan<byte> bytes = data;
    int pos;

    public readonly bool AtEnd => pos >= bytes.Length;

    /// <summary>Bytes left to read; for a reader returned by <see cref="ReadLengthDelimited"/>, the field's length.</summary>
    public readonly int Remaining => bytes.Length - pos;

    /// <summary>Absolute offset (in the file) of the next unread byte.</summary>
    public readonly long Offset => baseOffset + pos;

    /// <summary>Absolute offset of the tag most recently returned by <see cref="ReadTag"/>.</summary>
    public long TagOffset { get; private set; }

    public (int Field, int WireType) ReadTag()
    {
        TagOffset = Offset;
        var tag = ReadVarint();
        var field = tag >> 3;
        var wireType = (int)(tag & 7);
        if (field == 0 || field > int.MaxValue)
            throw Malformed($"invalid field number {field}");
        if (wireType is 3 or 4)
            throw Malformed($"protobuf group in field {field} (ONNX never uses groups)");
        if (wireType is not (Varint or Fixed64 or LengthDelimited or Fixed32))
            throw Malformed($"invalid wire type {wireType} in field {field}");
        return ((int)field, wireType);
    }

    public ulong ReadVarint()
    {
        ulong value = 0;
        for (var shift = 0; shift < 70; shift += 7)
        {
            if (AtEnd) throw Malformed("varint runs past the end");
            var b = bytes[pos++];
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) return value;
        }
        throw Malformed("varint longer than 10 bytes");
    }

    /// <summary>Reads a length-delimited field; the returned reader keeps absolute offsets.</summary>
    public WireReader ReadLengthDelimited()
    {
        var length = ReadVarint();
        if (length > (ulong)Remaining) throw Malformed($"field of {length} bytes runs past the end");
        var sub = new WireReader(bytes.Slice(pos, (int)length), Offset, source);
        pos += (int)length;
        return sub;
    }

    public string ReadString() => ReadLengthDelimited().Text();

    /// <summary>The unread bytes as UTF-8: the contents of a string field that <see cref="NextField"/> returned.</summary>
    public readonly string Text() => System.Text.Encoding.UTF8.GetString(bytes[pos..]);

    /// <summary>
    /// Reads on to the next field among <paramref name="fields"/>, skipping all others, and gives its contents. Every field
    /// a walk of the model descends into is length-delimited (a message or a string). False at the end.
    /// </summary>
    public bool NextField(scoped ReadOnlySpan<int> fields, out int field, out WireReader contents)
    {
        while (!AtEnd)
        {
            (field, var wireType) = ReadTag();
            if (!fields.Contains(field))
            {
                SkipField(wireType);
                continue;
            }
            Expect(field, wireType, LengthDelimited);
            contents = ReadLengthDelimited();
            return true;
        }
        field = 0;
        contents = default;
        return false;
    }

    /// <summary>Skips <paramref name="count"/> bytes, e.g. a fixed32/fixed64 value whose offset the caller noted.</summary>
    public void Skip(int count)
    {
        if (count > Remaining) throw Malformed($"{count}-byte value runs past the end");
        pos += count;
    }

    public void SkipField(int wireType)
    {
        switch (wireType)
        {
            case Varint: ReadVarint(); break;
            case Fixed64: Skip(8); break;
            case Fixed32: Skip(4); break;
            default: ReadLengthDelimited(); break;
        }
    }

    /// <summary>Throws unless a known field has the wire type the ONNX schema gives it.</summary>
    public readonly void Expect(int field, int wireType, int expected)
    {
        if (wireType != expected) throw Malformed($"field {field} has wire type {wireType}, expected {expected}");
    }

    public readonly UserError Malformed(string detail) =>
        new($"model file {source} is truncated or not an ONNX model ({detail} at byte {Offset}). " +
            "Check that the file was copied completely and is an .onnx model.");
}
