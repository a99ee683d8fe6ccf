using Onnx;

namespace OnnxUnlearn.Runtime;

/// <summary>
/// Where each data input of a model carries its samples. The batch is the symbolic dimension (dim_param) on axis 0 of the
/// first data input; an input's sample axis is its first axis of that name (1 for a recurrent state [2, batch, 128]). An
/// input without one whose dimensions are all fixed (optimum's use_cache_branch [1]), and every rank-0 input (a sample
/// rate), is <see cref="Once"/>: one array of the input's own shape fed unchanged to every batch. Models without a
/// symbolic batch (a fixed batch of 1) and inputs with other symbolic or unknown axes keep samples on axis 0.
/// </summary>
public sealed class SampleAxes
{
    /// <summary>The axis of an input given once.</summary>
    public const int Once = -1;

    /// <summary>Sample axes differing from 0, by input name; names not listed (the targets among them) use axis 0.</summary>
    readonly Dictionary<string, int> axes;

    /// <summary>The data inputs, for shape checks (empty when not made from a model).</summary>
    public IReadOnlyList<ValueInfoProto> Inputs { get; }
    /// <summary>The model the axes come from, for messages.</summary>
    public string Model { get; }

    SampleAxes(Dictionary<string, int> axes, IReadOnlyList<ValueInfoProto> inputs, string model)
    {
        this.axes = axes; Inputs = inputs; Model = model;
    }

    /// <summary>Every array on axis 0: data files read without a model.</summary>
    public static readonly SampleAxes Rows = new([], [], "");

    public static SampleAxes For(GraphProto g, string model)
    {
        var inputs = Evaluator.DataInputs(g).Select(n => g.Input.First(i => i.Name == n)).ToList();
        var batch = inputs.Count > 0 && Dims(inputs[0]) is { Count: > 0 } first && first[0].DimParam.Length > 0 ? first[0].DimParam : null;
        var axes = new Dictionary<string, int>();
        foreach (var input in inputs)
        {
            var dims = Dims(input);
            if (dims is null) continue;
            int axis = batch is null ? -2 : dims.ToList().FindIndex(d => d.DimParam == batch);
            if (dims.Count == 0) axes[input.Name] = Once;
            else if (axis > 0) axes[input.Name] = axis;
            else if (axis == -1 && dims.All(d => d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue)) axes[input.Name] = Once;
        }
        return new SampleAxes(axes, inputs, model);
    }

    static IList<TensorShapeProto.Types.Dimension>? Dims(ValueInfoProto v) => v.Type?.TensorType?.Shape?.Dim;

    /// <summary>The sample axis of an array, or <see cref="Once"/>.</summary>
    public int Of(string name) => axes.GetValueOrDefault(name);

    public bool AnyOtherThanRows => axes.Count > 0;

    /// <summary>"axis 1" or "given once", as <c>inspect</c> shows it.</summary>
    public string Describe(string name) => Of(name) == Once ? "given once" : $"axis {Of(name)}";

    /// <summary>Same axes for every name.</summary>
    public bool SameAs(SampleAxes other) => axes.Count == other.axes.Count && axes.All(kv => other.axes.TryGetValue(kv.Key, out var a) && a == kv.Value);
}
