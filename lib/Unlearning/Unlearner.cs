using System.Diagnostics;
using System.Numerics.Tensors;
using OnnxUnlearn.Curvature;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using OnnxUnlearn.Selection;

namespace OnnxUnlearn.Unlearning;

public enum SelectionKind { Hessian, All, LastLayer, Random, Gradient, Fisher, Magnitude, Newton }
public enum UpdateKind { FirstOrder, SecondOrder }

public sealed record UnlearnOptions
{
    public SelectionKind Select { get; init; } = SelectionKind.Hessian;
    public double? Fraction { get; init; }
    public long? Count { get; init; }
    public bool PerTensor { get; init; }
    public bool Smallest { get; init; }
    public UpdateKind Update { get; init; } = UpdateKind.FirstOrder;
    /// <summary>First-order step; null = the Cauchy step of the local quadratic model along −Δg_S.</summary>
    public double? Tau { get; init; }
    /// <summary>
    /// λ in (H_SS + λI) d = Δg_S. Null = automatic: λ = 1e-3, raised ×10 (up to 1e3) while CG meets negative curvature,
    /// NaN or divergence — chosen from the training data's curvature alone; the report records the λ used.
    /// </summary>
    public double? Damping { get; init; }
    /// <summary>Hessian-vector products spent on the diagonal estimate for <see cref="SelectionKind.Hessian"/>.</summary>
    public int Probes { get; init; } = 60;
    public DiagonalEstimator Estimator { get; init; } = DiagonalEstimator.DiagPlusPlus;
    public int Seed { get; init; }
    public int MaxIterations { get; init; } = 50;
    public double Tolerance { get; init; } = 1e-3;
    /// <summary>
    /// Samples of the training set that define H (seeded sample). Null = automatic: all samples while they hold at most
    /// <see cref="AutoHessianLabels"/> labelled positions, otherwise as many samples as hold that many (a sequence model
    /// with T = 64 gets 128 windows): the diagonal estimate costs ~2 gradient evaluations per probe on this sample.
    /// </summary>
    public int? HessianSamples { get; init; }
    public const int AutoHessianLabels = 8192;
    /// <summary>
    /// Update steps. 1: the single update of the method. More (or null = automatic, at most <see cref="AutoSteps"/>):
    /// every step recomputes Δg (and, second order, the curvature) at the current parameters and searches the step size on
    /// the objective; steps stop when it no longer improves, when the retain loss would rise more than
    /// <see cref="UtilityBudget"/>, or when the caller's check (e.g. a target exposure) is met.
    /// </summary>
    public int? Steps { get; init; }
    public const int AutoSteps = 30;
    /// <summary>
    /// Largest allowed relative rise (0.02 = 2 %) of the retain sample's perplexity exp(L): for likelihood losses (ce, bce,
    /// nll), L may rise by ln(1 + budget) nats, whatever its size, so a well-fit model (L ≈ 0.05) is not frozen by a relative
    /// loss bound — or of the loss itself for mse.
    /// </summary>
    public double UtilityBudget { get; init; } = 0.02;
    /// <summary>Rows of the training set (seeded sample) that measure utility during iterative steps.</summary>
    public int RetainSamples { get; init; } = 256;
    /// <summary>
    /// With corrected samples and a class loss: once a step has moved a prediction of Z or Z̃ toward the request, iterative
    /// steps stop when this many steps in a row moved none further, keeping the update of the step that moved the most.
    /// 0 turns the rule off.
    /// </summary>
    public int DecisionPatience { get; init; } = 3;
    /// <summary>Number of training samples n in Δg = (1/n)(Σ∇ℓ(z̃) − Σ∇ℓ(z)); null = rows of the training file.</summary>
    public long? TrainSize { get; init; }
    /// <summary>A given selection: .npz of 0/1 masks keyed by parameter name (as written by <c>select</c>); replaces <see cref="Select"/>.</summary>
    public string? MaskFile { get; init; }
    /// <summary>Per-element scores (.npz keyed by parameter name, as sharpness or merge writes; 'stderr/' arrays skipped) that
    /// <see cref="SelectionKind.Hessian"/> ranks instead of estimating diag(H) itself.</summary>
    public string? ScoresFile { get; init; }

    /// <summary>The score a scored selection ranks by, or null (all, last layer, random).</summary>
    public ScoreKind? Score => Select switch
    {
        SelectionKind.Hessian => ScoreKind.Hessian,
        SelectionKind.Gradient => ScoreKind.Gradient,
        SelectionKind.Fisher => ScoreKind.Fisher,
        SelectionKind.Magnitude => ScoreKind.Magnitude,
        _ => null,
    };
}

/// <summary>How one iterative step ended.</summary>
public enum StepOutcome
{
    /// <summary>Step 0: the parameters before any step.</summary>
    Start,
    Accepted,
    /// <summary>Accepted, and the caller's check (e.g. a target exposure) is met: no more steps.</summary>
    TargetReached,
    /// <summary>No step size lowers the objective within the utility budget: the step is not taken.</summary>
    NoImprovement,
    /// <summary>Conjugate gradients gave no usable direction (see <see cref="UnlearnStep.Cg"/>): the step is not taken.</summary>
    CgFailed,
    /// <summary>
    /// The last <see cref="UnlearnOptions.DecisionPatience"/> steps moved no prediction of Z or Z̃ further toward the request:
    /// the update of the step that moved the most (<see cref="UnlearnStep.Kept"/>) is kept, the later ones undone.
    /// </summary>
    DecisionsSettled,
}

/// <param name="Scores">The scores the selection ranked (scored selections only).</param>
public sealed record UnlearnResult(int[] Selected, float[] Update, double Tau, CgResult? Cg, long GradientEvaluations, double Seconds, double DeltaGNorm, double UpdateNorm,
    IReadOnlyList<UnlearnStep> Steps, float[]? Scores = null)
{
    /// <summary>False when the second-order solve gave no usable direction: <see cref="Update"/> is zero and the model stays as it was.</summary>
    public bool Applied => Cg is not { Usable: false };
}

/// <summary>One update step: its size, the objective J = (|Z̃|·L(Z̃) − |Z|·L(Z))/n after it, the retain loss, and its cost.</summary>
/// <param name="Moved">Decisions moved toward the request, |Z̃|·acc(Z̃) − |Z|·acc(Z) in labelled elements (class losses with Z̃).</param>
/// <param name="Kept">With <see cref="StepOutcome.DecisionsSettled"/>: the step whose update is kept.</param>
public sealed record UnlearnStep(int Step, double Tau, double Objective, double RetainLoss, double UpdateNorm, long GradientEvaluations, StepOutcome Outcome,
    double? Exposure = null, CgStop? Cg = null, double? Moved = null, int? Kept = null);

/// <summary>
/// A measurement after each accepted iterative step, at parameters θ (only the <c>selected</c> elements differ from the
/// model's): a value for the report (e.g. the secret's exposure in bits) and whether unlearning may stop.
/// </summary>
public delegate (double Value, bool Done) StepCheck(int[] selected, ParameterVector theta);

/// <summary>
/// The method of docs/method.md: Δg = (1/n)(Σ_{Z̃} ∇ℓ − Σ_Z ∇ℓ); select S (sharp = top-k of diag H by default); first order
/// θ_S −= τΔg_S, or second order θ_S −= d with (H_SS + λI) d = Δg_S solved by CG on masked finite-difference HVPs.
/// Works in the evaluator's parameter space from θ₀, which it never writes; the caller writes θ₀ + update into the model.
/// </summary>
public static class Unlearner
{
    public static UnlearnResult Run(Evaluator model, ParameterVector theta0, Dataset train, Dataset forget, Dataset? corrected, UnlearnOptions o,
        ProgressCallback? progress = null, StepCheck? check = null)
    {
        var clock = Stopwatch.StartNew();
        long start = model.GradientEvaluations;
        var layout = model.Layout;
        if (corrected is not null && corrected.Rows != forget.Rows)
            throw new UserError($"the forget set '{forget.Source}' has {forget.Rows} samples but the corrected set '{corrected.Source}' has {corrected.Rows}; they must be the same samples, before and after correction");
        long n = o.TrainSize ?? train.Rows;

        var dg = new float[layout.Size];
        progress?.Invoke("gradient difference", 0, 1);
        GradientDifference(model, theta0, forget, corrected, n, dg);

        int hessianRows = HessianRows(train, o);
        using var hessianSample = hessianRows < train.Rows ? train.Take(Sample(train.Rows, hessianRows, o.Seed), $"{train.Source} (sample of {hessianRows})") : null;
        var hessianData = hessianSample ?? train;
        var hvp = new Hvp(model, hessianData);
        var (selected, scores) = Select(model, theta0, hessianData, dg, o, progress);
        var mask = Masks.Dense(selected, layout.Size);
        var dgS = new float[layout.Size];
        TensorPrimitives.Multiply(dg, mask, dgS);
        var maskedHvp = new Masked(hvp.At(theta0), mask);

        var update = new float[layout.Size];
        double tau = 0;
        CgResult? cg = null;
        if (o.Update == UpdateKind.FirstOrder)
        {
            tau = o.Tau ?? CauchyStep(dgS, maskedHvp);
            TensorPrimitives.Multiply(dgS, (float)-tau, update);
        }
        else
        {
            cg = Solve(maskedHvp, dgS, o, o.MaxIterations, progress);
            if (cg.Usable) TensorPrimitives.Multiply(cg.Solution, -1f, update);
        }
        IReadOnlyList<UnlearnStep> steps = [];
        if (o.Steps != 1 && (cg is null || cg.Usable))
        {
            var request = new Request(model, theta0, train, forget, corrected, o, n);
            (update, steps) = new IterativeSteps(request, hvp, selected, mask, progress, check).Run(update, tau);
        }
        return new UnlearnResult(selected, update, tau, cg, model.GradientEvaluations - start, clock.Elapsed.TotalSeconds,
            Math.Sqrt(TensorPrimitives.SumOfSquares<float>(dg)), Math.Sqrt(TensorPrimitives.SumOfSquares<float>(update)), steps, scores);
    }

    /// <summary>The elements S that the update may change (flat indices, ascending), and the scores ranked, if any.</summary>
    static (int[] Selected, float[]? Scores) Select(Evaluator model, ParameterVector theta, Dataset hessianData, float[] dg, UnlearnOptions o, ProgressCallback? progress)
    {
        var layout = model.Layout;
        if (o.MaskFile is { } maskFile) return (FromMaskFile(layout, maskFile), null);
        int k = Masks.Count(o.Fraction, o.Count, layout.Size);
        if (o.ScoresFile is { } scoresFile)
        {
            if (o.Select != SelectionKind.Hessian) throw new UserError($"--scores replaces the Hessian estimate of --select hessian; drop --select {Kebab(o.Select)} or --scores");
            var given = layout.Join(Data.Npz.Read(scoresFile).Where(kv => !kv.Key.StartsWith("stderr/")).ToDictionary(), $"scores file '{scoresFile}'");
            return (Masks.ByScore(given, k, layout, o.PerTensor, !o.Smallest), given);
        }
        if (o.Select == SelectionKind.Newton)
        {   // Δg²/(H⁺ + λ), λ = mean H⁺: the decrease a diagonal Newton step on one element buys, damped so that flat
            // elements rank by |Δg| (docs/method.md#selection)
            var scoring = new ScoreOptions { Probes = o.Probes, Estimator = o.Estimator, Seed = o.Seed };
            var h = Scores.Compute(ScoreKind.Hessian, model, theta, hessianData, scoring, progress, dg).Values;
            double lambda = h.Average(v => Math.Max((double)v, 0));
            if (!(lambda > 0)) lambda = 1e-30;
            var values = new float[h.Length];
            for (int i = 0; i < h.Length; i++) values[i] = (float)((double)dg[i] * dg[i] / (Math.Max((double)h[i], 0) + lambda));
            return (Masks.ByScore(values, k, layout, o.PerTensor, !o.Smallest), values);
        }
        if (o.Score is { } score)
        {
            var scoring = new ScoreOptions { Probes = o.Probes, Estimator = o.Estimator, Seed = o.Seed };
            var values = Scores.Compute(score, model, theta, hessianData, scoring, progress, dg).Values;
            return (Masks.ByScore(values, k, layout, o.PerTensor, !o.Smallest), values);
        }
        return (o.Select switch
        {
            SelectionKind.All => Masks.All(layout),
            SelectionKind.LastLayer => Masks.LastLayer(layout, model.File.Graph, model.ModelOutput),
            SelectionKind.Random => Masks.Random(layout, k, o.Seed),
            _ => throw new ArgumentOutOfRangeException(nameof(o)),
        }, null);
    }

    /// <summary>Δg = (|Z̃|/n)·mean∇(Z̃) − (|Z|/n)·mean∇(Z) at θ, written to <paramref name="dg"/> (docs/method.md#delta-g).</summary>
    static void GradientDifference(Evaluator model, ParameterVector theta, Dataset forget, Dataset? corrected, long n, float[] dg)
    {
        var tmp = new float[dg.Length];
        model.Gradient(theta, forget, tmp);
        TensorPrimitives.Multiply(tmp, -(float)forget.Rows / n, dg);
        if (corrected is null) return;
        model.Gradient(theta, corrected, tmp);
        TensorPrimitives.MultiplyAdd(tmp, (float)corrected.Rows / n, dg, dg);
    }

    /// <summary>H_SS·v = mask ⊙ H(mask ⊙ v).</summary>
    sealed class Masked(ILinearOperator h, float[] mask) : ILinearOperator
    {
        readonly float[] masked = new float[mask.Length];
        public int Size => mask.Length;
        public void Apply(ReadOnlySpan<float> v, Span<float> hv)
        {
            TensorPrimitives.Multiply(v, mask, masked);
            h.Apply(masked, hv);
            TensorPrimitives.Multiply(hv, mask, hv);
        }
    }

    /// <summary>CG on (H_SS + λI) d = b with the given λ, or with the automatic one: 1e-3, ×10 per failed solve, at most 1e3.</summary>
    static CgResult Solve(ILinearOperator hvp, float[] b, UnlearnOptions o, int maxIterations, ProgressCallback? progress)
    {
        if (o.Damping is { } fixedDamping) return ConjugateGradient.Solve(hvp, b, fixedDamping, maxIterations, o.Tolerance, progress) with { Damping = fixedDamping };
        CgResult result = null!;
        for (double damping = 1e-3; damping <= 1e3 * 1.0001; damping *= 10)
        {
            result = ConjugateGradient.Solve(hvp, b, damping, maxIterations, o.Tolerance, progress) with { Damping = damping };
            if (result.Usable) break;
        }
        return result;
    }

    /// <summary>What one unlearning run works on: the model at θ₀, the data, the options and n.</summary>
    sealed record Request(Evaluator Model, ParameterVector Theta0, Dataset Train, Dataset Forget, Dataset? Corrected, UnlearnOptions Options, long N);

    /// <summary>
    /// Steps 1..K (docs/method.md#iterative-steps): at θ = θ₀ + update, compute Δg_S, take the step along −Δg_S (first
    /// order) or −(H_SS + λI)⁻¹Δg_S (second order, curvature at the current θ) with the size among 2^(1…−6)·τ that lowers J
    /// most while the retain loss stays within budget. Step 1 reuses the single-step direction already computed. Stops
    /// when no size improves J, the budget binds or the check says done. Uses no test data.
    /// </summary>
    sealed class IterativeSteps
    {
        /// <summary>CG iterations of the steps after the first: the step-size search absorbs an inexact solve, and a full
        /// solve per step would cost more than the whole first-order run.</summary>
        const int LaterStepIterations = 10;
        static readonly double[] StepFactors = [2.0, 1.0, 0.5, 0.25, 0.125, 1.0 / 16, 1.0 / 32, 1.0 / 64];

        readonly Request q;
        readonly Evaluator model;
        readonly UnlearnOptions o;
        readonly Hvp hvp;
        readonly int[] selected;
        readonly float[] mask;
        readonly ProgressCallback? progress;
        readonly StepCheck? check;
        /// <summary>The parameters being tried or accepted: θ₀ + an update.</summary>
        readonly ParameterVector theta;
        readonly Dataset retain;
        readonly double retainStart, retainLimit;

        public IterativeSteps(Request request, Hvp hvp, int[] selected, float[] mask, ProgressCallback? progress, StepCheck? check)
        {
            (q, model, o, this.hvp, this.selected, this.mask, this.progress, this.check) = (request, request.Model, request.Options, hvp, selected, mask, progress, check);
            theta = request.Theta0.Clone();
            retain = RetainSample(request.Train, request.Forget, o);
            retainStart = model.Loss(request.Theta0, retain).Loss;
            retainLimit = model.Settings.Loss is Autodiff.LossKind.MeanSquaredError or Autodiff.LossKind.Dot
                ? retainStart + Math.Abs(retainStart) * o.UtilityBudget : retainStart + Math.Log(1 + o.UtilityBudget);
        }

        /// <summary>Retain sample: training rows that are not among the forget set's rows (the loss on those must not rise).</summary>
        static Dataset RetainSample(Dataset train, Dataset forget, UnlearnOptions o)
        {
            var forgetRows = Enumerable.Range(0, (int)forget.Rows).Select(i => RowKey(forget, i)).ToHashSet();
            var outside = Enumerable.Range(0, (int)train.Rows).Where(i => !forgetRows.Contains(RowKey(train, i))).Select(i => (long)i).ToList();
            if (outside.Count == 0) throw new UserError($"every row of '{train.Source}' is in the forget set: iterative steps need training data outside it to measure utility");
            var picked = outside.Count > o.RetainSamples ? Sample(outside.Count, o.RetainSamples, o.Seed + 1).Select(i => outside[(int)i]).ToList() : outside;
            return train.Take(picked, $"{train.Source} (retain sample)");
        }

        /// <summary>
        /// J = (|Z̃|·L(Z̃) − |Z|·L(Z))/n at the current θ, and the decisions moved toward the request: correct predictions of
        /// Z̃ less those of Z (null without Z̃ or without accuracies: deletions, regression losses).
        /// </summary>
        (double J, double? Moved) Objective()
        {
            var f = model.Loss(theta, q.Forget);
            double j = -q.Forget.Rows * f.Loss;
            double? moved = null;
            if (q.Corrected is { } corrected)
            {
                var c = model.Loss(theta, corrected);
                j += corrected.Rows * c.Loss;
                if (c.Accuracy is { } ac && f.Accuracy is { } af) moved = ac * c.Count - af * f.Count;
            }
            return (j / q.N, moved);
        }

        void Set(float[] u) => TensorPrimitives.Add(q.Theta0.Span, u, theta.Span);

        /// <param name="single">The single step's update, −τ·Δg_S (first order) or −d (second order, size 1): step 1's direction.</param>
        /// <returns>The update after the steps, and every step.</returns>
        public (float[] Update, IReadOnlyList<UnlearnStep> Steps) Run(float[] single, double tau)
        {
            using var _ = retain;
            var steps = new List<UnlearnStep>();
            int maxSteps = o.Steps ?? UnlearnOptions.AutoSteps;
            var update = new float[single.Length]; var tmp = new float[single.Length]; var dir = new float[single.Length];
            double stepTau = o.Update == UpdateKind.FirstOrder && tau > 0 ? tau : 1;
            TensorPrimitives.Multiply(single, (float)(-1 / stepTau), dir);
            Set(update);
            var (j, moved) = Objective();
            double r = retainStart;
            steps.Add(new UnlearnStep(0, 0, j, r, 0, model.GradientEvaluations, StepOutcome.Start, Moved: moved));
            // The step that moved the most decisions so far, and its update: J falls without bound as L(Z) grows, long after
            // every prediction has moved, and those later steps only cost held-out accuracy.
            var kept = (Step: 0, Moved: moved ?? double.NaN, J: j, R: r, Update: (float[])update.Clone());

            for (int k = 1; k <= maxSteps; k++)
            {
                progress?.Invoke("iterative steps", k, maxSteps);
                if (k > 1 && NextDirection(dir, ref stepTau) is { } failed)
                {
                    steps.Add(new UnlearnStep(k, 0, j, r, 0, model.GradientEvaluations, StepOutcome.CgFailed, Cg: failed));
                    break;
                }
                ProtectRetain(dir);
                var current = (float[])update.Clone();
                (double J, double R, double Tau, double? Moved)? best = null;
                foreach (var f in StepFactors)
                {
                    TensorPrimitives.MultiplyAdd(dir, (float)(-f * stepTau), current, tmp);
                    Set(tmp);
                    var (jj, mm) = Objective();
                    double rr = model.Loss(theta, retain).Loss;
                    // a step may spend at most half the budget left, so the early large steps do not exhaust it
                    if (rr <= r + 0.5 * (retainLimit - r) && jj < j - 1e-3 * Math.Abs(j) && (best is null || jj < best.Value.J)) best = (jj, rr, f * stepTau, mm);
                }
                if (best is not { } b)
                {
                    Set(update);
                    steps.Add(new UnlearnStep(k, 0, j, r, 0, model.GradientEvaluations, StepOutcome.NoImprovement));
                    break;
                }
                TensorPrimitives.MultiplyAdd(dir, (float)-b.Tau, current, update);
                Set(update);
                (j, r) = (b.J, b.R);
                if (o.Update == UpdateKind.FirstOrder) stepTau = b.Tau;
                var (value, done) = check?.Invoke(selected, theta) ?? (double.NaN, false);
                steps.Add(new UnlearnStep(k, b.Tau, j, r, Math.Sqrt(TensorPrimitives.SumOfSquares<float>(update)), model.GradientEvaluations,
                    done ? StepOutcome.TargetReached : StepOutcome.Accepted, check is null ? null : value, Moved: b.Moved));
                if (done) break;
                if (b.Moved is { } m && !(m <= kept.Moved)) kept = (k, m, j, r, (float[])update.Clone());
                // (only once some decision has moved: a memorised forget set, a backdoor's, takes steps before any does)
                else if (b.Moved is not null && o.DecisionPatience > 0 && kept.Step > 0 && k - kept.Step >= o.DecisionPatience)
                {
                    update = kept.Update;
                    Set(update);
                    (j, r) = (kept.J, kept.R);
                    steps.Add(new UnlearnStep(k, 0, j, r, Math.Sqrt(TensorPrimitives.SumOfSquares<float>(update)), model.GradientEvaluations,
                        StepOutcome.DecisionsSettled, Moved: kept.Moved, Kept: kept.Step));
                    break;
                }
            }
            return (update, steps);
        }

        /// <summary>Δg_S at the current θ, and the direction from it; returns why CG failed, or null.</summary>
        CgStop? NextDirection(float[] dir, ref double stepTau)
        {
            var g = new float[dir.Length];
            GradientDifference(model, theta, q.Forget, q.Corrected, q.N, g);
            TensorPrimitives.Multiply(g, mask, g);
            if (o.Update == UpdateKind.FirstOrder) { g.CopyTo(dir, 0); return null; }
            var sol = Solve(new Masked(hvp.At(theta), mask), g, o, Math.Min(o.MaxIterations, LaterStepIterations), null);
            if (!sol.Usable) return sol.Stop;
            sol.Solution.CopyTo(dir, 0);
            stepTau = 1;
            return null;
        }

        /// <summary>
        /// Where the step −τ·dir would raise the retain loss to first order (dir·∇L_retain &lt; 0), removes that component of
        /// dir: the step budget is then spent on unlearning, not on collateral damage the utility budget would stop at once.
        /// </summary>
        void ProtectRetain(float[] dir)
        {
            var retainGrad = new float[dir.Length];
            model.Gradient(theta, retain, retainGrad);
            TensorPrimitives.Multiply(retainGrad, mask, retainGrad);
            double along = TensorPrimitives.Dot<float>(dir, retainGrad), norm = TensorPrimitives.SumOfSquares<float>(retainGrad);
            if (along < 0 && norm > 0) TensorPrimitives.MultiplyAdd(retainGrad, (float)(-along / norm), dir, dir);
        }
    }

    /// <summary>
    /// τ = ‖Δg_S‖² / (Δg_Sᵀ H_SS Δg_S): the step along −Δg_S that minimises the local quadratic model of the corrected
    /// loss (docs/method.md#cauchy-step). Scale-free, one HVP. Where the curvature along Δg_S is not positive, τ = 1.
    /// </summary>
    static double CauchyStep(float[] g, ILinearOperator hvp)
    {
        var hg = new float[g.Length];
        hvp.Apply(g, hg);
        double num = TensorPrimitives.SumOfSquares<float>(g), den = TensorPrimitives.Dot<float>(g, hg);
        return num > 0 && den > 0 && double.IsFinite(den) ? num / den : 1.0;
    }

    /// <summary>Rows of the training set that define H: <see cref="UnlearnOptions.HessianSamples"/>, or the automatic choice.</summary>
    public static int HessianRows(Dataset train, UnlearnOptions o)
    {
        if (o.HessianSamples is { } m) return (int)Math.Min(m, train.Rows);
        long perRow = train.Arrays.TryGetValue(Autodiff.LossHead.LabelInput, out var label) && train.Rows > 0 ? Math.Max(1, label.Length / train.Rows) : 1;
        return (int)Math.Min(train.Rows, Math.Max(1, UnlearnOptions.AutoHessianLabels / perRow));
    }

    /// <summary>A row's values across all arrays, as a comparable key (to find forget-set rows inside the training set).</summary>
    static string RowKey(Dataset d, int row) =>
        string.Join("|", d.Arrays.OrderBy(kv => kv.Key).Select(kv => string.Join(",", d.Slice(kv.Key, row, 1).ToDouble())));

    static string Kebab(SelectionKind k) => string.Concat(k.ToString().Select((ch, i) => char.IsUpper(ch) && i > 0 ? "-" + char.ToLowerInvariant(ch) : char.ToLowerInvariant(ch).ToString()));

    /// <summary>The nonzero elements of a mask file (one array per trainable parameter, shaped like it).</summary>
    public static int[] FromMaskFile(ParameterLayout layout, string path)
    {
        var dense = layout.Join(Data.Npz.Read(path), $"mask file '{path}'");
        var chosen = Enumerable.Range(0, dense.Length).Where(i => dense[i] != 0).ToArray();
        return chosen.Length > 0 ? chosen : throw new UserError($"mask file '{path}' selects no element");
    }

    static long[] Sample(long rows, int m, int seed) => Masks.Choose((int)rows, m, seed).Select(i => (long)i).ToArray();
}
