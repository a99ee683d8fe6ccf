using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Curvature;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using Xunit.Abstractions;

namespace OnnxUnlearn.Tests.Autodiff;

/// <summary>
/// Float16 and bfloat16 models (issue 15): fp16_cnn (the digits CNN as a float16 export) and bf16_mlp (bfloat16 weights
/// behind Cast nodes, one a Constant node). Their float64 references are in <see cref="FixtureGradientTests"/>.
/// </summary>
public class ReducedPrecisionTests(ITestOutputHelper log)
{
    static Evaluator Open(string fixture, Dataset data) =>
        Evaluator.Open(Fixtures.File(fixture, "model.onnx"), new LossSettings { BatchSize = 24 }, data);

    [Theory]
    [InlineData("fp16_cnn", 14, DataTypes.Float16)]
    [InlineData("bf16_mlp", 4, DataTypes.BFloat16)]
    public void StoredWeightsAreTrainable(string fixture, int trainable, int type)
    {
        var parameters = TrainableParameters.Discover(ModelFile.Load(Fixtures.File(fixture, "model.onnx")));
        Assert.Equal(trainable, parameters.Count(p => p.Trainable));
        Assert.All(parameters, p => Assert.Equal(type, p.DataType));
        Assert.All(parameters.Where(p => !p.Trainable), p => Assert.Contains("BatchNormalization running statistic", p.WhyNot));
    }

    [Fact]
    public void BFloat16ConstantNodeIsAParameter() =>
        Assert.Equal((ParameterStorage.Constant, true), TrainableParameters.Discover(ModelFile.Load(Fixtures.File("bf16_mlp", "model.onnx")))
            .Where(p => p.Name == "fc2.bias").Select(p => (p.Storage, p.Trainable)).Single());

    /// <summary>
    /// The float32 artifact's gradient against central differences of ONNX Runtime's forward of the float16 model as stored
    /// (the loss-only artifact): each tensor's element of largest |g| moved by ±8 float16 ulps. The model holds float16 values
    /// only, so a step is whole ulps: 8 ulps are 2^-7 of the value, far above the step a float32 difference would take,
    /// and the difference carries the O(h²) curvature term and the ReLU/MaxPool kinks crossed within ±h (measured: at most
    /// 4.7e-3 of |g|; 4 ulps give 3.6e-3, 32 ulps 9.6e-3). Bar: 1e-2 of |g| + 1e-4 — float16-level agreement.
    /// </summary>
    [Fact]
    public void Float16GradientMatchesFiniteDifferencesOfTheFloat16Forward()
    {
        using var data = Dataset.Load(Fixtures.File("fp16_cnn", "data.npz"));
        using var s = Open("fp16_cnn", data);
        var theta = s.ReadParameters();
        var grad = new float[s.Layout.Size];
        s.Gradient(theta, data, grad);
        double worst = 0;
        for (int t = 0; t < s.Layout.Count; t++)
        {
            var g = s.Layout.Of(grad.AsSpan(), t);
            int i = s.Layout.Offset(t) + TensorIndexOfMax(g);
            var stored = (Half)theta.Span[i];
            Half up = stored, down = stored;
            for (int k = 0; k < 8; k++) { up = Half.BitIncrement(up); down = Half.BitDecrement(down); }
            var shifted = theta.Clone();
            shifted.Span[i] = (float)up;
            double plus = s.Loss(shifted, data).Loss;
            shifted.Span[i] = (float)down;
            double minus = s.Loss(shifted, data).Loss;
            double fd = (plus - minus) / ((double)(float)up - (float)down);
            double err = Math.Abs(fd - grad[i]);
            worst = Math.Max(worst, err / Math.Abs(grad[i]));
            log.WriteLine($"{s.Layout.Parameters[t].Name}[{i - s.Layout.Offset(t)}]: gradient {grad[i]:E4}, differences {fd:E4}, relative error {err / Math.Abs(grad[i]):E2}");
            Assert.True(err <= 1e-2 * Math.Abs(grad[i]) + 1e-4, $"{s.Layout.Parameters[t].Name}: gradient {grad[i]:E4}, float16 differences {fd:E4}");
        }
        log.WriteLine($"largest relative error {worst:E2}");
    }

    static int TensorIndexOfMax(ReadOnlySpan<float> g)
    {
        int best = 0;
        for (int k = 1; k < g.Length; k++) if (Math.Abs(g[k]) > Math.Abs(g[best])) best = k;
        return best;
    }

    /// <summary>The data of a float16 model may be float32 or float16 arrays: float32 values are fed rounded to nearest
    /// float16, as the model takes them. The digits (k/16) are float16 values; moved by less than half a float16 ulp
    /// (×(1 + 2^-13)) they round back, so loss and gradient are bit for bit those of the float16 data.</summary>
    [Fact]
    public void Float32DataIsFedAsFloat16()
    {
        using var half = Dataset.Load(Fixtures.File("fp16_cnn", "data.npz"));
        var x = ((float[])half.Arrays["x"].Data).Select(v => v * (1 + MathF.Pow(2, -13))).ToArray();
        Assert.Contains(x, v => (float)(Half)v != v);
        using var single = new Dataset(new Dictionary<string, NdArray> { ["x"] = NdArray.FromFloat(x, half.Arrays["x"].Shape), ["label"] = half.Arrays["label"] }, "float32 digits");
        using var s = Open("fp16_cnn", half);
        var theta = s.ReadParameters();
        float[] g16 = new float[s.Layout.Size], g32 = new float[s.Layout.Size];
        var r16 = s.Gradient(theta, half, g16);
        var r32 = s.Gradient(theta, single, g32);
        Assert.Equal(r16.Loss, r32.Loss);
        Assert.Equal(g16, g32);
        Assert.Equal(s.Loss(theta, half).Loss, s.Loss(theta, single).Loss);
    }

    [Fact]
    public void DataBeyondTheFloat16RangeIsRefused()
    {
        using var half = Dataset.Load(Fixtures.File("fp16_cnn", "data.npz"));
        var x = (float[])((float[])half.Arrays["x"].Data).Clone();
        x[64 * 5 + 7] = 70000f;
        using var data = new Dataset(new Dictionary<string, NdArray> { ["x"] = NdArray.FromFloat(x, half.Arrays["x"].Shape), ["label"] = half.Arrays["label"] }, "big.npz");
        using var s = Open("fp16_cnn", half);
        var e = Assert.Throws<UserError>(() => s.Loss(s.ReadParameters(), data));
        Assert.Contains("'big.npz' array 'x' holds 70000 at row 5, column 7", e.Message);
        Assert.Contains("float16", e.Message);
    }

    /// <summary>
    /// Loss figures are those of the float16 values as stored, run by ONNX Runtime's float16 CPU kernels (which compute in
    /// float32: its InsertCastTransformer). ONNX Runtime's own run of the model file differs from them by float16 roundings
    /// the artifact cannot keep: the logits it returns are float16 (their rounding moves the loss by 2e-4 relative here), and
    /// its fusions of float16 constants (BatchNormalization into Conv) round the fused weights (another 2e-4). Bar: 1e-3
    /// relative to ONNX Runtime's run of the model file, cross-entropy taken in float64 of its float16 logits; the figure
    /// itself is the float32 forward of the stored values (1e-6 of the float64 reference).
    /// </summary>
    [Fact]
    public void LossFiguresAreThoseOfTheFloat16ModelAsStored()
    {
        using var data = Dataset.Load(Fixtures.File("fp16_cnn", "data.npz"));
        using var s = Open("fp16_cnn", data);
        Assert.Equal("float16 as stored", s.FiguresForward);
        Assert.Equal("float32 artifact (float16 widened)", s.GradientForward);
        var x = (float[])data.Arrays["x"].Data;
        var labels = data.Arrays["label"].ToInt64();
        using var session = new InferenceSession(Fixtures.File("fp16_cnn", "model.onnx"));
        using var input = OrtValue.CreateTensorValueFromMemory(x.Select(v => (Float16)v).ToArray(), data.Arrays["x"].Shape);
        using var outputs = session.Run(new RunOptions(), ["x"], [input], ["logits"]);
        Assert.Equal(TensorElementType.Float16, outputs[0].GetTensorTypeAndShape().ElementDataType);
        var logits = outputs[0].GetTensorDataAsSpan<Float16>().ToArray().Select(v => (double)(float)v).ToArray();
        double loss = 0;
        for (int n = 0; n < labels.Length; n++)
        {
            var row = logits.AsSpan(10 * n, 10).ToArray();
            double max = row.Max();
            loss += max + Math.Log(row.Sum(z => Math.Exp(z - max))) - row[labels[n]];
        }
        loss /= labels.Length;
        var figure = s.Loss(s.ReadParameters(), data);
        log.WriteLine($"ONNX Runtime float16 forward: {loss:G9}; loss-only artifact {figure.Loss:G9}");
        Assert.True(Math.Abs(loss - figure.Loss) <= 1e-3 * loss, $"ONNX Runtime's run of the model: {loss:G9}, the figure {figure.Loss:G9}");
        Assert.Equal(Npz.Read(Fixtures.File("fp16_cnn", "reference.npz"))["loss"].ToDouble()[0], figure.Loss, 1e-6);
    }

    /// <summary>
    /// Hessian-vector products of bf16_mlp (finite differences of the gradient with a step of 1e-3·rms(θ), below one bfloat16
    /// ulp for most elements) equal those of the float32 mlp holding the same values: θ stays float32 in the artifact. Were θ
    /// rounded to bfloat16 before the forward, most of the step would round away.
    /// </summary>
    [Fact]
    public void BFloat16HessianVectorProductsAreThoseOfTheFloat32Model()
    {
        using var data = Dataset.Load(Fixtures.File("bf16_mlp", "data.npz"));
        using var bf16 = Open("bf16_mlp", data);
        var theta = bf16.ReadParameters();
        // The mlp fixture (float32 initializers, same architecture and names) with bf16_mlp's values.
        var mlp = ModelFile.Load(Fixtures.File("mlp", "model.onnx"));
        foreach (var init in mlp.Graph.Initializer)
            init.RawData = Google.Protobuf.ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(
                bf16.Layout.Of(theta.Span, bf16.Layout.IndexOf(init.Name))).ToArray());
        using var single = Evaluator.Open(mlp, new LossSettings { BatchSize = 24 }, data);
        Assert.Equal(theta.Span.ToArray(), single.ReadParameters().Span.ToArray());

        var v = new float[theta.Length];
        var rng = new Random(3);
        for (int i = 0; i < v.Length; i++) v[i] = rng.NextSingle() - 0.5f;
        float[] hv = new float[v.Length], reference = new float[v.Length];
        new Hvp(bf16, data).Apply(theta, v, hv);
        new Hvp(single, data).Apply(single.ReadParameters(), v, reference);
        double err = Numerics.RelativeL2(reference, hv);
        log.WriteLine($"relative L2 difference of H·v: {err:E2}, ‖Hv‖ = {Numerics.L2Norm(reference.Select(x => (double)x).ToArray()):E3}");
        Assert.True(err < 1e-5, $"relative L2 difference {err:E2}");
    }
}
