using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Autodiff.Lowering;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Tests.Autodiff;
using Xunit.Abstractions;

namespace OnnxUnlearn.Tests.Corpus;

/// <summary>
/// The gradient of a random linear function of each corpus model's first float output, with respect to its float
/// inputs, against central finite differences (<see cref="GradCheck"/>), for every model whose ops all have gradient
/// rules. Prints the coverage: passed / eligible and why the others were left out.
/// </summary>
public class GradientCorpusTests(ITestOutputHelper output)
{
    /// <summary>
    /// Models where finite differences do not measure the derivative: the test inputs sit on a kink, a step or a domain
    /// edge by construction, the output is random, or the inputs are so large that the check's relative steps leave the
    /// linear regime. Each needs a reason; tolerances stay as they are.
    /// </summary>
    static readonly Dictionary<string, string> Excluded = new()
    {
        ["node/test_elu_example"] = "x = [-1, 0, 1]: Elu has a kink at 0 (slopes α and 1)",
        ["node/test_selu_example"] = "x = [-1, 0, 1]: Selu has a kink at 0 (slopes αγ and γ)",
        ["node/test_leakyrelu_example"] = "x = [-1, 0, 1]: LeakyRelu has a kink at 0",
        ["node/test_thresholdedrelu_example"] = "x contains 2.0 = alpha, the step of ThresholdedRelu",
        ["node/test_pow"] = "x contains 0, the edge of Pow's domain for non-integer exponents: a step below it gives NaN",
        ["node/test_softmax_large_number"] = "rows at 10000..10003: the check's steps scale with |x| (10 to 100), far past the curvature of softmax",
        ["node/test_logsoftmax_large_number"] = "rows at 10000..10003: the check's steps scale with |x| (10 to 100), far past the curvature of log-softmax",
        ["node/test_softmax_large_number_expanded"] = "rows at 10000..10003: the check's steps scale with |x| (10 to 100), far past the curvature of softmax",
        ["node/test_logsoftmax_large_number_expanded"] = "rows at 10000..10003: the check's steps scale with |x| (10 to 100), far past the curvature of log-softmax",
        ["node/test_reduce_min_default_axes_keepdims_example"] = "the minimum 1 appears twice: at a tie the minimum has no derivative",
        ["node/test_einsum_batch_diagonal"] = "a diagonal ('...ii->...i') is refused with a clear error: only products and contractions are supported",
        ["node/test_resize_downsample_scales_cubic"] = "Resize mode cubic has no gradient rule yet (refused with a clear error)",
        ["node/test_resize_downsample_scales_cubic_A_n0p5_exclude_outside"] = "Resize mode cubic has no gradient rule yet (refused with a clear error)",
        ["node/test_resize_downsample_scales_cubic_align_corners"] = "Resize mode cubic has no gradient rule yet (refused with a clear error)",
        ["node/test_resize_downsample_sizes_cubic"] = "Resize mode cubic has no gradient rule yet (refused with a clear error)",
        ["node/test_resize_upsample_scales_cubic"] = "Resize mode cubic has no gradient rule yet (refused with a clear error)",
        ["node/test_resize_upsample_scales_cubic_A_n0p5_exclude_outside"] = "Resize mode cubic has no gradient rule yet (refused with a clear error)",
        ["node/test_resize_upsample_scales_cubic_align_corners"] = "Resize mode cubic has no gradient rule yet (refused with a clear error)",
        ["node/test_resize_upsample_scales_cubic_asymmetric"] = "Resize mode cubic has no gradient rule yet (refused with a clear error)",
        ["node/test_resize_upsample_sizes_cubic"] = "Resize mode cubic has no gradient rule yet (refused with a clear error)",
        ["node/test_resize_tf_crop_and_resize"] = "Resize tf_crop_and_resize has no gradient rule yet (refused with a clear error)",
        ["pytorch-converted/test_MaxPool1d_stride_padding_dilation"] = "windows of 60 dilated elements over 10^6 random inputs: near-ties within a window make every finite-difference step switch the maximum",
        ["pytorch-converted/test_MaxPool2d_stride_padding_dilation"] = "windows of 60x80 dilated elements over 10^6 random inputs: near-ties within a window make every finite-difference step switch the maximum",
        ["node/test_scatternd_multiply"] = "ScatterND reduction 'mul' has no gradient rule (refused with a clear error): with repeated indices the update gradient needs the product of the other updates, which only a zero-unsafe division gives",
        ["node/test_acosh_example"] = "x contains 1, where acosh's derivative 1/√(x²−1) is infinite",
        ["node/test_dynamicquantizelinear"] = "the checked float output is y_scale = (max(x, 0) − min(x, 0))/255, which moves with x; DynamicQuantizeLinear's rule holds scale and zero point constant by design (straight-through estimator for the codes, docs/method.md#quantized-weights)",
        ["node/test_dynamicquantizelinear_max_adjusted"] = "the checked float output is y_scale = (max(x, 0) − min(x, 0))/255, which moves with x; DynamicQuantizeLinear's rule holds scale and zero point constant by design (straight-through estimator for the codes, docs/method.md#quantized-weights)",
        ["node/test_dynamicquantizelinear_min_adjusted"] = "the checked float output is y_scale = (max(x, 0) − min(x, 0))/255, which moves with x; DynamicQuantizeLinear's rule holds scale and zero point constant by design (straight-through estimator for the codes, docs/method.md#quantized-weights)",
        ["node/test_training_dropout"] = "training-mode Dropout draws a new random mask every run",
        ["node/test_training_dropout_default"] = "training-mode Dropout draws a new random mask every run",
        ["node/test_training_dropout_default_mask"] = "training-mode Dropout draws a new random mask every run",
        ["node/test_training_dropout_mask"] = "training-mode Dropout draws a new random mask every run",
    };

    static readonly HashSet<int> Feedable = [DataTypes.Float, DataTypes.Double, DataTypes.Int64, DataTypes.Int32, DataTypes.UInt8, DataTypes.Bool];

    /// <summary>
    /// 682 of 682 eligible pass on Debian's libonnx-testdata 1.12: the floor sits just below, so that a registry or check
    /// that skips (nearly) everything fails.
    /// </summary>
    const int MinPassed = 680;

    [CorpusFact]
    public void GradientsMatchFiniteDifferences()
    {
        var cases = CorpusCase.All();
        var clock = Stopwatch.StartNew();
        var results = new ConcurrentBag<(CorpusCase Case, Outcome Outcome)>();
        Parallel.ForEach(cases, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, c => results.Add((c, Check(c))));

        var passed = results.Where(r => r.Outcome.Status == Status.Passed).ToList();
        var failed = results.Where(r => r.Outcome.Status == Status.Failed).OrderBy(r => r.Case.Id).ToList();
        var skipped = results.Where(r => r.Outcome.Status == Status.Skipped).ToList();
        output.WriteLine($"gradients over the ONNX test corpus: {passed.Count} passed / {passed.Count + failed.Count} eligible; {skipped.Count} skipped ({clock.Elapsed.TotalSeconds:F1} s)");
        output.WriteLine("skipped:");
        foreach (var g in skipped.GroupBy(r => r.Outcome.Reason).OrderByDescending(g => g.Count()).ThenBy(g => g.Key))
            output.WriteLine($"  {g.Key} ({g.Count()})" + (g.Count() <= 8 ? ": " + string.Join(", ", g.Select(r => r.Case.Id).Order()) : ""));
        var missing = skipped.SelectMany(r => r.Outcome.MissingOps).GroupBy(o => o).OrderByDescending(g => g.Count()).ThenBy(g => g.Key).ToList();
        if (missing.Count > 0)
            output.WriteLine("missing rules (models needing each): " + string.Join(", ", missing.Select(g => $"{g.Key} ({g.Count()})")));
        if (failed.Count > 0)
        {
            output.WriteLine("failed:");
            foreach (var r in failed) output.WriteLine($"  {r.Case.Id} [{string.Join(" ", r.Outcome.Ops)}]: {r.Outcome.Reason}");
        }
        output.WriteLine("passed: " + string.Join(", ", passed.Select(r => r.Case.Id).Order()));
        Assert.True(failed.Count == 0, $"{failed.Count} of {passed.Count + failed.Count} eligible corpus models fail the gradient check:\n" +
            string.Join("\n", failed.Select(r => $"{r.Case.Id} [{string.Join(" ", r.Outcome.Ops)}]: {r.Outcome.Reason}")));
        Assert.True(passed.Count >= MinPassed, $"only {passed.Count} corpus models passed the gradient check, expected at least {MinPassed}");
    }

    enum Status { Passed, Failed, Skipped }

    sealed record Outcome(Status Status, string Reason, string[] Ops, string[] MissingOps)
    {
        public static Outcome Skip(string reason, string[]? missing = null) => new(Status.Skipped, reason, [], missing ?? []);
    }

    static Outcome Check(CorpusCase c)
    {
        var model = c.LoadModel();
        var g = model.Graph;
        if (model.OpsetImport.Any(o => !Domains.IsDefault(o.Domain) && o.Domain != "ai.onnx.ml")) return Outcome.Skip("ops outside the default and ai.onnx.ml domains");
        var inputs = CorpusCase.FedInputs(g);
        if (inputs.Any(i => i.Type?.TensorType is null)) return Outcome.Skip("non-tensor inputs (sequences, optionals)");
        var wrt = inputs.Where(i => i.Type.TensorType.ElemType is DataTypes.Float or DataTypes.Double).Select(i => i.Name).ToList();
        if (wrt.Count == 0) return Outcome.Skip("no float32/float64 inputs");
        if (inputs.Any(i => !Feedable.Contains(i.Type.TensorType.ElemType))) return Outcome.Skip("inputs of a type the gradient check cannot feed (float16, strings, small ints)");
        var outputName = g.Output.FirstOrDefault(o => o.Type?.TensorType?.ElemType is DataTypes.Float or DataTypes.Double)?.Name;
        if (outputName is null) return Outcome.Skip("no float32/float64 output");

        ModelProto upgraded;
        try { upgraded = OpsetUpgrade.Apply(model); }
        catch (UserError e) { return Outcome.Skip($"opset upgrade refused: {e.Message}"); }
        var ops = CorpusCase.Ops(upgraded.Graph).Distinct().ToList();
        // Recurrent ops have no rule of their own: they are unrolled into ops that have rules.
        var missing = ops.Where(o => GradientRegistry.Find(o.Op, o.Domain) is null && !Recurrent.Is(o.Op, o.Domain)).Select(o => Domains.OpName(o.Domain, o.Op)).Order().ToArray();
        if (missing.Length > 0) return Outcome.Skip("missing gradient rules", missing);
        var opNames = ops.Select(o => o.Op).Order().ToArray();

        if (c.InputFiles != inputs.Count) return Outcome.Skip("test data does not feed every input");
        var feeds = new Dictionary<string, NdArray>();
        for (int i = 0; i < inputs.Count; i++) feeds[inputs[i].Name] = TensorFile.Read(c.InputPath(i)).Array;
        // Inputs that reach the output only through non-differentiable slots (Clip bounds, Dropout ratio) get no gradient by design.
        var differentiable = DifferentiablePath(upgraded.Graph, outputName);
        wrt = wrt.Where(w => feeds[w].Length > 0 && differentiable.Contains(w)).ToList();
        if (wrt.Count == 0) return Outcome.Skip("no non-empty float input on a differentiable path to the output");
        if (wrt.Any(w => feeds[w].ToDouble().Any(v => !double.IsFinite(v) || Math.Abs(v) > 1e30)))
            return Outcome.Skip("float inputs not finite or beyond float32 range (uninitialised test data)");

        // The model must run (upgraded: ONNX Runtime lacks many opset-6 kernels) to a finite output.
        try
        {
            var ortFeeds = CorpusRunner.Feeds(upgraded, c);
            try
            {
                var results = CorpusRunner.Run(upgraded, ortFeeds);
                int k = upgraded.Graph.Output.Select(o => o.Name).ToList().IndexOf(outputName);
                bool finite = k < 0 || AllFinite(results[k]);
                foreach (var v in results) v.Dispose();
                if (!finite) return Outcome.Skip("output not finite at the test inputs (NaN/Inf: finite differences undefined)");
            }
            finally { foreach (var v in ortFeeds.Values) v.Dispose(); }
        }
        catch (OnnxRuntimeException e) { return Outcome.Skip($"ORT cannot run the model ({CorpusRunner.FirstLine(e.Message)})"); }
        if (Excluded.TryGetValue(c.Id, out var why)) return Outcome.Skip($"excluded: {why}");

        try
        {
            // Double bounds only where the whole computation is: a float32 output rounds like float32.
            bool isDouble = g.Input.Where(i => wrt.Contains(i.Name)).All(i => i.Type.TensorType.ElemType == DataTypes.Double)
                && g.Output.First(o => o.Name == outputName).Type.TensorType.ElemType == DataTypes.Double;
            var r = GradCheck.Check(model, feeds, wrt, outputName);
            return r.MaxRelError <= GradCheck.Tolerance(isDouble)
                ? new Outcome(Status.Passed, "", opNames, [])
                : new Outcome(Status.Failed, $"relative error {r.MaxRelError:E2} ({r.Detail})", opNames, []);
        }
        catch (Exception e)
        {
            return new Outcome(Status.Failed, $"{e.GetType().Name}: {CorpusRunner.FirstLine(e.Message)}", opNames, []);
        }
    }

    /// <summary>Values from which <paramref name="output"/> is reached through differentiable input slots of the rules.</summary>
    static HashSet<string> DifferentiablePath(GraphProto g, string output)
    {
        var reach = new HashSet<string> { output };
        for (int n = g.Node.Count - 1; n >= 0; n--)
        {
            var node = g.Node[n];
            if (!node.Output.Any(reach.Contains)) continue;
            var rule = GradientRegistry.Find(node.OpType, node.Domain);
            for (int i = 0; i < node.Input.Count; i++)
                if (node.Input[i].Length > 0 && (rule is null || rule.Differentiable(i))) reach.Add(node.Input[i]);
        }
        return reach;
    }

    static bool AllFinite(OrtValue v)
    {
        if (!v.IsTensor) return true;
        return v.GetTensorTypeAndShape().ElementDataType switch
        {
            TensorElementType.Float => v.GetTensorDataAsSpan<float>().ToArray().All(float.IsFinite),
            TensorElementType.Double => v.GetTensorDataAsSpan<double>().ToArray().All(double.IsFinite),
            _ => true,
        };
    }
}
