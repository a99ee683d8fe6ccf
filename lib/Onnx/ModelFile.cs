using Google.Protobuf;
using Onnx;

namespace OnnxUnlearn.Onnx;

/// <summary>A parsed ONNX model together with where it came from (external data resolves against <see cref="Folder"/>).</summary>
public sealed record ModelFile(ModelProto Model, string Path, string Folder)
{
    public GraphProto Graph => Model.Graph;

    /// <summary>How far its external data may reach; every read of its tensors (<see cref="TensorProtoExtensions"/>) applies it.</summary>
    public ExternalDataPolicy Policy { get; init; } = ExternalDataPolicy.Strict;

    /// <summary>With If branches inlined for a run (<c>Runtime.Inlining</c>): the branch each inlined tensor came from, by its
    /// name as a parameter (<see cref="Branches"/>). Empty for a model as read.</summary>
    public IReadOnlyDictionary<string, string> Inlined { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// Loads and, unless <paramref name="verify"/> is false, checks every tensor of the model (reading sizes, not data): shapes,
    /// value counts, external data locations under <paramref name="policy"/> and their byte ranges, which must lie inside their
    /// files and not overlap. A bad tensor is a <see cref="UserError"/> naming it.
    /// </summary>
    public static ModelFile Load(string path, ExternalDataPolicy? policy = null, bool verify = true)
    {
        if (Directory.Exists(path))
            throw new UserError($"model file '{path}' is a folder; give the path of the .onnx file in it");
        if (!File.Exists(path))
            throw new UserError($"model file '{path}' does not exist");
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new UserError($"cannot read model file '{path}': {e.Message}"); }
        var folder = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        policy ??= ExternalDataPolicy.Strict;
        var model = Parse(bytes, path);
        if (verify) WireLayout.Read(bytes, folder, path, policy);
        return new ModelFile(model, path, folder) { Policy = policy };
    }

    /// <summary>
    /// A model held in memory (read from a stream or a registry's blob store): <paramref name="name"/> labels messages and
    /// reports. Its weights must be embedded; external data would resolve against the current folder. Its tensors are
    /// checked as <see cref="Load"/> checks them.
    /// </summary>
    public static ModelFile FromBytes(byte[] bytes, string name)
    {
        var model = Parse(bytes, name);
        WireLayout.Read(bytes, Directory.GetCurrentDirectory(), name);
        return new(model, name, Directory.GetCurrentDirectory());
    }

    public static ModelProto Parse(byte[] bytes, string pathForErrors)
    {
        ModelProto model;
        try { model = ModelProto.Parser.ParseFrom(bytes); }
        catch (InvalidProtocolBufferException)
        { throw new UserError($"'{pathForErrors}' is not a valid ONNX model (the protobuf is truncated or corrupt); re-export or re-download it"); }
        // Arbitrary bytes sometimes parse as a protobuf; a real model has a graph, an IR version and opsets.
        if (model.Graph is null || model.IrVersion < 3 || model.OpsetImport.Count == 0)
            throw new UserError($"'{pathForErrors}' is not an ONNX model (no graph, IR version or opset import); ONNX files with IR version 3 or later are supported");
        return model;
    }
}
