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
        if (string.IsNullOrEmpty(location))
            throw new UserError($"tensor '{t.Name}' is marked external but has no 'location'; the model file is damaged");
        if (System.IO.Path.IsPathRooted(location) || location.Contains(':'))
            throw new UserError($"tensor '{t.Name}': external data location '{location}' is absolute; only paths relative to the model's folder are allowed");
        var root = System.IO.Path.GetFullPath(modelFolder);
        var full = System.IO.Path.GetFullPath(System.IO.Path.Combine(root, location));
        if (!IsInside(root, full))
            throw new UserError($"tensor '{t.Name}': external data location '{location}' escapes the model's folder '{root}'; refusing to read it");
        if (!File.Exists(full))
            throw new UserError($"tensor '{t.Name}': external data file '{full}' does not exist; copy it next to the model");
        var target = new FileInfo(full).ResolveLinkTarget(returnFinalTarget: true);
        if (target is not null && !IsInside(RealPath(root), RealPath(target.FullName)))
            throw new UserError($"tensor '{t.Name}': external data file '{location}' is a link to '{target.FullName}', outside the model's folder; refusing to read it");
        if (length < 0) length = expectedBytes;
        long size = new FileInfo(target?.FullName ?? full).Length;
        if (offset < 0 || length < 0 || offset > size || length > size - offset)
            throw new UserError($"tensor '{t.Name}': external data range [offset {offset}, length {length}] lies outside '{location}' ({size} bytes); the data file is truncated or does not belong to this model");
        if (expectedBytes >= 0 && length != expectedBytes)
            throw new UserError($"tensor '{t.Name}': external data length {length} does not match its shape and type ({expectedBytes} bytes)");
        return new ExternalData(full, offset, length);
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

    static bool IsInside(string root, string path)
    {
        var r = root.EndsWith(System.IO.Path.DirectorySeparatorChar) ? root : root + System.IO.Path.DirectorySeparatorChar;
        return path.StartsWith(r, StringComparison.Ordinal);
    }

    /// <summary>Resolves symlinks in every component of an existing path (the folder itself may be a link, e.g. /tmp on macOS).</summary>
    static string RealPath(string path)
    {
        var full = System.IO.Path.GetFullPath(path);
        var parent = System.IO.Path.GetDirectoryName(full);
        var resolvedParent = parent is null ? null : RealPath(parent);
        var here = resolvedParent is null ? full : System.IO.Path.Combine(resolvedParent, System.IO.Path.GetFileName(full));
        var link = File.Exists(here) || Directory.Exists(here)
            ? (Directory.Exists(here) ? (FileSystemInfo)new DirectoryInfo(here) : new FileInfo(here)).ResolveLinkTarget(true)
            : null;
        return link?.FullName ?? here;
    }
}
