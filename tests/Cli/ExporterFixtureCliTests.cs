using System.Text.Json;
using OnnxUnlearn.Data;

namespace OnnxUnlearn.Tests.Cli;

/// <summary>The issue-7 fixtures (other exporters' habits) through the CLI: what a user of such a model sees.</summary>
public class ExporterFixtureCliTests
{
    static (int Code, string Out, string Err) Run(params string[] args) => CliRunner.Run(args);

    /// <summary>`grad` on the fixture: its arrays, keyed by parameter name.</summary>
    static Dictionary<string, NdArray> Grad(TempDir dir, string fixture, string model = "model.onnx")
    {
        var output = dir.File(Path.GetFileNameWithoutExtension(model) + ".grad.npz");
        var (code, _, err) = Run("grad", Fixtures.File(fixture, model), "--data", Fixtures.File(fixture, "data.npz"), "--out", output);
        Assert.True(code == 0, err);
        return Npz.Read(output);
    }

    [Theory]
    [InlineData("const_nodes", "model.onnx")]
    [InlineData("inputs_as_inits", "model.onnx")]
    [InlineData("opset9", "model.onnx")]
    [InlineData("tf_style", "model.onnx")]
    [InlineData("linear_classifier", "model.onnx")]
    [InlineData("linear_classifier", "standard.onnx")]
    public void GradWritesEveryReferenceParameterUnderItsOnnxName(string fixture, string model)
    {
        using var dir = new TempDir();
        var g = Grad(dir, fixture, model);
        var reference = Npz.Read(Fixtures.File(fixture, "reference.npz"));
        var names = reference.Keys.Where(k => k.StartsWith("grad/")).Select(k => k["grad/".Length..]).ToList();
        Assert.Equal(names.Order(), g.Keys.Order()); // Constant outputs, attribute parameters, initializers also listed as inputs
        foreach (var name in names)
        {
            Assert.Equal(reference["grad/" + name].Shape, g[name].Shape);
            double err = Numerics.RelativeL2(reference["grad/" + name].ToDouble(), g[name].ToFloat());
            Assert.True(err < 1e-4, $"{fixture}/{name}: relative L2 error {err:E2}");
        }
    }

    [Theory]
    [InlineData("model.onnx", "")]    // skl2onnx's default: LinearClassifier → Normalizer → ZipMap
    [InlineData("nozipmap.onnx", "")]
    [InlineData("ovr.onnx", "ovr/")]
    public void ScikitLearnClassifiersAsSkl2onnxWritesThem(string model, string prefix)
    {
        using var dir = new TempDir();
        var g = Grad(dir, "skl_logreg", model);
        var reference = Npz.Read(Fixtures.File("skl_logreg", "reference.npz"));
        Assert.Equal(["LinearClassifier.coefficients", "LinearClassifier.intercepts"], g.Keys.Order());
        foreach (var name in g.Keys)
        {
            double err = Numerics.RelativeL2(reference[prefix + "grad/" + name].ToDouble(), g[name].ToFloat());
            Assert.True(err < 1e-4, $"{model}/{name}: relative L2 error {err:E2}");
        }
        var (code, output, err2) = Run("eval", Fixtures.File("skl_logreg", model), "--data", Fixtures.File("skl_logreg", "data.npz"));
        Assert.True(code == 0, err2);
        Assert.Contains($"loss {reference[prefix + "loss"].ToDouble()[0]:G6}", output);
    }

    [Fact]
    public void TheZipMapOutputIsShownAndRefusedWithTheTensorToUse()
    {
        var model = Fixtures.File("skl_logreg", "model.onnx");
        var (code, output, err) = Run("inspect", model, "--json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var outputs = doc.RootElement.GetProperty("outputs").EnumerateArray().ToDictionary(o => o.GetProperty("name").GetString()!, o => o.GetProperty("type").GetString());
        Assert.Equal("seq(map(int64, float32))", outputs["output_probability"]);
        Assert.Empty(doc.RootElement.GetProperty("opsWithoutGradient").EnumerateArray());
        Assert.Equal(650, doc.RootElement.GetProperty("trainableElements").GetInt64());

        using var dir = new TempDir();
        (code, _, err) = Run("grad", model, "--data", Fixtures.File("skl_logreg", "data.npz"), "--output", "output_probability", "--out", dir.File("g.npz"));
        Assert.Equal(2, code);
        Assert.Contains("--output 'probabilities'", err);
    }

    [Fact]
    public void TheLinearClassifierAndItsStandardOpsTwinGiveTheSameGradient()
    {
        using var dir = new TempDir();
        var ml = Grad(dir, "linear_classifier", "model.onnx");
        var standard = Grad(dir, "linear_classifier", "standard.onnx");
        Assert.Equal(["LinearClassifier.coefficients", "LinearClassifier.intercepts"], ml.Keys.Order());
        Assert.Equal(ml.Keys.Order(), standard.Keys.Order());
        foreach (var name in ml.Keys)
        {
            Assert.Equal(standard[name].Shape, ml[name].Shape);
            double err = Numerics.RelativeL2(standard[name].ToDouble(), ml[name].ToFloat());
            Assert.True(err < 1e-5, $"{name}: the two models' gradients differ by {err:E2} (relative L2)");
        }
    }

    [Fact]
    public void InspectShowsTheScalarTrainableAndTheRankZeroHelpersFrozen()
    {
        var (code, output, err) = Run("inspect", Fixtures.File("const_nodes", "model.onnx"), "--json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        var parameters = doc.RootElement.GetProperty("parameters").EnumerateArray().ToDictionary(p => p.GetProperty("name").GetString()!);
        Assert.All(parameters.Values, p => Assert.Equal("constant-node", p.GetProperty("storage").GetString()));
        var scale = parameters["scale_0.w_0"];
        Assert.True(scale.GetProperty("trainable").GetBoolean());
        Assert.Equal([1], scale.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()));
        foreach (var helper in new[] { "hardswish_0.tmp_3", "hardswish_0.tmp_0", "hardswish_0.tmp_6", "hardswish_0.tmp_div" })
        {
            Assert.False(parameters[helper].GetProperty("trainable").GetBoolean());
            Assert.Equal("rank-0 constant", parameters[helper].GetProperty("reason").GetString());
        }
        Assert.Equal(64 * 32 + 32 + 1 + 32 * 10 + 10, doc.RootElement.GetProperty("trainableElements").GetInt64());
    }

    [Fact]
    public void InitializersListedAsInputsAreNotFeeds()
    {
        var (code, output, err) = Run("inspect", Fixtures.File("inputs_as_inits", "model.onnx"), "--json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        Assert.Equal(["x"], doc.RootElement.GetProperty("inputs").EnumerateArray().Select(i => i.GetProperty("name").GetString()));
        var parameters = doc.RootElement.GetProperty("parameters").EnumerateArray().ToList();
        Assert.Equal(20, parameters.Count);
        Assert.Equal(1010, doc.RootElement.GetProperty("trainableElements").GetInt64());
    }
}
