using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using OnnxUnlearn.Unlearning;

namespace OnnxUnlearn.Tests.Unlearning;

public class UnlearnTests
{
    static UnlearnRequest Request(string output) => new(
        Fixtures.File("mlp", "model.onnx"), Fixtures.File("mlp", "data.npz"), Fixtures.File("mlp", "forget.npz"),
        Fixtures.File("mlp", "corrected.npz"), null, output);

    [Theory]
    [InlineData(SelectionKind.Hessian)]
    [InlineData(SelectionKind.All)]
    [InlineData(SelectionKind.LastLayer)]
    [InlineData(SelectionKind.Random)]
    [InlineData(SelectionKind.Gradient)]
    [InlineData(SelectionKind.Fisher)]
    [InlineData(SelectionKind.Magnitude)]
    public void FirstOrderMovesTowardCorrectedLabelsAndChangesOnlySelectedBytes(SelectionKind select)
    {
        using var dir = new TempDir();
        var output = dir.File("new.onnx");
        var input = Fixtures.File("mlp", "model.onnx");
        var before = File.ReadAllBytes(input);
        var report = UnlearnJob.Run(Request(output), new LossSettings(), new UnlearnOptions { Select = select, Seed = 1 });

        Assert.Equal(before, File.ReadAllBytes(input)); // the input is never modified
        Assert.True(report.After!["corrected"].Loss < report.Before["corrected"].Loss, $"{select}: corrected loss {report.Before["corrected"].Loss} → {report.After["corrected"].Loss}");
        Assert.True(report.After["forget"].Loss > report.Before["forget"].Loss);
        int expected = select switch
        {
            SelectionKind.All => 2410,
            SelectionKind.LastLayer => 330, // fc2.weight + fc2.bias
            _ => 121, // 5 % of 2410
        };
        Assert.Equal(expected, report.SelectedElements, tolerance: 1);
        var diff = ModelDiff.Compare(input, output);
        Assert.False(diff.OtherBytesDiffer);
        // Only selected elements change (an update below float32 resolution leaves a selected element's bytes as they were).
        Assert.True(diff.Parameters.Sum(p => p.ElementsDiffering) > 0);
        foreach (var p in diff.Parameters)
            Assert.True(p.ElementsDiffering <= report.SelectedPerTensor[p.Name], $"{p.Name}: {p.ElementsDiffering} differ, {report.SelectedPerTensor[p.Name]} selected");
        Assert.Equal(Report.Sha256(output), report.OutputSha256);
    }

    [Fact]
    public void MaskFileSelectsExactlyItsElements()
    {
        using var dir = new TempDir();
        var mask = dir.File("mask.npz");
        var w = new byte[32 * 64]; w[5] = 1; w[700] = 1;
        var b2 = new byte[10]; b2[3] = 1;
        OnnxUnlearn.Data.Npz.Write(mask, new Dictionary<string, OnnxUnlearn.Data.NdArray>
        {
            ["fc1.weight"] = OnnxUnlearn.Data.NdArray.FromUInt8(w, 32, 64), ["fc1.bias"] = OnnxUnlearn.Data.NdArray.FromUInt8(new byte[32], 32),
            ["fc2.weight"] = OnnxUnlearn.Data.NdArray.FromUInt8(new byte[320], 10, 32), ["fc2.bias"] = OnnxUnlearn.Data.NdArray.FromUInt8(b2, 10),
        });
        var report = UnlearnJob.Run(Request(dir.File("new.onnx")), new LossSettings(), new UnlearnOptions { MaskFile = mask, Tau = 1 });
        Assert.Equal(3, report.SelectedElements);
        Assert.Equal(2, report.SelectedPerTensor["fc1.weight"]);
        Assert.Equal(1, report.SelectedPerTensor["fc2.bias"]);
        Assert.Equal("Mask", report.Settings["select"]);
    }

    [Fact]
    public void SecondOrderOnLogisticRegressionSolvesTheNewtonSystem()
    {
        // Convex model: (H_SS + λI) d = Δg_S has a solution; CG must converge and lower the corrected loss.
        using var dir = new TempDir();
        var data = Fixtures.File("logreg", "data.npz");
        var forget = dir.File("forget.npz"); var corrected = dir.File("corrected.npz");
        var d = OnnxUnlearn.Data.Npz.Read(data);
        var rows = Enumerable.Range(0, 6).Select(i => (long)i).ToArray();
        OnnxUnlearn.Data.Npz.Write(forget, new Dictionary<string, OnnxUnlearn.Data.NdArray> { ["x"] = d["x"].TakeRows(rows), ["label"] = d["label"].TakeRows(rows) });
        var flipped = d["label"].TakeRows(rows).ToInt64().Select(y => (y + 1) % 10).ToArray();
        OnnxUnlearn.Data.Npz.Write(corrected, new Dictionary<string, OnnxUnlearn.Data.NdArray> { ["x"] = d["x"].TakeRows(rows), ["label"] = OnnxUnlearn.Data.NdArray.FromInt64(flipped, 6) });
        var report = UnlearnJob.Run(new UnlearnRequest(Fixtures.File("logreg", "model.onnx"), data, forget, corrected, null, dir.File("new.onnx")),
            new LossSettings(), new UnlearnOptions { Update = UpdateKind.SecondOrder, Fraction = 0.2, Damping = 1e-3, MaxIterations = 100 });
        Assert.Equal(CgStop.Converged, report.Cg!.Stop);
        Assert.True(report.Cg.RelativeResidual <= 1e-3);
        Assert.True(report.After!["corrected"].Loss < report.Before["corrected"].Loss);
    }

    [Fact]
    public void MismatchedForgetAndCorrectedSetsAreRefused()
    {
        using var dir = new TempDir();
        var req = Request(dir.File("x.onnx")) with { Corrected = Fixtures.File("mlp", "data.npz") };
        var e = Assert.Throws<UserError>(() => UnlearnJob.Run(req, new LossSettings(), new UnlearnOptions()));
        Assert.Contains("same samples", e.Message);
    }
}

public class IterativeUnlearnTests
{
    [Fact]
    public void StepsLowerTheObjectiveMonotonicallyWithinTheUtilityBudget()
    {
        using var dir = new TempDir();
        var request = new UnlearnRequest(Fixtures.File("mlp", "model.onnx"), Fixtures.File("mlp", "data.npz"), Fixtures.File("mlp", "forget.npz"),
            Fixtures.File("mlp", "corrected.npz"), null, dir.File("new.onnx"));
        var one = UnlearnJob.Run(request, new OnnxUnlearn.Runtime.LossSettings(), new UnlearnOptions { Steps = 1, UtilityBudget = 0.2 });
        var many = UnlearnJob.Run(request, new OnnxUnlearn.Runtime.LossSettings(), new UnlearnOptions { Steps = 6, UtilityBudget = 0.2 });
        var steps = many.Steps!;
        Assert.True(steps.Count >= 2);
        var accepted = steps.Where(x => x.Outcome == StepOutcome.Accepted).ToList();
        Assert.NotEmpty(accepted);
        for (int i = 1; i < accepted.Count; i++) Assert.True(accepted[i].Objective < accepted[i - 1].Objective);
        var start = steps[0];
        Assert.Equal(StepOutcome.Start, start.Outcome);
        Assert.True(accepted[0].Objective < start.Objective);
        Assert.All(accepted, x => Assert.True(x.RetainLoss <= start.RetainLoss + Math.Log(1.2), $"step {x.Step}: retain {x.RetainLoss} vs start {start.RetainLoss}"));
        Assert.True(many.After!["corrected"].Loss < many.Before["corrected"].Loss);
        Assert.Null(one.Steps);
    }
}

public class TargetExposureTests
{
    static string Canary(string name) => Fixtures.File(Path.Combine("experiments", "canary"), name);

    [Fact]
    public void StepsStopOnceTheMeasuredExposureIsBelowTheTargetAndTheWrittenModelHasIt()
    {
        using var dir = new TempDir();
        var vocab = OnnxUnlearn.Text.Vocabulary.Load(Canary("vocab.json"));
        var secret = new OnnxUnlearn.Text.ExposureOptions { Prefix = "my credit card number is ", Secret = "4929 5173 0826 3307", Budget = 5000, Samples = 2000 };
        var request = new UnlearnRequest(Canary("lstm/canary.onnx"), Canary("train.npz"), Canary("forget.npz"), Canary("corrected.npz"), null, dir.File("new.onnx"));
        var report = UnlearnJob.Run(request, new OnnxUnlearn.Runtime.LossSettings(), new UnlearnOptions { Select = SelectionKind.LastLayer, TrainSize = 6441 },
            exposure: new ExposureTarget(vocab, secret, 40));

        var e = report.Exposure!;
        Assert.True(e.Before.Bits > 50, $"the canary model should expose the secret: {e.Before.Bits} bits");
        var steps = report.Steps!.Where(x => x.Step > 0 && x.Outcome is StepOutcome.Accepted or StepOutcome.TargetReached).ToList();
        Assert.All(steps, x => Assert.NotNull(x.Exposure));
        Assert.All(steps.SkipLast(1), x => Assert.True(x.Exposure >= 40, $"step {x.Step} was already below the target ({x.Exposure}) but did not stop"));
        Assert.Equal(StepOutcome.TargetReached, steps[^1].Outcome);
        Assert.True(e.Reached);
        Assert.Equal(steps[^1].Exposure!.Value, e.After!.Bits, 6);
        // measured, not assumed: the written file gives the reported figure
        var written = OnnxUnlearn.Text.ExposureProbe.Measure(dir.File("new.onnx"), vocab, secret);
        Assert.Equal(e.After.Bits, written.Exposure, 6);
        Assert.True(written.Exposure < 40);
    }
}

public class AutomaticDampingTests
{
    static string Canary(string name) => Fixtures.File(Path.Combine("experiments", "canary"), name);

    [Fact]
    public void RaisesDampingUntilConjugateGradientsSeePositiveCurvature()
    {
        var request = new UnlearnRequest(Canary("lstm/canary.onnx"), Canary("train.npz"), Canary("forget.npz"), Canary("corrected.npz"), null, null);
        var options = new UnlearnOptions { Select = SelectionKind.Magnitude, Update = UpdateKind.SecondOrder, Steps = 1, TrainSize = 6441 };
        var fixedSmall = UnlearnJob.Run(request, new OnnxUnlearn.Runtime.LossSettings(), options with { Damping = 1e-3 });
        Assert.Null(fixedSmall.After);
        Assert.Equal(CgStop.NegativeCurvature, fixedSmall.Cg!.Stop);

        var auto = UnlearnJob.Run(request, new OnnxUnlearn.Runtime.LossSettings(), options);
        Assert.NotNull(auto.After);
        Assert.True(auto.Cg!.Damping > 1e-3, $"damping {auto.Cg.Damping}");
        Assert.Equal("auto", auto.Settings["damping"]);
        // the update moves toward the corrected windows: the memorised secret's windows get less likely
        Assert.True(auto.After!["forget"].Loss > auto.Before["forget"].Loss);
    }
}
