using Onnx;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using OnnxUnlearn.Tests.Autodiff;
using static OnnxUnlearn.Tests.Exporters.Exporter;

namespace OnnxUnlearn.Tests.Exporters;

/// <summary>tf2onnx (and older torch.onnx) habits that a tool seeing only its own fixtures would trip over.</summary>
public class TfHabitsTests
{
    const int Features = 4, Classes = 3;

    /// <summary>logits = x·W + B, the weights initializers (the caller may add more nodes after "logits").</summary>
    static GraphProto Dense(long batch = -1, string output = "logits")
    {
        var rng = new Random(4);
        var g = new GraphProto { Name = "dense" };
        g.Input.Add(Value("x", DataTypes.Float, batch, Features));
        g.Output.Add(Value(output, DataTypes.Float, batch, Classes));
        g.Initializer.Add(Floats("W", [Features, Classes], Random(rng, Features * Classes)));
        g.Initializer.Add(Floats("B", [Classes], Random(rng, Classes, 0.5), typed: true));
        g.Node.Add(Node("MatMul", ["x", "W"], ["xw"]));
        g.Node.Add(Node("Add", ["xw", "B"], [output]));
        return g;
    }

    /// <summary>An evaluator with its gradient graph built (where the errors of differentiation surface).</summary>
    static Evaluator Open(ModelProto m, TempDir dir, Dataset data, LossSettings? settings = null)
    {
        var e = Evaluator.Open(Save(m, dir.File("model.onnx")), settings ?? new LossSettings { BatchSize = 5 }, data);
        try { e.Artifact(); return e; }
        catch { e.Dispose(); throw; }
    }

    static void AssertGradient(Evaluator s, Dataset data)
    {
        var r = GradCheck.CheckSession(s, data);
        Assert.True(r.MaxRelError <= GradCheck.Tolerance(false), $"relative error {r.MaxRelError:E2} ({r.Detail})");
    }

    [Fact]
    public void InitializersListedAsInputsAreParametersNotFeeds()
    {
        // IR 3 / keep_initializers_as_inputs: every initializer is also a graph input.
        var g = Dense();
        g.Input.Add(Value("W", DataTypes.Float, Features, Classes));
        g.Input.Add(Value("B", DataTypes.Float, Classes));
        var m = Model(g, opset: 9, ir: 3, producer: "tf2onnx");
        Assert.Equal(["x"], Evaluator.DataInputs(m.Graph));
        Assert.Equal(["x"], ModelSummary.Of(new ModelFile(m, "m.onnx", Path.GetTempPath())).Inputs.Select(i => i.Name));

        using var dir = new TempDir();
        using var data = new Dataset(Samples(12, Features, Classes), "x and label only");
        using var s = Open(m, dir, data);
        Assert.Equal(["x"], s.Artifact().DataInputs);
        Assert.Equal(["W", "B"], s.Layout.Parameters.Select(p => p.Name));
        AssertGradient(s, data);
    }

    [Fact]
    public void ATensorSharedByManyNodesGetsTheSumOfItsGradients()
    {
        // One clamp floor shared by 20 Max nodes: h = Σ_i max(x ⊙ c_i, floor), then the dense layer.
        var rng = new Random(6);
        var g = Dense();
        g.Node.Clear();
        g.Initializer.Add(Floats("floor", [Features], Random(rng, Features, 0.3)));
        var branches = new List<string>();
        for (int i = 0; i < 20; i++)
        {
            g.Initializer.Add(Floats($"c{i}", [Features], Random(rng, Features)));
            g.Node.Add(Node("Mul", ["x", $"c{i}"], [$"scaled{i}"]));
            g.Node.Add(Node("Max", [$"scaled{i}", "floor"], [$"clamped{i}"]));
            branches.Add($"clamped{i}");
        }
        g.Node.Add(Node("Sum", [.. branches], ["h"]));
        g.Node.Add(Node("MatMul", ["h", "W"], ["xw"]));
        g.Node.Add(Node("Add", ["xw", "B"], ["logits"]));
        using var dir = new TempDir();
        using var data = new Dataset(Samples(16, Features, Classes), "samples");
        using var s = Open(Model(g, opset: 13, producer: "tf2onnx"), dir, data, new LossSettings { BatchSize = 5, Params = ["floor"] });
        Assert.Equal(["floor"], s.Layout.Parameters.Select(p => p.Name));
        AssertGradient(s, data);
    }

    [Fact]
    public void BatchNormalizationRunningStatisticsAreNotTrainable()
    {
        var g = Dense(output: "dense");
        g.Output[0].Name = "logits";
        foreach (var (name, values) in new[] { ("bn_scale", new[] { 1.1f, 0.9f, 1.3f }), ("bn_bias", [0.1f, -0.2f, 0.05f]), ("bn_mean", [0.2f, -0.1f, 0f]), ("bn_var", [1.5f, 0.7f, 2f]) })
            g.Initializer.Add(Floats(name, [Classes], values));
        g.Node.Add(Node("BatchNormalization", ["dense", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["logits"], ("epsilon", 1e-3f)));
        var m = Model(g, opset: 15, producer: "tf2onnx");
        var summary = ModelSummary.Of(new ModelFile(m, "bn.onnx", Path.GetTempPath()));
        foreach (var stat in new[] { "bn_mean", "bn_var" })
        {
            var p = summary.Parameters.Single(p => p.Name == stat);
            Assert.False(p.Trainable);
            Assert.Contains("BatchNormalization running statistic", p.Reason);
        }
        Assert.Equal(["W", "B", "bn_scale", "bn_bias"], summary.Parameters.Where(p => p.Trainable).Select(p => p.Name));

        using var dir = new TempDir();
        using var data = new Dataset(Samples(12, Features, Classes), "samples");
        using var s = Open(m, dir, data);
        AssertGradient(s, data);
    }

    [Fact]
    public void AFixedBatchOfOneAccumulatesSampleBySample()
    {
        var m = Model(Dense(batch: 1), opset: 13, producer: "tf2onnx");
        using var dir = new TempDir();
        using var data = new Dataset(Samples(8, Features, Classes), "eight samples");
        using var s = Open(m, dir, data);
        var grad = new float[s.Layout.Size];
        long before = s.GradientEvaluations;
        s.Gradient(s.ReadParameters(), data, grad);
        Assert.Equal(8, s.GradientEvaluations - before); // one sample per run

        var mean = new double[s.Layout.Size];
        for (int i = 0; i < 8; i++)
        {
            using var one = data.Take([i], $"sample {i}");
            var g = new float[s.Layout.Size];
            s.Gradient(s.ReadParameters(), one, g);
            for (int k = 0; k < g.Length; k++) mean[k] += g[k] / 8.0;
        }
        for (int k = 0; k < grad.Length; k++) Assert.Equal(mean[k], grad[k], 1e-6);
        AssertGradient(s, data);
    }

    [Fact]
    public void OutputNamesThatAreNotIdentifiersAndUnusedDomainsAreFine()
    {
        const string json = "{\"0\": \"cat\", \"1\": \"dog\", \"2\": \"bird/with spaces\"}";
        var m = Model(Dense(output: json), opset: 13, producer: "tf2onnx",
            domains: [("ai.onnx.ml", 2), ("com.microsoft", 1), ("com.microsoft.experimental", 1), ("ai.onnx.preview.training", 1),
                ("com.microsoft.nchwc", 1), ("org.pytorch.aten", 1), ("ai.onnx.training", 1), ("com.example.unused", 1)]);
        var summary = ModelSummary.Of(new ModelFile(m, "json.onnx", Path.GetTempPath()));
        Assert.Equal(json, summary.Outputs.Single().Name);
        Assert.Equal(9, summary.Opsets.Count);
        Assert.True(summary.TrainableElements > 0);

        using var dir = new TempDir();
        using var data = new Dataset(Samples(12, Features, Classes), "samples");
        using var s = Open(m, dir, data);
        Assert.Equal(json, s.Artifact().Output);
        AssertGradient(s, data);
    }

    [Fact]
    public void WeightsOnlyInsideAnIfBodyOrUnusedAreNotTrainable()
    {
        // logits = x·W + B + If(cond) { then: bias_if } else { zeros }; W_unused feeds nothing.
        var g = Dense(output: "dense");
        g.Output[0].Name = "logits";
        g.Initializer.Add(Floats("bias_if", [Classes], [0.5f, -0.5f, 0.25f]));
        g.Initializer.Add(Floats("zeros", [Classes], new float[Classes]));
        g.Initializer.Add(Floats("W_unused", [Features, Classes], new float[Features * Classes]));
        PerSampleCondition(g);
        var then = new GraphProto { Name = "then", Node = { Node("Identity", ["bias_if"], ["then_out"]) }, Output = { Value("then_out", DataTypes.Float, Classes) } };
        var otherwise = new GraphProto { Name = "else", Node = { Node("Identity", ["zeros"], ["else_out"]) }, Output = { Value("else_out", DataTypes.Float, Classes) } };
        var branch = Node("If", ["cond"], ["branch"]);
        branch.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = then });
        branch.Attribute.Add(new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = otherwise });
        g.Node.Add(branch);
        g.Node.Add(Node("Add", ["dense", "branch"], ["logits"]));
        var m = Model(g, opset: 13, producer: "tf2onnx");

        var summary = ModelSummary.Of(new ModelFile(m, "if.onnx", Path.GetTempPath()));
        Assert.Equal(["W", "B"], summary.Parameters.Where(p => p.Trainable).Select(p => p.Name));
        Assert.Contains("used only inside the body of If", summary.Parameters.Single(p => p.Name == "bias_if").Reason);
        Assert.Equal("not used by any node", summary.Parameters.Single(p => p.Name == "W_unused").Reason);

        using var dir = new TempDir();
        using var data = new Dataset(Samples(12, Features, Classes), "samples");
        using var s = Open(m, dir, data);
        AssertGradient(s, data);
    }

    /// <summary>If(cond) whose both branches return the outer value <paramref name="read"/> (read by name, as exporters write it).</summary>
    /// <summary>cond = ΣX > 0 over the batch: it varies with the samples, so the If is not inlined (a constant one is: IfInliningTests).</summary>
    static void PerSampleCondition(GraphProto g)
    {
        g.Initializer.Add(Floats("zero", [], [0f]));
        g.Node.Add(Node("ReduceSum", ["x"], ["x_sum"], ("keepdims", 0L)));
        g.Node.Add(Node("Greater", ["x_sum", "zero"], ["cond"]));
    }

    static NodeProto IfReading(string read, string output)
    {
        var then = new GraphProto { Name = "then", Node = { Node("Identity", [read], ["then_out"]) }, Output = { Value("then_out", DataTypes.Float, -1, Classes) } };
        var otherwise = new GraphProto { Name = "else", Node = { Node("Neg", [read], ["else_out"]) }, Output = { Value("else_out", DataTypes.Float, -1, Classes) } };
        var branch = Node("If", ["cond"], [output]);
        branch.Name = "select_branch";
        branch.Attribute.Add(new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = then });
        branch.Attribute.Add(new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = otherwise });
        return branch;
    }

    [Fact]
    public void ControlFlowBetweenAParameterAndTheLossIsAClearError()
    {
        // logits = If(cond) { dense } else { −dense }, dense = x·W + B: W and B reach the loss only through the branch.
        var g = Dense(output: "dense");
        g.Output[0].Name = "logits";
        PerSampleCondition(g);
        g.Node.Add(IfReading("dense", "logits"));
        var m = Model(g, opset: 13, producer: "tf2onnx");
        // The parameters are on the way to the output (through the branch), so they are trainable and the error says why they fail.
        var summary = ModelSummary.Of(new ModelFile(m, "if.onnx", Path.GetTempPath()));
        Assert.Equal(["W", "B"], summary.Parameters.Where(p => p.Trainable).Select(p => p.Name));

        using var dir = new TempDir();
        using var data = new Dataset(Samples(12, Features, Classes), "samples");
        var e = Assert.Throws<UserError>(() => Open(m, dir, data));
        Assert.Contains("op 'If' (node 'select_branch'", e.Message);
        Assert.Contains("control flow (If/Loop/Scan) on the loss path is not differentiable", e.Message);
        Assert.Contains("'W', 'B'", e.Message);
        Assert.Contains("torch.onnx.export with fixed input shapes", e.Message);
        Assert.Contains("--frozen", OnnxUnlearn.Cli.Cli.Describe(e));
        Assert.DoesNotContain("no gradient rule", e.Message);

        // Freezing the parameters before the branch is the documented way out: none is left to differentiate.
        var frozen = Assert.Throws<UserError>(() => Open(m, dir, data, new LossSettings { BatchSize = 5, Frozen = ["W", "B"] }));
        Assert.DoesNotContain("control flow", frozen.Message);
    }

    [Fact]
    public void ATrainableParameterThatAlsoReachesTheLossThroughAnIfIsAnErrorNotASilentlyPartialGradient()
    {
        // logits = dense + If(cond) { dense } else { −dense }: the direct path alone would give half the story.
        var g = Dense(output: "dense");
        g.Output[0].Name = "logits";
        PerSampleCondition(g);
        g.Node.Add(IfReading("dense", "branch"));
        g.Node.Add(Node("Add", ["dense", "branch"], ["logits"]));
        using var dir = new TempDir();
        using var data = new Dataset(Samples(12, Features, Classes), "samples");
        var e = Assert.Throws<UserError>(() => Open(Model(g, opset: 13, producer: "tf2onnx"), dir, data));
        Assert.Contains("op 'If' (node 'select_branch'", e.Message);
    }

    [Fact]
    public void AnIfThatFeedsOnlyAnotherOutputDoesNotStopTheGradient()
    {
        // logits = x·W + B; a second output "flipped" = If(cond) { logits } else { −logits }: not on the loss path.
        var g = Dense();
        PerSampleCondition(g);
        g.Node.Add(IfReading("logits", "flipped"));
        g.Output.Add(Value("flipped", DataTypes.Float, -1, Classes));
        var m = Model(g, opset: 13, producer: "tf2onnx");
        using var dir = new TempDir();
        using var data = new Dataset(Samples(12, Features, Classes), "samples");
        using var s = Open(m, dir, data);
        Assert.Equal("logits", s.Artifact().Output);
        Assert.Equal(["W", "B"], s.Layout.Parameters.Select(p => p.Name));
        AssertGradient(s, data);
        // The loss of the other output goes through the branch: the error, not a zero gradient.
        Assert.Contains("control flow", Assert.Throws<UserError>(() => Open(m, dir, data, new LossSettings { BatchSize = 5, Output = "flipped" })).Message);
    }
}
