using System.CommandLine;
using System.Text.Json;
using OnnxUnlearn.Unlearning;
using Spectre.Console;

namespace OnnxUnlearn.Cli.Commands;

public static class UnlearnCommand
{
    /// <summary>Settings whose flag here is not their kebab-cased name (the exposure probe's).</summary>
    static readonly Dictionary<string, string> Flags = new() { ["Samples"] = "--candidates", ["Budget"] = "--exposure-budget" };

    public static Command Create()
    {
        var model = Cli.ModelArgument();
        var train = new Option<string>("--train") { Description = ".npz of the training set (or a sample of it): defines n and the Hessian", Required = true };
        var forget = new Option<string>("--forget") { Description = ".npz of the affected samples Z, as they were trained on", Required = true };
        var corrected = new Option<string?>("--corrected") { Description = ".npz of the same samples corrected (Z̃); omit to delete Z" };
        var test = new Option<string?>("--test") { Description = ".npz of held-out samples, measured before and after" };
        var output = new Option<string?>("--out") { Description = "new model file (only the selected elements' bytes differ from the input)" };
        var report = new Option<string?>("--report") { Description = "write the JSON report here" };
        var select = new Option<string>("--select") { Description = "hessian (sharp parameters), newton (Δg²/(H + λ): forgetting per curvature), all, last-layer, random, gradient (|Δg|), fisher, magnitude (|θ|)", DefaultValueFactory = _ => "hessian" };
        var mask = new Option<string?>("--mask") { Description = ".npz of 0/1 masks keyed by parameter name (from select): update exactly these elements; replaces --select" };
        var scoresFile = new Option<string?>("--scores") { Description = ".npz of per-element scores keyed by parameter name (from sharpness or merge): ranked like --select hessian instead of estimating the Hessian diagonal; the report records the file's sha256" };
        var order = new Option<string>("--order") { Description = "largest or smallest scores", DefaultValueFactory = _ => "largest" };
        var fraction = new Option<double?>("--fraction") { Description = "share of trainable elements to update (default 0.05)" };
        var count = new Option<long?>("--count") { Description = "number of elements to update" };
        var perTensor = new Option<bool>("--per-tensor") { Description = "take the top share of each tensor instead of a global top-k" };
        var update = new Option<string>("--update") { Description = "first-order or second-order", DefaultValueFactory = _ => "first-order" };
        var tau = new Option<double?>("--tau") { Description = "first-order step (default: the Cauchy step ‖Δg_S‖²/Δg_SᵀHΔg_S)" };
        var damping = new Option<double?>("--damping") { Description = "λ in (H_SS + λI) d = Δg_S (default: automatic — 1e-3, raised ×10 up to 1e3 while CG meets negative curvature or diverges)" };
        var probes = new Option<int>("--probes") { Description = "Hessian-vector products for the diagonal estimate of --select hessian", DefaultValueFactory = _ => 60 };
        var estimator = new Option<string>("--estimator") { Description = "diag++ (Hutchinson with a low-rank sketch: far lower variance) or hutchinson", DefaultValueFactory = _ => "diag++" };
        var seed = new Option<int>("--seed") { Description = "seed of every random choice (probes, random selection, samples)", DefaultValueFactory = _ => 0 };
        var iterations = new Option<int>("--max-iterations") { Description = "CG iteration cap", DefaultValueFactory = _ => 50 };
        var tolerance = new Option<double>("--tolerance") { Description = "CG relative residual tolerance", DefaultValueFactory = _ => 1e-3 };
        var hessianSamples = new Option<int?>("--hessian-samples") { Description = "seeded sample of the training set used for the Hessian" };
        var trainSize = new Option<long?>("--train-size") { Description = "n, the size of the original training set (default: samples in --train)" };
        var requireAccuracy = new Option<double?>("--require-accuracy") { Description = "a target: accuracy on the corrected set (or forget set) after unlearning, in [0, 1]; missed: exit 3 and no model written (unless --write-on-miss)" };
        var writeOnMiss = new Option<bool>("--write-on-miss") { Description = "write the new model to --out even when a target (--require-accuracy, --target-exposure) is missed; the exit code is still 3" };
        var steps = new Option<string>("--steps") { Description = $"update steps: 1 = the method's single update; K or auto (at most {UnlearnOptions.AutoSteps}) = repeat it, recomputing Δg (and curvature) and searching the step size each time, until the objective stops improving, --utility-budget binds or --target-exposure is reached", DefaultValueFactory = _ => "auto" };
        var patience = new Option<int>("--decision-patience") { Description = "with --corrected and a class loss: once steps have moved predictions of the forget or corrected samples, stop after this many steps in a row that move none further, keeping the step that moved the most (0: off)", DefaultValueFactory = _ => new UnlearnOptions().DecisionPatience };
        var budget = new Option<double>("--utility-budget") { Description = "largest relative rise of the loss on a retain sample of --train during iterative steps", DefaultValueFactory = _ => 0.02 };
        var targetExposure = new Option<double?>("--target-exposure") { Description = "stop the steps as soon as the secret's exposure (bits, measured on the patched model) is below this; needs --vocab, --prefix, --secret" };
        var vocab = new Option<string?>("--vocab") { Description = "VOCAB.json of a next-token model: with --prefix and --secret, the secret's exposure is measured before and after" };
        var prefix = new Option<string?>("--prefix") { Description = "text the secret follows, e.g. \"my credit card number is \"" };
        var secret = new Option<string?>("--secret") { Description = $"the secret whose exposure to measure (never written to the report or output; prefer --secret-file or {Secrets.SecretVariable})" };
        var secretFile = Secrets.SecretFile();
        var auditKey = Secrets.AuditKeyFile();
        var format = new Option<string?>("--format") { Description = "candidate format of the secret (d = any digit; see exposure --help)" };
        var alphabet = new Option<string>("--alphabet") { Description = "characters a d slot takes", DefaultValueFactory = _ => Text.SecretSpace.Digits };
        var candidates = new Option<int>("--candidates") { Description = "random candidates for the exposure estimate", DefaultValueFactory = _ => 10_000 };
        var exposureBudget = new Option<long>("--exposure-budget") { Description = "most search nodes for an exact exposure rank before estimating", DefaultValueFactory = _ => 20_000 };
        var json = Cli.JsonFlag();
        var loss = new LossOptions();
        var c = new Command("unlearn", "Revert features or labels of training samples by updating only the selected (by default: sharpest) parameters; writes a new model surgically. Exit codes: 0 an effective update, 2 bad input, 3 a stated target missed (no model written unless --write-on-miss), 4 no effective change (nothing written).");
        c.Arguments.Add(model);
        foreach (Option opt in new Option[] { train, forget, corrected, test, output, report, select, mask, scoresFile, order, fraction, count, perTensor, update, tau, damping, probes, estimator, seed, iterations, tolerance, hessianSamples, trainSize, requireAccuracy, writeOnMiss, steps, patience, budget, targetExposure, vocab, prefix, secret, secretFile, auditKey, format, alphabet, candidates, exposureBudget, json })
            c.Options.Add(opt);
        loss.AddTo(c);
        c.SetAction(r => Cli.Guard(() =>
        {
            var options = new UnlearnOptions
            {
                Select = Cli.ParseEnum<SelectionKind>(r.GetValue(select)!, "--select"),
                Smallest = r.GetValue(order) switch { "largest" => false, "smallest" => true, var x => throw new UserError($"--order must be largest or smallest, got '{x}'") },
                Fraction = r.GetValue(fraction), Count = r.GetValue(count), PerTensor = r.GetValue(perTensor),
                Update = Cli.ParseEnum<UpdateKind>(r.GetValue(update)!, "--update"),
                Tau = r.GetValue(tau), Damping = r.GetValue(damping), Probes = r.GetValue(probes), Estimator = Cli.ParseEstimator(r.GetValue(estimator)!), Seed = r.GetValue(seed),
                MaxIterations = r.GetValue(iterations), Tolerance = r.GetValue(tolerance),
                HessianSamples = r.GetValue(hessianSamples), TrainSize = r.GetValue(trainSize), MaskFile = r.GetValue(mask), ScoresFile = r.GetValue(scoresFile),
                Steps = ParseSteps(r.GetValue(steps)!), DecisionPatience = r.GetValue(patience) >= 0 ? r.GetValue(patience) : throw new UserError($"--decision-patience must be 0 or more, got {r.GetValue(patience)}"), UtilityBudget = r.GetValue(budget),
            };
            if (options.MaskFile is not null && options.ScoresFile is not null) throw new UserError("--mask and --scores both choose the elements to update; give one");
            if (options.ScoresFile is not null && options.Select != SelectionKind.Hessian)
                throw new UserError($"--scores replaces the Hessian estimate of --select hessian; drop --select {r.GetValue(select)} or --scores");
            var lossSettings = loss.Read(r);
            ExposureTarget? exposure = null;
            if (Secrets.Read(r, secret, secretFile) is { } secretText)
            {
                var v = Text.Vocabulary.Load(r.GetValue(vocab) ?? throw new UserError("--secret needs --vocab (VOCAB.json mapping characters to token ids) to measure the exposure"));
                var e = new Text.ExposureOptions
                {
                    Prefix = r.GetValue(prefix) ?? throw new UserError("--secret needs --prefix, the text the secret follows"),
                    Secret = secretText, Format = r.GetValue(format), Alphabet = r.GetValue(alphabet)!,
                    Samples = r.GetValue(candidates), Seed = r.GetValue(seed), Budget = r.GetValue(exposureBudget),
                };
                Text.SecretSpace.Parse(e.Format, e.Secret, e.Alphabet);
                exposure = new ExposureTarget(v, e, r.GetValue(targetExposure), Secrets.AuditKey(r, auditKey));
            }
            else if (r.GetValue(targetExposure) is not null)
                throw new UserError("--target-exposure needs --vocab, --prefix and --secret (and --format if the secret is not all digits) to measure the exposure");
            var files = new UnlearnRequest(r.GetValue(model)!, r.GetValue(train)!, r.GetValue(forget)!, r.GetValue(corrected), r.GetValue(test), r.GetValue(output));
            var targets = new UnlearnTargets { Accuracy = r.GetValue(requireAccuracy), WriteOnMiss = r.GetValue(writeOnMiss) };
            var result = Progress.Run(p => UnlearnJob.Run(files, lossSettings, options, p, exposure, targets));
            if (r.GetValue(report) is { } path)
                AtomicFile.Write(path, s => JsonSerializer.Serialize(s, result, Cli.Json));
            if (r.GetValue(json)) Cli.WriteJson(result); else Print(result);
            switch (result.Outcome)
            {
                case UnlearnOutcome.NoChange:
                    Console.Error.WriteLine("no effective change, nothing written: " + Describe(result.NoChange!.Value, result.Cg));
                    return Cli.NoChange;
                case UnlearnOutcome.TargetMissed:
                    foreach (var m in result.Missed!)
                        Console.Error.WriteLine(m.Target == "exposure"
                            ? $"target not met: exposure {m.Reached:F2} bits >= --target-exposure {m.Wanted}"
                            : $"target not met: accuracy {(m.Reached is { } a ? a.ToString("P2") : "n/a")} < --require-accuracy {m.Wanted:P2}");
                    Console.Error.WriteLine(result.OutputModel is null ? "no model written (--write-on-miss writes it anyway)" : $"model written anyway (--write-on-miss): {result.OutputModel}");
                    return Cli.TargetMissed;
                default: return Cli.Ok;
            }
        }, Flags));
        return c;
    }

    /// <summary>Why CG stopped, in the CLI's words (with the flag that helps).</summary>
    public static string Describe(CgStop stop, double? value = null) => stop switch
    {
        CgStop.Converged => "converged",
        CgStop.ZeroRightHandSide => "right-hand side is zero",
        CgStop.IterationCap => "iteration cap reached",
        CgStop.NegativeCurvature => $"negative curvature (pᵀ(H+λI)p = {value:E3}); raise --damping",
        CgStop.NonFiniteProduct => "Hessian-vector product was NaN/Inf",
        CgStop.NonFiniteResidual => "residual became NaN/Inf",
        CgStop.Diverging => $"diverging (residual {value:E2}); raise --damping",
        _ => stop.ToString(),
    };

    static string Describe(NoChangeReason why, Report.Solver? cg) => why switch
    {
        NoChangeReason.CgStopped => $"conjugate gradients stopped ({Describe(cg!.Stop, cg.StopValue)}) before any usable direction",
        NoChangeReason.NothingMoved => "no step was accepted, so no parameter moved (see the steps; a larger --utility-budget allows more)",
        NoChangeReason.NonFinite => "the update holds NaN or infinite values",
        NoChangeReason.BelowStorageResolution => "the update is smaller than one step of the model's stored number format (for int8/uint8 quantized weights: below one quantization step): no stored value changes",
        _ => why.ToString(),
    };

    static string Describe(UnlearnStep x) => x.Outcome switch
    {
        StepOutcome.Start => "start",
        StepOutcome.Accepted => "accepted",
        StepOutcome.TargetReached => "accepted; target reached",
        StepOutcome.NoImprovement => "stopped: no step size lowers the objective within the utility budget",
        StepOutcome.CgFailed => $"stopped: CG {(x.Cg is { } c ? Describe(c) : "failed")}",
        StepOutcome.DecisionsSettled => $"stopped: the last steps moved no prediction of the forget or corrected samples; kept step {x.Kept}",
        _ => x.Outcome.ToString(),
    };

    static int? ParseSteps(string value) => value == "auto" ? null
        : int.TryParse(value, out int k) && k >= 1 ? k : throw new UserError($"--steps must be auto or a whole number of steps (1 or more), got '{value}'");

    static void Print(Report r)
    {
        string outcome = r.Outcome switch { UnlearnOutcome.NoChange => "no effective change", UnlearnOutcome.TargetMissed => "target missed", _ => "updated" };
        AnsiConsole.MarkupLine($"[bold]{outcome}[/]: {r.SelectedElements:N0} of {r.TrainableElements:N0} elements selected, ‖Δg‖ = {r.GradientDifferenceNorm:G4}, ‖update‖ = {r.UpdateNorm:G4}"
            + (r.Tau is { } tau ? $", τ = {tau:G4}" : "") + (r.Cg is { } cg ? $", CG {cg.Iterations} iterations, λ = {cg.Damping:G3}, residual {cg.RelativeResidual:E2} ({Markup.Escape(Describe(cg.Stop, cg.StopValue))})" : ""));
        var t = Cli.Table("set", "samples", "loss before", "loss after", "accuracy before", "accuracy after");
        foreach (var (name, b) in r.Before)
        {
            var a = r.After?.GetValueOrDefault(name);
            t.AddRow(name, b.Samples.ToString(), b.Loss.ToString("G5"), a?.Loss.ToString("G5") ?? "-", b.Accuracy?.ToString("P2") ?? "-", a?.Accuracy?.ToString("P2") ?? "-");
        }
        AnsiConsole.Write(t);
        AnsiConsole.MarkupLine("selected per tensor: " + Markup.Escape(string.Join(", ", r.SelectedPerTensor.Where(kv => kv.Value > 0).Select(kv => $"{kv.Key} {kv.Value}"))));
        if (r.Steps is { } st)
        {
            string Line(UnlearnStep x) => $"{x.Step}: τ {x.Tau:G3}, J {x.Objective:G4}, retain {x.RetainLoss:G4}" + (x.Exposure is { } e ? $", exposure {e:F2} bits" : "") + $" ({Describe(x)})";
            // long runs: the first and last steps (the report has them all)
            var shown = st.Count <= 6 ? st.Select(Line) : st.Take(2).Select(Line).Append($"… {st.Count - 4} more …").Concat(st.TakeLast(2).Select(Line));
            AnsiConsole.MarkupLine($"{st.Count - 1} steps: " + Markup.Escape(string.Join("; ", shown)));
        }
        if (r.Exposure is { } ex)
            AnsiConsole.MarkupLine(Markup.Escape($"exposure of the secret: {ex.Before.Bits:F2} bits ({ex.Before.Method}) before, "
                + (ex.After is { } a ? $"{a.Bits:F2} bits ({a.Method}) after" : "unchanged") + (ex.Target is { } goal ? $"; target {goal} bits {(ex.Reached == true ? "reached" : "NOT reached")}" : "")));
        string changes = r.Written is { } w ? $"{w.ElementsChanged:N0} elements, {w.BytesChanged:N0} bytes changed" : "";
        if (r.RoundingCancelled > 0 || r.GradientForward != r.Before.Values.First().Forward)
            AnsiConsole.MarkupLine(Markup.Escape($"figures: {r.Before.Values.First().Forward}; gradients: {r.GradientForward}; " +
                $"{r.RoundingCancelled:N0} of {r.SelectedElements:N0} selected elements unchanged: their update rounds away in the stored type" +
                (r.QuantizedMoved is { } moved ? $"; {moved:N0} quantized elements moved by at least one quantization step" : "")));
        AnsiConsole.MarkupLine($"{r.GradientEvaluations} gradient evaluations, {r.Seconds:F2} s"
            + (r.OutputModel is { } o ? $"; wrote {Markup.Escape(o)} ({changes})" : r.Written is not null ? $"; nothing written (the update: {changes})" : ""));
    }
}
