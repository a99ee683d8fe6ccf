using Onnx;
using OnnxUnlearn.Data;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using OnnxUnlearn.Tests.Autodiff;
using OnnxUnlearn.Unlearning;
using static OnnxUnlearn.Tests.Exporters.Exporter;

namespace OnnxUnlearn.Tests.Exporters;

/// <summary>paddle2onnx habits: no initializers, every weight a Constant node named after the parameter.</summary>
public class ConstantNodeTests
{
    const int Features = 4, Hidden = 5, Classes = 3;

    /// <summary>
    /// logits = (hardswish(x·W0 + b0) · scale)·W1 + b1, HardSwish decomposed as h·Clip(h + 3, 0, 6)/6. Weights are
    /// Constant values (raw_data and float_data), b1 a value_floats; the helper constants 3, 0, 6 are rank 0 (6 as
    /// value_float); the learnable scale has shape (1,).
    /// </summary>
    internal static ModelProto Paddle()
    {
        var rng = new Random(11);
        var g = new GraphProto { Name = "paddle" };
        g.Input.Add(Value("x", DataTypes.Float, -1, Features));
        g.Output.Add(Value("logits", DataTypes.Float, -1, Classes));
        g.Node.Add(Constant("linear_0.w_0", [Features, Hidden], Random(rng, Features * Hidden)));
        g.Node.Add(Constant("linear_0.b_0", [Hidden], Random(rng, Hidden, 0.5), typed: true));
        g.Node.Add(Constant("hardswish_0.tmp_3", [], [3f]));
        g.Node.Add(Constant("hardswish_0.tmp_0", [], [0f], typed: true));
        g.Node.Add(Constant("hardswish_0.tmp_6", [], [6f]));
        g.Node.Add(Node("Constant", [], ["hardswish_0.tmp_div"], ("value_float", 6f)));
        g.Node.Add(Constant("scale_0.w_0", [1], [1.5f]));
        g.Node.Add(Constant("linear_1.w_0", [Hidden, Classes], Random(rng, Hidden * Classes)));
        g.Node.Add(Node("Constant", [], ["linear_1.b_0"], ("value_floats", Random(rng, Classes, 0.5))));
        g.Node.Add(Node("MatMul", ["x", "linear_0.w_0"], ["linear_0.tmp_0"]));
        g.Node.Add(Node("Add", ["linear_0.tmp_0", "linear_0.b_0"], ["linear_0.tmp_1"]));
        g.Node.Add(Node("Add", ["linear_0.tmp_1", "hardswish_0.tmp_3"], ["hardswish_0.tmp_4"]));
        g.Node.Add(Node("Clip", ["hardswish_0.tmp_4", "hardswish_0.tmp_0", "hardswish_0.tmp_6"], ["hardswish_0.tmp_5"]));
        g.Node.Add(Node("Mul", ["linear_0.tmp_1", "hardswish_0.tmp_5"], ["hardswish_0.tmp_7"]));
        g.Node.Add(Node("Div", ["hardswish_0.tmp_7", "hardswish_0.tmp_div"], ["hardswish_0.tmp_8"]));
        g.Node.Add(Node("Mul", ["hardswish_0.tmp_8", "scale_0.w_0"], ["scale_0.tmp_0"]));
        g.Node.Add(Node("MatMul", ["scale_0.tmp_0", "linear_1.w_0"], ["linear_1.tmp_0"]));
        g.Node.Add(Node("Add", ["linear_1.tmp_0", "linear_1.b_0"], ["logits"]));
        foreach (var n in g.Node.Where(n => n.OpType == "Constant")) n.Name = "";
        return Model(g, opset: 12, ir: 7); // value_float(s) need opset 12; paddle2onnx leaves the producer empty
    }

    static readonly string[] Trainable = ["linear_0.w_0", "linear_0.b_0", "scale_0.w_0", "linear_1.w_0", "linear_1.b_0"];

    [Fact]
    public void InspectListsConstantNodeParametersWithReasons()
    {
        var s = ModelSummary.Of(new ModelFile(Paddle(), "paddle.onnx", Path.GetTempPath()));
        Assert.Empty(s.OpsWithoutGradient);
        Assert.All(s.Parameters, p => Assert.Equal("constant-node", p.Storage));
        Assert.Equal(Trainable, s.Parameters.Where(p => p.Trainable).Select(p => p.Name));
        Assert.Equal([1L], s.Parameters.Single(p => p.Name == "scale_0.w_0").Shape);
        Assert.Equal([Classes], s.Parameters.Single(p => p.Name == "linear_1.b_0").Shape); // value_floats: rank 1
        foreach (var helper in new[] { "hardswish_0.tmp_3", "hardswish_0.tmp_0", "hardswish_0.tmp_6", "hardswish_0.tmp_div" })
            Assert.Equal("rank-0 constant", s.Parameters.Single(p => p.Name == helper).Reason);
        Assert.Equal(Features * Hidden + Hidden + 1 + Hidden * Classes + Classes, s.TrainableElements);
    }

    [Fact]
    public void GradientMatchesFiniteDifferences()
    {
        using var dir = new TempDir();
        using var data = new Dataset(Samples(16, Features, Classes), "samples");
        using var s = Evaluator.Open(Save(Paddle(), dir.File("paddle.onnx")), new LossSettings { BatchSize = 5 }, data);
        Assert.Equal(Trainable, s.Layout.Parameters.Select(p => p.Name));
        Assert.Equal(1.5f, s.ReadParameters().Span[s.Layout.Offset(s.Layout.IndexOf("scale_0.w_0"))]);
        var r = GradCheck.CheckSession(s, data);
        Assert.True(r.MaxRelError <= GradCheck.Tolerance(false), $"relative error {r.MaxRelError:E2} ({r.Detail})");
    }

    [Fact]
    public void UnlearnPatchesOnlySelectedConstantBytesAndMatchesAnInMemoryEdit()
    {
        using var dir = new TempDir();
        var input = Save(Paddle(), dir.File("paddle.onnx"));
        var output = dir.File("new.onnx");
        using var train = new Dataset(Samples(24, Features, Classes), "train");
        var (forget, corrected) = Correction(train, 4, Classes);
        using (forget) using (corrected)
        {
            var (selected, edited) = Unlearn(input, train, forget, corrected, new UnlearnOptions { Select = SelectionKind.Gradient, Fraction = 0.3 }, output);

            var diff = ModelDiff.Compare(input, output);
            Assert.Null(diff.StructureDifference);
            Assert.False(diff.OtherBytesDiffer);
            Assert.NotEmpty(diff.Parameters);
            using var s = Evaluator.Open(input, new LossSettings(), train);
            var perTensor = OnnxUnlearn.Selection.Masks.PerTensor(s.Layout, selected);
            foreach (var p in diff.Parameters)
                Assert.True(p.ElementsDiffering <= perTensor[p.Name], $"{p.Name}: {p.ElementsDiffering} differ, {perTensor[p.Name]} selected");

            // The command does the same steps: its model is byte for byte the one written here.
            var files = new[] { "train", "forget", "corrected" }.Select(dir.File).Select(f => f + ".npz").ToArray();
            foreach (var (f, d) in files.Zip(new[] { train, forget, corrected })) Npz.Write(f, d.Arrays);
            UnlearnJob.Run(new UnlearnRequest(input, files[0], files[1], files[2], null, dir.File("job.onnx")), new LossSettings(),
                new UnlearnOptions { Select = SelectionKind.Gradient, Fraction = 0.3 });
            Assert.Equal(File.ReadAllBytes(output), File.ReadAllBytes(dir.File("job.onnx")));

            var x = new Dictionary<string, NdArray> { ["x"] = train.Arrays["x"] };
            var written = Run(ModelFile.Load(output).Model, x, "logits");
            Assert.Equal(Run(edited, x, "logits"), written);
            Assert.NotEqual(Run(Paddle(), x, "logits"), written);
        }
    }

    [Fact]
    public void PatchingThePyTorchFixtureChangesOnlyTheSelectedConstantBytesInRawAndFloatData()
    {
        // testdata/const_nodes: paddle2onnx layout written from a PyTorch module, weights in raw_data and float_data.
        var input = Fixtures.File("const_nodes", "model.onnx");
        var bytes = File.ReadAllBytes(input);
        var locations = WeightPatch.Locate(bytes, Path.GetDirectoryName(input)!, input);
        Assert.Equal(ValueStorage.RawData, locations["linear_0.w_0"].Storage);
        Assert.Equal(ValueStorage.RawData, locations["linear_1.b_0"].Storage);
        foreach (var name in new[] { "linear_0.b_0", "scale_0.w_0", "linear_1.w_0" })
            Assert.Equal(ValueStorage.FloatData, locations[name].Storage);

        var patches = new Dictionary<string, TensorPatch>
        {
            ["linear_0.w_0"] = new([0, 100, 2047], [0.25f, -0.5f, 1.75f]), // raw_data, including the last element
            ["linear_1.w_0"] = new([3], [-2f]),                            // float_data
            ["scale_0.w_0"] = new([0], [2f]),                              // the shape-(1,) scalar, float_data
        };
        using var dir = new TempDir();
        var output = dir.File("patched.onnx");
        var summary = WeightPatch.Write(input, output, patches);
        Assert.Equal(5, summary.ElementsChanged);

        var diff = ModelDiff.Compare(input, output);
        Assert.Null(diff.StructureDifference);
        Assert.False(diff.OtherBytesDiffer);
        Assert.Equal(new Dictionary<string, long> { ["linear_0.w_0"] = 3, ["linear_1.w_0"] = 1, ["scale_0.w_0"] = 1 },
            diff.Parameters.ToDictionary(p => p.Name, p => p.ElementsDiffering));

        // Byte for byte: the file keeps its length and at most 4 bytes per changed element differ.
        var patched = File.ReadAllBytes(output);
        Assert.Equal(bytes.Length, patched.Length);
        Assert.InRange(bytes.Zip(patched).Count(p => p.First != p.Second), 1, 4 * 5);

        // The values read back are the patched ones; everything else is unchanged.
        var before = Values(ModelFile.Load(input));
        var after = Values(ModelFile.Load(output));
        Assert.Equal(before.Keys, after.Keys);
        foreach (var (name, values) in before)
        {
            var expected = values.ToArray();
            if (patches.TryGetValue(name, out var p))
                for (int k = 0; k < p.Values.Length; k++) expected[p.Indices![k]] = p.Values[k];
            Assert.Equal(expected, after[name]);
        }
    }

    static Dictionary<string, float[]> Values(ModelFile file) =>
        Parameters.Candidates(file.Graph).ToDictionary(c => c.Name, c => c.Tensor.ReadFloats(file.Folder));
}
