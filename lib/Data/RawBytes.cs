using System.Runtime.InteropServices;

namespace OnnxUnlearn.Data;

/// <summary>
/// Moves <see cref="NdArray.Data"/> to and from little-endian bytes (the layout of .npy files and ONNX raw_data)
/// by reinterpreting memory, so no per-element conversion is needed.
/// </summary>
internal static class RawBytes
{
    // Each chunk stays well under the 2 GiB limit of a Span<byte>, even for 8-byte elements.
    private const int ChunkElements = 1 << 24;

    static RawBytes()
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("OnnxUnlearn reads and writes tensor data only on little-endian machines.");
    }

    /// <summary>Fills <paramref name="data"/> from the stream; returns the bytes read, fewer than needed if the stream ended.</summary>
    public static long Read(Stream s, Array data)
    {
        long total = 0;
        for (int start = 0; start < data.Length; start += ChunkElements)
        {
            var bytes = Bytes(data, start, Math.Min(ChunkElements, data.Length - start));
            int n = s.ReadAtLeast(bytes, bytes.Length, throwOnEndOfStream: false);
            total += n;
            if (n < bytes.Length) return total;
        }
        NormalizeBools(data);
        return total;
    }

    public static void Write(Stream s, Array data)
    {
        for (int start = 0; start < data.Length; start += ChunkElements)
            s.Write(Bytes(data, start, Math.Min(ChunkElements, data.Length - start)));
    }

    /// <summary>All of the array's bytes; only for arrays under 2 GiB, such as protobuf tensors.</summary>
    public static ReadOnlySpan<byte> All(Array data) => Bytes(data, 0, data.Length);

    /// <summary>Fills <paramref name="data"/> from bytes whose length must equal its byte size.</summary>
    public static void CopyTo(ReadOnlySpan<byte> source, Array data)
    {
        source.CopyTo(Bytes(data, 0, data.Length));
        NormalizeBools(data);
    }

    private static Span<byte> Bytes(Array data, int start, int count) => data switch
    {
        float[] a => MemoryMarshal.AsBytes(a.AsSpan(start, count)),
        double[] a => MemoryMarshal.AsBytes(a.AsSpan(start, count)),
        long[] a => MemoryMarshal.AsBytes(a.AsSpan(start, count)),
        int[] a => MemoryMarshal.AsBytes(a.AsSpan(start, count)),
        byte[] a => a.AsSpan(start, count),
        bool[] a => MemoryMarshal.AsBytes(a.AsSpan(start, count)),
        _ => throw new ArgumentException($"Unexpected data array {data.GetType()}.", nameof(data)),
    };

    // A bool byte other than 0 or 1 is invalid in .NET; files may hold any non-zero value for true.
    private static void NormalizeBools(Array data)
    {
        if (data is not bool[] b) return;
        var bytes = MemoryMarshal.AsBytes(b.AsSpan());
        foreach (ref byte v in bytes)
            if (v > 1) v = 1;
    }
}
