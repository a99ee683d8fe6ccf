using Google.Protobuf;
using Onnx;

namespace OnnxUnlearn.Onnx;

/// <summary>Building AttributeProtos: every rewrite of a graph (opset upgrade, lowering, gradients) writes them one way.</summary>
public static class Attributes
{
    /// <summary>An attribute of the type of <paramref name="value"/>: long, int, float, string, long[], float[], string[], TensorProto.</summary>
    public static AttributeProto Make(string name, object value) => value switch
    {
        long v => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = v },
        int v => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = v },
        float v => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = v },
        string v => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(v) },
        long[] v => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints, Ints = { v } },
        float[] v => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Floats, Floats = { v } },
        string[] v => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Strings, Strings = { v.Select(ByteString.CopyFromUtf8) } },
        TensorProto v => new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Tensor, T = v },
        _ => throw new ArgumentException($"unsupported attribute value {value.GetType()}"),
    };
}
