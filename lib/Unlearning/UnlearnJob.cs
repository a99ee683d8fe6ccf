using System.Numerics.Tensors;
using OnnxUnlearn.Curvature;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using OnnxUnlearn.Selection;
using OnnxUnlearn.Text;

namespace OnnxUnlearn.Unlearning;

/// <summary>The files of one unlearning request.</summary>
public sealed record UnlearnRequest(string Model, string Train, string Forget, string? Corrected, string? Test, string? Output);

/// <summary>
/// A secret whose exposure is measured (on the written model) before and after unlearning; with <see cref="Bits"/>, also
/// after every iterative step, stopping as soon as it falls below.
/// </summary>
public sealed record ExposureTarget(Vocabulary Vocab, ExposureOptions Options, double? Bits);

/// <summary>What an unlearning run must reach to count as done (beyond an effective update).</summary>
public sealed record UnlearnTargets
{
    /// <summary>Accuracy on the corrected set (or, without one, the forget set) after unlearning, in [0, 1].</summary>
    public double? Accuracy { get; init; }
}

/// <summary>How an unlearning run ended: the one set of outcomes that front ends map to exit codes.</summary>
public enum UnlearnOutcome
{
    /// <summary>The selected parameters were updated, and every stated target was met.</summary>
    Updated,
    /// <summary>The parameters were updated but a stated target (exposure, accuracy) was missed: <see cref="Report.Missed"/> says which.</summary>
    TargetMissed,
    /// <summary>No update was made (conjugate gradients gave no usable direction); the model stays as it was.</summary>
    NoChange,
}

/// <summary>A stated target and what the run reached.</summary>
public sealed record MissedTarget(string Target, double Wanted, double? Reached);

/// <summary>
/// One unlearning request end to end: load, measure before, update the selected parameters, measure after, write the
/// new model surgically (only the selected elements' bytes change; the input is never modified) and return the report.
/// </summary>
public static class UnlearnJob
{
    public static Report Run(UnlearnRequest request, LossSettings loss, UnlearnOptions options, ProgressCallback? progress = null,
        ExposureTarget? exposure = null, UnlearnTargets? targets = null)
    {
        using var train = Dataset.Load(request.Train);
        using var forget = Dataset.Load(request.Forget);
        using var corrected = request.Corrected is { } c ? Dataset.Load(c) : null;
        using var test = request.Test is { } t ? Dataset.Load(t) : null;
        if (request.Output is { } o && Path.GetFullPath(o) == Path.GetFullPath(request.Model))
            throw new UserError($"the output file '{o}' is the input model; write the new model to another file");
        using var model = Evaluator.Open(request.Model, loss, train);
        var report = Run(model, train, forget, corrected, test, options, progress, exposure, targets, request.Output is { } output
            ? patches => WeightPatch.Write(request.Model, output, patches)
            : null);
        return report with
        {
            InputSha256 = Report.Sha256(request.Model),
            OutputSha256 = report.OutputModel is { } written ? Report.Sha256(written) : null,
            Settings = new Dictionary<string, object?> { ["train"] = request.Train, ["forget"] = request.Forget, ["corrected"] = request.Corrected, ["test"] = request.Test }
                .Concat(SettingsOf(model, options, train)).ToDictionary(),
        };
    }

    /// <summary>
    /// An unlearning run on a compiled model and data in memory; it touches no file itself. <paramref name="write"/>
    /// receives the patches of the selected elements and writes the new model (<see cref="WeightPatch.Write"/> to a file,
    /// <see cref="WeightPatch.Apply"/> in memory); it is not called when no update was made. The caller records the
    /// digests of what it read and wrote (<see cref="Report.InputSha256"/>, <see cref="Report.OutputSha256"/>).
    /// </summary>
    public static Report Run(Evaluator model, Dataset train, Dataset forget, Dataset? corrected, Dataset? test, UnlearnOptions options,
        ProgressCallback? progress = null, ExposureTarget? exposure = null, UnlearnTargets? targets = null,
        Func<IReadOnlyDictionary<string, TensorPatch>, PatchSummary>? write = null)
    {
        var sets = new List<(string Name, Dataset Data)> { ("forget", forget) };
        if (corrected is not null) sets.Add(("corrected", corrected));
        if (test is not null) sets.Add(("test", test));
        Dictionary<string, Report.Metrics> Measure(ParameterVector theta) => sets.ToDictionary(x => x.Name, x =>
        {
            var r = model.Loss(theta, x.Data);
            return new Report.Metrics(r.Loss, r.Accuracy, x.Data.Rows);
        });
        var theta0 = model.ReadParameters();
        var before = Measure(theta0);
        var probe = exposure is null ? null : new ExposureProbe(model, exposure.Vocab, exposure.Options);
        var exposureBefore = probe?.Original();
        StepCheck? check = exposure is { Bits: { } bits } ? (selected, theta) =>
        {
            var e = probe!.At(selected, theta.Span);
            return (e.Exposure, e.Exposure < bits);
        } : null;
        var result = Unlearner.Run(model, theta0, train, forget, corrected, options, progress, check);

        Dictionary<string, Report.Metrics>? after = null;
        PatchSummary? written = null;
        ExposureResult? exposureAfter = null;
        if (result.Applied)
        {
            var theta = new ParameterVector(model.Layout);
            TensorPrimitives.Add(theta0.Span, result.Update, theta.Span);
            after = Measure(theta);
            exposureAfter = probe?.At(result.Selected, theta.Span);
            written = write?.Invoke(model.Layout.Patches(result.Selected, theta.Span));
        }
        var missed = new List<MissedTarget>();
        if (exposure is { Bits: { } target } && (exposureAfter ?? exposureBefore!).Exposure is var bitsAfter && !(bitsAfter < target))
            missed.Add(new MissedTarget("exposure", target, bitsAfter));
        if (targets?.Accuracy is { } wanted && result.Applied)
        {
            var set = after!.GetValueOrDefault("corrected") ?? after!.GetValueOrDefault("forget");
            if (set?.Accuracy is not { } acc || acc < wanted) missed.Add(new MissedTarget("accuracy", wanted, set?.Accuracy));
        }
        var outcome = !result.Applied ? UnlearnOutcome.NoChange : missed.Count > 0 ? UnlearnOutcome.TargetMissed : UnlearnOutcome.Updated;
        return new Report
        {
            InputModel = model.File.Path,
            OutputModel = written?.OutputPath,
            Written = written is null ? null : new Report.WriteBack(written.ElementsChanged, written.BytesChanged, written.Tensors.Count(t => t.ElementsChanged > 0)),
            Settings = SettingsOf(model, options, train),
            Seed = options.Seed,
            SelectedElements = result.Selected.Length,
            TrainableElements = model.Layout.Size,
            SelectedPerTensor = Masks.PerTensor(model.Layout, result.Selected),
            GradientDifferenceNorm = result.DeltaGNorm,
            UpdateNorm = result.Applied ? result.UpdateNorm : 0,
            Tau = options.Update == UpdateKind.FirstOrder ? result.Tau : null,
            Cg = result.Cg is { } cg ? new Report.Solver(cg.Iterations, cg.RelativeResidual, cg.Stop, cg.Damping, cg.StopValue) : null,
            Before = before,
            After = after,
            Steps = result.Steps.Count > 0 ? result.Steps : null,
            Exposure = exposure is null ? null : new Report.SecretExposure(
                Report.ExposureFigure.Of(exposureBefore!), exposureAfter is null ? null : Report.ExposureFigure.Of(exposureAfter), exposure.Bits,
                exposure.Bits is { } bitsTarget ? (exposureAfter ?? exposureBefore!).Exposure < bitsTarget : null,
                exposure.Options.Prefix, exposure.Options.Secret),
            GradientEvaluations = result.GradientEvaluations,
            Seconds = result.Seconds,
            Outcome = outcome,
            Missed = missed.Count > 0 ? missed : null,
        };
    }

    static Dictionary<string, object?> SettingsOf(Evaluator model, UnlearnOptions options, Dataset train)
    {
        var loss = model.Settings;
        return new()
        {
            ["loss"] = loss.Loss.ToString(), ["output"] = model.ModelOutput, ["select"] = options.MaskFile is null && options.Mask is null ? options.Select.ToString() : "Mask", ["mask"] = options.MaskFile,
            ["order"] = options.Smallest ? "smallest" : "largest", ["fraction"] = options.Fraction, ["count"] = options.Count,
            ["perTensor"] = options.PerTensor, ["update"] = options.Update.ToString(), ["tau"] = options.Tau, ["damping"] = options.Damping is { } d ? d : "auto",
            ["probes"] = options.Probes, ["estimator"] = options.Estimator.ToString(), ["maxIterations"] = options.MaxIterations, ["tolerance"] = options.Tolerance,
            ["hessianSamples"] = Unlearner.HessianRows(train, options), ["steps"] = options.Steps, ["utilityBudget"] = options.UtilityBudget, ["trainSize"] = options.TrainSize ?? train.Rows, ["batchSize"] = loss.BatchSize,
            ["threads"] = loss.Threads,
        };
    }
}
