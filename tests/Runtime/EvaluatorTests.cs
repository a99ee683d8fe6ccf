using OnnxUnlearn.Curvature;
using OnnxUnlearn.Runtime;
using OnnxUnlearn.Unlearning;

namespace OnnxUnlearn.Tests.Runtime;

/// <summary>The evaluator takes θ as an argument and compiles each graph once per model and input shape.</summary>
public class EvaluatorTests
{
    [Fact]
    public void AnIterativeSecondOrderUnlearnBuildsEachGraphOnceAndProbesShapesOnce()
    {
        using var train = Dataset.Load(Fixtures.File("mlp", "data.npz"));
        using var forget = Dataset.Load(Fixtures.File("mlp", "forget.npz"));
        using var corrected = Dataset.Load(Fixtures.File("mlp", "corrected.npz"));
        using var model = Evaluator.Open(Fixtures.File("mlp", "model.onnx"), new LossSettings(), train);
        var theta0 = model.ReadParameters();
        var stored = theta0.Span.ToArray();
        var result = Unlearner.Run(model, theta0, train, forget, corrected,
            new UnlearnOptions { Update = UpdateKind.SecondOrder, Steps = 3, UtilityBudget = 0.5, Seed = 1 });

        Assert.True(model.HasDecisions); // ReLU: the frozen-decision graph is needed for the HVPs
        Assert.True(result.Steps.Count(s => s.Outcome == StepOutcome.Accepted) >= 1, "the run should take steps (loss, gradient and HVPs at several θ)");
        Assert.Equal(new Dictionary<ArtifactKind, int> { [ArtifactKind.Gradient] = 1, [ArtifactKind.LossOnly] = 1, [ArtifactKind.FrozenDecisions] = 1 },
            model.Builds.OrderBy(kv => kv.Key).ToDictionary());
        Assert.Equal(1, model.ShapeProbes); // the three graphs share one probe of the forward graph
        Assert.Equal(stored, theta0.Span.ToArray()); // θ₀ is never written
    }

    [Fact]
    public void RecurrentModelsProbeTheForwardAndTheUnrolledGraphOnceEach()
    {
        static string Canary(string f) => Fixtures.File(Path.Combine("experiments", "canary"), f);
        using var train = Dataset.Load(Canary("forget.npz"));
        using var model = Evaluator.Open(Canary("lstm/canary.onnx"), new LossSettings(), train);
        var theta = model.ReadParameters();
        var g = new float[model.Layout.Size];
        double loss = model.Gradient(theta, train, g).Loss;
        Assert.Equal(loss, model.Loss(theta, train).Loss, 1e-5);
        new Hvp(model, train).Apply(theta, g, new float[g.Length]);
        Assert.Single(model.Artifact().Unrolled);
        // Each distinct model once: the forward graph (loss-only), the part that computes the LSTM's inputs (to learn its
        // sequence length) and the unrolled graph (gradient).
        Assert.Equal(3, model.ShapeProbes);
        model.Gradient(theta, train, g);
        Assert.Equal(3, model.ShapeProbes);
        Assert.All(model.Builds.Values, n => Assert.Equal(1, n));
    }

    [Fact]
    public void CallsAtOtherParametersLeaveNoStateBehind()
    {
        using var data = Dataset.Load(Fixtures.File("cnn", "data.npz"));
        using var model = Evaluator.Open(Fixtures.File("cnn", "model.onnx"), new LossSettings(), data);
        var theta = model.ReadParameters();
        var (g0, g1, again) = (new float[theta.Length], new float[theta.Length], new float[theta.Length]);
        double loss0 = model.Gradient(theta, data, g0).Loss;

        // Elsewhere: a shifted θ, an HVP there (which shifts its own scratch copy), the loss there.
        var moved = theta.Clone();
        for (int i = 0; i < moved.Length; i++) moved.Span[i] += 0.01f * MathF.Sin(i);
        double loss1 = model.Gradient(moved, data, g1).Loss;
        new Hvp(model, data).Apply(moved, g1, new float[theta.Length]);
        Assert.NotEqual(loss0, loss1);
        Assert.NotEqual(loss0, model.Loss(moved, data).Loss);

        // Back at θ: bit for bit what it was.
        Assert.Equal(loss0, model.Gradient(theta, data, again).Loss);
        Assert.Equal(g0, again);
        Assert.Equal(model.ReadParameters().Span.ToArray(), theta.Span.ToArray());
    }

    /// <summary>
    /// An evaluator opened on a file of one or two rows probes shapes at two batch sizes all the same (rows repeated), so
    /// its batch axis stays dynamic: batches of one give the gradient an evaluator opened on all 64 rows gives those rows.
    /// </summary>
    [Theory]
    [InlineData("mlp", 1)]
    [InlineData("mlp", 2)]
    [InlineData("cnn", 2)]
    [InlineData("charlstm", 2)]
    public void ASmallFileKeepsTheBatchAxisDynamic(string fixture, int rows)
    {
        using var all = Dataset.Load(Fixtures.File(fixture, "data.npz"));
        using var few = all.Take(Enumerable.Range(0, rows).Select(i => (long)i).ToList(), "few");
        using var reference = Evaluator.Open(Fixtures.File(fixture, "model.onnx"), new LossSettings(), all);
        using var small = Evaluator.Open(Fixtures.File(fixture, "model.onnx"), new LossSettings { BatchSize = 1 }, few);
        var expected = new float[reference.Layout.Size];
        var actual = new float[small.Layout.Size];
        double lossExpected = reference.Gradient(reference.ReadParameters(), few, expected).Loss;
        double lossActual = small.Gradient(small.ReadParameters(), few, actual).Loss;
        Assert.Equal(lossExpected, lossActual, 5);
        Assert.True(Numerics.RelativeL2(expected, actual) < 1e-5, $"relative L2 {Numerics.RelativeL2(expected, actual):E2}");
    }

    [Fact]
    public void AFileWithoutSamplesIsRefused()
    {
        using var all = Dataset.Load(Fixtures.File("mlp", "data.npz"));
        using var none = all.Take([], "empty.npz");
        var e = Assert.Throws<UserError>(() => Evaluator.Open(Fixtures.File("mlp", "model.onnx"), new LossSettings(), none));
        Assert.Contains("'empty.npz' holds no samples", e.Message);
    }
}
