namespace OnnxUnlearn;

/// <summary>Writes a file through a temporary file in the same folder and a rename, so readers never see half a file.</summary>
public static class AtomicFile
{
    public static void Write(string path, Action<Stream> write)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(dir)) throw new UserError($"cannot write '{path}': folder '{dir}' does not exist");
        var temp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var s = new FileStream(temp, FileMode.CreateNew, FileAccess.Write)) write(s);
            File.Move(temp, full, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UserError($"cannot write '{path}': {e.Message}");
        }
        finally { if (File.Exists(temp)) File.Delete(temp); }
    }
}
