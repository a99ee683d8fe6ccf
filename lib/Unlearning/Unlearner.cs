using System.Diagnostics;
using System.Numerics.Tensors;
using OnnxUnlearn.Curvature;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using OnnxUnlearn.Selection;

namespace OnnxUnlearn.Unlearning;

public enum SelectionKind { Hessian, All, LastLayer, Random, Gradient, Fisher, Magnitude }
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
    public double Damping { get; init; } = 1e-3;
    /// <summary>Hessian-vector products spent on the diagonal estimate for <see cref="SelectionKind.Hessian"/>.</summary>
    public int Probes { get; init; } = 60;
    public DiagonalEstimator Estimator { get; init; } = DiagonalEstimator.DiagPlusPlus;
    public int Seed { get; init; }
    public int MaxIterations { get; init; } = 50;
    public double Tolerance { get; init; } = 1e-3;
    /// <summary>Samples of the training set that define H (seeded sample; null = all).</summary>
    public int? HessianSamples { get; init; }
    /// <summary>Number of training samples n in Δg = (1/n)(Σ∇ℓ(z̃) − Σ∇ℓ(z)); null = rows of the training file.</summary>
    public long? TrainSize { get; init; }
    /// <summary>A given selection: .npz of 0/1 masks keyed by parameter name (as written by <c>select</c>); replaces <see cref="Select"/>.</summary>
    public string? MaskFile { get; init; }
}

public sealed record UnlearnResult(int[] Selected, float[] Update, double Tau, CgResult? Cg, long GradientEvaluations, double Seconds, double DeltaGNorm, double UpdateNorm);

/// <summary>
/// The method of METHOD.md: Δg = (1/n)(Σ_{Z̃} ∇ℓ − Σ_Z ∇ℓ); select S (sharp = top-k of diag H by default); first order
/// θ_S −= τΔg_S, or second order θ_S −= d with (H_SS + λI) d = Δg_S solved by CG on masked finite-difference HVPs.
/// Works in the session's parameter space; the caller writes the result back into the model.
/// </summary>
public static class Unlearner
{
    public static UnlearnResult Run(ModelSession s, Dataset train, Dataset forget, Dataset? corrected, UnlearnOptions o, ProgressCallback? progress = null)
    {
        var clock = Stopwatch.StartNew();
        long start = s.GradientEvaluations;
        var layout = s.Layout;
        if (corrected is not null && corrected.Rows != forget.Rows)
            throw new UserError($"the forget set '{forget.Source}' has {forget.Rows} samples but the corrected set '{corrected.Source}' has {corrected.Rows}; they must be the same samples, before and after correction");
        long n = o.TrainSize ?? train.Rows;

        // Δg = (|Z̃|/n)·mean∇(Z̃) − (|Z|/n)·mean∇(Z)
        var dg = new float[layout.Size];
        var tmp = new float[layout.Size];
        progress?.Invoke("forget-set gradient", 0, 2);
        s.Run(forget, tmp);
        TensorPrimitives.Multiply(tmp, -(float)forget.Rows / n, dg);
        if (corrected is not null)
        {
            progress?.Invoke("corrected-set gradient", 1, 2);
            s.Run(corrected, tmp);
            TensorPrimitives.MultiplyAdd(tmp, (float)corrected.Rows / n, dg, dg);
        }

        var hessianData = o.HessianSamples is { } m && m < train.Rows ? train.Take(Sample(train.Rows, m, o.Seed), $"{train.Source} (sample of {m})") : train;
        var hvp = new Hvp(s, hessianData);
        int k = Masks.Count(o.Fraction, o.Count, layout.Size);
        int[] selected = o.MaskFile is { } maskFile ? FromMaskFile(layout, maskFile) : o.Select switch
        {
            SelectionKind.All => Masks.All(layout),
            SelectionKind.LastLayer => Masks.LastLayer(layout, s.File.Graph, s.Artifact.Output),
            SelectionKind.Random => Masks.Random(layout, k, o.Seed),
            SelectionKind.Hessian => Masks.ByScore(Diagonal.Estimate(hvp, o.Estimator, o.Probes, o.Seed, progress: progress).Values, k, layout, o.PerTensor, !o.Smallest),
            SelectionKind.Gradient => Masks.ByScore(Abs(dg), k, layout, o.PerTensor, !o.Smallest),
            SelectionKind.Fisher => Masks.ByScore(Scores.Fisher(s, hessianData, progress), k, layout, o.PerTensor, !o.Smallest),
            SelectionKind.Magnitude => Masks.ByScore(Scores.Magnitude(s), k, layout, o.PerTensor, !o.Smallest),
            _ => throw new ArgumentOutOfRangeException(nameof(o)),
        };
        var mask = Masks.Dense(selected, layout.Size);
        var dgS = new float[layout.Size];
        TensorPrimitives.Multiply(dg, mask, dgS);
        // H_SS·v = mask ⊙ H(mask ⊙ v)
        var masked = new float[layout.Size];
        void MaskedHvp(float[] v, float[] hv) { TensorPrimitives.Multiply(v, mask, masked); hvp.Apply(masked, hv); TensorPrimitives.Multiply(hv, mask, hv); }

        var update = new float[layout.Size];
        double tau = 0;
        CgResult? cg = null;
        if (o.Update == UpdateKind.FirstOrder)
        {
            tau = o.Tau ?? CauchyStep(dgS, MaskedHvp);
            TensorPrimitives.Multiply(dgS, (float)-tau, update);
        }
        else
        {
            cg = ConjugateGradient.Solve(MaskedHvp, dgS, o.Damping, o.MaxIterations, o.Tolerance, progress);
            if (cg.Usable) TensorPrimitives.Multiply(cg.Solution, -1f, update);
        }
        return new UnlearnResult(selected, update, tau, cg, s.GradientEvaluations - start, clock.Elapsed.TotalSeconds,
            Math.Sqrt(TensorPrimitives.SumOfSquares<float>(dg)), Math.Sqrt(TensorPrimitives.SumOfSquares<float>(update)));
    }

    /// <summary>
    /// τ = ‖Δg_S‖² / (Δg_Sᵀ H_SS Δg_S): the step along −Δg_S that minimises the local quadratic model of the corrected
    /// loss. Scale-free, one HVP. Where the curvature along Δg_S is not positive, falls back to τ = 1.
    /// </summary>
    static double CauchyStep(float[] g, Action<float[], float[]> hvp)
    {
        var hg = new float[g.Length];
        hvp(g, hg);
        double num = TensorPrimitives.SumOfSquares<float>(g), den = TensorPrimitives.Dot<float>(g, hg);
        return num > 0 && den > 0 && double.IsFinite(den) ? num / den : 1.0;
    }

    /// <summary>The nonzero elements of a mask file (one array per trainable parameter, shaped like it).</summary>
    public static int[] FromMaskFile(ParameterLayout layout, string path)
    {
        var dense = layout.Join(Data.Npz.Read(path), $"mask file '{path}'");
        var chosen = Enumerable.Range(0, dense.Length).Where(i => dense[i] != 0).ToArray();
        return chosen.Length > 0 ? chosen : throw new UserError($"mask file '{path}' selects no element");
    }

    static float[] Abs(float[] v) { var a = new float[v.Length]; TensorPrimitives.Abs(v, a); return a; }

    static long[] Sample(long rows, int m, int seed)
    {
        var idx = Enumerable.Range(0, (int)rows).Select(i => (long)i).ToArray();
        new Random(seed).Shuffle(idx);
        var chosen = idx[..m];
        Array.Sort(chosen);
        return chosen;
    }
}
