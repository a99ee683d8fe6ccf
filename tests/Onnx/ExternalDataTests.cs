using System.Security.Cryptography;
using Onnx;
using OnnxUnlearn.Onnx;
using static OnnxUnlearn.Tests.Onnx.TestModels;
using DataType = Onnx.TensorProto.Types.DataType;

namespace OnnxUnlearn.Tests.Onnx;

public class ExternalDataTests
{
    private const long WOffset = 16, BOffset = 48;
    private static readonly long[] Indices = [0, 5];
    private static readonly float[] NewValues = [2.5f, -4f];

    private static TensorProto External(string name, long[] dims, string location, long offset, long? length)
    {
        var tensor = new TensorProto { Name = name, DataType = (int)DataType.Float, Dims = { dims }, DataLocation = TensorProto.Types.DataLocation.External };
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString() });
        if (length is { } l) tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = l.ToString() });
        return tensor;
    }

    /// <summary>W and B in one data file, with filler around them that must survive untouched.</summary>
    private static string CreateModel(string folder, string location = "data/w.bin", long wOffset = WOffset)
    {
        Directory.CreateDirectory(folder);
        var dataPath = Path.Combine(folder, location);
        Directory.CreateDirectory(Path.GetDirectoryName(dataPath)!);
        byte[] data =
        [
            .. Enumerable.Repeat((byte)0xAB, (int)WOffset), .. W.SelectMany(BitConverter.GetBytes),
            .. Enumerable.Repeat((byte)0xCD, 8), .. B.SelectMany(BitConverter.GetBytes), .. Enumerable.Repeat((byte)0xEF, 4),
        ];
        File.WriteAllBytes(dataPath, data);
        var model = MatMulAdd(External("W", [3, 2], location, wOffset, 24), External("B", [2], location, BOffset, null));
        return Save(model, Path.Combine(folder, "model.onnx"));
    }

    private static Dictionary<string, TensorPatch> Patch() => new() { ["W"] = new TensorPatch(Indices, NewValues) };

    private static Dictionary<string, string> Hashes(string folder) =>
        Directory.GetFiles(folder, "*", SearchOption.AllDirectories)
            .ToDictionary(f => Path.GetRelativePath(folder, f), f => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f))));

    [Fact]
    public void PatchesACopyOfTheDataFileOnlyInTheChangedRanges()
    {
        using var dir = new TempDir();
        var input = CreateModel(dir.File("in"));
        var hashes = Hashes(dir.File("in"));
        var location = WeightPatch.Locate(File.ReadAllBytes(input), dir.File("in"))["W"];
        Assert.Equal((Path.Combine("data", "w.bin"), ValueStorage.ExternalData), (location.DataFile, location.Storage));
        Assert.Equal((WOffset, 4), location.ElementRange(0));

        var summary = WeightPatch.Write(input, dir.File("out/model.onnx"), Patch());
        // A model held in memory has no folder for its data files: patching external data there is refused by name.
        var refused = Assert.Throws<UserError>(() => WeightPatch.Apply(File.ReadAllBytes(input), Patch(), "in.onnx"));
        Assert.StartsWith("tensor 'W' in model file 'in.onnx' refers to", refused.Message);

        Assert.Equal(hashes, Hashes(dir.File("in")));
        Assert.Equal(File.ReadAllBytes(input), File.ReadAllBytes(dir.File("out/model.onnx")));
        var before = File.ReadAllBytes(dir.File("in/data/w.bin"));
        var after = File.ReadAllBytes(dir.File("out/data/w.bin"));
        AssertOnlyRangesDiffer(before, after, Ranges(location, Indices));
        Assert.Equal(NewValues, Indices.Select(i => ReadF32(after, location.ElementRange(i))));
        var result = Assert.Single(summary.Tensors);
        Assert.Equal((dir.File("out/data/w.bin"), 2L, 8L), (result.File, result.ElementsChanged, result.BytesChanged));

        // The same change made another way: W moved inline with the new values.
        var reference = ModelProto.Parser.ParseFrom(File.ReadAllBytes(input));
        var expected = W.ToArray();
        for (var i = 0; i < Indices.Length; i++) expected[Indices[i]] = NewValues[i];
        reference.Graph.Initializer[0] = RawF32("W", [3, 2], expected);
        Directory.CreateDirectory(dir.File("reference"));
        File.Copy(dir.File("in/data/w.bin"), dir.File("reference/w.bin")); // B is still external
        reference.Graph.Initializer[1].ExternalData[0].Value = "w.bin";
        Save(reference, dir.File("reference/model.onnx"));
        Assert.Equal(Run(dir.File("reference/model.onnx"), X), Run(dir.File("out/model.onnx"), X));
        Assert.NotEqual(Run(input, X), Run(dir.File("out/model.onnx"), X));
    }

    [Fact]
    public void RefusesToOverwriteTheInputDataFileUnlessInPlace()
    {
        using var dir = new TempDir();
        var input = CreateModel(dir.Path, "w.bin");
        var hashes = Hashes(dir.Path);

        var error = Assert.Throws<UserError>(() => WeightPatch.Write(input, dir.File("patched.onnx"), Patch()));
        Assert.Contains("w.bin", error.Message);
        Assert.Equal(hashes, Hashes(dir.Path));

        WeightPatch.Write(input, dir.File("patched.onnx"), Patch(), inPlace: true);
        Assert.Equal(File.ReadAllBytes(input), File.ReadAllBytes(dir.File("patched.onnx")));
        var location = WeightPatch.Locate(File.ReadAllBytes(input), dir.Path)["W"];
        Assert.Equal(NewValues, Indices.Select(i => ReadF32(File.ReadAllBytes(dir.File("w.bin")), location.ElementRange(i))));
        Assert.Equal(["model.onnx", "patched.onnx", "w.bin"], Directory.GetFiles(dir.Path).Select(Path.GetFileName).Order());
        Run(dir.File("patched.onnx"), X);
    }

    public static TheoryData<string, string> HostileLocations => new()
    {
        { "absolute", "absolute" },
        { "../outside.bin", "escapes" },
        { "sub/../../outside.bin", "escapes" },
        { "link.bin", "symlink" },
        { "linked-folder/inside.bin", "symlink" },
        { "missing.bin", "does not exist" },
        { "past-eof", "has only" },
    };

    [Theory]
    [MemberData(nameof(HostileLocations))]
    public void HostileExternalDataIsAUserErrorNamingTensorAndPath(string location, string problem)
    {
        using var dir = new TempDir();
        var modelFolder = dir.File("model");
        CreateModel(modelFolder, "w.bin");
        var outside = dir.File("outside.bin");
        File.Copy(Path.Combine(modelFolder, "w.bin"), outside);
        Directory.CreateDirectory(dir.File("outside-folder"));
        File.Copy(outside, dir.File("outside-folder/inside.bin"));
        File.CreateSymbolicLink(Path.Combine(modelFolder, "link.bin"), outside);
        Directory.CreateSymbolicLink(Path.Combine(modelFolder, "linked-folder"), dir.File("outside-folder"));
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(modelFolder, "model.onnx")));
        var entries = model.Graph.Initializer.Single(t => t.Name == "W").ExternalData;
        switch (location)
        {
            case "absolute":
                location = outside;
                break;
            case "past-eof":
                location = "w.bin";
                entries.Single(e => e.Key == "offset").Value = "48"; // 24 bytes from 48 run past the 60-byte file
                break;
        }
        entries.Single(e => e.Key == "location").Value = location;
        var input = Save(model, Path.Combine(modelFolder, "model.onnx"));

        var error = Assert.Throws<UserError>(() => WeightPatch.Write(input, dir.File("out/model.onnx"), Patch()));

        Assert.Contains("tensor 'W'", error.Message);
        Assert.Contains(location, error.Message);
        Assert.Contains(problem, error.Message);
        Assert.False(Directory.Exists(dir.File("out")));
    }

    [Fact]
    public void DataFilesOfNonParameterTensorsAreCopiedAndChecked()
    {
        using var dir = new TempDir();
        var input = CreateModel(dir.File("in"), "w.bin");
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(input));
        File.WriteAllBytes(dir.File("in/ints.bin"), BitConverter.GetBytes(7L));
        var ints = External("ints", [1], "ints.bin", 0, 8);
        ints.DataType = (int)DataType.Int64;
        model.Graph.Initializer.Add(ints);
        File.WriteAllBytes(dir.File("in/branch.bin"), BitConverter.GetBytes(1f));
        var branch = new GraphProto { Name = "then", Initializer = { External("C", [1], "branch.bin", 0, 4) } };
        model.Graph.Node.Add(Node("If", ["cond"], ["out"], new AttributeProto
        {
            Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = branch,
        }));
        Save(model, input);

        // A float initializer of a top-level If's branch is patchable under IF/BRANCH/NAME (Branches); the int64 one is not a parameter.
        Assert.Equal(["B", "out/then_branch/C", "W"], WeightPatch.Locate(File.ReadAllBytes(input), dir.File("in")).Keys.Order());
        WeightPatch.Write(input, dir.File("out/model.onnx"), Patch());

        Assert.Equal(File.ReadAllBytes(dir.File("in/ints.bin")), File.ReadAllBytes(dir.File("out/ints.bin")));
        Assert.Equal(File.ReadAllBytes(dir.File("in/branch.bin")), File.ReadAllBytes(dir.File("out/branch.bin")));

        // Data files we only copy must pass the same checks as the ones we patch.
        branch.Initializer[0].ExternalData[0].Value = "../w.bin";
        Save(model, input);
        var error = Assert.Throws<UserError>(() => WeightPatch.Write(input, dir.File("other/model.onnx"), Patch()));
        Assert.Contains("tensor 'C'", error.Message);
        Assert.Contains("escapes", error.Message);
    }

    [Fact]
    public void ExternalDataInsideTheFolderThroughASymlinkIsAllowed()
    {
        using var dir = new TempDir();
        var input = CreateModel(dir.File("model"), "data/w.bin");
        File.CreateSymbolicLink(dir.File("model/alias.bin"), "data/w.bin");
        var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(input));
        model.Graph.Initializer[0].ExternalData[0].Value = "alias.bin";
        Save(model, input);

        WeightPatch.Write(input, dir.File("out/model.onnx"), Patch());

        // The copy is a plain file holding the link target's bytes.
        Assert.False(new FileInfo(dir.File("out/alias.bin")).Attributes.HasFlag(FileAttributes.ReparsePoint));
        Run(dir.File("out/model.onnx"), X);
    }
}
