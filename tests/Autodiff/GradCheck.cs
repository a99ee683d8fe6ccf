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
    /// <param name="FrozenGap">With frozen decisions: the largest difference between the frozen and the plain gradient at θ0.</param>
    public sealed record Result(string Output, double MaxRelError, int Directions, string Detail, double FrozenGap = 0);

    /// <param name="wrt">Float graph inputs to differentiate with respect to (they become initializers holding their feed).</param>
    /// <param name="freezeDecisions">Check the artifact with frozen decisions (reference θ = θ0) instead, and how far its
    /// gradient at θ0 is from the plain one (<see cref="Result.FrozenGap"/>).</param>
    public static Result Check(ModelProto model, IReadOnlyDictionary<string, NdArray> feeds, IReadOnlyCollection<string> wrt,
        string? output = null, int seed = 1, int directions = 6, bool freezeDecisions = false)
    {
        var rng = new Random(seed);
        var (s, frozen, theta, feed, _, isDouble) = Open(model, feeds, wrt, output, n => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray(), freezeDecisions);
        using var _s = s;
        using var _f = frozen;
        var grad = new float[theta.Length];
        s.RunBatch(feed, theta, grad);
        double gap = 0;
        var reference = theta.Clone();
        if (frozen is not null)
        {
            if (frozen.Artifact.ReferenceInputs.Count == 0) throw new InvalidOperationException("no decision was frozen");
            var plain = (float[])grad.Clone();
            frozen.RunBatch(feed, theta, grad, reference);
            gap = plain.Zip(grad, (a, b) => Math.Abs(a - b)).DefaultIfEmpty().Max();
        }
        var checkedSession = frozen ?? s;
        var (worst, detail) = Compare(theta, grad, t => checkedSession.RunBatch(feed, t, [], reference).Loss, rng, directions, isDouble);
        foreach (var v in feed.Values) v.Dispose();
        return new Result(output ?? model.Graph.Output[0].Name, worst, directions, detail, gap);
    }

    /// <summary>The generated gradient of Σ w ⊙ output with respect to <paramref name="wrt"/> (flat, in wrt order).</summary>
    public static float[] Gradient(ModelProto model, IReadOnlyDictionary<string, NdArray> feeds, IReadOnlyCollection<string> wrt, string output, float[] w)
    {
        var (s, _, theta, feed, _, _) = Open(model, feeds, wrt, output, _ => w);
        using var _s = s;
        var grad = new float[theta.Length];
        s.RunBatch(feed, theta, grad);
        foreach (var v in feed.Values) v.Dispose();
        return grad;
    }

    /// <summary>A session over the artifact of Σ label ⊙ output, with the float inputs in <paramref name="wrt"/> made parameters.</summary>
    /// <param name="freezeDecisions">Also open the frozen-decision twin (its reference θ is given to each run).</param>
    static (ArtifactSession Session, ArtifactSession? Frozen, ParameterVector Theta, Dictionary<string, OrtValue> Feed, long[] OutDims, bool IsDouble) Open(ModelProto model,
        IReadOnlyDictionary<string, NdArray> feeds, IReadOnlyCollection<string> wrt, string? output, Func<int, float[]> weights, bool freezeDecisions = false)
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
        var all = TrainableParameters.Discover(file, output, wrt.ToList());
        var trainable = all.Where(p => wrt.Contains(p.Name)).ToList();
        var forward = OnnxUnlearn.Autodiff.Lowering.Contrib.Lower(OpsetUpgrade.Apply(m), "<gradcheck>");

        var dataInputs = Evaluator.DataInputs(forward.Graph);
        var types = forward.Graph.Input.Where(i => dataInputs.Contains(i.Name)).ToDictionary(i => i.Name, i => (TensorElementType)i.Type.TensorType.ElemType);
        var feed = types.ToDictionary(kv => kv.Key, kv => OrtFeeds.Create(feeds[kv.Key], kv.Value, kv.Key));
        TensorShapes? shapes = null; // the last probe is of the whole (possibly unrolled) model
        var artifact = TrainingArtifact.Build(file, forward, model => shapes = ShapeProbe.Run(model, [feed]), trainable, LossKind.Dot, output);
        var s = new ArtifactSession(artifact, "gradient check");
        var frozen = freezeDecisions
            ? new ArtifactSession(TrainingArtifact.Build(file, forward, model => ShapeProbe.Run(model, [feed]), trainable, LossKind.Dot, output, freezeDecisions: true), "gradient check (frozen)")
            : null;
        var outDims = shapes![output]!.Dims;
        feed[LossHead.LabelInput] = OrtValue.CreateTensorValueFromMemory(weights((int)outDims.Aggregate(1L, (a, d) => a * d)), outDims);
        return (s, frozen, ParameterVector.Read(new ParameterLayout(trainable), file), feed, outDims, isDouble);
    }

    /// <summary>
    /// The gradient of a model's mean loss over <paramref name="data"/> at its stored θ against central differences of
    /// its loss along random directions.
    /// </summary>
    public static Result CheckSession(Evaluator s, Dataset data, int seed = 1, int directions = 6)
    {
        var theta = s.ReadParameters();
        var grad = new float[s.Layout.Size];
        s.Gradient(theta, data, grad);
        var (worst, detail) = Compare(theta, grad, t => s.Gradient(t, data, []).Loss, new Random(seed), directions, isDouble: false);
        return new Result(s.Artifact().Output, worst, directions, detail);
    }

    /// <summary>Worst relative error of grad·Δθ against F(θ + Δθ/2) − F(θ − Δθ/2) over random directions.</summary>
    static (double Worst, string Detail) Compare(ParameterVector theta, float[] grad, Func<ParameterVector, double> loss, Random rng, int directions, bool isDouble)
    {
        var theta0 = theta.Span.ToArray();
        double F(float[] values) => loss(new ParameterVector(theta.Layout, values));

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
