using Google.Protobuf;
using Onnx;
using OnnxUnlearn.Onnx;
using static OnnxUnlearn.Tests.Onnx.TestModels;

namespace OnnxUnlearn.Tests.Onnx;

public class ModelDiffTests
{
    private static string SaveModel(string path, string producer = "onnx-unlearn-tests") =>
        Save(MatMulAdd(RawF32("W", [3, 2], W), RawF32("B", [2], B), producer), path);

    [Fact]
    public void IdenticalModelsHaveNoDifferences()
    {
        using var dir = new TempFolder();
        var result = ModelDiff.Compare(SaveModel(dir["a.onnx"]), SaveModel(dir["b.onnx"]));

        Assert.True(result.Identical);
        Assert.Empty(result.Parameters);
    }

    [Fact]
    public void PatchedModelDiffersInExactlyThePatchedElements()
    {
        using var dir = new TempFolder();
        var input = SaveModel(dir["a.onnx"]);
        WeightPatch.Write(input, dir["b.onnx"], new Dictionary<string, TensorPatch>
        {
            ["W"] = new([0, 3, 5], [1f, 0.4f, -1f]), // 0.4 is W[3] already
        });

        var result = ModelDiff.Compare(input, dir["b.onnx"]);

        Assert.False(result.StructureDiffers);
        Assert.False(result.OtherBytesDiffer);
        Assert.Equal([new ParameterDifference("W", 2, 6)], result.Parameters);
    }

    [Fact]
    public void ChangedMetadataOfTheSameLengthIsReportedAsOtherBytes()
    {
        using var dir = new TempFolder();
        var result = ModelDiff.Compare(SaveModel(dir["a.onnx"], "producer-a"), SaveModel(dir["b.onnx"], "producer-b"));

        Assert.False(result.StructureDiffers);
        Assert.Equal(1, result.OtherBytesDiffering);
        Assert.Empty(result.Parameters);
    }

    [Fact]
    public void DifferentLayoutsAreReportedNotThrown()
    {
        using var dir = new TempFolder();
        var longer = ModelDiff.Compare(SaveModel(dir["a.onnx"]), SaveModel(dir["b.onnx"], "a longer producer name"));
        Assert.True(longer.StructureDiffers);
        Assert.Contains("length", longer.StructureDifference);

        // Same length, but W and B swap names: the parameters sit at other offsets.
        var swapped = MatMulAdd(RawF32("B", [3, 2], W), RawF32("W", [2], B));
        var result = ModelDiff.Compare(dir["a.onnx"], Save(swapped, dir["c.onnx"]));
        Assert.True(result.StructureDiffers);
        Assert.Contains("W", result.StructureDifference);
    }

    [Fact]
    public void NonPackedElementsAreCountedOncePerElement()
    {
        using var dir = new TempFolder();
        var model = MatMulAdd(FloatData("W", [3, 2], W), RawF32("B", [2], B));
        var a = Save(model, dir["a.onnx"]);
        model.Graph.Initializer[0].FloatData[2] = float.NegativeZero; // differs from 0.3 in all four bytes
        var b = Save(model, dir["b.onnx"]);

        Assert.Equal([new ParameterDifference("W", 1, 6)], ModelDiff.Compare(a, b).Parameters);
    }

    [Fact]
    public void ExternalDataFilesAreCompared()
    {
        using var dir = new TempFolder();
        Directory.CreateDirectory(dir["a"]);
        var model = MatMulAdd(RawF32("W", [3, 2], W), RawF32("B", [2], B));
        var w = model.Graph.Initializer[0];
        File.WriteAllBytes(dir["a/w.bin"], w.RawData.ToByteArray());
        w.RawData = ByteString.Empty;
        w.DataLocation = TensorProto.Types.DataLocation.External;
        w.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "w.bin" });
        var a = Save(model, dir["a/model.onnx"]);
        WeightPatch.Write(a, dir["b/model.onnx"], new Dictionary<string, TensorPatch> { ["W"] = new([1], [7f]) });

        Assert.Equal([new ParameterDifference("W", 1, 6)], ModelDiff.Compare(a, dir["b/model.onnx"]).Parameters);

        File.AppendAllText(dir["b/w.bin"], "x");
        Assert.Contains("w.bin", ModelDiff.Compare(a, dir["b/model.onnx"]).StructureDifference);
    }
}
