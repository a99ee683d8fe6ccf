using Onnx;
using static OnnxUnlearn.UserError;

namespace OnnxUnlearn.Onnx;

/// <summary>Where a parameter's values live: an initializer, a Constant node's value, or a float-list attribute of an ai.onnx.ml linear node.</summary>
public enum ParameterStorage { Initializer, Constant, Attribute }

/// <summary>A float tensor of the model that could be trained, and whether it is (with the reason when not).</summary>
public sealed record Parameter(string Name, ParameterStorage Storage, int DataType, long[] Shape, bool External, bool Trainable, string? WhyNot)
{
    /// <summary>The If branch the tensor lives in (e.g. "If 'node' then_branch"; <see cref="Branches"/>), null for the top-level graph.</summary>
    public string? Branch { get; init; }

    /// <summary>For a quantized weight (DataType int8/uint8, read through a DequantizeLinear): its integer grid. The
    /// parameter's values are then the real weights W = (q − zp)·scale (<see cref="Quantization"/>).</summary>
    public QuantGrid? Grid { get; init; }

    public long Elements => Shape.Aggregate(1L, (a, d) => a * d);
}

/// <summary>A tensor that may be a parameter: its name, storage, value and the graph value whose path to the output decides trainability.</summary>
public sealed record ParameterCandidate(string Name, ParameterStorage Storage, TensorProto Tensor, string Via);

/// <summary>
/// The one notion of "parameter" used by every command: float initializers, float Constant-node tensors (<c>value</c>,
/// <c>value_float(s)</c>: paddle2onnx keeps every weight there) and the coefficients/intercepts of ai.onnx.ml
/// LinearClassifier/LinearRegressor nodes. Which of them are trainable (by default: rank ≥ 1 and on a differentiable path
/// to the chosen output) is for the gradient stage to say, as only it knows which inputs of an op are differentiable.
/// </summary>
public static class Parameters
{
    /// <summary>Every tensor of the top-level graph that may be a parameter (float or not), in graph order.</summary>
    public static IEnumerable<ParameterCandidate> Candidates(GraphProto g)
    {
        foreach (var t in g.Initializer) yield return new(t.Name, ParameterStorage.Initializer, t, t.Name);
        for (int i = 0; i < g.Node.Count; i++)
        {
            var n = g.Node[i];
            if (n.OpType == "Constant" && Domains.IsDefault(n.Domain) && n.Output.Count > 0 && n.ConstantValue() is { } t)
                yield return new(n.Output[0], ParameterStorage.Constant, t, n.Output[0]);
            else if (LinearModels.Is(n))
                foreach (var (name, tensor) in LinearModels.Tensors(n, i)) yield return new(name, ParameterStorage.Attribute, tensor, LinearModels.ScoresOutput(n));
        }
    }

    /// <summary>
    /// The output a loss is taken of by default: the first graph output that is (or may be, when undeclared) a float
    /// tensor. Classifiers list their integer labels first (LinearClassifier: labels, then scores). An output made by a
    /// ZipMap (skl2onnx's default for classifiers: a sequence of maps) stands for the probability tensor the ZipMap reads.
    /// Null when there is none.
    /// </summary>
    public static string? DefaultOutput(GraphProto g)
    {
        foreach (var o in g.Output)
        {
            if (ZipMap.Making(g, o.Name) is { } zip) return zip.Input[0];
            if (o.Type is null || o.Type.ValueCase == TypeProto.ValueOneofCase.None || o.Type.TensorType is { } t && (t.ElemType == 0 || DataTypes.IsFloat(t.ElemType)))
                return o.Name;
        }
        return null;
    }

    /// <summary>The chosen output, or the default one; a user error naming the outputs when there is no float output.</summary>
    public static string OutputOrDefault(ModelFile file, string? output)
    {
        var g = file.Graph;
        if (output is not null) return ZipMap.Making(g, output) is { } zip ? throw ZipMap.NotATensor(zip, output) : output;
        if (g.Output.Count == 0) throw new UserError($"model '{file.Path}' has no outputs");
        return DefaultOutput(g) ?? throw new UserError(
            $"model '{file.Path}' has no float output to take a loss of (the default is the first float output); its outputs are " +
            string.Join(", ", g.Output.Select(o => $"'{o.Name}' ({TypeName(o)})")) + $". Name a float value of the graph ({Setting("Output")})");
    }

    static string TypeName(global::Onnx.ValueInfoProto v) => DataTypes.Describe(v.Type);
}
