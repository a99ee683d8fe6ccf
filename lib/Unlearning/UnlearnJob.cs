using System.Numerics.Tensors;
using OnnxUnlearn.Curvature;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using OnnxUnlearn.Selection;
using OnnxUnlearn.Text;

namespace OnnxUnlearn.Unlearning;

/// <summary>The files of one unlearning request (<see cref="Output"/> null: compute and report, write nothing).</summary>
public sealed record UnlearnRequest(string Model, string Train, string Forget, string? Corrected, string? Test, string? Output);

/// <summary>
/// A secret whose exposure is measured (on the written model) before and after unlearning; with <see cref="Bits"/>, also
/// after every iterative step, stopping as soon as it falls below. With <see cref="AuditKey"/> the report keeps an
/// HMAC-SHA256 of the secret and of its prefix; without one, nothing about them.
/// </summary>
public sealed record ExposureTarget(Vocabulary Vocab, ExposureOptions Options, double? Bits, byte[]? AuditKey = null);

/// <summary>What an unlearning run must reach to count as done (beyond an effective update), and what to write when it does not.</summary>
public sealed record UnlearnTargets
{
    /// <summary>Accuracy on the corrected set (or, without one, the forget set) after unlearning, in [0, 1].</summary>
    public double? Accuracy { get; init; }
    /// <summary>Write the new model even when a target is missed (the outcome stays <see cref="UnlearnOutcome.TargetMissed"/>).</summary>
    public bool WriteOnMiss { get; init; }
}

/// <summary>How an unlearning run ended: the one set of outcomes that front ends map to exit codes (docs/method.md#outcomes).</summary>
public enum UnlearnOutcome
{
    /// <summary>An effective update: the selected parameters changed in the stored model, and every stated target was met.</summary>
    Updated,
    /// <summary>An effective update that missed a stated target (exposure, accuracy): <see cref="Report.Missed"/> says which,
    /// with the figures. No model is written unless <see cref="UnlearnTargets.WriteOnMiss"/>.</summary>
    TargetMissed,
    /// <summary>No effective change (<see cref="Report.NoChange"/> says why): nothing is written.</summary>
    NoChange,
}

/// <summary>Why an update is not effective.</summary>
public enum NoChangeReason
{
    /// <summary>Conjugate gradients stopped before any usable direction (see <see cref="Report.Cg"/>).</summary>
    CgStopped,
    /// <summary>The update is zero: no step was accepted.</summary>
    NothingMoved,
    /// <summary>The update holds NaN or infinite values.</summary>
    NonFinite,
    /// <summary>The update is below one step of the stored format: no stored element changes.</summary>
    BelowStorageResolution,
}

/// <summary>A stated target and what the run reached.</summary>
public sealed record MissedTarget(string Target, double Wanted, double? Reached);

/// <summary>
/// One unlearning request end to end: load, measure before, update the selected parameters, measure after, decide the
/// outcome, write the new model surgically (only the selected elements' bytes change; the input is never modified) and
/// return the audit record.
/// </summary>
public static class UnlearnJob
{
    public static Report Run(UnlearnRequest request, LossSettings loss, UnlearnOptions options, ProgressCallback? progress = null,
        ExposureTarget? exposure = null, UnlearnTargets? targets = null)
    {
        var started = DateTime.UtcNow;
        if (request.Output is { } o && Path.GetFullPath(o) == Path.GetFullPath(request.Model))
            throw new UserError($"the output file '{o}' is the input model; write the new model to another file");
        // The model first: it says where each input carries its samples, and what it rules out before any data is read.
        var file = ModelFile.Load(request.Model, loss.ExternalData);
        Evaluator.Preflight(file, loss);
        using var train = Dataset.Load(request.Train, file);
        using var forget = Dataset.Load(request.Forget, file);
        using var corrected = request.Corrected is { } c ? Dataset.Load(c, file) : null;
        using var test = request.Test is { } t ? Dataset.Load(t, file) : null;
        using var model = Evaluator.Open(file, loss, train);
        var report = Run(model, train, forget, corrected, test, options, progress, exposure, targets, new FileModelWriter(request.Model, request.Output, loss.ExternalData), started);
        var files = new (string Name, string? Path, Dataset? Data)[] { ("train", request.Train, train), ("forget", request.Forget, forget), ("corrected", request.Corrected, corrected), ("test", request.Test, test) };
        return report with
        {
            InputModel = Path.GetFullPath(request.Model),
            InputSha256 = Report.Sha256(request.Model),
            OutputSha256 = report.OutputModel is { } written ? Report.Sha256(written) : null,
            Data = files.Where(f => f.Path is not null).ToDictionary(f => f.Name, f => new Report.DataFile(Path.GetFullPath(f.Path!), Report.Sha256(f.Path!), f.Data!.Rows)),
        };
    }

    /// <summary>
    /// An unlearning run on a compiled model and data in memory; it reads no file itself. <paramref name="writer"/>
    /// measures and writes the new model (<see cref="FileModelWriter"/>, <see cref="MemoryModelWriter"/>; null: neither —
    /// then a below-resolution update is not detected). The caller records the digests of what it read and wrote.
    /// </summary>
    public static Report Run(Evaluator model, Dataset train, Dataset forget, Dataset? corrected, Dataset? test, UnlearnOptions options,
        ProgressCallback? progress = null, ExposureTarget? exposure = null, UnlearnTargets? targets = null, IModelWriter? writer = null, DateTime? started = null)
    {
        var start = started ?? DateTime.UtcNow;
        targets ??= new UnlearnTargets();
        var sets = new List<(string Name, Dataset Data)> { ("forget", forget) };
        if (corrected is not null) sets.Add(("corrected", corrected));
        if (test is not null) sets.Add(("test", test));
        Dictionary<string, Report.Metrics> Measure(ParameterVector theta) => sets.ToDictionary(x => x.Name, x =>
        {
            var r = model.Loss(theta, x.Data);
            return new Report.Metrics(r.Loss, r.Accuracy, x.Data.Rows, model.FiguresForward);
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

        var theta = new ParameterVector(model.Layout);
        TensorPrimitives.Add(theta0.Span, result.Update, theta.Span);
        var patches = model.Layout.Patches(result.Selected, theta.Span);
        NoChangeReason? noChange = !result.Applied ? NoChangeReason.CgStopped
            : !TensorPrimitives.IsFiniteAll<float>(result.Update) ? NoChangeReason.NonFinite
            : TensorPrimitives.MaxMagnitude<float>(result.Update) == 0 ? NoChangeReason.NothingMoved
            : null;
        var measured = noChange is null ? writer?.Measure(patches) : null;
        if (measured is { ElementsChanged: 0 }) noChange = NoChangeReason.BelowStorageResolution;

        Dictionary<string, Report.Metrics>? after = null;
        ExposureResult? exposureAfter = null;
        var missed = new List<MissedTarget>();
        if (noChange is null)
        {
            after = Measure(theta);
            exposureAfter = probe?.At(result.Selected, theta.Span);
            if (exposure is { Bits: { } target } && !(exposureAfter!.Exposure < target)) missed.Add(new MissedTarget("exposure", target, exposureAfter.Exposure));
            if (targets.Accuracy is { } wanted)
            {
                var set = after.GetValueOrDefault("corrected") ?? after["forget"];
                if (set.Accuracy is not { } acc || acc < wanted) missed.Add(new MissedTarget("accuracy", wanted, set.Accuracy));
            }
        }
        var outcome = noChange is not null ? UnlearnOutcome.NoChange : missed.Count > 0 ? UnlearnOutcome.TargetMissed : UnlearnOutcome.Updated;
        bool write = outcome == UnlearnOutcome.Updated || outcome == UnlearnOutcome.TargetMissed && targets.WriteOnMiss;
        var written = write ? writer?.Write(patches) : null;
        var changes = written ?? measured;
        string? Hmac(string text) => exposure?.AuditKey is { } key ? Report.HmacSha256(key, text) : null;
        return new Report
        {
            Environment = Report.RunEnvironment.Current(model.Settings.Threads),
            StartedUtc = start,
            EndedUtc = DateTime.UtcNow,
            InputModel = model.File.Path,
            OutputModel = written?.OutputPath,
            Written = changes is null ? null : new Report.WriteBack(changes.ElementsChanged, changes.BytesChanged, changes.Tensors.Count(t => t.ElementsChanged > 0)),
            Data = new (string Name, Dataset? Data)[] { ("train", train), ("forget", forget), ("corrected", corrected), ("test", test) }
                .Where(d => d.Data is not null).ToDictionary(d => d.Name, d => new Report.DataFile(d.Data!.Source, null, d.Data.Rows)),
            Settings = SettingsOf(model, options, train, result.Selected.Length, exposure, targets),
            Seed = options.Seed,
            SelectedElements = result.Selected.Length,
            TrainableElements = model.Layout.Size,
            SelectedPerTensor = Masks.PerTensor(model.Layout, result.Selected),
            TensorElements = model.Layout.Parameters.ToDictionary(p => p.Name, p => p.Elements),
            ScoreHistogram = result.Scores is { } scores ? Histogram(options.Select == SelectionKind.Newton ? "newton" : options.Score!.Value.ToString().ToLowerInvariant(), scores, result.Selected) : null,
            GradientForward = model.GradientForward,
            RoundingCancelled = RoundingCancelled(model.Layout, result.Selected, theta0.Span, theta.Span),
            QuantizedMoved = QuantizedMoved(model.Layout, result.Selected, theta0.Span, theta.Span),
            GradientDifferenceNorm = result.DeltaGNorm,
            UpdateNorm = noChange is null ? result.UpdateNorm : 0,
            Tau = options.Update == UpdateKind.FirstOrder ? result.Tau : null,
            Cg = result.Cg is { } cg ? new Report.Solver(cg.Iterations, cg.RelativeResidual, cg.Stop, cg.Damping, cg.StopValue) : null,
            Before = before,
            After = after,
            Steps = result.Steps.Count > 0 ? result.Steps : null,
            Exposure = exposure is null ? null : new Report.SecretExposure(
                Report.ExposureFigure.Of(exposureBefore!), exposureAfter is null ? null : Report.ExposureFigure.Of(exposureAfter), exposure.Bits,
                exposure.Bits is { } bitsTarget ? (exposureAfter ?? exposureBefore!).Exposure < bitsTarget : null,
                exposureBefore!.FreeSlots, exposureBefore.Log2SpaceSize, Hmac(exposure.Options.Secret), Hmac(exposure.Options.Prefix)),
            GradientEvaluations = result.GradientEvaluations,
            Seconds = result.Seconds,
            Outcome = outcome,
            NoChange = noChange,
            Missed = missed.Count > 0 ? missed : null,
        };
    }

    /// <summary>Selected elements of quantized weights whose integer code <paramref name="after"/> changes (at least one step).</summary>
    internal static long? QuantizedMoved(ParameterLayout layout, int[] selected, ReadOnlySpan<float> before, ReadOnlySpan<float> after)
    {
        if (!layout.Parameters.Any(p => p.Grid is not null)) return null;
        long moved = 0;
        foreach (var i in selected)
        {
            var (t, element) = layout.Locate(i);
            if (layout.Parameters[t].Grid is { } grid && grid.Code(after[i], element) != grid.Code(before[i], element)) moved++;
        }
        return moved;
    }

    /// <summary>
    /// Selected elements that <paramref name="after"/> moves away from <paramref name="before"/> but whose stored value stays:
    /// rounded to the parameter's stored type as the write-back rounds (<see cref="WeightPatch"/>: to nearest even), new
    /// equals old. <paramref name="before"/> holds the stored values (exact in float32).
    /// </summary>
    internal static long RoundingCancelled(ParameterLayout layout, int[] selected, ReadOnlySpan<float> before, ReadOnlySpan<float> after)
    {
        long cancelled = 0;
        foreach (var i in selected)
        {
            if (after[i] == before[i]) continue;
            var (t, element) = layout.Locate(i);
            var p = layout.Parameters[t];
            if (Autodiff.Precision.Round(p, element, after[i]) == Autodiff.Precision.Round(p, element, before[i])) cancelled++;
        }
        return cancelled;
    }

    /// <summary>40 log-spaced bins of |score| (scores span decades), the selection's threshold and the count of NaN/∞ scores.</summary>
    static Report.ScoreDistribution Histogram(string kind, float[] scores, int[] selected)
    {
        var finite = scores.Where(float.IsFinite).Select(s => (double)Math.Abs(s)).Where(s => s > 0).ToArray();
        long nonFinite = scores.LongLength - scores.Count(float.IsFinite);
        if (finite.Length == 0) return new(kind, [], [], null, nonFinite);
        double lo = Math.Log10(finite.Min()), hi = Math.Log10(finite.Max());
        if (hi - lo < 1e-9) hi = lo + 1;
        const int bins = 40;
        var edges = Enumerable.Range(0, bins + 1).Select(i => Math.Pow(10, lo + (hi - lo) * i / bins)).ToArray();
        var counts = new long[bins];
        foreach (var s in finite) counts[Math.Clamp((int)((Math.Log10(s) - lo) / (hi - lo) * bins), 0, bins - 1)]++;
        double? threshold = selected.Length > 0 ? selected.Select(i => (double)Math.Abs(scores[i])).Where(double.IsFinite).DefaultIfEmpty(double.NaN).Min() : null;
        return new(kind, edges, counts, threshold is double t && double.IsFinite(t) ? t : null, nonFinite);
    }

    /// <summary>Every setting of the run, resolved: what was asked for, or the default that was used.</summary>
    static Dictionary<string, object> SettingsOf(Evaluator model, UnlearnOptions o, Dataset train, int selected, ExposureTarget? exposure, UnlearnTargets targets)
    {
        var loss = model.Settings;
        var s = new Dictionary<string, object>
        {
            ["loss"] = loss.Loss.ToString(), ["output"] = model.ModelOutput,
            ["params"] = loss.Params is { } p ? p : "all trainable", ["frozen"] = loss.Frozen is { } f ? f : "none",
            ["select"] = o.MaskFile is not null ? "Mask" : o.Select.ToString(),
            ["order"] = o.Smallest ? "smallest" : "largest",
            ["count"] = selected, ["fraction"] = o.Fraction ?? (o.Count is null ? Masks.DefaultFraction : selected / (double)Math.Max(1, model.Layout.Size)),
            ["perTensor"] = o.PerTensor, ["update"] = o.Update.ToString(),
            ["tau"] = o.Tau is { } tau ? tau : "cauchy", ["damping"] = o.Damping is { } d ? d : "auto",
            ["probes"] = o.Probes, ["estimator"] = o.Estimator.ToString(), ["maxIterations"] = o.MaxIterations, ["tolerance"] = o.Tolerance,
            ["hessianSamples"] = Unlearner.HessianRows(train, o), ["steps"] = o.Steps is { } k ? k : "auto", ["maxSteps"] = o.Steps ?? UnlearnOptions.AutoSteps,
            ["utilityBudget"] = o.UtilityBudget, ["retainSamples"] = o.RetainSamples, ["trainSize"] = o.TrainSize ?? train.Rows,
            ["batchSize"] = loss.BatchSize, ["threads"] = loss.Threads, ["writeOnMiss"] = targets.WriteOnMiss,
        };
        if (o.MaskFile is { } mask) s["mask"] = Path.GetFullPath(mask);
        if (o.ScoresFile is { } scores) { s["scores"] = Path.GetFullPath(scores); s["scoresSha256"] = Report.Sha256(scores); s["probes"] = "from the scores file"; s["estimator"] = "from the scores file"; }
        if (loss.IgnoreIndex is { } ignore) s["ignoreIndex"] = ignore;
        if (targets.Accuracy is { } acc) s["requireAccuracy"] = acc;
        if (exposure is not null)
        {
            var e = exposure.Options;
            if (exposure.Bits is { } bits) s["targetExposure"] = bits;
            // the format is recorded only when given: one derived from the secret shows its literal characters
            s["format"] = e.Format ?? "derived from the secret (not recorded)";
            s["alphabet"] = e.Alphabet; s["candidates"] = e.Samples; s["exposureBudget"] = e.Budget; s["exposureSeed"] = e.Seed;
            s["auditKey"] = exposure.AuditKey is null ? "none (no digest of the secret recorded)" : "given (HMAC-SHA256 recorded)";
        }
        return s;
    }
}
