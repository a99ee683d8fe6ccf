using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.RegularExpressions;

namespace OnnxUnlearn;

/// <summary>
/// Writes a file through a temporary file in the same folder and a rename, so readers never see half a file. Temporary files
/// are named <c>.NAME.onnx-unlearn.PID.RANDOM.tmp</c> and registered while they exist: they are removed on every exit path
/// (an exception, <see cref="CancelAll"/> from a front end's SIGINT/SIGTERM handler), and one left behind by a writer that
/// was killed (its PID no longer alive) is removed by the next write into its folder.
/// </summary>
public static partial class AtomicFile
{
    /// <summary>The tool's part of every temporary file's name.</summary>
    public const string Marker = "onnx-unlearn";

    static readonly Lock gate = new();
    static readonly HashSet<Temp> live = [];
    static bool cancelled;

    public static void Write(string path, Action<Stream> write)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(dir)) throw new UserError($"cannot write '{path}': folder '{dir}' does not exist");
        if (Directory.Exists(full)) throw new UserError($"cannot write '{path}': it is a folder; give the path of a file");
        try
        {
            using var temp = Temp.Create(full);
            write(temp.Stream);
            temp.Commit();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UserError($"cannot write '{path}': {e.Message.TrimEnd('.', ' ')}; check that folder '{dir}' is writable and has free space, or write elsewhere");
        }
    }

    /// <summary>
    /// Deletes every temporary file this process holds and refuses new ones and renames (they throw
    /// <see cref="OperationCanceledException"/>): for a signal handler, just before the process ends.
    /// </summary>
    public static void CancelAll()
    {
        lock (gate)
        {
            cancelled = true;
            foreach (var t in live)
            {
                try { File.Delete(t.Path); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
            }
            live.Clear();
        }
    }

    /// <summary>Temporary files this process holds now (for tests and diagnostics).</summary>
    public static IReadOnlyList<string> LiveTemps()
    {
        lock (gate) return live.Select(t => t.Path).ToList();
    }

    /// <summary>
    /// A temporary file next to <see cref="Target"/>, open for reading and writing. <see cref="Commit"/> renames it onto the
    /// target; <see cref="Dispose"/> without a commit deletes it.
    /// </summary>
    public sealed class Temp : IDisposable
    {
        bool done;

        Temp(string path, string target, FileStream stream) => (Path, Target, Stream) = (path, target, stream);

        public string Path { get; }
        public string Target { get; }
        public FileStream Stream { get; }

        /// <summary>Creates the temporary file for <paramref name="target"/> (whose folder must exist), first removing stale
        /// temporary files of dead writers from that folder.</summary>
        public static Temp Create(string target, int bufferSize = 4096)
        {
            var full = System.IO.Path.GetFullPath(target);
            var dir = System.IO.Path.GetDirectoryName(full)!;
            RemoveStaleTemps(dir);
            var name = System.IO.Path.Combine(dir, $".{System.IO.Path.GetFileName(full)}.{Marker}.{Environment.ProcessId}.{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8))}.tmp");
            lock (gate)
            {
                if (cancelled) throw new OperationCanceledException("cancelled: no new files are written");
                // CreateNew: never follows or reuses an existing name (a planted symlink fails here).
                var stream = new FileStream(name, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, bufferSize);
                var temp = new Temp(name, full, stream);
                live.Add(temp);
                return temp;
            }
        }

        /// <summary>Flushes the file to disk and renames it onto the target, replacing what is there.</summary>
        public void Commit()
        {
            Stream.Flush(flushToDisk: true);
            lock (gate)
            {
                if (cancelled) throw new OperationCanceledException("cancelled: the file was not written");
                Stream.Dispose();
                File.Move(Path, Target, overwrite: true);
                done = true;
                live.Remove(this);
            }
        }

        public void Dispose()
        {
            Stream.Dispose();
            lock (gate)
            {
                if (done) return;
                done = true;
                live.Remove(this);
                try { File.Delete(Path); } catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
            }
        }
    }

    /// <summary>
    /// Removes temporary files of this tool's naming in <paramref name="folder"/> whose writer's PID is no longer alive; a live
    /// writer's (this process's included) are never touched. Returns how many were removed.
    /// </summary>
    public static int RemoveStaleTemps(string folder)
    {
        var full = Path.GetFullPath(folder);
        var removed = 0;
        try
        {
            foreach (var path in Directory.EnumerateFiles(full, $".*.{Marker}.*.tmp"))
            {
                var m = TempName().Match(Path.GetFileName(path));
                if (!m.Success || !int.TryParse(m.Groups[1].Value, out var pid) || pid == Environment.ProcessId || IsAlive(pid)) continue;
                try
                {
                    File.Delete(path);
                    removed++;
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { } // an unreadable folder: the write itself will say
        return removed;
    }

    static bool IsAlive(int pid)
    {
        try
        {
            using var p = Process.GetProcessById(pid);
            return true;
        }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }

    [GeneratedRegex(@"^\..+\.onnx-unlearn\.(\d{1,10})\.[0-9a-f]{16}\.tmp$")]
    private static partial Regex TempName();
}
