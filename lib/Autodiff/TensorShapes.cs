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

    /// <summary>What the probed values' rows held (the same in every probe), for the loss heads' safety net; Other when not probed.</summary>
    public RowKind Rows { get; init; }

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
