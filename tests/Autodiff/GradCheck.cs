using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;

namespace OnnxUnlearn.Tests.Autodiff;

/// <summary>
/// Checks a model's generated gradient against central finite differences run by ONNX Runtime on the same graph: the
/// loss is a random linear function Σ w ⊙ Y of one output, differentiated with respect to chosen float inputs.
/// Double-typed models get tight bounds; float32 models bounds that allow for float32 rounding.
/// </summary>
public static class GradCheck
{
    public sealed record Result(string Output, double MaxRelError, int Directions, string Detail);

    /// <param name="wrt">Float graph inputs to differentiate with respect to (they become initializers holding their feed).</param>
    public static Result Check(ModelProto model, IReadOnlyDictionary<string, NdArray> feeds, IReadOnlyCollection<string> wrt,
        string? output = null, int seed = 1, int directions = 6)
    {
        var m = model.Clone();
        var g = m.Graph;
        output ??= g.Output[0].Name;
        bool isDouble = false;
        foreach (var name in wrt)
        {
            var input = g.Input.First(i => i.Name == name);
            isDouble |= input.Type.TensorType.ElemType == DataTypes.Double;
            g.Input.Remove(input);
            var t = TensorFile.ToTensorProto(name, feeds[name]);
            if (input.Type.TensorType.ElemType == DataTypes.Double) t = TensorFile.ToTensorProto(name, NdArray.FromDouble(feeds[name].ToDouble(), feeds[name].Shape));
            g.Initializer.Add(t);
        }
        var file = new ModelFile(m, "<gradcheck>", Path.GetTempPath());
        var all = Parameters.Discover(file, output, wrt.ToList());
        var trainable = all.Where(p => wrt.Contains(p.Name)).ToList();
        var forward = OpsetUpgrade.Apply(m);

        var dataInputs = ModelSession.DataInputs(forward.Graph);
        var types = forward.Graph.Input.Where(i => dataInputs.Contains(i.Name)).ToDictionary(i => i.Name, i => (TensorElementType)i.Type.TensorType.ElemType);
        var feed = types.ToDictionary(kv => kv.Key, kv => OrtFeeds.Create(feeds[kv.Key], kv.Value, kv.Key));
        var shapes = ShapeProbe.Run(forward, [feed]);
        var artifact = TrainingArtifact.Build(file, forward, shapes, trainable, LossKind.Dot, output);
        using var s = new ModelSession(file, new LossSettings { Loss = LossKind.Dot }, all, artifact);

        var rng = new Random(seed);
        var outDims = shapes[output]!.Dims;
        var w = Enumerable.Range(0, (int)outDims.Aggregate(1L, (a, d) => a * d)).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        feed[LossHead.LabelInput] = OrtValue.CreateTensorValueFromMemory(w, outDims);

        var grad = new float[s.Layout.Size];
        s.RunBatch(feed, grad);
        var theta0 = (float[])s.Theta.Clone();
        var (worst, detail) = Compare(s, grad, () => s.RunBatch(feed, []).Loss, rng, directions, isDouble);
        theta0.CopyTo(s.Theta, 0);
        foreach (var v in feed.Values) v.Dispose();
        return new Result(output, worst, directions, detail);
    }

    /// <summary>
    /// The gradient of a session's mean loss over <paramref name="data"/> (<see cref="ModelSession.Run"/>) against central
    /// differences along random directions of its parameter buffer: θ ± εv written into <see cref="ModelSession.Theta"/>.
    /// </summary>
    public static Result CheckSession(ModelSession s, Dataset data, int seed = 1, int directions = 6)
    {
        var grad = new float[s.Layout.Size];
        s.Run(data, grad);
        var theta0 = (float[])s.Theta.Clone();
        var (worst, detail) = Compare(s, grad, () => s.Run(data, []).Loss, new Random(seed), directions, isDouble: false);
        theta0.CopyTo(s.Theta, 0);
        return new Result(s.Artifact.Output, worst, directions, detail);
    }

    /// <summary>Worst relative error of grad·Δθ against F(θ + Δθ/2) − F(θ − Δθ/2) over random directions; leaves Theta shifted.</summary>
    static (double Worst, string Detail) Compare(ModelSession s, float[] grad, Func<double> loss, Random rng, int directions, bool isDouble)
    {
        var theta0 = (float[])s.Theta.Clone();
        double F(float[] theta) { theta.CopyTo(s.Theta, 0); return loss(); }

        double worst = 0; string detail = "";
        for (int k = 0; k < directions; k++)
        {
            var v = Enumerable.Range(0, theta0.Length).Select(_ => rng.NextDouble() * 2 - 1).ToArray();
            // Try shrinking steps: a step that crosses a kink (ReLU, max) is a property of the check, not of the rule.
            double best = double.MaxValue; string bestDetail = "";
            foreach (double scale in isDouble ? new[] { 1e-4, 1e-6 } : [1e-2, 3e-3, 1e-3])
            {
                var plus = theta0.Select((t, i) => (float)(t + scale * Math.Max(1, Math.Abs(t)) * v[i])).ToArray();
                var minus = theta0.Select((t, i) => (float)(t - scale * Math.Max(1, Math.Abs(t)) * v[i])).ToArray();
                double fd = F(plus) - F(minus);
                double an = 0, mag = 0;
                for (int i = 0; i < theta0.Length; i++) { double d = (double)plus[i] - minus[i]; an += grad[i] * d; mag += Math.Abs(grad[i] * d); }
                double err = Math.Abs(fd - an) / Math.Max(Math.Abs(an), Math.Max(mag, 1e-3 * scale));
                if (err < best) { best = err; bestDetail = $"direction {k}: finite difference {fd:E4}, gradient {an:E4}"; }
            }
            if (best > worst) { worst = best; detail = bestDetail; }
        }
        return (worst, detail);
    }

    /// <summary>Tolerance on <see cref="Result.MaxRelError"/> by precision.</summary>
    public static double Tolerance(bool isDouble) => isDouble ? 1e-4 : 2e-2;
}
