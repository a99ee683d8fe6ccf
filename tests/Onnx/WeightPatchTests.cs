using Google.Protobuf;
using Onnx;
using OnnxUnlearn.Onnx;
using static OnnxUnlearn.Tests.Onnx.TestModels;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxUnlearn.Tests.Onnx;

public class WeightPatchTests
{
    private static readonly long[] Indices = [4, 1];
    private static readonly float[] NewValues = [-7.25f, 9.5f];

    private static Dictionary<string, TensorPatch> Patch(string name, long[]? indices, float[] values) =>
        new() { [name] = new TensorPatch(indices, values) };

    private static float[] Expected()
    {
        var expected = W.ToArray();
        for (var i = 0; i < Indices.Length; i++) expected[Indices[i]] = NewValues[i];
        return expected;
    }

    public static TheoryData<string> Float32Variants => ["raw_data", "float_data", "constant", "non-packed float_data"];

    private static byte[] Float32Model(string variant) => variant switch
    {
        "raw_data" => MatMulAdd(RawF32("W", [3, 2], W), RawF32("B", [2], B)).ToByteArray(),
        "float_data" => MatMulAdd(FloatData("W", [3, 2], W), RawF32("B", [2], B)).ToByteArray(),
        "constant" => ConstantMatMulAdd().ToByteArray(),
        "non-packed float_data" => NonPackedModel(),
        _ => throw new ArgumentException(variant),
    };

    /// <summary>
    /// W with one fixed32 field per element and its name between elements 2 and 3, appended as a second
    /// <c>graph</c> field that protobuf parsers (ONNX Runtime included) merge into the first.
    /// </summary>
    private static byte[] NonPackedModel()
    {
        using var stream = new MemoryStream();
        var tensor = new CodedOutputStream(stream);
        foreach (var dim in new long[] { 3, 2 })
        {
            tensor.WriteTag(1, WireFormat.WireType.Varint);
            tensor.WriteInt64(dim);
        }
        tensor.WriteTag(2, WireFormat.WireType.Varint);
        tensor.WriteInt32((int)DataType.Float);
        for (var i = 0; i < W.Length; i++)
        {
            if (i == 3)
            {
                tensor.WriteTag(8, WireFormat.WireType.LengthDelimited);
                tensor.WriteString("W");
            }
            tensor.WriteTag(4, WireFormat.WireType.Fixed32);
            tensor.WriteFloat(W[i]);
        }
        tensor.Flush();
        return [.. MatMulAdd(null, RawF32("B", [2], B)).ToByteArray(), .. Field(7, Field(5, stream.ToArray()))];
    }

    private static TensorProto WeightTensor(ModelProto model) =>
        model.Graph.Initializer.FirstOrDefault(t => t.Name == "W") ?? model.Graph.Node.Single(n => n.OpType == "Constant").Attribute[0].T;

    private static float[] Values(TensorProto tensor) =>
        tensor.RawData.Length > 0 ? RawFloats(tensor.RawData) : tensor.FloatData.ToArray();

    [Theory]
    [MemberData(nameof(Float32Variants))]
    public void PatchChangesOnlyTheChosenElementsAndMatchesReserializing(string variant)
    {
        using var dir = new TempDir();
        var before = Float32Model(variant);
        File.WriteAllBytes(dir.File("in.onnx"), before);
        var location = WeightPatch.Locate(before, dir.Path)["W"];
        Assert.Equal(6, location.ElementCount);
        for (var i = 0; i < W.Length; i++) Assert.Equal(W[i], ReadF32(before, location.ElementRange(i)));
        if (variant == "non-packed float_data") Assert.Equal(2, location.Runs.Count); // split by the interleaved name

        var summary = WeightPatch.Write(dir.File("in.onnx"), dir.File("out.onnx"), Patch("W", Indices, NewValues));

        var after = File.ReadAllBytes(dir.File("out.onnx"));
        AssertOnlyRangesDiffer(before, after, Ranges(location, Indices));
        // In memory, the same plan gives the same bytes and leaves the input array alone.
        var inMemory = WeightPatch.Apply(before, Patch("W", Indices, NewValues), "in.onnx");
        Assert.Equal(after, inMemory.Model);
        Assert.Equal(File.ReadAllBytes(dir.File("in.onnx")), before);
        Assert.Equal(summary.BytesChanged, inMemory.Summary.BytesChanged);
        Assert.Equal(Expected(), Values(WeightTensor(ModelProto.Parser.ParseFrom(after))));
        var result = Assert.Single(summary.Tensors);
        Assert.Equal(("W", 2L, 2L, dir.File("out.onnx")), (result.Name, result.ElementsWritten, result.ElementsChanged, result.File));

        // The same change made the ordinary way: parse, edit, re-serialize.
        var reference = ModelProto.Parser.ParseFrom(before);
        var tensor = WeightTensor(reference);
        if (tensor.RawData.Length > 0) tensor.RawData = ByteString.CopyFrom(Expected().SelectMany(BitConverter.GetBytes).ToArray());
        else
        {
            tensor.FloatData.Clear();
            tensor.FloatData.Add(Expected());
        }
        Save(reference, dir.File("reference.onnx"));
        var patchedOutput = Run(dir.File("out.onnx"), X);
        Assert.Equal(Run(dir.File("reference.onnx"), X), patchedOutput);
        Assert.NotEqual(Run(dir.File("in.onnx"), X), patchedOutput);
    }

    // New values are exact in bfloat16 and keep each float16 varint's width (positives below 2, negatives).
    private static readonly float[] WholeTensor = [0.5f, -1.25f, 0.375f, 1.5f, -0.75f, 0.125f];

    public static TheoryData<string> Encodings =>
        ["float16 raw_data", "bfloat16 raw_data", "double raw_data", "double double_data", "float16 int32_data"];

    /// <summary>W stored in <paramref name="encoding"/>, built independently of the library's converters.</summary>
    private static TensorProto EncodedWeight(string encoding, float[] values)
    {
        var tensor = new TensorProto { Name = "W", Dims = { 3, 2 } };
        switch (encoding)
        {
            case "float16 raw_data":
                return RawF16("W", [3, 2], values);
            case "bfloat16 raw_data": // truncation equals rounding for bfloat16-exact values
                tensor.DataType = (int)DataType.Bfloat16;
                tensor.RawData = ByteString.CopyFrom(values.SelectMany(v => BitConverter.GetBytes((ushort)(BitConverter.SingleToUInt32Bits(v) >> 16))).ToArray());
                break;
            case "double raw_data":
                tensor.DataType = (int)DataType.Double;
                tensor.RawData = ByteString.CopyFrom(values.SelectMany(v => BitConverter.GetBytes((double)v)).ToArray());
                break;
            case "double double_data":
                tensor.DataType = (int)DataType.Double;
                tensor.DoubleData.Add(values.Select(v => (double)v));
                break;
            case "float16 int32_data":
                tensor.DataType = (int)DataType.Float16;
                tensor.Int32Data.Add(values.Select(v => (int)BitConverter.HalfToUInt16Bits((Half)v)));
                break;
        }
        return tensor;
    }

    [Theory]
    [MemberData(nameof(Encodings))]
    public void WholeTensorPatchConvertsToTheStoredEncoding(string encoding)
    {
        using var dir = new TempDir();
        var before = Save(MatMulAdd(EncodedWeight(encoding, W), RawF32("B", [2], B)), dir.File("in.onnx"));

        var summary = WeightPatch.Write(before, dir.File("out.onnx"), Patch("W", null, WholeTensor));

        // Same-width values in a deterministic serializer: the patched file equals the model written with the new values.
        var reference = Save(MatMulAdd(EncodedWeight(encoding, WholeTensor), RawF32("B", [2], B)), dir.File("reference.onnx"));
        Assert.Equal(File.ReadAllBytes(reference), File.ReadAllBytes(dir.File("out.onnx")));
        Assert.Equal(6, summary.Tensors.Single().ElementsChanged);
        Assert.Equal(Run(reference, X), Run(dir.File("out.onnx"), X));
    }

    [Fact]
    public void Int32DataVarintOfDifferentWidthIsRefused()
    {
        using var dir = new TempDir();
        var input = Save(MatMulAdd(EncodedWeight("float16 int32_data", W), RawF32("B", [2], B)), dir.File("in.onnx"));

        // 0.1 is stored in 2 varint bytes, 3.0 (0x4200) needs 3.
        var error = Assert.Throws<UserError>(() => WeightPatch.Write(input, dir.File("out.onnx"), Patch("W", [0], [3f])));

        Assert.Contains("W", error.Message);
        Assert.Contains("int32_data", error.Message);
        Assert.False(File.Exists(dir.File("out.onnx")));
        Assert.Equal(["in.onnx"], Directory.GetFiles(dir.Path).Select(Path.GetFileName));
    }

    /// <summary>
    /// float32 updates of 2-byte weights in the fixtures: rounded to nearest even when written (expected bit patterns derived
    /// from the old ones: below half an ulp keeps them, above half goes one up, a tie goes to the even one), only the changed
    /// elements' 2 bytes differ, an update that rounds away changes nothing, and the model still runs.
    /// </summary>
    [Theory]
    [InlineData("fp16_cnn", "conv.weight")] // float16 initializer (raw_data)
    [InlineData("fp16_cnn", "fc.bias")]
    [InlineData("bf16_mlp", "fc1.weight")] // bfloat16 initializer
    [InlineData("bf16_mlp", "fc2.bias")] // bfloat16 Constant node
    public void TwoByteWeightsRoundToNearestEvenAndChangeOnlyTheirBytes(string fixture, string name)
    {
        using var dir = new TempDir();
        var input = Fixtures.File(fixture, "model.onnx");
        var before = File.ReadAllBytes(input);
        var location = WeightPatch.Locate(before, Path.GetDirectoryName(input)!)[name];
        bool half = fixture == "fp16_cnn";
        ushort Bits(byte[] model, long i) => System.Buffers.Binary.BinaryPrimitives.ReadUInt16LittleEndian(model.AsSpan((int)location.ElementRange(i).Offset, 2));
        float Value(uint bits) => half ? (float)BitConverter.UInt16BitsToHalf((ushort)bits) : BitConverter.UInt32BitsToSingle(bits << 16);
        // Elements 0-3, each between its stored value b and the next pattern b + 1 (away from zero): 0.25, 0.75, 0.5 of the way, and b + 1 itself.
        long[] indices = [0, 1, 2, 3];
        var old = indices.Select(i => (uint)Bits(before, i)).ToArray();
        float Between(uint b, double share) => (float)(Value(b) + share * ((double)Value(b + 1) - Value(b)));
        float[] values = [Between(old[0], 0.25), Between(old[1], 0.75), Between(old[2], 0.5), Value(old[3] + 1)];
        uint[] expected = [old[0], old[1] + 1, (old[2] & 1) == 0 ? old[2] : old[2] + 1, old[3] + 1];
        Assert.All(values.Take(3), (v, k) => Assert.NotEqual(Value(old[k]), v)); // every update is non-zero in float32

        var summary = WeightPatch.Write(input, dir.File("out.onnx"), Patch(name, indices, values));

        var after = File.ReadAllBytes(dir.File("out.onnx"));
        Assert.Equal(expected, indices.Select(i => (uint)Bits(after, i)));
        var changed = indices.Where(i => expected[i] != old[i]).ToArray();
        AssertOnlyRangesDiffer(before, after, Ranges(location, changed));
        var result = Assert.Single(summary.Tensors);
        Assert.Equal((4L, (long)changed.Length), (result.ElementsWritten, result.ElementsChanged));
        Assert.InRange(result.BytesChanged, changed.Length, 2 * changed.Length);
        // The parsed model reads the new values, and ONNX Runtime loads it.
        var file = ModelFile.Load(dir.File("out.onnx"));
        var stored = Parameters.Candidates(file.Graph).Single(c => c.Name == name).Tensor.ReadFloats(file);
        Assert.Equal(expected.Select(Value), stored.Take(4));
        using var session = new Microsoft.ML.OnnxRuntime.InferenceSession(dir.File("out.onnx"));
    }

    [Fact]
    public void BFloat16RoundsToNearestEven()
    {
        static ushort From(uint bits) => WeightPatch.ToBFloat16(BitConverter.UInt32BitsToSingle(bits));
        Assert.Equal(0x3F80, WeightPatch.ToBFloat16(1f));
        Assert.Equal(0x3F80, From(0x3F808000)); // tie, even stays
        Assert.Equal(0x3F82, From(0x3F818000)); // tie, odd rounds up
        Assert.Equal(0x3F81, From(0x3F808001)); // above half
        Assert.Equal(0x3F80, From(0x3F807FFF)); // below half
        Assert.Equal(0x7F80, From(0x7F7FFFFF)); // float max overflows to infinity
        Assert.True(float.IsNaN(BitConverter.UInt32BitsToSingle((uint)From(0x7FFFFFFF) << 16)));
    }

    [Fact]
    public void ConstantValueFloatAndValueFloatsArePatchable()
    {
        using var dir = new TempDir();
        ModelProto Build(float scale, float[] bias)
        {
            var model = MatMulAdd(RawF32("W", [3, 2], W), null);
            model.Graph.Node.Insert(0, Node("Constant", [], ["B"], new AttributeProto
            {
                Name = "value_floats", Type = AttributeProto.Types.AttributeType.Floats, Floats = { bias },
            }));
            model.Graph.Node.Insert(0, Node("Constant", [], ["S"], new AttributeProto
            {
                Name = "value_float", Type = AttributeProto.Types.AttributeType.Float, F = scale,
            }));
            model.Graph.Node.Single(n => n.OpType == "Add").Output[0] = "Z";
            model.Graph.Node.Add(Node("Mul", ["Z", "S"], ["Y"]));
            return model;
        }
        var input = Save(Build(2f, B), dir.File("in.onnx"));
        var locations = WeightPatch.Locate(File.ReadAllBytes(input), dir.Path);
        Assert.Equal((ValueStorage.AttributeFloat, 1L), (locations["S"].Storage, locations["S"].ElementCount));
        Assert.Equal((ValueStorage.AttributeFloats, 2L), (locations["B"].Storage, locations["B"].ElementCount));

        WeightPatch.Write(input, dir.File("out.onnx"), new Dictionary<string, TensorPatch>
        {
            ["S"] = new(null, [-3f]),
            ["B"] = new([1], [4.5f]),
        });

        var reference = Save(Build(-3f, [B[0], 4.5f]), dir.File("reference.onnx"));
        Assert.Equal(File.ReadAllBytes(reference), File.ReadAllBytes(dir.File("out.onnx")));
        Assert.Equal(Run(reference, X), Run(dir.File("out.onnx"), X));
    }

    [Fact]
    public void ConstantValueFloatOfZeroHasNoBytesAndSaysSo()
    {
        using var dir = new TempDir();
        var model = MatMulAdd(RawF32("W", [3, 2], W), RawF32("B", [2], B));
        model.Graph.Node.Add(Node("Constant", [], ["S"], new AttributeProto
        {
            Name = "value_float", Type = AttributeProto.Types.AttributeType.Float, F = 0f,
        }));
        var input = Save(model, dir.File("in.onnx"));

        var error = Assert.Throws<UserError>(() => WeightPatch.Write(input, dir.File("out.onnx"), Patch("S", null, [1f])));

        Assert.Contains("S", error.Message);
        Assert.Contains("value_float", error.Message);
    }

    [Theory]
    [InlineData("lr", "lr")]
    [InlineData("", "LinearRegressor_0")]
    public void LinearRegressorCoefficientsAndInterceptsArePatchable(string nodeName, string parameterPrefix)
    {
        using var dir = new TempDir();
        var model = LinearRegressor(nodeName);
        var input = Save(model, dir.File("in.onnx"));
        var before = File.ReadAllBytes(input);
        var locations = WeightPatch.Locate(before, dir.Path);
        var coefficients = locations[$"{parameterPrefix}.coefficients"];
        var intercepts = locations[$"{parameterPrefix}.intercepts"];

        var summary = WeightPatch.Write(input, dir.File("out.onnx"), new Dictionary<string, TensorPatch>
        {
            [$"{parameterPrefix}.coefficients"] = new([1], [3.25f]),
            [$"{parameterPrefix}.intercepts"] = new(null, [-1f]),
        });

        AssertOnlyRangesDiffer(before, File.ReadAllBytes(dir.File("out.onnx")), [coefficients.ElementRange(1), intercepts.ElementRange(0)]);
        Assert.Equal(2, summary.ElementsChanged);
        var attributes = model.Graph.Node[0].Attribute;
        attributes.Single(a => a.Name == "coefficients").Floats[1] = 3.25f;
        attributes.Single(a => a.Name == "intercepts").Floats[0] = -1f;
        var reference = Save(model, dir.File("reference.onnx"));
        Assert.Equal(File.ReadAllBytes(reference), File.ReadAllBytes(dir.File("out.onnx")));
        Assert.Equal(Run(reference, X), Run(dir.File("out.onnx"), X));
    }

    [Fact]
    public void WritingTheCurrentValuesChangesNothing()
    {
        using var dir = new TempDir();
        var input = Save(MatMulAdd(RawF32("W", [3, 2], W), RawF32("B", [2], B)), dir.File("in.onnx"));

        var summary = WeightPatch.Write(input, dir.File("out.onnx"), Patch("W", null, W));

        Assert.Equal(File.ReadAllBytes(input), File.ReadAllBytes(dir.File("out.onnx")));
        Assert.Equal((6L, 0L, 0L), (summary.Tensors[0].ElementsWritten, summary.ElementsChanged, summary.BytesChanged));
    }

    [Fact]
    public void RefusesToOverwriteTheInputUnlessInPlace()
    {
        using var dir = new TempDir();
        var input = Save(MatMulAdd(RawF32("W", [3, 2], W), RawF32("B", [2], B)), dir.File("in.onnx"));
        var original = File.ReadAllBytes(input);

        var error = Assert.Throws<UserError>(() => WeightPatch.Write(input, input, Patch("W", Indices, NewValues)));
        Assert.Contains("in.onnx", error.Message);
        Assert.Equal(original, File.ReadAllBytes(input));

        WeightPatch.Write(input, input, Patch("W", Indices, NewValues), inPlace: true);
        var after = File.ReadAllBytes(input);
        AssertOnlyRangesDiffer(original, after, Ranges(WeightPatch.Locate(original, dir.Path)["W"], Indices));
        Assert.Equal(Expected(), RawFloats(ModelProto.Parser.ParseFrom(after).Graph.Initializer[0].RawData));
        Assert.Equal(["in.onnx"], Directory.GetFiles(dir.Path).Select(Path.GetFileName)); // no temp files left
    }

    public static TheoryData<string, long[]?, float[], string[]> BadPatches => new()
    {
        { "w", [0], [1f], ["'w'", "Close names: W"] },
        { "Weights", [0], [1f], ["'Weights'", "W"] },
        { "W", [6], [1f], ["6", "W", "out of range", "0..5"] },
        { "W", [-1], [1f], ["-1", "W", "out of range"] },
        { "W", [2, 2], [1f, 2f], ["W", "index 2 more than once"] },
        { "W", [0, 1], [1f], ["W", "2 indices but 1 values"] },
        { "W", null, [1f, 2f], ["W", "2 values", "6 elements"] },
    };

    [Theory]
    [MemberData(nameof(BadPatches))]
    public void BadPatchesAreUserErrorsAndWriteNothing(string name, long[]? indices, float[] values, string[] mentions)
    {
        using var dir = new TempDir();
        var input = Save(MatMulAdd(RawF32("W", [3, 2], W), RawF32("B", [2], B)), dir.File("in.onnx"));

        var error = Assert.Throws<UserError>(() => WeightPatch.Write(input, dir.File("out.onnx"), Patch(name, indices, values)));

        foreach (var mention in mentions) Assert.Contains(mention, error.Message);
        Assert.False(File.Exists(dir.File("out.onnx")));
    }

    [Fact]
    public void DuplicateParameterNamesAreNotPatchable()
    {
        using var dir = new TempDir();
        var model = ConstantMatMulAdd();
        model.Graph.Initializer.Add(RawF32("W", [3, 2], W));
        var input = Save(model, dir.File("in.onnx"));

        Assert.DoesNotContain("W", WeightPatch.Locate(File.ReadAllBytes(input), dir.Path).Keys);
        var error = Assert.Throws<UserError>(() => WeightPatch.Write(input, dir.File("out.onnx"), Patch("W", [0], [1f])));
        Assert.Contains("more than one parameter", error.Message);
    }

    [Fact]
    public void NonFloatInitializersAreNotParameters()
    {
        var model = MatMulAdd(RawF32("W", [3, 2], W), RawF32("B", [2], B));
        model.Graph.Initializer.Add(new TensorProto { Name = "shape", DataType = (int)DataType.Int64, Dims = { 2 }, Int64Data = { 1, 2 } });

        var locations = WeightPatch.Locate(model.ToByteArray(), ".");

        Assert.Equal(["B", "W"], locations.Keys.Order());
        Assert.Equal(B[1], ReadF32(model.ToByteArray(), locations["B"].ElementRange(1)));
    }
}
