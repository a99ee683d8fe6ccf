namespace OnnxUnlearn.Tests;

public static class Fixtures
{
    /// <summary>testdata/ at the repository root, found by walking up from the test binaries.</summary>
    public static string Root { get; } = FindRoot();

    public static string NpyDir => Path.Combine(Root, "npy");

    public static string Npy(string fileName) => Path.Combine(NpyDir, fileName);

    /// <summary>A file of a PyTorch-exported fixture, e.g. <c>File("mlp", "model.onnx")</c>.</summary>
    public static string File(string fixture, string name) => Path.Combine(Root, fixture, name);

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "testdata");
            if (Directory.Exists(Path.Combine(candidate, "npy"))) return candidate;
        }
        throw new DirectoryNotFoundException($"testdata/ not found above {AppContext.BaseDirectory}.");
    }
}

/// <summary>A fresh folder under the system temp path, deleted with everything in it on dispose.</summary>
public sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("onnx-unlearn-tests-").FullName;

    /// <summary>A path inside the folder; <paramref name="name"/> may hold subfolders ("out/model.onnx").</summary>
    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose() => Directory.Delete(Path, recursive: true);
}
