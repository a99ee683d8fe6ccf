using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Onnx;

namespace OnnxUnlearn.Onnx;

/// <summary>
/// How far a model's external data may reach. The default is as strict as onnx ≥ 1.21: a relative location inside the
/// model's folder, a regular file, no symlink resolving outside the folder, no file with more than one hard link.
/// </summary>
public sealed record ExternalDataPolicy
{
    public static ExternalDataPolicy Strict { get; } = new();

    /// <summary>
    /// Follow symlinks (the data file or any folder on its way) that resolve outside the model's folder, and accept data
    /// files with more than one hard link: model caches such as Hugging Face's link each snapshot's files into
    /// <c>../../blobs</c>. The location itself must still be relative and must not climb out of the folder.
    /// </summary>
    public bool AllowLinks { get; init; }
}

/// <summary>
/// Where one tensor's external bytes live, validated against the model's folder (model files are untrusted). Every reader of
/// external data (<see cref="ModelFile"/>, <see cref="TensorProtoExtensions"/>, <see cref="WireLayout"/> and so
/// <see cref="WeightPatch"/>) resolves it here.
/// </summary>
/// <param name="Location">As written in the model.</param>
/// <param name="RelativePath">Normalised path relative to the model's folder.</param>
/// <param name="FullPath">Absolute path through the model's folder (symlinks not resolved).</param>
/// <param name="ResolvedPath">Where the bytes really are (every symlink resolved): two tensors overlap only in the same real file.</param>
public sealed record ExternalData(string Location, string RelativePath, string FullPath, string ResolvedPath, long Offset, long Length)
{
    public const int ExternalLocation = 1;

    public static bool IsExternal(TensorProto t) => t.DataLocation == (TensorProto.Types.DataLocation)ExternalLocation;

    /// <summary>Resolves and checks a parsed tensor's reference. <paramref name="expectedBytes"/> (null: not known) fills in
    /// a missing length and must equal a given one.</summary>
    public static ExternalData Resolve(TensorProto t, string modelFolder, long? expectedBytes, ExternalDataPolicy? policy = null, string? model = null) =>
        Resolve(new Origin(t.Name, model, modelFolder), t.ExternalData.Select(e => KeyValuePair.Create(e.Key, e.Value)), expectedBytes, policy);

    /// <summary>
    /// Resolves and checks location, offset and length: a relative location that stays inside the model's folder after
    /// normalisation, a regular file, not a link out of the folder (unless <see cref="ExternalDataPolicy.AllowLinks"/>), and
    /// a byte range inside the file whose length matches the tensor's shape and type.
    /// </summary>
    internal static ExternalData Resolve(Origin origin, IEnumerable<KeyValuePair<string, string>> entries, long? expectedBytes,
        ExternalDataPolicy? policy = null, DataFiles? files = null)
    {
        string? location = null, offsetText = null, lengthText = null;
        foreach (var (key, value) in entries)
        {
            switch (key)
            {
                case "location": location = value; break;
                case "offset": offsetText = value; break;
                case "length": lengthText = value; break;
            }
        }
        var file = files is not null ? files.Check(origin, location) : CheckFile(origin, location, policy ?? ExternalDataPolicy.Strict);
        var offset = ParseNumber(origin, "offset", offsetText, file.Location) ?? 0;
        var length = ParseNumber(origin, "length", lengthText, file.Location) ?? expectedBytes ?? file.Size - Math.Min(offset, file.Size);
        if (offset > file.Size || length > file.Size - offset)
            throw origin.Bad($"reads {length} bytes at offset {offset} of external data file '{file.Location}', which has only {file.Size} bytes; " +
                             "the data file is truncated or does not belong to this model: copy the model's own data file next to it");
        if (expectedBytes is { } expected && length != expected)
            throw origin.Bad($"declares {length} bytes of external data in '{file.Location}' but its shape and type need {expected}; " +
                             "the model or its data file is damaged: re-export the model");
        return new ExternalData(file.Location, file.RelativePath, file.FullPath, file.RealPath, offset, length);
    }

    /// <summary>The bytes, read after checking again that the file still holds the range.</summary>
    public byte[] ReadAll()
    {
        if (Length > Array.MaxLength)
            throw new UserError($"external data '{Location}' holds {Length} bytes at offset {Offset}, more than one array can hold; this tensor is too large to read into memory");
        try
        {
            using var f = new FileStream(FullPath, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1);
            if (Offset + Length > f.Length)
                throw new UserError($"external data file '{Location}' shrank to {f.Length} bytes while it was read (needed {Offset + Length}); do not change data files while the tool runs");
            f.Seek(Offset, SeekOrigin.Begin);
            var buffer = new byte[Length];
            f.ReadExactly(buffer);
            return buffer;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UserError($"cannot read external data file '{FullPath}': {e.Message}");
        }
    }

    /// <summary>Which tensor of which model a problem is about; <see cref="Bad"/> words it as one line.</summary>
    internal readonly record struct Origin(string Tensor, string? Model, string Folder)
    {
        public UserError Bad(string problem) =>
            new($"tensor '{Tensor}' in {(Model is null ? $"the model in folder '{Folder}'" : $"model file '{Model}'")} {problem}");
    }

    /// <summary>A data file that passed the location checks, with its size.</summary>
    internal sealed record CheckedFile(string Location, string RelativePath, string FullPath, string RealPath, long Size);

    /// <summary>
    /// The data files of one model, each checked once, and the byte ranges tensors claim in them: no two tensors may share
    /// bytes (a write-back through one would silently change the other, and with both patched one update would be lost).
    /// </summary>
    internal sealed class DataFiles(ExternalDataPolicy? policy)
    {
        readonly Dictionary<string, CheckedFile> checkedFiles = new(StringComparer.Ordinal);
        readonly Dictionary<string, List<(long Offset, long Length, string Tensor, string Location)>> ranges = new(StringComparer.Ordinal);

        public ExternalDataPolicy Policy { get; } = policy ?? ExternalDataPolicy.Strict;

        public CheckedFile Check(Origin origin, string? location)
        {
            if (location is not null && checkedFiles.TryGetValue(location, out var known)) return known;
            var file = CheckFile(origin, location, Policy);
            checkedFiles[file.Location] = file;
            return file;
        }

        public void Claim(ExternalData data, string tensor)
        {
            if (data.Length == 0) return;
            if (!ranges.TryGetValue(data.ResolvedPath, out var list)) ranges[data.ResolvedPath] = list = [];
            list.Add((data.Offset, data.Length, tensor, data.Location));
        }

        /// <summary>Throws for the first pair of tensors whose ranges in one file overlap.</summary>
        public void CheckOverlaps(string model)
        {
            foreach (var list in ranges.Values)
            {
                list.Sort((a, b) => a.Offset != b.Offset ? a.Offset.CompareTo(b.Offset) : a.Length.CompareTo(b.Length));
                var end = 0L;
                var last = default((long Offset, long Length, string Tensor, string Location));
                foreach (var r in list)
                {
                    if (r.Offset < end)
                        throw new UserError($"tensor '{r.Tensor}' in model file '{model}' reads bytes {r.Offset}..{r.Offset + r.Length} of external data file '{r.Location}', " +
                                            $"which overlap bytes {last.Offset}..{last.Offset + last.Length} of tensor '{last.Tensor}' ('{last.Location}'); " +
                                            "each tensor needs its own bytes: re-export the model with its external data saved anew");
                    if (r.Offset + r.Length > end) (end, last) = (r.Offset + r.Length, r);
                }
            }
        }
    }

    /// <summary>
    /// The location checks, as strict as onnx ≥ 1.21: a relative path that stays inside the model's folder after
    /// normalisation, names an existing regular file, and (unless links are allowed) neither resolves outside the folder
    /// through a symlink (the file or any folder on its way) nor has more than one hard link (another name of the same
    /// bytes may lie anywhere). A hostile model must not make us read, list or overwrite files elsewhere.
    /// </summary>
    static CheckedFile CheckFile(Origin origin, string? location, ExternalDataPolicy policy)
    {
        if (string.IsNullOrEmpty(location))
            throw origin.Bad("is marked as external data but has no 'location' entry; re-export the model with its external data");
        if (location.Contains('\0'))
            throw origin.Bad("has an external data location containing a NUL character; the model file is damaged: re-export it");
        if (Path.IsPathRooted(location) || location.StartsWith('\\') || location.StartsWith('/') || (location.Length > 1 && location[1] == ':'))
            throw origin.Bad($"has absolute external data location '{location}', but ONNX requires a path relative to the model's folder; " +
                             "move the file next to the model and set the location to its relative name");
        var folder = Path.GetFullPath(origin.Folder);
        var full = Path.GetFullPath(Path.Combine(folder, location)); // lexical: "a/../b" → "b", symlinks untouched
        if (!IsInside(full, folder))
            throw origin.Bad($"has external data location '{location}', which escapes the model's folder '{folder}'; " +
                             "keep data files in or below the model's folder and name them without '..'");
        if (Directory.Exists(full) || !File.Exists(full))
            throw origin.Bad(Directory.Exists(full)
                ? $"has external data location '{location}', which is a folder, not a file; set the location to the data file's name"
                : $"refers to external data file '{location}', which does not exist in '{folder}' (a dangling link counts as missing); copy the model's data file next to it");
        string real, realFolder;
        try { (real, realFolder) = (RealPath(full), RealPath(folder)); }
        catch (UserError e) { throw origin.Bad($"has external data location '{location}', which cannot be resolved: {e.Message}; replace the links with the data file"); }
        if (!policy.AllowLinks && !IsInside(real, realFolder))
            throw origin.Bad($"has external data location '{location}', which is a symlink (the file or a folder on its way) resolving to '{real}', " +
                             $"outside the model's folder '{folder}'; copy the data file into the folder, or set {UserError.Setting("AllowLinks")} if you trust the link (as in a model cache)");
        var status = FileStatus.Of(full);
        if (status is { IsRegular: false })
            throw origin.Bad($"has external data location '{location}', which is not a regular file (a device, pipe or socket); set the location to the data file's name");
        if (!policy.AllowLinks && status is { Links: > 1 } linked)
            throw origin.Bad($"has external data file '{location}' with {linked.Links} hard links, so the same bytes may also be reached from outside the model's folder; " +
                             $"replace it with a copy of its own (cp, not ln), or set {UserError.Setting("AllowLinks")} if you trust the link");
        long size;
        try { size = new FileInfo(real).Length; } // the target's: FileInfo on a symlink measures the link
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw origin.Bad($"refers to external data file '{location}', which cannot be read: {e.Message}"); }
        return new CheckedFile(location, Path.GetRelativePath(folder, full), full, real, size);
    }

    static long? ParseNumber(Origin origin, string key, string? text, string location)
    {
        if (text is null) return null;
        if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value))
            throw origin.Bad($"has external data {key} '{text}' for '{location}', which is not a non-negative integer; the model file is damaged: re-export it");
        return value;
    }

    internal static bool IsInside(string path, string folder)
    {
        var prefix = Path.EndsInDirectorySeparator(folder) ? folder : folder + Path.DirectorySeparatorChar;
        return path.StartsWith(prefix, OperatingSystem.IsWindows() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal);
    }

    /// <summary>
    /// Resolves every symlink along a full path (like realpath(3)), so containment checks see where the bytes
    /// really live and two paths to one file compare equal.
    /// </summary>
    public static string RealPath(string fullPath)
    {
        var root = Path.GetPathRoot(fullPath)!;
        var current = root;
        var hops = 0;
        foreach (var part in fullPath[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries))
        {
            if (part == ".") continue;
            if (part == "..") { current = Path.GetDirectoryName(current) ?? root; continue; }
            current = Path.Combine(current, part);
            FileSystemInfo info = Directory.Exists(current) ? new DirectoryInfo(current) : new FileInfo(current);
            // Re-resolve the target: its own parent folders may be symlinks too.
            if (info.LinkTarget is not null)
            {
                if (++hops > 40) throw new UserError($"'{fullPath}' has too many levels of symbolic links");
                FileSystemInfo? target;
                try { target = info.ResolveLinkTarget(returnFinalTarget: true); }
                catch (IOException) { target = null; } // a loop: ELOOP
                if (target is null) throw new UserError($"'{fullPath}' has a symbolic link loop or a broken link at '{current}'");
                current = RealPath(target.FullName);
            }
        }
        return current;
    }
}

/// <summary>
/// What .NET does not tell about a file: its hard-link count and whether it is a regular file. statx(2) on Linux (glibc),
/// stat(1) elsewhere on Unix, nothing on Windows (null).
/// </summary>
internal readonly record struct FileStatus(long Links, bool IsRegular)
{
    delegate int StatX(int dirfd, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, uint mask, [Out] byte[] buffer);

    static readonly Lazy<StatX?> statx = new(() =>
    {
        if (!OperatingSystem.IsLinux()) return null;
        foreach (var name in new[] { "libc.so.6", "libc" })
            if (NativeLibrary.TryLoad(name, out var lib) && NativeLibrary.TryGetExport(lib, "statx", out var fn))
                return Marshal.GetDelegateForFunctionPointer<StatX>(fn);
        return null;
    });

    /// <summary>Whether statx(2) is called directly (else stat(1) runs, or nothing is known).</summary>
    internal static bool Native => statx.Value is not null;

    /// <summary>The file's status (symlinks followed), or null where it cannot be learned.</summary>
    public static FileStatus? Of(string path)
    {
        if (OperatingSystem.IsWindows()) return null;
        if (statx.Value is { } call)
        {
            const int AtFdCwd = -100;
            const uint TypeMaskNlink = 0x1 | 0x2 | 0x4; // STATX_TYPE | STATX_MODE | STATX_NLINK
            var buffer = new byte[256];
            if (call(AtFdCwd, path, 0, TypeMaskNlink, buffer) == 0)
            {
                var links = BitConverter.ToUInt32(buffer, 16); // struct statx: stx_nlink at 16, stx_mode at 28
                var mode = BitConverter.ToUInt16(buffer, 28);
                return new FileStatus(links, (mode & 0xF000) == 0x8000);
            }
        }
        return StatCommand(path);
    }

    /// <summary>stat(1): GNU coreutils (-c) or BSD/macOS (-f).</summary>
    static FileStatus? StatCommand(string path)
    {
        foreach (var format in new[] { new[] { "-L", "-c", "%h %F" }, ["-L", "-f", "%l %HT"] })
        {
            try
            {
                var psi = new ProcessStartInfo("stat") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
                foreach (var a in format) psi.ArgumentList.Add(a);
                psi.ArgumentList.Add(path);
                using var p = Process.Start(psi)!;
                var output = p.StandardOutput.ReadToEnd().Trim();
                p.StandardError.ReadToEnd();
                p.WaitForExit();
                var space = output.IndexOf(' ');
                if (p.ExitCode == 0 && space > 0 && long.TryParse(output[..space], out var links))
                    return new FileStatus(links, output[(space + 1)..].Contains("regular", StringComparison.OrdinalIgnoreCase));
            }
            catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException) { return null; }
        }
        return null;
    }
}
