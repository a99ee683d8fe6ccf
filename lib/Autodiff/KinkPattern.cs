using Onnx;

namespace OnnxUnlearn.Autodiff;

/// <summary>
/// A fingerprint of the piecewise-linear decisions of a forward pass (which ReLU units are on, which element each max
/// pool picked, ...): one int64 per decision-making node. Two parameter vectors with equal fingerprints lie, with high
/// probability, in the same linear piece, so a finite difference between them is a derivative and not a jump across a kink.
/// Curvature uses it to shrink its step until θ ± εv stay in θ's piece.
/// </summary>
public static class KinkPattern
{
    public const string Output = "pattern";

    /// <summary>Decision masks (bool or int64 tensors) of one node, or none for smooth ops.</summary>
    static string[] Decisions(GraphBuilder b, NodeProto n)
    {
        string X(int i) => n.Input[i];
        string Y() => n.Output[0];
        return n.OpType switch
        {
            "Relu" or "LeakyRelu" or "PRelu" or "Abs" or "Elu" or "Selu" or "Celu" => [b.Op("Greater", [X(0), b.Scalar(0, X(0))])],
            "ThresholdedRelu" or "Clip" or "HardSigmoid" or "HardSwish" => [b.Op("Equal", [Y(), X(0)]), b.Op("Greater", [X(0), b.Scalar(0, X(0))])],
            "Max" or "Min" => n.Input.Select(x => b.Op("Equal", [x, Y()])).ToArray(),
            "MaxPool" => [b.Like(n, [X(0)], 2, "storage_order")[1]],
            "GlobalMaxPool" => [b.Op("ArgMax", [b.Op("Flatten", [X(0)], ("axis", 2L))], ("axis", 2L))],
            "ReduceMax" or "ReduceMin" => [b.Op("Equal", [X(0), b.Like(n, [.. n.Input], 1, "keepdims")[0]])],
            _ => [],
        };
    }

    /// <summary>Emits the fingerprint of every decision node on the forward path; null when the graph is smooth.</summary>
    public static string? Build(GraphBuilder b, IEnumerable<NodeProto> nodes)
    {
        var parts = new List<string>();
        foreach (var n in nodes)
            foreach (var mask in Decisions(b, n))
            {
                // Position-weighted sum: a unit switching on while another switches off still changes it.
                var flat = b.Op("Cast", [b.Reshape(mask, b.Ints(-1))], ("to", 7L));
                var weights = b.Op("Range", [b.Int(1), b.Op("Add", [b.Op("Size", [flat]), b.Int(1)]), b.Int(1)]);
                parts.Add(b.Op("ReduceSum", [b.Mul(flat, b.Op("Mul", [weights, weights]))], ("keepdims", 1L)));
            }
        return parts.Count == 0 ? null : b.Op("Concat", parts, ("axis", 0L));
    }
}
