using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Autodiff.Lowering;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using OnnxUnlearn.Tests.Cli;
using Xunit.Abstractions;

namespace OnnxUnlearn.Tests.Autodiff;

/// <summary>
/// Models as ONNX Runtime's session optimizer saves them at level extended (testdata/ort_cnn, testdata/ort_postln): their
/// fused com.microsoft ops are lowered (<see cref="Contrib"/>) and differentiated; the gradient is checked against central
/// differences through ONNX Runtime's forward of the optimized model itself, kernels and all.
/// </summary>
public class OrtOptimizedFixtureTests(ITestOutputHelper log)
{
    /// <summary>The fixtures: (folder, source model the optimizer reads, its data, the contrib ops the optimized file must hold).</summary>
    public static TheoryData<string, string, string, string> Cases => new()
    {
        { "ort_cnn", "cnn/model.onnx", "cnn/data.npz", "FusedConv FusedConv" },
        { "ort_postln", "ort_postln/source.onnx", "ort_postln/data.npz", "FusedMatMul SkipLayerNormalization BiasGelu SkipLayerNormalization" },
    };

    /// <summary>The generator: ONNX Runtime's session optimizer at level extended saves the graph it would run.</summary>
    public static void Optimize(string source, string target)
    {
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED, OptimizedModelFilePath = target, IntraOpNumThreads = 1 };
        using var session = new InferenceSession(source, options);
    }

    static string Model(string fixture) => Fixtures.File(fixture, "model.onnx");
    static string Data(string path) => Path.Combine(Fixtures.Root, path);

    /// <summary>
    /// Regenerates the optimized model and compares it with the committed one (same nodes, same initializers); with
    /// ONNX_UNLEARN_REGENERATE=1 it first writes the committed file.
    /// </summary>
    [Theory, MemberData(nameof(Cases))]
    public void TheCommittedModelIsWhatTheOptimizerWrites(string fixture, string source, string data, string contribOps)
    {
        _ = data;
        using var dir = new TempDir();
        Optimize(Path.Combine(Fixtures.Root, source), dir.File("m.onnx"));
        if (Environment.GetEnvironmentVariable("ONNX_UNLEARN_REGENERATE") == "1") File.Copy(dir.File("m.onnx"), Model(fixture), overwrite: true);
        var fresh = ModelProto.Parser.ParseFrom(File.ReadAllBytes(dir.File("m.onnx")));
        var committed = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Model(fixture)));
        Assert.Equal(fresh.Graph.Node.Select(n => n.ToString()), committed.Graph.Node.Select(n => n.ToString()));
        Assert.Equal(fresh.Graph.Initializer.OrderBy(t => t.Name).Select(t => (t.Name, TensorFile.ToNdArray(t).ToFloat())),
            committed.Graph.Initializer.OrderBy(t => t.Name).Select(t => (t.Name, TensorFile.ToNdArray(t).ToFloat())));
        Assert.Equal(contribOps.Split(' '), committed.Graph.Node.Where(n => n.Domain == Contrib.Domain).Select(n => n.OpType));
        Assert.DoesNotContain(committed.Graph.Node, n => n.OpType is "BatchNormalization" or "LayerNormalization" or "Erf");
    }

    /// <summary>The lowered graph's logits against ONNX Runtime's run of the optimized model.</summary>
    [Theory, MemberData(nameof(Cases))]
    public void LoweredLogitsEqualTheKernels(string fixture, string source, string data, string contribOps)
    {
        _ = (source, contribOps);
        var model = ModelFile.Load(Model(fixture)).Model;
        var feeds = Npz.Read(Data(data)).Where(kv => kv.Key != "label").ToDictionary();
        var kernel = ContribLoweringTests.Run(model, feeds)["logits"].ToFloat();
        var lowered = ContribLoweringTests.Run(Contrib.Lower(OpsetUpgrade.Apply(model), fixture), feeds)["logits"].ToFloat();
        double err = kernel.Zip(lowered, (a, b) => Math.Abs((double)a - b)).Max() / kernel.Max(v => Math.Abs((double)v));
        log.WriteLine($"{fixture}: max |lowered − kernel| / max |kernel| over {kernel.Length} logits = {err:E2}");
        Assert.True(err <= 1e-5, $"{fixture}: lowered logits differ from ONNX Runtime's by {err:E2} (relative)");
    }

    /// <summary>
    /// What inspect and the evaluator see: every op supported, the fused nodes' weights trainable, the loss (from the
    /// loss-only artifact, which runs the lowered graph) equal to the cross-entropy of the kernels' logits, and the
    /// gradient against central differences of that cross-entropy, computed by ONNX Runtime on the optimized model.
    /// </summary>
    [Theory, MemberData(nameof(Cases))]
    public void GradientMatchesDifferencesOfTheOptimizedModel(string fixture, string source, string data, string contribOps)
    {
        _ = (source, contribOps);
        var file = ModelFile.Load(Model(fixture));
        var summary = ModelSummary.Of(file);
        Assert.Empty(summary.OpsWithoutGradient);
        var floats = file.Graph.Initializer.Where(t => t.DataType == DataTypes.Float && t.Dims.Count > 0).Select(t => t.Name).Order().ToList();
        Assert.Equal(floats, summary.Parameters.Where(p => p.Trainable).Select(p => p.Name).Order());

        using var ds = Dataset.Load(Data(data));
        using var s = Evaluator.Open(file, new LossSettings { BatchSize = 16 }, ds);
        Assert.Equal(floats, s.Layout.Parameters.Select(p => p.Name).Order());
        var theta = s.ReadParameters();
        var labels = Npz.Read(Data(data))["label"].ToInt64();
        var feeds = Npz.Read(Data(data)).Where(kv => kv.Key != "label").ToDictionary();
        double KernelLoss(float[] values)
        {
            var m = file.Model.Clone();
            for (int i = 0; i < s.Layout.Count; i++)
            {
                var p = s.Layout.Parameters[i];
                var t = m.Graph.Initializer.First(x => x.Name == p.Name);
                m.Graph.Initializer[m.Graph.Initializer.IndexOf(t)] = TensorFile.ToTensorProto(p.Name, NdArray.FromFloat(s.Layout.Of(values, i).ToArray(), p.Shape));
            }
            var logits = ContribLoweringTests.Run(m, feeds)["logits"];
            return CrossEntropy(logits.ToFloat(), labels, (int)logits.Shape[1]);
        }

        var loss = s.Loss(theta, ds).Loss;
        var theta0 = theta.Span.ToArray();
        double reference = KernelLoss(theta0);
        log.WriteLine($"{fixture}: loss-only artifact {loss:R}, cross-entropy of the kernels' logits {reference:R}");
        Assert.True(Math.Abs(loss - reference) <= 1e-5 * Math.Abs(reference), $"{fixture}: loss {loss} vs {reference} from ONNX Runtime's kernels");

        var grad = new float[s.Layout.Size];
        s.Gradient(theta, ds, grad);
        var rng = new Random(5);
        double worst = 0;
        for (int k = 0; k < 4; k++)
        {
            var v = theta0.Select(_ => rng.NextDouble() * 2 - 1).ToArray();
            double best = double.MaxValue; string detail = "";
            foreach (double step in new[] { 3e-3, 1e-3, 3e-4 })
            {
                var plus = theta0.Select((t, i) => (float)(t + step * v[i])).ToArray();
                var minus = theta0.Select((t, i) => (float)(t - step * v[i])).ToArray();
                double fd = KernelLoss(plus) - KernelLoss(minus), an = 0;
                for (int i = 0; i < theta0.Length; i++) an += grad[i] * ((double)plus[i] - minus[i]);
                double err = Math.Abs(fd - an) / Math.Abs(an);
                if (err < best) { best = err; detail = $"finite difference {fd:E4}, gradient {an:E4}"; }
            }
            log.WriteLine($"{fixture} direction {k}: relative error {best:E2} ({detail})");
            worst = Math.Max(worst, best);
        }
        Assert.True(worst <= 1e-2, $"{fixture}: gradient vs differences of ONNX Runtime's forward: relative error {worst:E2}");
    }

    /// <summary>`unlearn` on the optimized model writes one that ONNX Runtime loads, differing only in the selected elements.</summary>
    [Theory, MemberData(nameof(Cases))]
    public void UnlearnWritesAModelDifferingOnlyInTheSelectedElements(string fixture, string source, string data, string contribOps)
    {
        _ = (source, contribOps);
        using var dir = new TempDir();
        var all = Npz.Read(Data(data));
        Npz.Write(dir.File("forget.npz"), all.ToDictionary(kv => kv.Key, kv => kv.Value.TakeRows([0, 1, 2, 3])));
        var (code, _, err) = CliRunner.Run("unlearn", Model(fixture), "--train", Data(data), "--forget", dir.File("forget.npz"),
            "--out", dir.File("new.onnx"), "--count", "40", "--probes", "8", "--seed", "1");
        Assert.True(code == 0, err);
        var diff = ModelDiff.Compare(Model(fixture), dir.File("new.onnx"));
        Assert.False(diff.StructureDiffers, diff.StructureDifference);
        Assert.False(diff.OtherBytesDiffer);
        long changed = diff.Parameters.Sum(p => p.ElementsDiffering);
        log.WriteLine($"{fixture}: {changed} elements changed in {string.Join(", ", diff.Parameters.Select(p => p.Name))}");
        Assert.InRange(changed, 1, 40);
        var feeds = all.Where(kv => kv.Key != "label").ToDictionary();
        var logits = ContribLoweringTests.Run(ModelFile.Load(dir.File("new.onnx")).Model, feeds)["logits"].ToFloat();
        Assert.All(logits, v => Assert.True(float.IsFinite(v)));
    }

    static double CrossEntropy(float[] logits, long[] labels, int classes)
    {
        double sum = 0;
        for (int r = 0; r < labels.Length; r++)
        {
            var row = logits.Skip(r * classes).Take(classes).Select(x => (double)x).ToArray();
            double max = row.Max();
            sum += max + Math.Log(row.Sum(x => Math.Exp(x - max))) - row[labels[r]];
        }
        return sum / labels.Length;
    }
}

/// <summary>Level all on x86 writes the blocked-layout com.microsoft.nchwc ops: refused with the level to save at instead.</summary>
public class OrtLevelAllTests
{
    [Fact]
    public void NchwcOpsFromLevelAllAreRefusedByTheCli()
    {
        using var dir = new TempDir();
        using (var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, OptimizedModelFilePath = dir.File("all.onnx") })
        using (new InferenceSession(Fixtures.File("cnn", "model.onnx"), options)) { }
        var nchwc = ModelFile.Load(dir.File("all.onnx")).Graph.Node.FirstOrDefault(n => n.Domain == Contrib.Domain + ".nchwc");
        if (System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture != System.Runtime.InteropServices.Architecture.X64) return;
        Assert.NotNull(nchwc);   // x86-64: ONNX Runtime's NCHWc transformer always applies to this conv net
        var (code, _, err) = CliRunner.Run("grad", dir.File("all.onnx"), "--data", Fixtures.File("cnn", "data.npz"), "--out", dir.File("g.npz"));
        Assert.Equal(2, code);
        Assert.Contains($"com.microsoft.nchwc.{nchwc.OpType}", err);
        Assert.Contains("ORT_ENABLE_EXTENDED", err);
        Assert.Single(err.Trim().Split('\n'));
    }
}
