using Onnx;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using Xunit.Abstractions;
using static OnnxUnlearn.Tests.Exporters.Exporter;

namespace OnnxUnlearn.Tests.Exporters;

/// <summary>
/// <c>ce</c> on a LinearClassifier with LOGISTIC scores: binary LogisticRegression as skl2onnx writes it (two rows ±w,
/// no Normalizer; also with an L1 Normalizer, and the one-row form ONNX Runtime turns into [1 − σ(s), σ(s)]), with or
/// without ZipMap, and multi-class one-vs-rest without a Normalizer. The loss must be −log p[label] of the probabilities
/// the model outputs, computed from the scores: checked against float64 closed forms, also where σ saturates in float32.
/// </summary>
public class LogisticLossTests(ITestOutputHelper log)
{
    const string Node = "LinearClassifier";

    /// <summary>
    /// A binary classifier of the skl_logreg digits (label ≥ 5) with score s = x·w + b: <paramref name="rows"/> 2 is
    /// skl2onnx's form (coefficients [−w; w], intercepts [−b, b]), 1 the single-row form.
    /// </summary>
    static ModelProto Binary(float[] w, float b, int rows, bool normalizer, bool zipmap)
    {
        float[] coefficients = rows == 2 ? [.. w.Select(v => -v), .. w] : w, intercepts = rows == 2 ? [-b, b] : [b];
        var clf = Exporter.Node(Node, ["X"], ["label", normalizer ? "probability_tensor" : "probabilities"],
            ("coefficients", coefficients), ("intercepts", intercepts), ("classlabels_ints", new long[] { 0, 1 }),
            ("post_transform", "LOGISTIC"), ("multi_class", 0L));
        clf.Domain = "ai.onnx.ml";
        clf.Name = Node;
        var g = new GraphProto { Name = "binary", Node = { clf } };
        if (normalizer)
        {
            var n = Exporter.Node("Normalizer", ["probability_tensor"], ["probabilities"], ("norm", "L1"));
            n.Domain = "ai.onnx.ml";
            g.Node.Add(n);
        }
        g.Input.Add(Value("X", DataTypes.Float, -1, w.Length));
        g.Output.Add(Value("label", DataTypes.Int64, -1));
        if (zipmap)
        {
            var z = Exporter.Node("ZipMap", ["probabilities"], ["output_probability"], ("classlabels_int64s", new long[] { 0, 1 }));
            z.Domain = "ai.onnx.ml";
            g.Node.Add(z);
            var entry = new TypeProto { MapType = new TypeProto.Types.Map { KeyType = DataTypes.Int64, ValueType = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = DataTypes.Float } } } };
            g.Output.Add(new global::Onnx.ValueInfoProto { Name = "output_probability", Type = new TypeProto { SequenceType = new TypeProto.Types.Sequence { ElemType = entry } } });
        }
        else g.Output.Add(Value("probabilities", DataTypes.Float, -1, 2));
        return Model(g, opset: 15, producer: "skl2onnx", domains: ("ai.onnx.ml", 1));
    }

    static double Softplus(double x) => x > 0 ? x + Math.Log(1 + Math.Exp(-x)) : Math.Log(1 + Math.Exp(x));
    static double Sigmoid(double x) => x >= 0 ? 1 / (1 + Math.Exp(-x)) : Math.Exp(x) / (1 + Math.Exp(x));

    /// <summary>
    /// float64 mean loss and gradient wrt (coefficients, intercepts) of −log p[label], for scores z = X·Wᵀ + b with
    /// p = σ(z) (independent), σ(z)/Σσ(z) (<paramref name="normalized"/>), or [1 − σ(s), σ(s)] for one row.
    /// </summary>
    static (double Loss, double[] GradW, double[] GradB) Reference(float[] x, long[] y, float[] w, float[] b, bool normalized)
    {
        int n = y.Length, c = b.Length, f = w.Length / c;
        double loss = 0;
        var gw = new double[w.Length];
        var gb = new double[c];
        for (int i = 0; i < n; i++)
        {
            var z = new double[c];
            for (int k = 0; k < c; k++) { z[k] = b[k]; for (int j = 0; j < f; j++) z[k] += (double)w[k * f + j] * x[i * f + j]; }
            var dz = new double[c];
            if (c == 1)
            {   // ℓ = −log σ(t·s), t = ±1 for label 1/0: softplus(−t·s), dℓ/ds = −t·σ(−t·s)
                double t = y[i] == 1 ? 1 : -1;
                loss += Softplus(-t * z[0]);
                dz[0] = -t * Sigmoid(-t * z[0]);
            }
            else
            {   // ℓ = softplus(−z_y) [+ log Σσ(z_k)]; dℓ/dz_k = −[k = y]·σ(−z_k) [+ σ(z_k)σ(−z_k)/Σσ]
                double sum = z.Sum(Sigmoid);
                loss += Softplus(-z[y[i]]) + (normalized ? Math.Log(sum) : 0);
                for (int k = 0; k < c; k++)
                    dz[k] = (k == y[i] ? -Sigmoid(-z[k]) : 0) + (normalized ? Sigmoid(z[k]) * Sigmoid(-z[k]) / sum : 0);
            }
            for (int k = 0; k < c; k++)
            {
                gb[k] += dz[k] / n;
                for (int j = 0; j < f; j++) gw[k * f + j] += dz[k] * x[i * f + j] / n;
            }
        }
        return (loss / n, gw, gb);
    }

    [Theory]
    [InlineData(2, false, false, 1.0)]  // skl2onnx's binary LogisticRegression (zipmap=False)
    [InlineData(2, false, true, 1.0)]   // ... with its default ZipMap
    [InlineData(2, true, false, 1.0)]   // multi_class='ovr': an L1 Normalizer after it
    [InlineData(1, false, false, 1.0)]  // one row: ONNX Runtime outputs [1 − σ(s), σ(s)]
    [InlineData(1, true, true, 1.0)]
    [InlineData(2, false, false, 60)]   // scores ×60: σ(s) rounds to 0 or 1 in float32
    [InlineData(2, true, false, 60)]
    [InlineData(1, false, false, 60)]
    [InlineData(1, true, false, 60)]
    public void BinaryCrossEntropyMatchesTheFloat64ClosedForm(int rows, bool normalizer, bool zipmap, double scale)
    {
        using var original = Dataset.Load(Fixtures.File("skl_logreg", "data.npz"));
        var xs = original.Arrays["X"];
        var y = original.Arrays[LossHead.LabelInput].ToInt64().Select(v => v >= 5 ? 1L : 0L).ToArray();
        var rng = new Random(11);
        var w = Random(rng, xs.Shape[1], 0.3 * scale);
        float b = (float)(0.2 * scale);
        using var dir = new TempDir();
        var path = Save(Binary(w, b, rows, normalizer, zipmap), dir.File("binary.onnx"));
        using var data = new Dataset(new Dictionary<string, NdArray> { ["X"] = xs, [LossHead.LabelInput] = NdArray.FromInt64(y, y.Length) }, "binary");
        using var s = Evaluator.Open(path, new LossSettings(), data);
        var grad = new float[s.Layout.Size];
        var r = s.Gradient(s.ReadParameters(), data, grad);

        var expectedKind = rows == 1 ? LossKind.BinarySigmoidLogLoss : normalizer ? LossKind.CrossEntropyOfSigmoids : LossKind.SigmoidLogLoss;
        Assert.Equal(expectedKind, s.Artifact().Loss);
        var stored = ModelFile.Load(path).Graph.Node.Single(n => n.OpType == Node);
        var coefficients = stored.Attribute.Single(a => a.Name == "coefficients").Floats.ToArray();
        var intercepts = stored.Attribute.Single(a => a.Name == "intercepts").Floats.ToArray();
        var x = xs.ToFloat();
        var (loss, gw, gb) = Reference(x, y, coefficients, intercepts, normalizer);
        double errW = Numerics.RelativeL2(gw, s.Layout.Of(grad, 0).ToArray()), errB = Numerics.RelativeL2(gb, s.Layout.Of(grad, 1).ToArray());
        log.WriteLine($"rows {rows}, normalizer {normalizer}, zipmap {zipmap}, ×{scale}: loss {r.Loss:F6} vs {loss:F6} (float64); " +
            $"relative L2 error coefficients {errW:E2}, intercepts {errB:E2}; accuracy {r.Accuracy:F3}");
        Assert.Equal(loss, r.Loss, 1e-5 * Math.Max(1, loss));
        Assert.True(errW < 1e-4 && errB < 1e-4, $"relative L2 error {errW:E2}, {errB:E2}");
        // Accuracy: the label ONNX Runtime would predict, σ(s) > 1/2.
        double hits = Enumerable.Range(0, y.Length).Count(i => (w.Select((v, j) => (double)v * x[i * w.Length + j]).Sum() + b > 0 ? 1 : 0) == y[i]);
        Assert.Equal(hits / y.Length, r.Accuracy!.Value, 1e-12);

        if (scale != 1) return;
        // The same loss as −log of the probabilities ONNX Runtime itself computes (so the column order is its own).
        var m = ModelFile.Load(path).Model;
        if (zipmap) m.Graph.Output.Add(new global::Onnx.ValueInfoProto { Name = "probabilities" });
        var p = Exporter.Run(m, new Dictionary<string, NdArray> { ["X"] = xs }, "probabilities");
        double ort = -Enumerable.Range(0, y.Length).Average(i => Math.Log(p[2 * i + y[i]]));
        Assert.Equal(ort, r.Loss, 1e-5);
    }

    [Fact]
    public void MultiClassSigmoidsWithoutNormalizerGiveTheLogLossOfTheLabelsSigmoid()
    {
        // One-vs-rest LOGISTIC scores, no Normalizer: the probabilities σ(z) do not sum to 1. ce is −log σ(z_label),
        // computed from z: what ce-prob gives on the probabilities (unclamped there), never a softmax of them.
        using var dir = new TempDir();
        var m = LinearModelTests.Classifier(3, 3, "LOGISTIC");
        var path = Save(m, dir.File("ovr.onnx"));
        var arrays = Samples(40, 4, 3, seed: 6, input: "X");
        using var data = new Dataset(arrays, "samples");
        (double Loss, float[] Grad, LossKind Kind) Run(LossKind loss)
        {
            using var s = Evaluator.Open(path, new LossSettings { Loss = loss }, data);
            var grad = new float[s.Layout.Size];
            return (s.Gradient(s.ReadParameters(), data, grad).Loss, grad, s.Artifact().Loss);
        }
        var ce = Run(LossKind.CrossEntropy);
        var prob = Run(LossKind.CrossEntropyProb);
        Assert.Equal(LossKind.SigmoidLogLoss, ce.Kind);
        var clf = m.Graph.Node.Single();
        var (loss, gw, gb) = Reference(arrays["X"].ToFloat(), arrays[LossHead.LabelInput].ToInt64(),
            clf.Attribute.Single(a => a.Name == "coefficients").Floats.ToArray(), clf.Attribute.Single(a => a.Name == "intercepts").Floats.ToArray(), normalized: false);
        double err = Numerics.RelativeL2([.. gw, .. gb], ce.Grad);
        log.WriteLine($"one-vs-rest without Normalizer: ce {ce.Loss:F6}, ce-prob {prob.Loss:F6}, float64 {loss:F6}; gradient relative L2 error {err:E2}");
        Assert.Equal(loss, ce.Loss, 1e-5);
        Assert.Equal(loss, prob.Loss, 1e-5);
        Assert.True(err < 1e-5, $"relative L2 error {err:E2}");
    }
}
