using Google.Protobuf;
using Onnx;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Tests.Onnx;

/// <summary>Model loading: every initializer storage form, external data, and hostile or broken files.</summary>
public class LoadingTests
{
    static ModelProto Model(params TensorProto[] inits)
    {
        var g = new GraphProto { Name = "g" };
        g.Initializer.AddRange(inits);
        g.Output.Add(new global::Onnx.ValueInfoProto { Name = inits.Length > 0 ? inits[0].Name : "y" });
        return new ModelProto { IrVersion = 8, Graph = g, OpsetImport = { new OperatorSetIdProto { Version = 13 } } };
    }

    static string Save(TempDir dir, ModelProto m, string name = "model.onnx")
    {
        var path = dir.File(name);
        File.WriteAllBytes(path, m.ToByteArray());
        return path;
    }

    [Fact]
    public void ReadsEveryStorageForm()
    {
        float[] expected = [1.5f, -2f, 0.25f];
        var raw = new TensorProto { Name = "raw", DataType = DataTypes.Float, Dims = { 3 }, RawData = ByteString.CopyFrom(expected.SelectMany(BitConverter.GetBytes).ToArray()) };
        var typed = new TensorProto { Name = "typed", DataType = DataTypes.Float, Dims = { 3 }, FloatData = { expected } };
        var dbl = new TensorProto { Name = "double", DataType = DataTypes.Double, Dims = { 3 }, DoubleData = { 1.5, -2, 0.25 } };
        var half = new TensorProto { Name = "half", DataType = DataTypes.Float16, Dims = { 3 }, Int32Data = { 0x3E00, 0xC000, 0x3400 } }; // 1.5, -2, 0.25
        var bf16 = new TensorProto { Name = "bf16", DataType = DataTypes.BFloat16, Dims = { 3 }, RawData = ByteString.CopyFrom(0x00, 0x3F, 0x00, 0xC0, 0x80, 0x3E) }; // 0.5, -2, 0.25
        var i64 = new TensorProto { Name = "i64", DataType = DataTypes.Int64, Dims = { 3 }, Int64Data = { 4, -5, 6 } };
        using var dir = new TempDir();
        var file = ModelFile.Load(Save(dir, Model(raw, typed, dbl, half, bf16, i64)));
        var t = file.Graph.Initializer.ToDictionary(x => x.Name);
        Assert.Equal(expected, t["raw"].ReadFloats(file.Folder));
        Assert.Equal(expected, t["typed"].ReadFloats(file.Folder));
        Assert.Equal(expected, t["double"].ReadFloats(file.Folder));
        Assert.Equal(expected, t["half"].ReadFloats(file.Folder));
        Assert.Equal([0.5f, -2f, 0.25f], t["bf16"].ReadFloats(file.Folder));
        Assert.Equal([4L, -5, 6], t["i64"].ReadInt64s(file.Folder));
    }

    static TensorProto External(string location, long offset = 0, long? length = null)
    {
        var t = new TensorProto { Name = "w", DataType = DataTypes.Float, Dims = { 4 }, DataLocation = TensorProto.Types.DataLocation.External };
        t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
        t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString() });
        if (length is { } l) t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = l.ToString() });
        return t;
    }

    [Fact]
    public void ReadsExternalDataLazilyAtItsOffset()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.File("sub"));
        float[] values = [1, 2, 3, 4];
        File.WriteAllBytes(dir.File("sub/w.bin"), new byte[8].Concat(values.SelectMany(BitConverter.GetBytes)).ToArray());
        var file = ModelFile.Load(Save(dir, Model(External("sub/w.bin", 8, 16))));
        Assert.Equal(values, file.Graph.Initializer[0].ReadFloats(file.Folder));
    }

    [Theory]
    [InlineData("/etc/passwd", "absolute")]
    [InlineData("../outside.bin", "escapes")]
    [InlineData("sub/../../outside.bin", "escapes")]
    [InlineData("missing.bin", "does not exist")]
    public void RefusesHostileExternalLocations(string location, string why)
    {
        using var dir = new TempDir();
        var path = Save(dir, Model(External(location)));
        var e = Assert.Throws<UserError>(() => ModelFile.Load(path));
        Assert.Contains("tensor 'w'", e.Message);
        Assert.Contains(path, e.Message);
        Assert.Contains(why, e.Message);
        // Loaded unchecked, the tensor's own read refuses it the same way.
        var file = ModelFile.Load(path, verify: false);
        e = Assert.Throws<UserError>(() => file.Graph.Initializer[0].ReadFloats(file));
        Assert.Contains("tensor 'w'", e.Message);
        Assert.Contains(why, e.Message);
    }

    [Fact]
    public void RefusesSymlinkOutOfTheFolderAndRangesPastTheEnd()
    {
        using var outside = new TempDir();
        using var dir = new TempDir();
        File.WriteAllBytes(outside.File("secret.bin"), new byte[16]);
        File.CreateSymbolicLink(dir.File("link.bin"), outside.File("secret.bin"));
        var path = Save(dir, Model(External("link.bin")));
        Assert.Contains("symlink", Assert.Throws<UserError>(() => ModelFile.Load(path)).Message);
        var file = ModelFile.Load(path, verify: false);
        Assert.Contains("symlink", Assert.Throws<UserError>(() => file.Graph.Initializer[0].ReadFloats(file)).Message);
        // Allowed, the link is followed, by the loader and by every read of the model's tensors.
        var linked = ModelFile.Load(path, new ExternalDataPolicy { AllowLinks = true });
        Assert.Equal(new float[4], linked.Graph.Initializer[0].ReadFloats(linked));

        File.WriteAllBytes(dir.File("short.bin"), new byte[12]);
        var path2 = Save(dir, Model(External("short.bin", 0, 16)), "m2.onnx");
        Assert.Contains("has only 12 bytes", Assert.Throws<UserError>(() => ModelFile.Load(path2)).Message);
        var file2 = ModelFile.Load(path2, verify: false);
        Assert.Contains("has only 12 bytes", Assert.Throws<UserError>(() => file2.Graph.Initializer[0].ReadFloats(file2.Folder)).Message);
    }

    [Fact]
    public void TruncatedOrForeignFilesGiveOneLineErrors()
    {
        using var dir = new TempDir();
        var good = File.ReadAllBytes(Fixtures.File("mlp", "model.onnx"));
        File.WriteAllBytes(dir.File("truncated.onnx"), good[..(good.Length / 2)]);
        File.WriteAllBytes(dir.File("random.onnx"), Enumerable.Range(0, 300).Select(i => (byte)(i * 37 + 11)).ToArray());
        File.WriteAllText(dir.File("text.onnx"), "hello, I am not a model\n");
        foreach (var name in new[] { "truncated.onnx", "random.onnx", "text.onnx", "absent.onnx" })
        {
            var e = Assert.Throws<UserError>(() => ModelFile.Load(dir.File(name)));
            Assert.Contains(name, e.Message);
            Assert.DoesNotContain("\n", e.Message);
        }
    }

    [Theory]
    [InlineData("logreg", 650)] [InlineData("mlp", 2410)] [InlineData("cnn", 1010)] [InlineData("transformer", 819)] [InlineData("mlp_external", 2410)]
    [InlineData("charlstm", 2164)]
    public void InspectsEveryFixture(string fixture, long trainable)
    {
        var s = ModelSummary.Of(ModelFile.Load(Fixtures.File(fixture, "model.onnx")));
        Assert.Equal(trainable, s.TrainableElements);
        Assert.All(s.Parameters.Where(p => p.Name.Contains("running")), p => Assert.Contains("BatchNormalization running statistic", p.Reason));
        if (fixture == "mlp_external") Assert.All(s.Parameters, p => Assert.Equal("external", p.Storage));
    }
}
