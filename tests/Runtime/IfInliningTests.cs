using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using OnnxUnlearn.Tests.Cli;
using Xunit.Abstractions;

namespace OnnxUnlearn.Tests.Runtime;

/// <summary>
/// Issue 15: an If whose condition inputs given once decide (testdata/control_flow.py: a VAD-like model on a scalar `sr`
/// with a state [2, batch, 4]; an optimum-style merged decoder on `use_cache_branch` [1]) is inlined and differentiated.
/// Gradients are checked against central finite differences of the loss through ONNX Runtime's forward of the original
/// model (the If left in place), each element perturbed by patching the file's bytes.
/// </summary>
public class IfInliningTests(ITestOutputHelper log)
{
    static string Vad(string name = "model.onnx") => Fixtures.File("vad_if", name);
    static string Merged(string name = "model.onnx") => Fixtures.File("merged_decoder", name);

    /// <summary>Mean squared error of `output` [N, 1] against `label` [N, 1].</summary>
    static double Mse(float[] output, Dataset d) => output.Zip(d.Arrays["label"].ToDouble(), (p, y) => (p - y) * (p - y)).Average();

    /// <summary>Mean softmax cross-entropy of `logits` [N, S, V] against `label` [N, S].</summary>
    static double CrossEntropy(float[] logits, Dataset d)
    {
        var labels = d.Arrays["label"].ToInt64();
        int v = logits.Length / labels.Length;
        double sum = 0;
        for (int i = 0; i < labels.Length; i++)
        {
            var row = logits.AsSpan(i * v, v);
            double max = row.ToArray().Max(), z = 0;
            foreach (var x in row) z += Math.Exp(x - max);
            sum += max + Math.Log(z) - row[(int)labels[i]];
        }
        return sum / labels.Length;
    }

    /// <summary>One output of the model (bytes as in a file) on all samples of <paramref name="d"/>, by ONNX Runtime.</summary>
    static float[] Forward(byte[] model, Dataset d, string output)
    {
        var m = ModelFile.Parse(model, "model");
        var types = m.Graph.Input.ToDictionary(i => i.Name, i => (TensorElementType)i.Type.TensorType.ElemType);
        var feed = d.Batch(0, d.Rows, types);
        using var options = OrtSessions.Options(1);
        using var session = OrtSessions.Create(model, options, "original model");
        using var results = OrtSessions.Run(session, feed.Keys.ToArray(), feed.Values.ToArray(), [output], "original model");
        return results[0].GetTensorDataAsSpan<float>().ToArray();
    }

    [Theory]
    [InlineData("vad", "data.npz", "If_0/then_branch/")]
    [InlineData("vad", "data8k.npz", "If_0/else_branch/")]
    [InlineData("merged", "data.npz", "")]
    // The branches run an ONNX LSTM from (h0, c0) = state, unrolled once inlined; batches of 5 leave a last one of 2.
    [InlineData("vad-lstm", "lstm_data.npz", "If_0/then_branch/")]
    public void GradientMatchesFiniteDifferencesOfTheOriginalModel(string fixture, string data, string prefix)
    {
        bool vad = fixture != "merged";
        string path = fixture == "vad-lstm" ? Vad("lstm.onnx") : vad ? Vad() : Merged();
        var file = ModelFile.Load(path);
        using var d = Dataset.Load(vad ? Vad(data) : Merged(data), file);
        // Batches of 5: the state is sliced along axis 1 and `sr` / `use_cache_branch` fed whole to each batch.
        using var s = Evaluator.Open(file, new LossSettings { Loss = vad ? LossKind.MeanSquaredError : LossKind.CrossEntropy, BatchSize = 5 }, d);
        string[] expected = fixture == "vad-lstm" ? ["W", "R", "B", "Wo"] : vad ? ["W1", "b1", "U", "Wo", "bo"] : ["embed", "lm_head", "optimum::if/else_branch/scale"];
        Assert.Equal(expected.Select(n => prefix + n), s.Layout.Parameters.Select(p => p.Name));
        var theta = s.ReadParameters();
        var grad = new float[s.Layout.Size];
        var result = s.Gradient(theta, d, grad);

        var bytes = File.ReadAllBytes(path);
        string output = vad ? "output" : "logits";
        double Loss(byte[] model) => vad ? Mse(Forward(model, d, output), d) : CrossEntropy(Forward(model, d, output), d);
        Assert.Equal(Loss(bytes), result.Loss, 1e-6);

        const float eps = 1e-2f;
        double worst = 0, norm = Math.Sqrt(grad.Sum(g => (double)g * g));
        for (int i = 0; i < s.Layout.Count; i++)
        {
            var p = s.Layout.Parameters[i];
            var values = theta.Tensor(i).ToArray();
            for (int k = 0; k < values.Length; k++)
            {
                double Shifted(float delta) => Loss(WeightPatch.Apply(bytes, new Dictionary<string, TensorPatch> { [p.Name] = new([k], [values[k] + delta]) }).Model);
                double fd = (Shifted(eps) - Shifted(-eps)) / (2 * eps);
                double err = Math.Abs(fd - s.Layout.Of(grad, i).Span[k]);
                worst = Math.Max(worst, err);
                Assert.True(err <= 1e-3 * norm + 1e-4, $"{p.Name}[{k}]: finite difference {fd:G6}, gradient {s.Layout.Of(grad, i).Span[k]:G6}");
            }
        }
        log.WriteLine($"{fixture}/{data}: {s.Layout.Size} elements, largest |fd − g| {worst:E2} (‖g‖ = {norm:E2})");
    }

    [Fact]
    public void TheUnrolledLstmGivesTheSameGradientForEveryBatchSize()
    {
        // Each new batch size rebuilds nothing but the probe; the state is cut along axis 1 into batches of 1, 3 (3, 3, 1) and 7.
        var file = ModelFile.Load(Vad("lstm.onnx"));
        using var d = Dataset.Load(Vad("lstm_data.npz"), file);
        float[]? first = null;
        foreach (int batch in new[] { 7, 3, 1 })
        {
            using var s = Evaluator.Open(file, new LossSettings { Loss = LossKind.MeanSquaredError, BatchSize = batch }, d);
            var grad = new float[s.Layout.Size];
            s.Gradient(s.ReadParameters(), d, grad);
            first ??= grad;
            Assert.True(Numerics.L2Distance(first.Select(v => (double)v).ToArray(), grad) <= 1e-6 * Numerics.L2Norm(first.Select(v => (double)v).ToArray()), $"batch {batch}");
        }
    }

    [Fact]
    public void AConditionOfConstantsIsInlinedToo()
    {
        // `sr` made an initializer (8000): the condition folds without data, to the else_branch.
        var m = ModelFile.Load(Vad()).Model.Clone();
        m.Graph.Input.Remove(m.Graph.Input.Single(i => i.Name == "sr"));
        m.Graph.Initializer.Add(new global::Onnx.TensorProto { Name = "sr", DataType = DataTypes.Int64, Int64Data = { 8000 } });
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("model.onnx"), Google.Protobuf.MessageExtensions.ToByteArray(m));
        var folded = ModelFile.Load(dir.File("model.onnx"));
        var arrays = Npz.Read(Vad("data8k.npz")).Where(kv => kv.Key != "sr").ToDictionary(kv => kv.Key, kv => kv.Value);
        using var d = new Dataset(arrays, "data8k without sr", SampleAxes.For(folded.Graph, folded.Path));
        var settings = new LossSettings { Loss = LossKind.MeanSquaredError, BatchSize = 5 };
        using var s = Evaluator.Open(folded, settings, d);
        Assert.All(s.Layout.Parameters, p => Assert.StartsWith("If_0/else_branch/", p.Name));
        var original = ModelFile.Load(Vad());
        using var d8k = Dataset.Load(Vad("data8k.npz"), original);
        using var reference = Evaluator.Open(original, settings, d8k);
        float[] a = new float[s.Layout.Size], b = new float[reference.Layout.Size];
        Assert.Equal(reference.Gradient(reference.ReadParameters(), d8k, b).Loss, s.Gradient(s.ReadParameters(), d, a).Loss, 1e-9);
        Assert.Equal(b, a);
    }

    [Fact]
    public void MadeUpInputsDecideNoBranch()
    {
        var file = ModelFile.Load(Vad());
        Assert.True(Inlining.NeedsData(file.Graph, SampleAxes.For(file.Graph, file.Path)));
        Assert.False(Inlining.NeedsData(ModelFile.Load(Vad("per_sample.onnx")).Graph, SampleAxes.For(file.Graph, file.Path)));
        using var d = Evaluator.SyntheticInputs(file.Graph);
        Assert.Equal([2L, 3, 4], d.Arrays["state"].Shape);
        using var s = Evaluator.Open(file, new LossSettings { Loss = LossKind.MeanSquaredError }, d);
        Assert.Equal(0, s.Layout.Count);
        Assert.Contains("If_0", s.File.Graph.Node.Select(n => n.Name));
    }

    [Fact]
    public void AConditionVaryingPerSampleKeepsTheControlFlowError()
    {
        var file = ModelFile.Load(Vad("per_sample.onnx"));
        using var d = Dataset.Load(Vad("data.npz"), file);
        using var s = Evaluator.Open(file, new LossSettings { Loss = LossKind.MeanSquaredError }, d);
        Assert.Contains(s.AllParameters, p => p.Name == "If_0/then_branch/W1" && !p.Trainable && p.Branch == "If 'If_0' then_branch");
        var e = Assert.Throws<UserError>(() => s.Artifact());
        Assert.Contains("If 'If_0' stays control flow: its condition depends on input 'input', which varies per sample", e.Message);
        Assert.Contains("control flow (If/Loop/Scan) on the loss path is not differentiable", e.Message);
    }

    [Theory]
    // Samples on the wrong axis of the state, a per-sample `sr`, a flag given per sample, disagreeing sample counts.
    [InlineData("vad", "state", new long[] { 12, 2, 4 }, "array 'state' has shape (12, 2, 4) but model", "expects [2, ?, 4] for input 'state' (axis 1 = samples)")]
    [InlineData("vad", "sr", new long[] { 12 }, "array 'sr' has shape (12) but model", "expects [] for input 'sr' (given once: the input's own shape, fed to every batch)")]
    [InlineData("vad", "state", new long[] { 2, 5, 4 }, "arrays disagree on the number of samples", "'state': 5 on axis 1")]
    [InlineData("merged", "use_cache_branch", new long[] { 10 }, "array 'use_cache_branch' has shape (10) but model", "expects [1] for input 'use_cache_branch' (given once")]
    public void WrongShapesNameTheInputAndBothShapes(string fixture, string input, long[] shape, string found, string wanted)
    {
        var file = ModelFile.Load(fixture == "vad" ? Vad() : Merged());
        var arrays = new Dictionary<string, NdArray>(Npz.Read(fixture == "vad" ? Vad("data.npz") : Merged("data.npz")));
        long n = shape.Aggregate(1L, (a, b) => a * b);
        arrays[input] = arrays[input].Type == ElementType.Bool ? NdArray.FromBool(new bool[n], shape)
            : arrays[input].Type == ElementType.Int64 ? NdArray.FromInt64(new long[n], shape) : NdArray.FromFloat(new float[n], shape);
        using var dir = new TempDir();
        Npz.Write(dir.File("bad.npz"), arrays);
        var e = Assert.Throws<UserError>(() => Dataset.Load(dir.File("bad.npz"), file));
        Assert.Contains(found, e.Message);
        Assert.Contains(wanted, e.Message);
    }

    [Fact]
    public void TheCliRefusesAStateWithSamplesOnAxis0InOneLine()
    {
        var arrays = new Dictionary<string, NdArray>(Npz.Read(Vad("data.npz")));
        arrays["state"] = NdArray.FromFloat(new float[12 * 2 * 4], 12, 2, 4);
        using var dir = new TempDir();
        Npz.Write(dir.File("bad.npz"), arrays);
        var (code, output, err) = CliRunner.Run("grad", Vad(), "--data", dir.File("bad.npz"), "--out", dir.File("g.npz"), "--loss", "mse");
        Assert.Equal(2, code);
        Assert.Contains("array 'state' has shape (12, 2, 4)", err);
        Assert.Contains("expects [2, ?, 4] for input 'state' (axis 1 = samples)", err);
        Assert.Single(err.Trim().Split('\n'));
        Assert.False(File.Exists(dir.File("g.npz")), output);
    }

    [Fact]
    public void DataReadWithoutTheModelIsRefusedNamingTheSampleAxes()
    {
        // Without the model every array has samples on axis 0: the merged decoder's data then disagree (3 samples, the flag 1).
        Assert.Contains("arrays disagree on the number of samples", Assert.Throws<UserError>(() => Dataset.Load(Merged("forget.npz"))).Message);
        // One sample reads without the model, but not as that model's data: its flag is given once.
        var one = Npz.Read(Merged("forget.npz")).ToDictionary(kv => kv.Key, kv => kv.Key == "use_cache_branch" ? kv.Value : kv.Value.TakeRows([0]));
        using var d = new Dataset(one, "one sample");
        var e = Assert.Throws<UserError>(() => Evaluator.Open(Merged(), new LossSettings(), d));
        Assert.Contains("'one sample' was read with other sample axes than the inputs of", e.Message);
        Assert.Contains("'use_cache_branch': given once", e.Message);
    }

    [Fact]
    public void InspectShowsSampleAxesAndTheBranchWeights()
    {
        var (code, output, err) = CliRunner.Run("inspect", Vad(), "--json", "--data", Vad("data.npz"));
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var root = doc.RootElement;
        Assert.Equal(["axis 0", "axis 1", "given once"], root.GetProperty("inputs").EnumerateArray().Select(i => i.GetProperty("samples").GetString()));
        var parameters = root.GetProperty("parameters").EnumerateArray().ToList();
        Assert.Equal(["If_0/then_branch/W1", "If_0/then_branch/b1", "If_0/then_branch/U", "If_0/then_branch/Wo", "If_0/then_branch/bo"], parameters.Select(p => p.GetProperty("name").GetString()));
        Assert.All(parameters, p => Assert.Equal("If 'If_0' then_branch", p.GetProperty("branch").GetString()));
        Assert.All(parameters, p => Assert.True(p.GetProperty("trainable").GetBoolean()));
        Assert.Equal(89, root.GetProperty("trainableElements").GetInt64());

        // Without data the branch is not decided: both branches' weights are listed, frozen, with the reason.
        (code, output, err) = CliRunner.Run("inspect", Vad(), "--json");
        Assert.True(code == 0, err);
        using var undecided = JsonDocument.Parse(output);
        var all = undecided.RootElement.GetProperty("parameters").EnumerateArray().ToList();
        Assert.Equal(10, all.Count);
        Assert.Contains(all, p => p.GetProperty("name").GetString() == "If_0/else_branch/W1" && p.GetProperty("storage").GetString() == "embedded"
            && p.GetProperty("branch").GetString() == "If 'If_0' else_branch" && p.GetProperty("reason").GetString()!.Contains("not inlined"));
        Assert.Equal(0, undecided.RootElement.GetProperty("trainableElements").GetInt64());

        // The merged decoder: its outer initializers become trainable once the flag decides the branch.
        (code, output, err) = CliRunner.Run("inspect", Merged(), "--json", "--data", Merged("data.npz"));
        Assert.True(code == 0, err);
        using var merged = JsonDocument.Parse(output);
        Assert.Equal(["axis 0", "given once"], merged.RootElement.GetProperty("inputs").EnumerateArray().Select(i => i.GetProperty("samples").GetString()));
        Assert.Equal(11 * 4 * 2 + 1, merged.RootElement.GetProperty("trainableElements").GetInt64());
    }

    [Theory]
    [InlineData("vad", "--loss", "mse")]
    [InlineData("merged", "--loss", "ce")]
    public void UnlearnWritesAModelWhoseOnlyChangedBytesAreTheSelectedOnesInsideTheBranch(string fixture, params string[] loss)
    {
        bool vad = fixture == "vad";
        string model = vad ? Vad() : Merged(), train = vad ? Vad("data.npz") : Merged("data.npz"), forget = vad ? Vad("forget.npz") : Merged("forget.npz");
        using var dir = new TempDir();
        var (code, output, err) = CliRunner.Run(["unlearn", model, "--train", train, "--forget", forget, "--out", dir.File("out.onnx"), "--fraction", "0.2", "--steps", "1",
            "--json", .. loss]);
        Assert.True(code == 0, output + err);
        using var json = JsonDocument.Parse(output);
        var selected = json.RootElement.GetProperty("selectedPerTensor").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt64());

        var diff = ModelDiff.Compare(model, dir.File("out.onnx"));
        Assert.False(diff.StructureDiffers, diff.StructureDifference);
        Assert.Equal(0, diff.OtherBytesDiffering);
        // The VAD's weights are all Constants of the taken branch; the decoder's the outer initializers and the branch's scale.
        string[] allowed = vad ? ["If_0/then_branch/W1", "If_0/then_branch/b1", "If_0/then_branch/U", "If_0/then_branch/Wo", "If_0/then_branch/bo"]
            : ["embed", "lm_head", "optimum::if/else_branch/scale"];
        Assert.NotEmpty(diff.Parameters);
        Assert.All(diff.Parameters, p => Assert.Contains(p.Name, allowed));
        // Only selected elements differ: per tensor at most as many as were selected there, and as many as the write-back reports.
        Assert.All(diff.Parameters, p => Assert.InRange(p.ElementsDiffering, 1, selected.GetValueOrDefault(p.Name)));
        long changed = diff.Parameters.Sum(p => p.ElementsDiffering);
        Assert.Equal(json.RootElement.GetProperty("written").GetProperty("elementsChanged").GetInt64(), changed);
        log.WriteLine($"{fixture}: {changed} elements differ in {string.Join(", ", diff.Parameters.Select(p => $"{p.Name} {p.ElementsDiffering}"))}");

        // The written model loads and runs in ONNX Runtime (the If still in it) and its output moved.
        var file = ModelFile.Load(model);
        using var d = Dataset.Load(train, file);
        string name = vad ? "output" : "logits";
        var before = Forward(File.ReadAllBytes(model), d, name);
        var after = Forward(File.ReadAllBytes(dir.File("out.onnx")), d, name);
        Assert.All(after, v => Assert.True(float.IsFinite(v)));
        Assert.NotEqual(before, after);
    }

    [Fact]
    public void TakingSamplesSlicesEachArrayAlongItsSampleAxis()
    {
        var file = ModelFile.Load(Vad());
        using var d = Dataset.Load(Vad("data.npz"), file);
        Assert.Equal(12, d.Rows);
        using var taken = d.Take([4, 1], "two samples");
        Assert.Equal(2, taken.Rows);
        Assert.Equal([2L, 2, 4], taken.Arrays["state"].Shape);
        Assert.Equal([], taken.Arrays["sr"].Shape);
        var state = d.Arrays["state"].ToDouble();
        var got = taken.Arrays["state"].ToDouble();
        // state[a, j, h] of the taken set is state[a, rows[j], h] of the original (C order: (a·N + j)·4 + h).
        long[] rows = [4, 1];
        for (int a = 0; a < 2; a++)
            for (int j = 0; j < 2; j++)
                for (int h = 0; h < 4; h++)
                    Assert.Equal(state[(a * 12 + rows[j]) * 4 + h], got[(a * 2 + j) * 4 + h]);
        Assert.Equal(d.Arrays["input"].ToDouble().Skip(16 * 4).Take(16), taken.Arrays["input"].ToDouble().Take(16));
        Assert.Equal(16000, taken.Arrays["sr"].ToInt64()[0]);
    }
}
