using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using OnnxUnlearn.Data;
using OnnxUnlearn.Runtime;

namespace OnnxUnlearn.Tests.Autodiff;

/// <summary>The saved training artifact runs on stock ONNX Runtime by itself, parameters optional.</summary>
public class ArtifactTests
{
    [Fact]
    public void SavedArtifactRunsOnPlainOnnxRuntimeWithDefaultParameters()
    {
        using var dir = new TempDir();
        var (code, _, stderr) = OnnxUnlearn.Tests.Cli.CliRunner.Run("artifacts", Fixtures.File("mlp_external", "model.onnx"), "--out", dir.Path);
        Assert.True(code == 0, stderr);

        using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Path, "manifest.json")));
        Assert.Equal("label", manifest.RootElement.GetProperty("inputs").GetProperty("label").GetString());
        using var session = new InferenceSession(Path.Combine(dir.Path, "gradient.onnx"));
        Assert.DoesNotContain(session.InputMetadata.Keys, k => k.Contains("com.microsoft"));
        GivesTheReference(session, "mlp_external", "x", "fc1.weight");
    }

    /// <summary>bfloat16 weights (initializers and a Constant node) become float32 parameter inputs whose defaults are the
    /// stored values widened.</summary>
    [Fact]
    public void SavedArtifactOfABFloat16ModelEmbedsFloat32Defaults()
    {
        using var dir = new TempDir();
        var (code, _, stderr) = OnnxUnlearn.Tests.Cli.CliRunner.Run("artifacts", Fixtures.File("bf16_mlp", "model.onnx"), "--out", dir.Path);
        Assert.True(code == 0, stderr);
        using var session = new InferenceSession(Path.Combine(dir.Path, "gradient.onnx"));
        Assert.Equal(Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float, session.OverridableInitializerMetadata["fc2.bias"].ElementDataType);
        GivesTheReference(session, "bf16_mlp", "x", "fc1.weight");
        GivesTheReference(session, "bf16_mlp", "x", "fc2.bias");
    }

    /// <summary>
    /// A gradient artifact fed the fixture's <paramref name="input"/> and labels alone (parameters at their defaults)
    /// gives the fixture's reference loss and gradient of <paramref name="parameter"/>.
    /// </summary>
    internal static void GivesTheReference(InferenceSession session, string fixture, string input, string parameter)
    {
        var data = Npz.Read(Fixtures.File(fixture, "data.npz"));
        var features = data[input];
        using var x = features.Type == ElementType.Int64 ? OrtValue.CreateTensorValueFromMemory(features.ToInt64(), features.Shape)
            : OrtValue.CreateTensorValueFromMemory(features.ToFloat(), features.Shape);
        using var y = OrtValue.CreateTensorValueFromMemory(data["label"].ToInt64(), data["label"].Shape);
        using var results = session.Run(new RunOptions(), [input, "label"], [x, y], ["loss", "grad/" + parameter]);
        var reference = Npz.Read(Fixtures.File(fixture, "reference.npz"));
        Assert.Equal(reference["loss"].ToDouble()[0], results[0].GetTensorDataAsSpan<float>()[0], 1e-5);
        var expected = reference["grad/" + parameter].ToDouble();
        var actual = results[1].GetTensorDataAsSpan<float>().ToArray();
        double err = Numerics.RelativeL2(expected, actual);
        Assert.True(err < 1e-4, $"{fixture}: relative error {err:E2}");
    }
}

/// <summary>The char-LSTM fixture: artifacts unrolled over the sequence length they were built for.</summary>
public class RecurrentArtifactTests
{
    [Fact]
    public void SavedLstmArtifactRecordsItsSequenceLengthAndRunsOnPlainOnnxRuntime()
    {
        using var dir = new TempDir();
        var (code, stdout, err) = OnnxUnlearn.Tests.Cli.CliRunner.Run("artifacts", Fixtures.File("charlstm", "model.onnx"),
            "--data", Fixtures.File("charlstm", "data.npz"), "--out", dir.Path);
        Assert.True(code == 0, err);
        Assert.Contains("unrolled over 12 time steps", stdout);
        using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Path, "manifest.json")));
        var unrolled = manifest.RootElement.GetProperty("unrolled");
        Assert.Equal(12, unrolled.GetProperty("nodes")[0].GetProperty("sequenceLength").GetInt64());
        Assert.Equal("LSTM", unrolled.GetProperty("nodes")[0].GetProperty("op").GetString());
        Assert.Equal(12, unrolled.GetProperty("inputShapes").GetProperty("tokens")[1].GetInt64());

        using var session = new InferenceSession(Path.Combine(dir.Path, "gradient.onnx"));
        ArtifactTests.GivesTheReference(session, "charlstm", "tokens", "onnx::LSTM_112");
    }

    static Dataset Prefix(Dictionary<string, NdArray> data, int steps) => new(new Dictionary<string, NdArray>
    {
        ["tokens"] = Columns(data["tokens"], steps), ["label"] = Columns(data["label"], steps),
    }, $"first {steps} steps");

    static NdArray Columns(NdArray a, int steps)
    {
        var v = a.ToInt64();
        long n = a.Shape[0], t = a.Shape[1];
        return NdArray.FromInt64(Enumerable.Range(0, (int)n).SelectMany(r => v.Skip((int)(r * t)).Take(steps)).ToArray(), n, steps);
    }

    [Fact]
    public void SessionRebuildsPerSequenceLengthAndRefusesWithoutARebuild()
    {
        var npz = Npz.Read(Fixtures.File("charlstm", "data.npz"));
        using var full = Prefix(npz, 12);
        using var shorter = Prefix(npz, 7);
        // The export fixes T = 12 in the declared shapes; a copy declares it dynamic.
        using var dir = new TempDir();
        var proto = global::Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(Fixtures.File("charlstm", "model.onnx")));
        foreach (var v in proto.Graph.Input.Concat(proto.Graph.Output))
            v.Type.TensorType.Shape.Dim[1] = new global::Onnx.TensorShapeProto.Types.Dimension { DimParam = "T" };
        var model = dir.File("model.onnx");
        File.WriteAllBytes(model, Google.Protobuf.MessageExtensions.ToByteArray(proto));
        using var s = Evaluator.Open(model, new LossSettings { BatchSize = 16 }, full);
        Assert.Equal(12, Assert.Single(s.Artifact().Unrolled).SequenceLength);
        var g12 = new float[s.Layout.Size];
        var r12 = s.Gradient(s.ReadParameters(), full, g12);

        var g7 = new float[s.Layout.Size];
        var r7 = s.Gradient(s.ReadParameters(), shorter, g7);
        Assert.Equal(7, Assert.Single(s.Artifact().Unrolled).SequenceLength);
        using (var fresh = Evaluator.Open(model, new LossSettings { BatchSize = 16 }, shorter))
        {
            var expected = new float[fresh.Layout.Size];
            Assert.Equal(fresh.Gradient(fresh.ReadParameters(), shorter, expected).Loss, r7.Loss, 1e-6);
            Close(expected, g7);
        }
        var again = new float[s.Layout.Size];
        Assert.Equal(r12.Loss, s.Gradient(s.ReadParameters(), full, again).Loss, 1e-6);
        Close(g12, again);
        Assert.Equal(12, Assert.Single(s.Artifact().Unrolled).SequenceLength);

        // Without a way to rebuild (an artifact built elsewhere), another length is refused, naming the node and the lengths.
        using var fixedSession = new ArtifactSession(s.Artifact(), "gradient graph");
        var e = Assert.Throws<UserError>(() => fixedSession.Run(shorter, s.ReadParameters(), new float[s.Layout.Size]));
        Assert.Contains("LSTM", e.Message);
        Assert.Contains("12 steps", e.Message);
        Assert.Contains(", 7)", e.Message);
    }

    static void Close(float[] expected, float[] actual)
    {
        double err = Numerics.RelativeL2(expected, actual);
        Assert.True(err < 1e-6, $"relative error {err:E2}");
    }
}
