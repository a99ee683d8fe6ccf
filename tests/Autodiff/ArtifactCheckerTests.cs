using System.Diagnostics;
using Google.Protobuf;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Runtime;

namespace OnnxUnlearn.Tests.Autodiff;

/// <summary>
/// The ONNX reference checker (Debian's python3-onnx, run as /usr/bin/python3), and whether a test may go without it.
/// CI installs it (.ci/run), so there (CI set) a missing checker fails the tests that use it; elsewhere they are skipped,
/// visibly (the pattern of <see cref="Corpus.OnnxCorpus"/>).
/// </summary>
public static class OnnxChecker
{
    const string Python = "/usr/bin/python3";
    const string Script = "import onnx,sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)";

    static readonly Lazy<bool> installed = new(() => File.Exists(Python) && RunPython("-c", "import onnx.checker").Code == 0);

    public static bool Installed => installed.Value;

    public static bool Required => Corpus.OnnxCorpus.Required;

    /// <summary>onnx.checker.check_model(full_check=True) of the file: exit code and what it printed.</summary>
    public static (int Code, string Output) Check(string path)
    {
        if (!Installed) Assert.Fail($"CI is set, so the ONNX checker is required, but {Python} cannot import onnx: apt-get install python3-onnx");
        return RunPython("-c", Script, path);
    }

    static (int Code, string Output) RunPython(params string[] args)
    {
        var psi = new ProcessStartInfo(Python) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout.Result + stderr);
    }
}

/// <summary>A theory that runs the ONNX checker: skipped where python3-onnx is not installed, unless CI requires it.</summary>
public sealed class CheckerTheoryAttribute : TheoryAttribute
{
    public CheckerTheoryAttribute()
    {
        if (!OnnxChecker.Installed && !OnnxChecker.Required) Skip = "ONNX checker not installed (apt-get install python3-onnx)";
    }
}

/// <summary>Training artifacts, saved or held in memory, are valid ONNX: onnx.checker's full check (strict shape inference) passes.</summary>
public class ArtifactCheckerTests
{
    public static TheoryData<string, string, string> Fixtures => new()
    {
        { "mlp", "model.onnx", "ce" },
        { "mlp_external", "model.onnx", "ce" },
        { "cnn", "model.onnx", "ce" },
        { "transformer", "model.onnx", "ce" },
        { "logreg", "model.onnx", "ce" },
        { "charlstm", "model.onnx", "ce" },
        { "const_nodes", "model.onnx", "ce" },
        { "opset9", "model.onnx", "ce" },
        { "tf_style", "model.onnx", "ce" },
        { "skl_logreg", "model.onnx", "ce" },
        { "skl_logreg", "ovr.onnx", "ce" },
        { "linear_classifier", "model.onnx", "ce" },
        { "skl_linreg", "model.onnx", "mse" },
    };

    /// <summary>What the checker said of a model the test just wrote: exit 0, or its last lines in the failure.</summary>
    static void Passes(string path, string what)
    {
        var (code, output) = OnnxChecker.Check(path);
        Assert.True(code == 0, $"{what}: onnx.checker full_check failed:\n{output}");
    }

    [CheckerTheory]
    [MemberData(nameof(Fixtures))]
    public void SavedArtifactPassesTheFullCheck(string fixture, string model, string loss)
    {
        using var dir = new TempDir();
        var (code, _, stderr) = OnnxUnlearn.Tests.Cli.CliRunner.Run("artifacts", OnnxUnlearn.Tests.Fixtures.File(fixture, model),
            "--data", OnnxUnlearn.Tests.Fixtures.File(fixture, "data.npz"), "--loss", loss, "--out", dir.Path);
        Assert.True(code == 0, stderr);
        var path = Path.Combine(dir.Path, "gradient.onnx");
        Passes(path, $"{fixture}/{model}");
        // Every output is declared with a type (the checker's first complaint before), the gradients with their parameter's shape.
        var m = global::Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(path));
        Assert.All(m.Graph.Output, o => Assert.NotEqual(0, o.Type.TensorType.ElemType));
        Assert.Empty(m.Graph.Output.Single(o => o.Name == TrainingArtifact.LossOutput).Type.TensorType.Shape.Dim);
        var grad = m.Graph.Output.First(o => o.Name.StartsWith(TrainingArtifact.GradPrefix));
        var parameter = m.Graph.Input.Single(i => TrainingArtifact.GradName(i.Name) == grad.Name);
        Assert.Equal(parameter.Type.TensorType.Shape.Dim.Select(d => d.DimValue), grad.Type.TensorType.Shape.Dim.Select(d => d.DimValue));
        Assert.Equal(1, grad.Type.TensorType.ElemType);
    }

    [CheckerTheory]
    [MemberData(nameof(Fixtures))]
    public void InMemoryArtifactsPassTheFullCheck(string fixture, string model, string loss)
    {
        using var dir = new TempDir();
        using var data = Dataset.Load(OnnxUnlearn.Tests.Fixtures.File(fixture, "data.npz"));
        using var s = Evaluator.Open(OnnxUnlearn.Tests.Fixtures.File(fixture, model), new LossSettings { Loss = LossHead.Parse(loss) }, data);
        foreach (var kind in Enum.GetValues<ArtifactKind>())
        {
            var path = dir.File($"{kind}.onnx");
            File.WriteAllBytes(path, s.Artifact(kind).Model.ToByteArray());
            Passes(path, $"{fixture}/{model} {kind}");
        }
    }

    /// <summary>Dead nodes are dropped: skl2onnx's ZipMap (which onnx 1.12's shape inference cannot type) and the ai.onnx.ml classifier that was lowered.</summary>
    [Fact]
    public void ArtifactKeepsOnlyWhatItsOutputsRead()
    {
        using var data = Dataset.Load(OnnxUnlearn.Tests.Fixtures.File("skl_logreg", "data.npz"));
        using var s = Evaluator.Open(OnnxUnlearn.Tests.Fixtures.File("skl_logreg", "model.onnx"), new LossSettings(), data);
        var g = s.Artifact().Model.Graph;
        Assert.DoesNotContain(g.Node, n => n.OpType is "ZipMap" or "LinearClassifier" or "Normalizer");
        var read = g.Node.SelectMany(n => n.Input).Concat(g.Output.Select(o => o.Name)).ToHashSet();
        Assert.All(g.Node, n => Assert.Contains(n.Output, read.Contains));
        Assert.All(g.Initializer, t => Assert.True(read.Contains(t.Name) || g.Input.Any(i => i.Name == t.Name), t.Name));
    }
}
