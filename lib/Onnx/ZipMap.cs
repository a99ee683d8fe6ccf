using Onnx;
using static OnnxUnlearn.UserError;

namespace OnnxUnlearn.Onnx;

/// <summary>
/// ai.onnx.ml ZipMap, which skl2onnx appends to every classifier by default: it turns the probability tensor [N, C] into a
/// sequence of {class: probability} maps for callers. That is no tensor, so no loss can be taken of it: the tensor it
/// reads is the output to use. Nothing reads a ZipMap's maps inside a graph, so it is never on a loss path.
/// </summary>
public static class ZipMap
{
    public static bool Is(NodeProto n) => n.Domain == "ai.onnx.ml" && n.OpType == "ZipMap";

    /// <summary>The ZipMap node that makes <paramref name="value"/>, or null.</summary>
    public static NodeProto? Making(GraphProto g, string value) => g.Node.FirstOrDefault(n => Is(n) && n.Output.Contains(value));

    /// <summary>The user error for a loss asked of a ZipMap's output, naming the tensor to use instead.</summary>
    public static UserError NotATensor(NodeProto zipMap, string output) => new(
        $"output '{output}' is a sequence of maps made by ZipMap '{(zipMap.Name.Length > 0 ? zipMap.Name : output)}' from the tensor " +
        $"'{zipMap.Input[0]}'; a loss needs a tensor: use {Setting("Output", $"'{zipMap.Input[0]}'")}");
}
