using OnnxUnlearn.Data;
using OnnxUnlearn.Runtime;
using Xunit.Abstractions;

namespace OnnxUnlearn.Tests.Autodiff;

/// <summary>Gradients of the mean cross-entropy over each fixture's samples against PyTorch float64 autograd.</summary>
public class FixtureGradientTests(ITestOutputHelper log)
{
    [Theory]
    [InlineData("logreg")]
    [InlineData("mlp")]
    [InlineData("cnn")]
    [InlineData("transformer")]
    [InlineData("mlp_external")]
    [InlineData("charlstm")]
    // Other exporters' habits (issue 7): every weight a Constant node (paddle2onnx), initializers listed as graph inputs,
    // opset-9 forms, tf2onnx style (NHWC Reshape, folded BatchNorm, asymmetric pads, one floor shared by three Max nodes,
    // MaxPool ties that change the floor's gradient), and an ai.onnx.ml LinearClassifier next to the same model in standard ops.
    [InlineData("const_nodes")]
    [InlineData("inputs_as_inits")]
    [InlineData("opset9")]
    [InlineData("tf_style")]
    [InlineData("linear_classifier")]
    [InlineData("linear_classifier", "standard.onnx")]
    // Reduced precision (issue 15): a float16 export and bfloat16 weights behind Cast nodes, differentiated in float32 (the
    // reference: the float32-upcast model with the stored values, float64).
    [InlineData("fp16_cnn")]
    [InlineData("bf16_mlp")]
    public void MatchesPyTorchFloat64(string fixture, string model = "model.onnx")
    {
        var reference = Npz.Read(Fixtures.File(fixture, "reference.npz"));
        using var data = Dataset.Load(Fixtures.File(fixture, "data.npz"));
        using var s = Evaluator.Open(Fixtures.File(fixture, model), new LossSettings { BatchSize = 24 }, data);
        var grad = new float[s.Layout.Size];
        var result = s.Gradient(s.ReadParameters(), data, grad);

        Assert.Equal(reference["loss"].ToDouble()[0], result.Loss, 1e-5);
        Assert.Equal(reference.Keys.Count(k => k.StartsWith("grad/")), s.Layout.Count);
        double worst = 0;
        for (int i = 0; i < s.Layout.Count; i++)
        {
            var name = s.Layout.Parameters[i].Name;
            var expected = reference["grad/" + name].ToDouble();
            var actual = s.Layout.Of(grad, i).ToArray();
            double err = Numerics.L2Distance(expected, actual);
            double norm = Numerics.L2Norm(expected);
            if (norm > 1e-7) worst = Math.Max(worst, err / norm); // (a gradient that is zero in exact arithmetic has no relative error)
            Assert.True(err <= 1e-4 * norm + 1e-7, $"{fixture}/{name}: relative L2 error {err / norm:E2} (‖g‖ = {norm:E2})");
        }
        log.WriteLine($"{fixture}/{model}: largest relative L2 error over {s.Layout.Count} tensors (those with ‖g‖ > 1e-7) {worst:E2}");
    }
}
