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
/// A secret whose exposure is measured before and after unlearning; with <see cref="Bits"/>, also after every iterative
/// step, stopping as soon as it falls below.
/// </summary>
public sealed record ExposureTarget(ExposureProbe Probe, double? Bits);

/// <summary>
/// One unlearning request end to end: load, measure before, update the selected parameters, measure after, write the
/// new model surgically (only the selected elements' bytes change; the input is never modified) and return the report.
/// </summary>
public static class UnlearnJob
{
    public static Report Run(UnlearnRequest request, LossSettings loss, UnlearnOptions options, ProgressCallback? progress = null, ExposureTarget? exposure = null)
    {
        using var train = Dataset.Load(request.Train);
        using var forget = Dataset.Load(request.Forget);
        using var corrected = request.Corrected is { } c ? Dataset.Load(c) : null;
        using var test = request.Test is { } t ? Dataset.Load(t) : null;
        if (request.Output is { } o && Path.GetFullPath(o) == Path.GetFullPath(request.Model))
            throw new UserError($"--out '{o}' is the input model; write the new model to another file");
        using var s = ModelSession.Open(request.Model, loss, train);
        var sets = new List<(string Name, Dataset Data)> { ("forget", forget) };
        if (corrected is not null) sets.Add(("corrected", corrected));
        if (test is not null) sets.Add(("test", test));

        Dictionary<string, Report.Metrics> Measure() => sets.ToDictionary(x => x.Name, x =>
        {
            var r = s.Loss(x.Data);
            return new Report.Metrics(r.Loss, r.Accuracy, x.Data.Rows);
        });
        var before = Measure();
        var theta0 = (float[])s.Theta.Clone();
        var exposureBefore = exposure?.Probe.Original();
        StepCheck? check = exposure is { Bits: { } bits } ? (selected, theta) =>
        {
            var e = exposure.Probe.At(s.Layout, selected, theta);
            return (e.Exposure, e.Exposure < bits);
        } : null;
        var result = Unlearner.Run(s, train, forget, corrected, options, progress, check);

        bool applied = result.Cg is not { Usable: false };
        string outcome = applied ? "updated" : $"no update: conjugate gradients stopped ({result.Cg!.Stop}); the model was left as it was";
        Dictionary<string, Report.Metrics>? after = null;
        string? outputSha = null;
        ExposureResult? exposureAfter = null;
        if (applied)
        {
            TensorPrimitives.Add(theta0, result.Update, s.Theta);
            after = Measure();
            exposureAfter = exposure?.Probe.At(s.Layout, result.Selected, s.Theta);
            if (request.Output is { } output)
            {
                WeightPatch.Write(request.Model, output, s.Layout.Patches(result.Selected, s.Theta));
                outputSha = Report.Sha256(output);
            }
            theta0.CopyTo(s.Theta, 0);
        }
        return new Report
        {
            InputModel = request.Model,
            InputSha256 = Report.Sha256(request.Model),
            OutputModel = applied ? request.Output : null,
            OutputSha256 = outputSha,
            Settings = new Dictionary<string, object?>
            {
                ["train"] = request.Train, ["forget"] = request.Forget, ["corrected"] = request.Corrected, ["test"] = request.Test,
                ["loss"] = loss.Loss.ToString(), ["output"] = s.Artifact.ModelOutput, ["select"] = options.MaskFile is null ? options.Select.ToString() : "Mask", ["mask"] = options.MaskFile,
                ["order"] = options.Smallest ? "smallest" : "largest", ["fraction"] = options.Fraction, ["count"] = options.Count,
                ["perTensor"] = options.PerTensor, ["update"] = options.Update.ToString(), ["tau"] = options.Tau, ["damping"] = options.Damping is { } d ? d : "auto",
                ["probes"] = options.Probes, ["estimator"] = options.Estimator.ToString(), ["maxIterations"] = options.MaxIterations, ["tolerance"] = options.Tolerance,
                ["hessianSamples"] = Unlearner.HessianRows(train, options), ["steps"] = options.Steps, ["utilityBudget"] = options.UtilityBudget, ["trainSize"] = options.TrainSize ?? train.Rows, ["batchSize"] = loss.BatchSize,
                ["threads"] = loss.Threads,
            },
            Seed = options.Seed,
            SelectedElements = result.Selected.Length,
            TrainableElements = s.Layout.Size,
            SelectedPerTensor = Masks.PerTensor(s.Layout, result.Selected),
            GradientDifferenceNorm = result.DeltaGNorm,
            UpdateNorm = applied ? result.UpdateNorm : 0,
            Tau = options.Update == UpdateKind.FirstOrder ? result.Tau : null,
            Cg = result.Cg is { } cg ? new Report.Solver(cg.Iterations, cg.RelativeResidual, cg.Stop, cg.Damping) : null,
            Before = before,
            After = after,
            Steps = result.Steps.Count > 0 ? result.Steps : null,
            Exposure = exposure is null ? null : new Report.SecretExposure(
                Report.ExposureFigure.Of(exposureBefore!), exposureAfter is null ? null : Report.ExposureFigure.Of(exposureAfter), exposure.Bits,
                exposure.Bits is { } target ? (exposureAfter ?? exposureBefore!).Exposure < target : null,
                exposure.Probe.Options.Prefix, exposure.Probe.Options.Secret),
            GradientEvaluations = result.GradientEvaluations,
            Seconds = result.Seconds,
            Outcome = outcome,
        };
    }
}
