using System.Buffers.Binary;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using OnnxUnlearn.Onnx;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxUnlearn.Tests.Onnx;

/// <summary>Small ONNX models built in memory for the write-back tests, plus file and runtime helpers.</summary>
internal static class TestModels
{
    public static readonly float[] W = [0.1f, -0.2f, 0.3f, 0.4f, -0.5f, 0.6f]; // [3, 2]
    public static readonly float[] B = [0.25f, -0.75f];
    public static readonly float[] X = [1f, 2f, -3f];

    public static TensorProto RawF32(string name, long[] dims, float[] values) => new()
    {
        Name = name,
        DataType = (int)DataType.Float,
        Dims = { dims },
        RawData = ByteString.CopyFrom(values.SelectMany(BitConverter.GetBytes).ToArray()),
    };

    public static TensorProto FloatData(string name, long[] dims, float[] values) => new()
    {
        Name = name, DataType = (int)DataType.Float, Dims = { dims }, FloatData = { values },
    };

    public static TensorProto RawF16(string name, long[] dims, float[] values) => new()
    {
        Name = name,
        DataType = (int)DataType.Float16,
        Dims = { dims },
        RawData = ByteString.CopyFrom(values.SelectMany(v => BitConverter.GetBytes((Half)v)).ToArray()),
    };

    /// <summary>
    /// Y = MatMul(X, W) + B with X [1, 3]. A W whose data type is not float goes through Cast first,
    /// so the same graph runs float16, bfloat16 and double weights. A null W or B is left for the caller to provide.
    /// </summary>
    public static ModelProto MatMulAdd(TensorProto? w, TensorProto? b, string producer = "onnx-unlearn-tests")
    {
        var graph = new GraphProto { Name = "matmul_add" };
        graph.Input.Add(Value("X", 1, 3));
        graph.Output.Add(Value("Y", 1, 2));
        var weight = "W";
        if (w is not null)
        {
            graph.Initializer.Add(w);
            if (w.DataType != (int)DataType.Float)
            {
                weight = "W_float";
                graph.Node.Add(Node("Cast", ["W"], [weight], new AttributeProto
                {
                    Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = (long)DataType.Float,
                }));
            }
        }
        if (b is not null) graph.Initializer.Add(b);
        graph.Node.Add(Node("MatMul", ["X", weight], ["XW"]));
        graph.Node.Add(Node("Add", ["XW", "B"], ["Y"]));
        return Model(graph, producer);
    }

    /// <summary>Same graph with W produced by a Constant node instead of an initializer.</summary>
    public static ModelProto ConstantMatMulAdd()
    {
        var model = MatMulAdd(null, RawF32("B", [2], B));
        model.Graph.Node.Insert(0, Node("Constant", [], ["W"], new AttributeProto
        {
            Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = RawF32("", [3, 2], W),
        }));
        return model;
    }

    /// <summary>Y = X · coefficients + intercepts via ai.onnx.ml LinearRegressor.</summary>
    public static ModelProto LinearRegressor(string nodeName)
    {
        var graph = new GraphProto { Name = "linear" };
        graph.Input.Add(Value("X", 1, 3));
        graph.Output.Add(Value("Y", 1, 1));
        var node = Node("LinearRegressor", ["X"], ["Y"],
            new AttributeProto { Name = "coefficients", Type = AttributeProto.Types.AttributeType.Floats, Floats = { 0.5f, -1.5f, 2f } },
            new AttributeProto { Name = "intercepts", Type = AttributeProto.Types.AttributeType.Floats, Floats = { 0.125f } },
            new AttributeProto { Name = "targets", Type = AttributeProto.Types.AttributeType.Int, I = 1 });
        node.Name = nodeName;
        node.Domain = "ai.onnx.ml";
        graph.Node.Add(node);
        var model = Model(graph, "onnx-unlearn-tests");
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "ai.onnx.ml", Version = 1 });
        return model;
    }

    public static NodeProto Node(string opType, string[] inputs, string[] outputs, params AttributeProto[] attributes) => new()
    {
        OpType = opType, Input = { inputs }, Output = { outputs }, Attribute = { attributes },
    };

    private static ModelProto Model(GraphProto graph, string producer) => new()
    {
        IrVersion = 8,
        ProducerName = producer,
        OpsetImport = { new OperatorSetIdProto { Domain = "", Version = 13 } },
        Graph = graph,
    };

    private static ValueInfoProto Value(string name, params long[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var dim in dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = dim });
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)DataType.Float, Shape = shape } },
        };
    }

    /// <summary>A protobuf length-delimited field: tag, length, payload.</summary>
    public static byte[] Field(int number, byte[] payload)
    {
        using var stream = new MemoryStream();
        var output = new CodedOutputStream(stream);
        output.WriteTag(number, WireFormat.WireType.LengthDelimited);
        output.WriteBytes(ByteString.CopyFrom(payload));
        output.Flush();
        return stream.ToArray();
    }

    public static string Save(ModelProto model, string path)
    {
        File.WriteAllBytes(path, model.ToByteArray());
        return path;
    }

    public static float[] Run(string modelPath, float[] x)
    {
        using var session = new InferenceSession(modelPath);
        using var input = OrtValue.CreateTensorValueFromMemory(x, [1, x.Length]);
        using var options = new RunOptions();
        using var outputs = session.Run(options, ["X"], [input], session.OutputNames);
        return outputs[0].GetTensorDataAsSpan<float>().ToArray();
    }

    /// <summary>Asserts the files have equal length and differ nowhere outside <paramref name="allowed"/> byte ranges.</summary>
    public static void AssertOnlyRangesDiffer(byte[] before, byte[] after, IEnumerable<(long Offset, int Length)> allowed)
    {
        Assert.Equal(before.Length, after.Length);
        var mayChange = new bool[before.Length];
        foreach (var (offset, length) in allowed)
            for (var i = 0; i < length; i++) mayChange[offset + i] = true;
        for (var i = 0; i < before.Length; i++)
            if (!mayChange[i]) Assert.True(before[i] == after[i], $"byte {i} changed outside the patched ranges");
    }

    public static IEnumerable<(long Offset, int Length)> Ranges(ValueLocation location, IEnumerable<long> indices) =>
        indices.Select(location.ElementRange);

    public static float ReadF32(byte[] bytes, (long Offset, int Length) range) =>
        BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan((int)range.Offset, range.Length));

    public static float[] RawFloats(ByteString raw) =>
        Enumerable.Range(0, raw.Length / 4).Select(i => BinaryPrimitives.ReadSingleLittleEndian(raw.Span[(i * 4)..])).ToArray();
}
