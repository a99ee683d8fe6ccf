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
        using var dir = new TempDir();
        var result = ModelDiff.Compare(SaveModel(dir.File("a.onnx")), SaveModel(dir.File("b.onnx")));

        Assert.True(result.Identical);
        Assert.Empty(result.Parameters);
    }

    [Fact]
    public void PatchedModelDiffersInExactlyThePatchedElements()
    {
        using var dir = new TempDir();
        var input = SaveModel(dir.File("a.onnx"));
        WeightPatch.Write(input, dir.File("b.onnx"), new Dictionary<string, TensorPatch>
        {
            ["W"] = new([0, 3, 5], [1f, 0.4f, -1f]), // 0.4 is W[3] already
        });

        var result = ModelDiff.Compare(input, dir.File("b.onnx"));

        Assert.False(result.StructureDiffers);
        Assert.False(result.OtherBytesDiffer);
        Assert.Equal([new ParameterDifference("W", 2, 6)], result.Parameters);
    }

    [Fact]
    public void ChangedMetadataOfTheSameLengthIsReportedAsOtherBytes()
    {
        using var dir = new TempDir();
        var result = ModelDiff.Compare(SaveModel(dir.File("a.onnx"), "producer-a"), SaveModel(dir.File("b.onnx"), "producer-b"));

        Assert.False(result.StructureDiffers);
        Assert.Equal(1, result.OtherBytesDiffering);
        Assert.Empty(result.Parameters);
    }

    [Fact]
    public void DifferentLayoutsAreReportedNotThrown()
    {
        using var dir = new TempDir();
        var longer = ModelDiff.Compare(SaveModel(dir.File("a.onnx")), SaveModel(dir.File("b.onnx"), "a longer producer name"));
        Assert.True(longer.StructureDiffers);
        Assert.Contains("length", longer.StructureDifference);

        // Same length, but W and B swap names: the parameters sit at other offsets.
        var swapped = MatMulAdd(RawF32("B", [3, 2], W), RawF32("W", [2], B));
        var result = ModelDiff.Compare(dir.File("a.onnx"), Save(swapped, dir.File("c.onnx")));
        Assert.True(result.StructureDiffers);
        Assert.Contains("W", result.StructureDifference);
    }

    [Fact]
    public void NonPackedElementsAreCountedOncePerElement()
    {
        using var dir = new TempDir();
        var model = MatMulAdd(FloatData("W", [3, 2], W), RawF32("B", [2], B));
        var a = Save(model, dir.File("a.onnx"));
        model.Graph.Initializer[0].FloatData[2] = float.NegativeZero; // differs from 0.3 in all four bytes
        var b = Save(model, dir.File("b.onnx"));

        Assert.Equal([new ParameterDifference("W", 1, 6)], ModelDiff.Compare(a, b).Parameters);
    }

    [Fact]
    public void ExternalDataFilesAreCompared()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("a"));
        var model = MatMulAdd(RawF32("W", [3, 2], W), RawF32("B", [2], B));
        var w = model.Graph.Initializer[0];
        File.WriteAllBytes(dir.File("a/w.bin"), w.RawData.ToByteArray());
        w.RawData = ByteString.Empty;
        w.DataLocation = TensorProto.Types.DataLocation.External;
        w.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "w.bin" });
        var a = Save(model, dir.File("a/model.onnx"));
        WeightPatch.Write(a, dir.File("b/model.onnx"), new Dictionary<string, TensorPatch> { ["W"] = new([1], [7f]) });

        Assert.Equal([new ParameterDifference("W", 1, 6)], ModelDiff.Compare(a, dir.File("b/model.onnx")).Parameters);

        File.AppendAllText(dir.File("b/w.bin"), "x");
        Assert.Contains("w.bin", ModelDiff.Compare(a, dir.File("b/model.onnx")).StructureDifference);
    }
}
