using Onnx;

namespace OnnxUnlearn.Onnx;

public static class NodeProtoExtensions
{
    /// <summary>
    /// A Constant node's value as a tensor: <c>value</c>, or <c>value_float</c>/<c>value_int</c> (rank 0) and
    /// <c>value_floats</c>/<c>value_ints</c> (rank 1) as float32/int64; null for the other forms (strings, sparse).
    /// </summary>
    public static TensorProto? ConstantValue(this NodeProto n)
    {
        foreach (var a in n.Attribute)
            switch (a.Name)
            {
                case "value" when a.T is not null: return a.T;
                case "value_float": return new TensorProto { DataType = DataTypes.Float, FloatData = { a.F } };
                case "value_floats": return new TensorProto { DataType = DataTypes.Float, Dims = { a.Floats.Count }, FloatData = { a.Floats } };
                case "value_int": return new TensorProto { DataType = DataTypes.Int64, Int64Data = { a.I } };
                case "value_ints": return new TensorProto { DataType = DataTypes.Int64, Dims = { a.Ints.Count }, Int64Data = { a.Ints } };
            }
        return null;
    }
}
