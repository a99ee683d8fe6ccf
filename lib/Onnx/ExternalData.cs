using Onnx;

namespace OnnxUnlearn.Onnx;

/// <summary>Where an external tensor's bytes live, validated against the model's folder (model files are untrusted).</summary>
public sealed record ExternalData(string FullPath, long Offset, long Length)
{
    public const int ExternalLocation = 1;

    public static bool IsExternal(TensorProto t) => t.DataLocation == (TensorProto.Types.DataLocation)ExternalLocation;

    /// <summary>Resolves and checks location/offset/length: relative, inside <paramref name="modelFolder"/> (also after following
    /// symlinks), and inside the file. <paramref name="expectedBytes"/> fills in a missing length.</summary>
    public static ExternalData Resolve(TensorProto t, string modelFolder, long expectedBytes)
    {
        string? location = null; long offset = 0; long length = -1;
        foreach (var kv in t.ExternalData)
        {
            switch (kv.Key)
            {
                case "location": location = kv.Value; break;
                case "offset": offset = ParseLong(t, kv.Key, kv.Value); break;
                case "length": length = ParseLong(t, kv.Key, kv.Value); break;
            }
        }
        var (full, real) = CheckLocation(location, modelFolder, problem => new UserError($"tensor '{t.Name}' {problem}"));
        if (length < 0) length = expectedBytes;
        long size = new FileInfo(real).Length; // the target's: FileInfo on a symlink measures the link
        if (offset < 0 || length < 0 || offset > size || length > size - offset)
            throw new UserError($"tensor '{t.Name}': external data range [offset {offset}, length {length}] lies outside '{location}' ({size} bytes); the data file is truncated or does not belong to this model");
        if (expectedBytes >= 0 && length != expectedBytes)
            throw new UserError($"tensor '{t.Name}': external data length {length} does not match its shape and type ({expectedBytes} bytes)");
        return new ExternalData(full, offset, length);
    }

    /// <summary>
    /// Validates an external-data location: relative, inside the model's folder, also after following symlinks, and
    /// existing. Returns the full path and the real (symlink-free) path. A hostile model must not make us read or
    /// overwrite files elsewhere. <paramref name="bad"/> turns a problem ("has ...") into the caller's error.
    /// </summary>
    public static (string Full, string Real) CheckLocation(string? location, string modelFolder, Func<string, Exception> bad)
    {
        if (string.IsNullOrEmpty(location))
            throw bad("is marked as external data but has no 'location' entry");
        if (location.Contains('\0'))
            throw bad("has an external data location containing a NUL character");
        if (System.IO.Path.IsPathRooted(location) || location.StartsWith('\\') || (location.Length > 1 && location[1] == ':'))
            throw bad($"has absolute external data location '{location}'; ONNX requires a path relative to the model's folder. Move the file next to the model and set the location to its relative name.");
        var folder = System.IO.Path.GetFullPath(modelFolder);
        var full = System.IO.Path.GetFullPath(System.IO.Path.Combine(folder, location));
        if (!IsInside(full, folder))
            throw bad($"has external data location '{location}' that escapes the model's folder {folder}; keep data files in or below the model's folder.");
        if (!File.Exists(full))
            throw bad($"refers to external data file '{location}', which does not exist in {folder}.");
        var real = RealPath(full);
        if (!IsInside(real, RealPath(folder)))
            throw bad($"has external data location '{location}' that is a symlink resolving outside the model's folder {folder}; copy the data file into the folder instead.");
        return (full, real);
    }

    public byte[] ReadAll()
    {
        using var f = File.OpenRead(FullPath);
        f.Seek(Offset, SeekOrigin.Begin);
        var buffer = new byte[Length];
        f.ReadExactly(buffer);
        return buffer;
    }

    static long ParseLong(TensorProto t, string key, string value) =>
        long.TryParse(value, out var v) ? v
        : throw new UserError($"tensor '{t.Name}': external data '{key}' is '{value}', not an integer");

    static bool IsInside(string path, string folder)
    {
        var prefix = System.IO.Path.EndsInDirectorySeparator(folder) ? folder : folder + System.IO.Path.DirectorySeparatorChar;
        return path.StartsWith(prefix, StringComparison.Ordinal);
    }

    /// <summary>
    /// Resolves every symlink along a full path (like realpath(3)), so containment checks see where the bytes
    /// really live and two paths to one file compare equal.
    /// </summary>
    public static string RealPath(string fullPath)
    {
        var root = System.IO.Path.GetPathRoot(fullPath)!;
        var current = root;
        foreach (var part in fullPath[root.Length..].Split(System.IO.Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries))
        {
            current = System.IO.Path.Combine(current, part);
            FileSystemInfo info = Directory.Exists(current) ? new DirectoryInfo(current) : new FileInfo(current);
            // Re-resolve the target: its own parent folders may be symlinks too.
            if (info.LinkTarget is not null)
                current = RealPath(info.ResolveLinkTarget(returnFinalTarget: true)!.FullName);
        }
        return current;
    }
}
