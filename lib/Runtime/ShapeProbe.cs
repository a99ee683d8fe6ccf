using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Runtime;

/// <summary>
/// Learns the element type and shape of every value in a forward graph by running it in ONNX Runtime with every
/// intermediate value exposed as an output. Run at two batch sizes, dimensions that change are marked dynamic (-1).
/// Rules use ranks and static shapes to emit lean gradient graphs (static perms, static reduction axes).
/// </summary>
public static class ShapeProbe
{
    /// <param name="feeds">Batches to probe with, each a full set of model inputs (ideally of different batch sizes).</param>
    public static TensorShapes Run(ModelProto model, IReadOnlyList<IReadOnlyDictionary<string, OrtValue>> feeds)
    {
        var probe = model.Clone();
        var g = probe.Graph;
        var existing = g.Output.Select(o => o.Name).ToHashSet();
        var names = new List<string>();
        foreach (var node in g.Node)
            foreach (var o in node.Output)
                if (o.Length > 0 && existing.Add(o)) g.Output.Add(new global::Onnx.ValueInfoProto { Name = o });
        foreach (var o in g.Output) names.Add(o.Name);

        Dictionary<string, ValueInfo>? merged = null;
        using var options = OrtSessions.Options(GraphOptimizationLevel.ORT_DISABLE_ALL, threads: 0);
        using var session = OrtSessions.Create(probe.ToByteArray(), options, "shape probe");
        foreach (var feed in feeds)
        {
            var inputNames = feed.Keys.ToArray();
            var inputs = inputNames.Select(n => feed[n]).ToArray();
            var outputNames = session.OutputNames.ToArray();
            using var results = OrtSessions.Run(session, inputNames, inputs, outputNames, "model (probing shapes)");
            var current = new Dictionary<string, ValueInfo>();
            for (int i = 0; i < outputNames.Length; i++)
            {
                var r = results[i];
                if (!r.IsTensor) continue;
                var info = r.GetTensorTypeAndShape();
                current[outputNames[i]] = new ValueInfo((int)info.ElementDataType, info.Shape, [info.Shape]) { Values = Values(r, info) };
            }
            foreach (var (name, v) in feed)
            {
                if (!v.IsTensor) continue;
                var info = v.GetTensorTypeAndShape();
                current[name] = new ValueInfo((int)info.ElementDataType, info.Shape, [info.Shape]);
            }
            merged = merged is null ? current : Merge(merged, current);
        }
        merged ??= [];
        foreach (var t in model.Graph.Initializer)
            merged.TryAdd(t.Name, new ValueInfo(t.DataType, t.Dims.ToArray(), [t.Dims.ToArray()]));
        return new TensorShapes(merged);
    }

    /// <summary>
    /// What a computed float value held (its range; its rows' sums and log-sum-exp): the loss heads refuse outputs that
    /// cannot be what the loss takes (probabilities given as logits, logits given as log-probabilities, ...).
    /// </summary>
    static ProbedValues? Values(OrtValue v, OrtTensorTypeAndShapeInfo info) => info.Shape.Length == 0 ? null : info.ElementDataType switch
    {
        TensorElementType.Float => ProbedValues.Of(v.GetTensorDataAsSpan<float>(), info.Shape[^1]),
        TensorElementType.Double => ProbedValues.Of(v.GetTensorDataAsSpan<double>(), info.Shape[^1]),
        _ => null,
    };

    static Dictionary<string, ValueInfo> Merge(Dictionary<string, ValueInfo> a, Dictionary<string, ValueInfo> b)
    {
        var result = new Dictionary<string, ValueInfo>();
        foreach (var (name, va) in a)
        {
            // A value missing from a run, or whose rank changed, keeps only what the first run saw.
            if (!b.TryGetValue(name, out var vb) || va.Rank != vb.Rank) { result[name] = va; continue; }
            result[name] = new ValueInfo(va.ElementType, va.Dims.Zip(vb.Dims, (x, y) => x == y ? x : -1L).ToArray(), [.. va.Observed, .. vb.Observed])
                { Values = va.Values is { } x && vb.Values is { } y ? x.Merge(y) : null };
        }
        return result;
    }
}
