using Onnx;

namespace OnnxUnlearn.Onnx;

/// <summary>
/// ai.onnx.ml LinearClassifier and LinearRegressor, as skl2onnx writes LogisticRegression, LinearRegression and LinearSVC.
/// Their weights are float-list attributes, exposed as the parameters <c>&lt;node name&gt;.coefficients</c> [rows,
/// features] and <c>&lt;node name&gt;.intercepts</c> [rows] (an unnamed node is called <c>&lt;op type&gt;_&lt;index&gt;</c>,
/// as <see cref="WeightPatch"/> names them). For gradients, a later stage rewrites their scores in standard ops.
/// </summary>
public static class LinearModels
{
    public static bool Is(NodeProto n) => Is(n.Domain, n.OpType);

    /// <summary>Also for <see cref="WireLayout"/>, which reads a node's fields from the bytes, not a NodeProto.</summary>
    public static bool Is(string domain, string opType) => domain == "ai.onnx.ml" && opType is "LinearClassifier" or "LinearRegressor";

    public static string Prefix(NodeProto n, int index) => Prefix(n.Name, n.OpType, index);

    public static string Prefix(string name, string opType, int index) => name.Length > 0 ? name : $"{opType}_{index}";

    /// <summary>The float output that depends on the weights: a classifier's second output (scores), a regressor's only one.</summary>
    public static string ScoresOutput(NodeProto n) => n.OpType == "LinearClassifier" ? n.Output.ElementAtOrDefault(1) ?? "" : n.Output[0];

    /// <summary>The node's weight tensors (float32, shaped), named after <see cref="Prefix(NodeProto, int)"/>; only those the node has.</summary>
    public static IEnumerable<(string Name, TensorProto Tensor)> Tensors(NodeProto n, int index)
    {
        var w = Floats(n, "coefficients");
        int rows = Rows(n);
        if (w is not null)
            yield return (Prefix(n, index) + ".coefficients", Float(rows > 0 && w.Length % rows == 0 ? [rows, w.Length / rows] : [w.Length], w));
        if (Floats(n, "intercepts") is { } b) yield return (Prefix(n, index) + ".intercepts", Float([b.Length], b));
    }

    /// <summary>Classes (a classifier has one row per intercept, as ONNX Runtime counts them) or targets.</summary>
    internal static int Rows(NodeProto n) => n.OpType == "LinearRegressor"
        ? (int)(n.Attribute.FirstOrDefault(a => a.Name == "targets")?.I ?? 1)
        : Floats(n, "intercepts") is { Length: > 0 } b ? b.Length
        : Math.Max(1, Labels(n));

    internal static int Labels(NodeProto n) =>
        n.Attribute.Where(a => a.Name is "classlabels_ints" or "classlabels_strings").Select(a => Math.Max(a.Ints.Count, a.Strings.Count)).DefaultIfEmpty(0).Max();

    internal static float[]? Floats(NodeProto n, string name) => n.Attribute.FirstOrDefault(a => a.Name == name)?.Floats.ToArray();

    internal static TensorProto Float(long[] dims, float[] values, string name = "") => new() { Name = name, DataType = DataTypes.Float, Dims = { dims }, FloatData = { values } };
}
