namespace OnnxUnlearn.Autodiff;

/// <summary>Element type and shape of a graph value; a dimension of -1 varies with the batch (or is unknown).</summary>
/// <see cref="Observed"/> keeps the concrete shape seen in each probe run, so that two values can be compared
/// dimension by dimension even where the dimension is dynamic.
public sealed record ValueInfo(int ElementType, long[] Dims, long[][] Observed)
{
    /// <summary>Extent of axis <paramref name="a"/> equals that of <paramref name="other"/>'s axis <paramref name="b"/> in every probe.</summary>
    public bool SameExtent(int a, ValueInfo other, int b) =>
        Observed.Length == other.Observed.Length && Observed.Zip(other.Observed).All(p => p.First[a] == p.Second[b]);

    public int Rank => Dims.Length;

    /// <summary>What the probed values held (every probe run together), for the loss heads' safety nets; null when not probed.</summary>
    public ProbedValues? Values { get; init; }

    /// <summary>What the probed values' rows held (<see cref="ProbedValues.Rows"/>); Other when not probed.</summary>
    public RowKind Rows => Values?.Rows ?? RowKind.Other;

    /// <summary>The leading axes of this value followed by the last <paramref name="tail"/> axes of <paramref name="other"/>.</summary>
    public ValueInfo WithTail(ValueInfo other, int tail) => new(ElementType,
        [.. Dims[..^Math.Min(tail, Rank)], .. other.Dims[^tail..]],
        Observed.Zip(other.Observed, (a, b) => (long[])[.. a[..^Math.Min(tail, a.Length)], .. b[^tail..]]).ToArray());

    /// <summary>This value with an axis of extent 1 inserted at <paramref name="axis"/> (negative counts from the end).</summary>
    public ValueInfo Unsqueezed(int axis)
    {
        int at = axis < 0 ? Rank + 1 + axis : axis;
        return new(ElementType, [.. Dims[..at], 1, .. Dims[at..]], Observed.Select(o => (long[])[.. o[..at], 1, .. o[at..]]).ToArray());
    }
    public bool IsStatic => Dims.All(d => d >= 0);
}

/// <summary>
/// A summary of a value's elements as the shape probe saw them, with the class axis taken last: the range of its values and,
/// per row along the last axis, of the row sums and (while no value exceeds <see cref="LossHead.ValueTolerance"/>, the only
/// case where it can matter) of the rows' log-sum-exp. NaN elements are left out of every range and flagged.
/// </summary>
public sealed record ProbedValues(long Count, double Min, double Max, bool HasNaN, long Classes,
    double MinRowSum, double MaxRowSum, double MinLogSumExp, double MaxLogSumExp)
{
    public static ProbedValues Of<T>(ReadOnlySpan<T> values, long classes) where T : System.Numerics.INumberBase<T>
    {
        double min = double.PositiveInfinity, max = double.NegativeInfinity;
        double minSum = double.PositiveInfinity, maxSum = double.NegativeInfinity, minLse = double.PositiveInfinity, maxLse = double.NegativeInfinity;
        bool nan = false, lse = true;
        // Without rows (a last axis that does not divide the values) the whole value is one row, its Classes 0.
        bool rows = classes >= 1 && values.Length % classes == 0;
        int c = rows ? (int)classes : values.Length;
        for (int row = 0; row < values.Length; row += c)
        {
            double sum = 0, rowMax = double.NegativeInfinity;
            for (int k = 0; k < c; k++)
            {
                double v = double.CreateTruncating(values[row + k]);
                if (double.IsNaN(v)) { nan = true; continue; }
                if (v < min) min = v;
                if (v > max) max = v;
                if (v > rowMax) rowMax = v;
                sum += v;
            }
            minSum = Math.Min(minSum, sum); maxSum = Math.Max(maxSum, sum);
            lse &= rowMax <= LossHead.ValueTolerance;
            if (!lse) continue;
            double e = 0;
            for (int k = 0; k < c; k++) { double v = double.CreateTruncating(values[row + k]); if (!double.IsNaN(v)) e += Math.Exp(v - rowMax); }
            double l = rowMax + Math.Log(e); // −∞ for a row of −∞ only
            minLse = Math.Min(minLse, l); maxLse = Math.Max(maxLse, l);
        }
        if (!lse) (minLse, maxLse) = (double.NaN, double.NaN);
        return new ProbedValues(values.Length, min, max, nan, rows ? classes : 0, minSum, maxSum, minLse, maxLse);
    }

    /// <summary>Both probes' values together (rows are rows in each: a last axis of another extent keeps the smaller).</summary>
    public ProbedValues Merge(ProbedValues b) => new(Count + b.Count, Math.Min(Min, b.Min), Math.Max(Max, b.Max), HasNaN || b.HasNaN,
        Math.Min(Classes, b.Classes), Math.Min(MinRowSum, b.MinRowSum), Math.Max(MaxRowSum, b.MaxRowSum),
        double.IsNaN(MinLogSumExp) || double.IsNaN(b.MinLogSumExp) ? double.NaN : Math.Min(MinLogSumExp, b.MinLogSumExp),
        double.IsNaN(MaxLogSumExp) || double.IsNaN(b.MaxLogSumExp) ? double.NaN : Math.Max(MaxLogSumExp, b.MaxLogSumExp));

    /// <summary>Something was seen, and no NaN: the ranges say what the value holds.</summary>
    public bool Known => Count > 0 && !HasNaN;

    /// <summary>Every value in [0, 1] within <see cref="LossHead.ValueTolerance"/>.</summary>
    public bool InUnitInterval => Known && Min >= -LossHead.ValueTolerance && Max <= 1 + LossHead.ValueTolerance;

    /// <summary>Every value ≤ 0 and every row's log-sum-exp 0, both within <see cref="LossHead.ValueTolerance"/> (one class or more).</summary>
    public bool LogProbabilities => Known && Classes >= 1 && Max <= LossHead.ValueTolerance
        && Math.Abs(MinLogSumExp) <= LossHead.ValueTolerance && Math.Abs(MaxLogSumExp) <= LossHead.ValueTolerance;

    /// <summary>
    /// Probabilities: every element in [0, 1] (exactly), every row summing to 1 within <see cref="LossHead.RowSumTolerance"/>;
    /// log-probabilities (<see cref="LogProbabilities"/>); other: anything else, NaN, nothing seen, or fewer than two classes.
    /// </summary>
    public RowKind Rows => !Known || Classes < 2 ? RowKind.Other
        : Min >= 0 && Max <= 1 && Math.Abs(MinRowSum - 1) <= LossHead.RowSumTolerance && Math.Abs(MaxRowSum - 1) <= LossHead.RowSumTolerance ? RowKind.Probabilities
        : LogProbabilities ? RowKind.LogProbabilities : RowKind.Other;
}

/// <summary>What is known about every value of the forward graph, as the runtime's shape probe measured it.</summary>
public sealed class TensorShapes(Dictionary<string, ValueInfo> values)
{
    public ValueInfo? this[string name] => values.GetValueOrDefault(name);
    public bool Has(string name) => values.ContainsKey(name);
    public IReadOnlyDictionary<string, ValueInfo> All => values;

    /// <summary>Records what is known of a value that gradient rules created.</summary>
    public void Declare(string name, ValueInfo info) => values[name] = info;

    /// <summary>A copy to declare into (artifact builds add the values their rules create).</summary>
    public TensorShapes Copy() => new(new Dictionary<string, ValueInfo>(values));

    public int Rank(string name) => values.TryGetValue(name, out var v) ? v.Rank
        : throw new InvalidOperationException($"no shape known for '{name}'");
}
