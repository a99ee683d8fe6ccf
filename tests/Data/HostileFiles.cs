using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace OnnxUnlearn.Tests.Data;

/// <summary>
/// Hand-written .npy headers and zip archives whose declared sizes may lie: what numpy and System.IO.Compression never
/// write, but a damaged or hostile file holds.
/// </summary>
internal static class HostileFiles
{
    /// <summary>An .npy header (version 1.0, padded to 64 bytes) for a dtype and shape, without data.</summary>
    public static byte[] NpyHeader(string descr, params long[] shape)
    {
        string dims = shape.Length == 1 ? $"({shape[0]},)" : "(" + string.Join(", ", shape) + ")";
        string dict = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}";
        int total = 10 + dict.Length + 1;
        int pad = (64 - total % 64) % 64;
        var header = dict + new string(' ', pad) + "\n";
        var bytes = new byte[10 + header.Length];
        bytes[0] = 0x93;
        Encoding.ASCII.GetBytes("NUMPY", bytes.AsSpan(1));
        bytes[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(8), (ushort)header.Length);
        Encoding.Latin1.GetBytes(header, bytes.AsSpan(10));
        return bytes;
    }

    /// <summary>One zip member: its stored bytes (deflated when <see cref="Deflated"/>), CRC and the uncompressed size the archive declares.</summary>
    public sealed record Member(string Name, byte[] Stored, bool Deflated, uint Crc, long DeclaredSize);

    /// <summary>A stored member whose declared size is its true size unless <paramref name="declared"/> says otherwise.</summary>
    public static Member Stored(string name, byte[] data, long? declared = null) => new(name, data, false, Crc32(data), declared ?? data.Length);

    /// <summary>A deflated member of <paramref name="data"/> followed by <paramref name="zeros"/> zero bytes (without holding them).</summary>
    public static Member Deflated(string name, byte[] data, long zeros = 0, long? declared = null)
    {
        var output = new MemoryStream();
        uint crc = Crc32(data);
        using (var deflate = new DeflateStream(output, CompressionLevel.SmallestSize, leaveOpen: true))
        {
            deflate.Write(data);
            var chunk = new byte[1 << 20];
            for (long left = zeros; left > 0; left -= chunk.Length)
            {
                int n = (int)Math.Min(chunk.Length, left);
                deflate.Write(chunk, 0, n);
                crc = Crc32(chunk.AsSpan(0, n), crc);
            }
        }
        return new(name, output.ToArray(), true, crc, declared ?? data.Length + zeros);
    }

    /// <summary>A zip archive of the members as given (sizes from 4 GiB up in Zip64 extra fields).</summary>
    public static byte[] Zip(params Member[] members)
    {
        var s = new MemoryStream();
        var w = new BinaryWriter(s);
        var offsets = new List<long>();
        foreach (var m in members)
        {
            offsets.Add(s.Position);
            var name = Encoding.UTF8.GetBytes(m.Name);
            bool zip64 = m.DeclaredSize >= uint.MaxValue;
            w.Write(0x04034b50u); w.Write((ushort)(zip64 ? 45 : 20)); w.Write((ushort)0); w.Write((ushort)(m.Deflated ? 8 : 0));
            w.Write((ushort)0); w.Write((ushort)0x21); w.Write(m.Crc);
            w.Write(zip64 ? uint.MaxValue : (uint)m.Stored.Length); w.Write(zip64 ? uint.MaxValue : (uint)m.DeclaredSize);
            w.Write((ushort)name.Length); w.Write((ushort)(zip64 ? 20 : 0)); w.Write(name);
            if (zip64) { w.Write((ushort)1); w.Write((ushort)16); w.Write(m.DeclaredSize); w.Write((long)m.Stored.Length); }
            w.Write(m.Stored);
        }
        long directory = s.Position;
        for (int i = 0; i < members.Length; i++)
        {
            var m = members[i];
            var name = Encoding.UTF8.GetBytes(m.Name);
            bool zip64 = m.DeclaredSize >= uint.MaxValue;
            w.Write(0x02014b50u); w.Write((ushort)(zip64 ? 45 : 20)); w.Write((ushort)(zip64 ? 45 : 20)); w.Write((ushort)0);
            w.Write((ushort)(m.Deflated ? 8 : 0)); w.Write((ushort)0); w.Write((ushort)0x21); w.Write(m.Crc);
            w.Write(zip64 ? uint.MaxValue : (uint)m.Stored.Length); w.Write(zip64 ? uint.MaxValue : (uint)m.DeclaredSize);
            w.Write((ushort)name.Length); w.Write((ushort)(zip64 ? 20 : 0)); w.Write((ushort)0); w.Write((ushort)0); w.Write((ushort)0);
            w.Write(0u); w.Write((uint)offsets[i]); w.Write(name);
            if (zip64) { w.Write((ushort)1); w.Write((ushort)16); w.Write(m.DeclaredSize); w.Write((long)m.Stored.Length); }
        }
        long end = s.Position;
        w.Write(0x06054b50u); w.Write((ushort)0); w.Write((ushort)0); w.Write((ushort)members.Length); w.Write((ushort)members.Length);
        w.Write((uint)(end - directory)); w.Write((uint)directory); w.Write((ushort)0);
        return s.ToArray();
    }

    static readonly uint[] Table = Enumerable.Range(0, 256).Select(n =>
    {
        uint c = (uint)n;
        for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        return c;
    }).ToArray();

    public static uint Crc32(ReadOnlySpan<byte> data, uint crc = 0)
    {
        crc = ~crc;
        foreach (byte b in data) crc = Table[(crc ^ b) & 0xff] ^ (crc >> 8);
        return ~crc;
    }

    /// <summary>
    /// The bomb: member 'x' (float32, (2^22, 64) = 1 GiB of zeros) deflated to about 1 MB, declared honestly, and
    /// 'label' (int64, 2^22 zeros). Made once per test run.
    /// </summary>
    public static byte[] Bomb => bomb.Value;

    static readonly Lazy<byte[]> bomb = new(() => Zip(
        Deflated("x.npy", NpyHeader("<f4", 1 << 22, 64), zeros: 1L << 30),
        Deflated("label.npy", NpyHeader("<i8", 1 << 22), zeros: 8L << 22)));
}
