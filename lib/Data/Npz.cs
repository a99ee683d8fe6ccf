using System.IO.Compression;

namespace OnnxUnlearn.Data;

/// <summary>
/// Reads and writes NumPy .npz archives: zip files holding one "key.npy" member per array,
/// stored (numpy.savez) or deflated (numpy.savez_compressed).
/// </summary>
public static class Npz
{
    /// <summary>Reads every array, keyed by member name without ".npy", in archive order.</summary>
    public static Dictionary<string, NdArray> Read(string path)
    {
        if (!File.Exists(path))
            throw new UserError($"{path}: file not found; check the path to the .npz file.");
        using var file = File.OpenRead(path);
        return Read(file, path);
    }

    /// <summary>Reads every array of an .npz held in a stream (seekable or not); <paramref name="path"/> labels errors.</summary>
    public static Dictionary<string, NdArray> Read(Stream npz, string path)
    {
        ZipArchive zip;
        try
        {
            zip = new ZipArchive(npz, ZipArchiveMode.Read, leaveOpen: true);
        }
        catch (InvalidDataException e)
        {
            throw new UserError($"{path}: not a valid .npz (zip) file ({e.Message}); save it with numpy.savez or numpy.savez_compressed.", e);
        }

        using (zip)
        {
            var arrays = new Dictionary<string, NdArray>(StringComparer.Ordinal);
            foreach (var entry in zip.Entries)
            {
                if (!entry.FullName.EndsWith(".npy", StringComparison.Ordinal))
                    throw new UserError($"{path}: member '{entry.FullName}' is not a .npy array; an .npz file should hold only arrays, as numpy.savez writes them.");
                string key = entry.FullName[..^".npy".Length];
                string name = $"{path} (key '{key}')";
                if (arrays.ContainsKey(key))
                    throw new UserError($"{name}: key appears twice in the archive; re-save the file with numpy.savez.");
                try
                {
                    using var stream = entry.Open();
                    arrays.Add(key, Npy.Read(stream, name));
                }
                catch (InvalidDataException e)
                {
                    // Unsupported compression methods and CRC mismatches land here.
                    throw new UserError($"{name}: member cannot be decompressed ({e.Message}); re-save the file with numpy.savez or numpy.savez_compressed.", e);
                }
            }
            return arrays;
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
                    using var stream = zip.CreateEntry(key + ".npy", level).Open();
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
