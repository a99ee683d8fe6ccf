using System.Numerics.Tensors;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.OnnxRuntime;
using OnnxUnlearn.Data;

namespace OnnxUnlearn.Runtime;

/// <summary>
/// Samples for a model: arrays keyed by graph input name plus <c>label</c>, samples on each input's sample axis
/// (<see cref="SampleAxes"/>: axis 0 but for recurrent states like [2, batch, 128]; inputs given once, such as a scalar sample
/// rate, hold one array fed unchanged to every batch). Batches are turned into OrtValues once and reused, since curvature
/// estimation evaluates the same data many times.
/// </summary>
public sealed class Dataset : IDisposable
{
    public string Source { get; }
    public IReadOnlyDictionary<string, NdArray> Arrays { get; }
    public long Rows { get; }
    /// <summary>The sample axis of each array (<see cref="SampleAxes.Rows"/>: axis 0 for every one).</summary>
    public SampleAxes Axes { get; }
    /// <summary>Values made up for probing shapes (<see cref="Evaluator.SyntheticInputs"/>): they decide no If branch.</summary>
    public bool MadeUp { get; init; }
    readonly Dictionary<(long, long), Dictionary<string, OrtValue>> batches = [];
    /// <summary>The value checks this data has passed (<see cref="CheckFinite"/>, <see cref="CheckClassLabels"/>), so each runs once.</summary>
    readonly HashSet<string> passed = [];

    public Dataset(IReadOnlyDictionary<string, NdArray> arrays, string source, SampleAxes? axes = null)
    {
        Source = source;
        Arrays = arrays;
        Axes = axes ?? SampleAxes.Rows;
        Rows = CheckRows(arrays.Select(kv => (kv.Key, kv.Value.Shape)), Axes, source);
    }

    /// <summary>Every array but those given once needs samples on its sample axis, the same number in each; returns that number.</summary>
    static long CheckRows(IEnumerable<(string Key, long[] Shape)> arrays, SampleAxes axes, string source)
    {
        var all = arrays.ToList();
        if (all.Count == 0) throw new UserError($"'{source}' holds no arrays");
        var rows = all.Where(a => axes.Of(a.Key) != SampleAxes.Once).Select(a => (a.Key, Axis: axes.Of(a.Key), a.Shape)).ToList();
        if (rows.Count == 0) throw new UserError($"'{source}' holds only arrays of inputs given once ({string.Join(", ", all.Select(a => UserError.Quote(a.Key)))}); it needs samples (and their labels)");
        foreach (var (key, axis, shape) in rows)
        {
            if (shape.Length == 0 && axis == 0) throw new UserError($"'{source}': array {UserError.Quote(key)} is a scalar; every array needs samples on axis 0" +
                (axes.Model.Length > 0 ? $" but those of inputs of '{axes.Model}' given once (rank-0 inputs, and inputs whose dimensions are all fixed in a model with a symbolic batch)" : ""));
            if (shape.Length <= axis)
                throw new UserError($"'{source}': array {UserError.Quote(key)} has shape {NdArray.FormatShape(shape)}, but input {UserError.Quote(key)} of '{axes.Model}' carries its samples on axis {axis}; save it as the model takes it, samples on axis {axis}");
        }
        var counts = rows.Select(r => (r.Key, r.Axis, Rows: r.Shape[r.Axis])).ToList();
        if (counts.Select(r => r.Rows).Distinct().Count() > 1)
            throw new UserError($"'{source}': arrays disagree on the number of samples ({string.Join(", ", counts.Select(r => $"{UserError.Quote(r.Key)}: {r.Rows}" + (r.Axis == 0 ? "" : $" on axis {r.Axis}")))}); " +
                (axes.AnyOtherThanRows ? "each array holds its samples on its input's sample axis (inspect shows it)" : "axis 0 must be the sample axis of every array"));
        return counts[0].Rows;
    }

    /// <summary>Loads an .npz; the arrays' shapes (samples on axis 0 of each) are checked from the headers, before any data is read.</summary>
    public static Dataset Load(string path) => Load(path, SampleAxes.Rows);

    /// <summary>
    /// Loads an .npz for a model whose <paramref name="axes"/> say where each input carries its samples: the number of samples
    /// and (when the axes come from a model) the arrays' ranks and fixed dimensions are checked from the headers, before any
    /// data is read.
    /// </summary>
    public static Dataset Load(string path, SampleAxes axes) => new(Npz.Read(path, members =>
    {
        // Shapes first: an array with its samples on the wrong axis is told the shape its input expects.
        CheckShapes(members.ToDictionary(m => m.Key, m => m.Shape), axes.Inputs, axes, axes.Model, path);
        CheckRows(members.Select(m => (m.Key, m.Shape)), axes, path);
    }), path, axes);

    /// <summary>Loads an .npz for a model: samples on each input's sample axis (<see cref="SampleAxes.For"/>), shapes checked from the headers.</summary>
    public static Dataset Load(string path, OnnxUnlearn.Onnx.ModelFile model) => Load(path, SampleAxes.For(model.Graph, model.Path));

    /// <summary>
    /// Loads an .npz for a model: the arrays' ranks and fixed dimensions are checked against <paramref name="inputs"/>
    /// (<see cref="CheckShapes(IEnumerable{global::Onnx.ValueInfoProto}, string)"/>) from the headers, before any data is read.
    /// </summary>
    public static Dataset Load(string path, IEnumerable<global::Onnx.ValueInfoProto> inputs, string model)
    {
        var wanted = inputs.ToList();
        return new(Npz.Read(path, members =>
        {
            CheckRows(members.Select(m => (m.Key, m.Shape)), SampleAxes.Rows, path);
            CheckShapes(members.ToDictionary(m => m.Key, m => m.Shape), wanted, SampleAxes.Rows, model, path);
        }), path);
    }

    /// <summary>An .npz read from a stream; <paramref name="name"/> labels messages.</summary>
    public static Dataset Load(Stream npz, string name, SampleAxes? axes = null) =>
        new(Npz.Read(npz, name, members => CheckRows(members.Select(m => (m.Key, m.Shape)), axes ?? SampleAxes.Rows, name)), name, axes);

    /// <summary>The data for a model with <paramref name="axes"/>: this one when it was read with them (or they are all axis 0), else a user error.</summary>
    public Dataset For(SampleAxes axes)
    {
        if (Axes.SameAs(axes)) return this;
        throw new UserError($"'{Source}' was read with other sample axes than the inputs of '{axes.Model}' have ({string.Join(", ", axes.Inputs.Select(i => $"{UserError.Quote(i.Name)}: {axes.Describe(i.Name)}"))}); " +
            "read it for that model (Dataset.Load(path, SampleAxes.For(model.Graph, path)))");
    }

    public bool Has(string key) => Arrays.ContainsKey(key);

    /// <summary>Checks that every name is present, naming the missing keys and what the file holds.</summary>
    public void Require(IEnumerable<string> names, string why)
    {
        var missing = names.Where(n => !Arrays.ContainsKey(n)).ToList();
        if (missing.Count > 0)
            throw new UserError($"'{Source}' has no array named {string.Join(", ", missing.Select(UserError.Quote))} ({why}); it holds {string.Join(", ", Arrays.Keys.Select(k => UserError.Escape(k)))}. Keys of a data file are the model's input names plus 'label'.");
    }

    /// <summary>Checks ranks and fixed dimensions of the arrays against the graph's declared input shapes.</summary>
    public void CheckShapes(IEnumerable<global::Onnx.ValueInfoProto> inputs, string model) =>
        CheckShapes(Arrays.ToDictionary(kv => kv.Key, kv => kv.Value.Shape), inputs, Axes, model, Source);

    static void CheckShapes(IReadOnlyDictionary<string, long[]> arrays, IEnumerable<global::Onnx.ValueInfoProto> inputs, SampleAxes axes, string model, string source)
    {
        foreach (var input in inputs)
        {
            if (!arrays.TryGetValue(input.Name, out var a) || input.Type?.TensorType?.Shape is not { } shape) continue;
            var dims = shape.Dim.Select(d => d.ValueCase == global::Onnx.TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue ? d.DimValue : -1).ToArray();
            string want = "[" + string.Join(", ", dims.Select(d => d < 0 ? "?" : d.ToString())) + "]";
            // The sample axis takes any length: a model with a fixed batch of 1 is fed one sample at a time.
            int axis = axes.Of(input.Name);
            bool ok = dims.Length == a.Length && dims.Select((d, i) => d < 0 || i == axis || d == a[i]).All(x => x);
            string samples = axis == SampleAxes.Once ? "given once: the input's own shape, fed to every batch" : $"axis {axis} = samples";
            if (!ok)
                throw new UserError($"'{source}': array {UserError.Quote(input.Name)} has shape {NdArray.FormatShape(a)} but model '{model}' expects {want} for input {UserError.Quote(input.Name)} ({samples}); reshape the data to match");
        }
    }

    /// <summary>
    /// Refuses NaN and infinite values in the named float arrays (those present; integer arrays hold none), naming the
    /// array, the first bad sample (row) and its position within the row, unless <paramref name="allow"/>.
    /// </summary>
    /// <param name="why">What the arrays are for, e.g. "inputs of 'model.onnx'".</param>
    public void CheckFinite(IEnumerable<string> names, bool allow, string why)
    {
        if (allow) return;
        foreach (var name in names)
        {
            if (!Arrays.TryGetValue(name, out var a) || passed.Contains("finite:" + name)) continue;
            long bad = a.Data switch
            {
                float[] f => TensorPrimitives.IsFiniteAll<float>(f) ? -1 : Array.FindIndex(f, v => !float.IsFinite(v)),
                double[] d => TensorPrimitives.IsFiniteAll<double>(d) ? -1 : Array.FindIndex(d, v => !double.IsFinite(v)),
                _ => -1,
            };
            if (bad >= 0)
            {
                double value = a.Data is float[] f ? f[bad] : ((double[])a.Data)[bad];
                string what = double.IsNaN(value) ? "NaN" : value > 0 ? "+Inf" : "-Inf";
                throw new UserError($"'{Source}': array {UserError.Quote(name)} ({why}) holds {what} at {Position(a, bad, 0, Axes.Of(name))}; a loss or gradient through it " +
                    $"is NaN. Repair or drop that sample, or set {UserError.Setting("AllowNonFinite")} to feed such values as they are");
            }
            passed.Add("finite:" + name);
        }
    }

    /// <summary>
    /// Checks the targets of a class loss: an integer array (bool and float arrays are refused, naming the dtype),
    /// every value in [0, <paramref name="classes"/>) except <paramref name="ignoreIndex"/>. With <paramref name="classes"/>
    /// null (not known) only negative labels are refused.
    /// </summary>
    /// <param name="loss">The loss and output, for messages: e.g. "ce of output 'logits'".</param>
    public void CheckClassLabels(string key, long? classes, long? ignoreIndex, string loss)
    {
        string check = $"classes:{key}:{classes}:{ignoreIndex}";
        if (!Arrays.TryGetValue(key, out var a) || passed.Contains(check)) return;
        if (a.Type is not (ElementType.Int64 or ElementType.Int32 or ElementType.UInt8))
            throw new UserError($"'{Source}': array {UserError.Quote(key)} has dtype {NdArray.Dtype(a.Type)}, but the loss {loss} takes integer class indices " +
                $"{(classes is { } c ? $"in [0, {c})" : "(0, 1, ...)")}; save the labels as integers, e.g. y.astype('int64')" +
                (a.Type == ElementType.Bool ? "" : $", or choose a loss for float targets ({UserError.Setting("Loss", "bce")} or {UserError.Setting("Loss", "mse")})"));
        var values = a.Data as long[] ?? a.ToInt64();
        for (long i = 0; i < values.LongLength; i++)
        {
            long v = values[i];
            if (v == ignoreIndex || (v >= 0 && (classes is not { } n || v < n))) continue;
            string range = classes is { } k ? $"outside the {k} classes [0, {k})" : "a negative class";
            throw new UserError($"'{Source}': array {UserError.Quote(key)} holds {v} at {Position(a, i, 0, Axes.Of(key))}, {range} of the loss {loss}; fix the label" +
                (ignoreIndex is { } ii ? $" (only {ii}, the ignore index, may lie outside)" : $", or leave such labels out with {UserError.Setting("IgnoreIndex", v.ToString())}"));
        }
        passed.Add(check);
    }

    /// <summary>"row 3, column 7" (the flat position within the row) or, for one value per row, "row 3"; rows counted from <paramref name="firstRow"/>.</summary>
    internal static string Position(NdArray a, long flat, long firstRow = 0, int axis = 0)
    {
        if (a.Shape.Length == 0) return "its only element";
        if (axis != 0) return $"flat index {flat} (C order, shape {NdArray.FormatShape(a.Shape)}{(axis > 0 ? $", samples on axis {axis}" : "")})";
        long perRow = a.Rows == 0 ? 1 : a.Length / a.Rows;
        return perRow == 1 ? $"row {firstRow + flat}" : $"row {firstRow + flat / perRow}, column {flat % perRow} (index within the row of shape {NdArray.FormatShape(a.Shape[1..])})";
    }

    /// <summary>Rows [start, start+count) of the named arrays (along each one's sample axis; an input given once whole) as
    /// OrtValues of the given element types (converted when the file's type differs).</summary>
    public IReadOnlyDictionary<string, OrtValue> Batch(long start, long count, IReadOnlyDictionary<string, TensorElementType> types)
    {
        if (batches.TryGetValue((start, count), out var cached)) return cached;
        var feed = new Dictionary<string, OrtValue>();
        foreach (var (name, type) in types)
            feed[name] = OrtFeeds.Create(Slice(name, start, count), type, $"'{Source}' array {UserError.Quote(name)}", start);
        return batches[(start, count)] = feed;
    }

    /// <summary>Samples [start, start+count) of one array along its sample axis; an array given once as it is.</summary>
    public NdArray Slice(string name, long start, long count) => Axes.Of(name) is var axis && axis == SampleAxes.Once ? Arrays[name] : Arrays[name].SliceAlong(axis, start, count);

    /// <summary>A subset of rows (e.g. a seeded sample) as a new dataset; the value checks this one passed hold for it too.</summary>
    public Dataset Take(IReadOnlyList<long> rows, string source)
    {
        var taken = new Dataset(Arrays.ToDictionary(kv => kv.Key, kv => Axes.Of(kv.Key) is var axis && axis == SampleAxes.Once ? kv.Value : kv.Value.TakeAlong(axis, rows)), source, Axes);
        taken.passed.UnionWith(passed);
        return taken;
    }

    /// <summary>The named arrays only (sharing their data), with their sample axes.</summary>
    public Dataset Only(IEnumerable<string> names)
    {
        var keep = names.ToHashSet();
        return new Dataset(Arrays.Where(kv => keep.Contains(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value), Source, Axes);
    }

    public void Dispose()
    {
        foreach (var feed in batches.Values) foreach (var v in feed.Values) v.Dispose();
        batches.Clear();
    }
}

public static class OrtFeeds
{
    /// <summary>The array as an OrtValue of <paramref name="type"/>; values the type cannot hold (a fraction or NaN for an
    /// integer input, an integer beyond its range) are refused naming <paramref name="what"/> and the position.</summary>
    /// <param name="firstRow">The row of the data set that is the array's first, for messages.</param>
    public static OrtValue Create(NdArray a, TensorElementType type, string what, long firstRow = 0)
    {
        OrtSessions.Initialize();
        return type switch
        {
            TensorElementType.Float => OrtValue.CreateTensorValueFromMemory(a.ToFloat(), a.Shape),
            TensorElementType.Double => OrtValue.CreateTensorValueFromMemory(a.ToDouble(), a.Shape),
            TensorElementType.Int64 => OrtValue.CreateTensorValueFromMemory(Integers(a, type, what, firstRow, long.MinValue, long.MaxValue), a.Shape),
            TensorElementType.Int32 => OrtValue.CreateTensorValueFromMemory(Integers(a, type, what, firstRow, int.MinValue, int.MaxValue).Select(v => (int)v).ToArray(), a.Shape),
            TensorElementType.UInt8 => OrtValue.CreateTensorValueFromMemory(Integers(a, type, what, firstRow, 0, 255).Select(v => (byte)v).ToArray(), a.Shape),
            TensorElementType.Bool => OrtValue.CreateTensorValueFromMemory(Integers(a, type, what, firstRow, long.MinValue, long.MaxValue).Select(v => v != 0).ToArray(), a.Shape),
            // Rounded to nearest even, as the model's own Cast would round them.
            TensorElementType.Float16 => OrtValue.CreateTensorValueFromMemory(Halves(a, what, firstRow), a.Shape),
            TensorElementType.BFloat16 => OrtValue.CreateTensorValueFromMemory(a.ToFloat().Select(v => (BFloat16)v).ToArray(), a.Shape),
            _ => throw new UserError($"{what}: the model wants element type {type}, which data files cannot feed yet"),
        };
    }

    /// <summary>The values as float16; a finite value beyond float16's range (±65504) would become infinite, and is refused.</summary>
    static Float16[] Halves(NdArray a, string what, long firstRow)
    {
        var values = a.ToFloat();
        long bad = Array.FindIndex(values, v => float.IsFinite(v) && float.IsInfinity((float)(Half)v));
        if (bad >= 0)
            throw new UserError($"{what} holds {values[bad]} at {Dataset.Position(a, bad, firstRow)}, beyond the range of the float16 input the model takes " +
                "there (±65504): it would be fed as infinity. Scale the data as the model was trained on it");
        return values.Select(v => (Float16)v).ToArray();
    }

    static long[] Integers(NdArray a, TensorElementType type, string what, long firstRow, long min, long max)
    {
        long[] values;
        try { values = a.ToInt64(); }
        catch (InvalidOperationException)
        {
            var d = a.ToDouble();
            long i = Array.FindIndex(d, v => Math.Floor(v) != v || v < long.MinValue || v >= 9223372036854775808.0);
            throw new UserError($"{what} holds {d[i]} at {Dataset.Position(a, i, firstRow)}, but the model takes {type} values there; save whole numbers as integers, e.g. arr.astype('int64')");
        }
        long bad = Array.FindIndex(values, v => v < min || v > max);
        if (bad >= 0)
            throw new UserError($"{what} holds {values[bad]} at {Dataset.Position(a, bad, firstRow)}, outside the range of {type} [{min}, {max}] the model takes there; fix the data");
        return values;
    }
}
