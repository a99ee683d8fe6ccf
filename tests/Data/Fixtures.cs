namespace OnnxUnlearn.Tests.Data;

internal static class Fixtures
{
    /// <summary>testdata/npy at the repository root, found by walking up from the test binaries.</summary>
    public static string NpyDir { get; } = FindNpyDir();

    public static string Npy(string fileName) => Path.Combine(NpyDir, fileName);

    private static string FindNpyDir()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "testdata", "npy");
            if (Directory.Exists(candidate)) return candidate;
        }
        throw new DirectoryNotFoundException($"testdata/npy not found above {AppContext.BaseDirectory}.");
    }
}

/// <summary>A fresh folder under the system temp path, deleted on dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("onnxunlearn-data-").FullName;

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose() => Directory.Delete(Path, recursive: true);
}
