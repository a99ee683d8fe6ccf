using Onnx;

namespace OnnxUnlearn.Onnx;

/// <summary>Operator domains, and the opset version a model imports for the default one.</summary>
public static class Domains
{
    /// <summary>The default ONNX domain, which has two spellings: "" and "ai.onnx".</summary>
    public static bool IsDefault(string domain) => domain is "" or "ai.onnx";

    /// <summary>An op as messages and the gradient registry name it: <c>Conv</c>, but <c>ai.onnx.ml.Normalizer</c>.</summary>
    public static string OpName(string domain, string opType) => IsDefault(domain) ? opType : domain + "." + opType;

    /// <summary>
    /// The default-domain opset version: the highest one imported, or 1 when the model imports none, which is how ONNX
    /// reads a model without opset imports (IR version &lt; 3; onnx/checker.cc).
    /// </summary>
    public static long DefaultOpset(this ModelProto model) =>
        model.OpsetImport.Where(o => IsDefault(o.Domain)).Select(o => o.Version).DefaultIfEmpty(1).Max();
}
