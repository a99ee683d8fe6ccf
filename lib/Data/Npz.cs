using System.IO.Compression;

namespace OnnxUnlearn.Data;

/// <summary>
/// Reads and writes NumPy .npz archives: zip files holding one "key.npy" member per array,
/// stored (numpy.savez) or deflated (numpy.savez_compressed).
/// </summary>
public static class Npz
{
    /// <summary>The key, element type and shape of one member, from its .npy header (read before any data).</summary>
    public sealed record Member(string Key, ElementType Type, long[] Shape);

    /// <summary>Reads every array, keyed by member name without ".npy", in archive order.</summary>
    /// <param name="beforeData">Called with every member's header before any array data is read or decompressed: a caller
    /// that knows what the arrays must look like (a model's input shapes) refuses a wrong file without reading it.</param>
    public static Dictionary<string, NdArray> Read(string path, Action<IReadOnlyList<Member>>? beforeData = null)
    {
        if (!File.Exists(path))
            throw new UserError($"{path}: file not found; check the path to the .npz file.");
        try
        {
            using var file = File.OpenRead(path);
            return Read(file, path, beforeData);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UserError($"{path}: cannot read the file ({e.Message}); check that it is readable.", e);
        }
    }

    /// <summary>Reads every array of an .npz held in a stream (seekable or not); <paramref name="path"/> labels errors.</summary>
    /// <remarks>
    /// Every member's .npy header is read first: its declared size (shape × dtype) must agree with the size the archive
    /// declares for the member, and all members together must fit <see cref="DataLimits.Available"/>, before any data is
    /// decompressed. Each member is then decompressed only up to the size its header declared.
    /// </remarks>
    public static Dictionary<string, NdArray> Read(Stream npz, string path, Action<IReadOnlyList<Member>>? beforeData = null)
    {
        ZipArchive zip;
        try
        {
            zip = new ZipArchive(npz, ZipArchiveMode.Read, leaveOpen: true);
        }
        catch (Exception e) when (e is InvalidDataException or IOException or ArgumentException)
        {
            throw new UserError($"{path}: not a valid .npz (zip) file ({e.Message}); save it with numpy.savez or numpy.savez_compressed.", e);
        }
        catch (OutOfMemoryException e)
        {
            throw new UserError($"{path}: not enough memory to read the archive's directory; the file is damaged or too large.", e);
        }

        using (zip)
        {
            var headers = new List<(ZipArchiveEntry Entry, string Key, string Name, Npy.Header Header)>();
            var keys = new HashSet<string>(StringComparer.Ordinal);
            long total = 0;
            foreach (var entry in zip.Entries)
            {
                if (!entry.FullName.EndsWith(".npy", StringComparison.Ordinal))
                    throw new UserError($"{path}: member {UserError.Quote(entry.FullName)} is not a .npy array; an .npz file should hold only arrays, as numpy.savez writes them.");
                string key = entry.FullName[..^".npy".Length];
                string name = $"{path} (key {UserError.Quote(key)})";
                if (!keys.Add(key))
                    throw new UserError($"{name}: key appears twice in the archive; re-save the file with numpy.savez.");
                var header = Open(entry, name, Npy.ReadHeader);
                // numpy writes each member as exactly its header and data; an archive declaring less is damaged (or lying),
                // and decompressing it would read more than it admits to.
                if (entry.Length < header.TotalBytes)
                    throw new UserError($"{name}: the archive declares the member as {DataLimits.Format(entry.Length)} uncompressed, but its .npy header " +
                        $"declares {DataLimits.Format(header.TotalBytes)} (shape {NdArray.FormatShape(header.Shape)}, {NdArray.Dtype(header.Type)}); the file is damaged; re-save it with numpy.savez.");
                total += header.DataBytes;
                headers.Add((entry, key, name, header));
            }
            DataLimits.Check(total, path, headers.Count == 1 ? $"key {UserError.Quote(headers[0].Key)} of shape {NdArray.FormatShape(headers[0].Header.Shape)}"
                : $"its {headers.Count} arrays ({string.Join(", ", headers.Select(h => $"{UserError.Quote(h.Key)} {NdArray.FormatShape(h.Header.Shape)}"))})");
            beforeData?.Invoke(headers.Select(h => new Member(h.Key, h.Header.Type, h.Header.Shape)).ToList());

            var arrays = new Dictionary<string, NdArray>(StringComparer.Ordinal);
            foreach (var (entry, key, name, header) in headers)
                arrays.Add(key, Open(entry, name, (s, n) =>
                {
                    Npy.ReadHeader(s, n);
                    return Npy.ReadData(s, header, n);
                }));
            return arrays;
        }
    }

    /// <summary>Opens a member and reads from it, turning decompression failures into messages naming it.</summary>
    static T Open<T>(ZipArchiveEntry entry, string name, Func<Stream, string, T> read)
    {
        try
        {
            using var stream = entry.Open();
            return read(stream, name);
        }
        catch (Exception e) when (e is InvalidDataException or NotSupportedException or IOException)
        {
            // Unsupported compression methods, encrypted members, CRC mismatches and damaged deflate data land here.
            throw new UserError($"{name}: member cannot be decompressed ({e.Message}); re-save the file with numpy.savez or numpy.savez_compressed.", e);
        }
    }

    /// <summary>
    /// Writes the arrays in enumeration order (insertion order for a Dictionary) as "key.npy" members, deflated when <paramref name="compress"/> is set.
    /// The file is written beside the target and then moved over it, so readers never see a partial file.
    /// </summary>
    public static void Write(string path, IReadOnlyDictionary<string, NdArray> arrays, bool compress = false)
    {
        string full = Path.GetFullPath(path);
        string folder = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(folder))
            throw new UserError($"{path}: folder {folder} does not exist; create it first or choose another output path.");
        string temp = Path.Combine(folder, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var zip = ZipFile.Open(temp, ZipArchiveMode.Create))
            {
                var level = compress ? CompressionLevel.Optimal : CompressionLevel.NoCompression;
                foreach (var (key, array) in arrays)
                {
                    var entry = zip.CreateEntry(key + ".npy", level);
                    // numpy's date (1980-01-01), not the clock: the same arrays give the same bytes (merged shards equal one run)
                    entry.LastWriteTime = new DateTimeOffset(new DateTime(1980, 1, 1));
                    using var stream = entry.Open();
                    Npy.Write(stream, array);
                }
            }
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            File.Delete(temp);
        }
    }
}
