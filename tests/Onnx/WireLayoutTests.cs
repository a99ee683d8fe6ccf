using Google.Protobuf;
using OnnxUnlearn.Onnx;
using static OnnxUnlearn.Tests.Onnx.TestModels;

namespace OnnxUnlearn.Tests.Onnx;

/// <summary>The wire walker must turn every malformed input into a <see cref="UserError"/>, never a crash.</summary>
public class WireLayoutTests
{
    private static byte[] ValidModel() => MatMulAdd(FloatData("W", [3, 2], W), RawF32("B", [2], B)).ToByteArray();

    [Fact]
    public void EveryTruncationIsAUserErrorOrAValidPrefix()
    {
        var model = ValidModel();
        for (var length = 0; length < model.Length; length++)
        {
            try
            {
                WeightPatch.Locate(model.AsSpan(0, length), ".");
            }
            catch (UserError)
            {
                // Expected for most cuts; any other exception fails the test.
            }
        }
        var error = Assert.Throws<UserError>(() => WeightPatch.Locate(model.AsSpan(0, model.Length - 1), ".", "cut.onnx"));
        Assert.Contains("cut.onnx is truncated or not an ONNX model", error.Message);
    }

    /// <summary>The error of patching one element of W in <paramref name="model"/> (a file in <paramref name="dir"/>).</summary>
    static UserError PatchRefused(TempDir dir, string model) => Assert.Throws<UserError>(() =>
        WeightPatch.Write(dir.File(model), dir.File("out.onnx"), new Dictionary<string, TensorPatch> { ["W"] = new([0], [1f]) }));

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TruncatedModelFileIsAUserErrorNamingTheFile(bool half)
    {
        using var dir = new TempDir();
        var model = ValidModel();
        File.WriteAllBytes(dir.File("cut.onnx"), model[..(half ? model.Length / 2 : model.Length - 1)]);

        var error = PatchRefused(dir, "cut.onnx");

        Assert.Contains("cut.onnx", error.Message);
        Assert.Contains("truncated", error.Message);
    }

    [Fact]
    public void RandomBytesAreAUserErrorNamingTheFile()
    {
        using var dir = new TempDir();
        var bytes = new byte[4096];
        new Random(1234).NextBytes(bytes);
        File.WriteAllBytes(dir.File("random.onnx"), bytes);

        var error = PatchRefused(dir, "random.onnx");

        Assert.Contains("random.onnx", error.Message);
        Assert.Contains("not an ONNX model", error.Message);
    }

    [Fact]
    public void RandomAndMutatedInputsNeverCrash()
    {
        var random = new Random(42);
        var model = ValidModel();
        for (var round = 0; round < 2000; round++)
        {
            byte[] input;
            if (round % 2 == 0)
            {
                input = new byte[random.Next(0, 300)];
                random.NextBytes(input);
            }
            else
            {
                input = model.ToArray();
                for (var flips = random.Next(1, 4); flips > 0; flips--) input[random.Next(input.Length)] = (byte)random.Next(256);
            }
            try
            {
                WeightPatch.Locate(input, ".");
            }
            catch (UserError)
            {
                // Fine: only other exception types are crashes.
            }
        }
    }

    [Fact]
    public void GroupsAreRejected()
    {
        byte[] group = [(7 << 3) | 3, (7 << 3) | 4]; // start group / end group for field 7

        var error = Assert.Throws<UserError>(() => WeightPatch.Locate(group, ".", "groups.onnx"));

        Assert.Contains("group", error.Message);
    }

    [Fact]
    public void UnknownFieldsOfEveryWireTypeAreSkipped()
    {
        using var stream = new MemoryStream();
        var extra = new CodedOutputStream(stream);
        extra.WriteTag(100, WireFormat.WireType.Varint);
        extra.WriteUInt64(ulong.MaxValue);
        extra.WriteTag(101, WireFormat.WireType.Fixed64);
        extra.WriteDouble(1);
        extra.WriteTag(102, WireFormat.WireType.Fixed32);
        extra.WriteFloat(1);
        extra.WriteTag(103, WireFormat.WireType.LengthDelimited);
        extra.WriteString("ignored");
        extra.Flush();
        byte[] model = [.. stream.ToArray(), .. ValidModel(), .. Field(7, stream.ToArray())];

        var locations = WeightPatch.Locate(model, ".");

        Assert.Equal(6, locations["W"].ElementCount);
        Assert.Equal(W[5], ReadF32(model, locations["W"].ElementRange(5)));
    }
}
