using OnnxUnlearn.Data;
using OnnxUnlearn.Runtime;

namespace OnnxUnlearn.Tests.Autodiff;

/// <summary>Gradients of the mean cross-entropy over each fixture's samples against PyTorch float64 autograd.</summary>
public class FixtureGradientTests
{
    [Theory]
    [InlineData("logreg")]
    [InlineData("mlp")]
    [InlineData("cnn")]
    [InlineData("transformer")]
    [InlineData("mlp_external")]
    [InlineData("charlstm")]
    public void MatchesPyTorchFloat64(string fixture)
    {
        var reference = Npz.Read(Fixtures.File(fixture, "reference.npz"));
        using var data = Dataset.Load(Fixtures.File(fixture, "data.npz"));
        using var s = ModelSession.Open(Fixtures.File(fixture, "model.onnx"), new LossSettings { BatchSize = 24 }, data);
        var grad = new float[s.Layout.Size];
        var result = s.Run(data, grad);

        Assert.Equal(reference["loss"].ToDouble()[0], result.Loss, 1e-5);
        Assert.Equal(reference.Keys.Count(k => k.StartsWith("grad/")), s.Layout.Count);
        for (int i = 0; i < s.Layout.Count; i++)
        {
            var name = s.Layout.Parameters[i].Name;
            var expected = reference["grad/" + name].ToDouble();
            var actual = s.Layout.Of(grad, i).ToArray();
            double err = Math.Sqrt(expected.Zip(actual, (e, a) => (e - a) * (e - a)).Sum());
            double norm = Math.Sqrt(expected.Sum(e => e * e));
            Assert.True(err <= 1e-4 * norm + 1e-7, $"{fixture}/{name}: relative L2 error {err / norm:E2} (‖g‖ = {norm:E2})");
        }
    }
}
