using Google.Protobuf;
using Onnx;

namespace OnnxUnlearn.Onnx;

/// <summary>A parsed ONNX model together with where it came from (external data resolves against <see cref="Folder"/>).</summary>
public sealed record ModelFile(ModelProto Model, string Path, string Folder)
{
    public GraphProto Graph => Model.Graph;

    public static ModelFile Load(string path)
    {
        if (!File.Exists(path))
            throw new UserError($"model file '{path}' does not exist");
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new UserError($"cannot read model file '{path}': {e.Message}"); }
        var folder = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        return new ModelFile(Parse(bytes, path), path, folder);
    }

    /// <summary>
    /// A model held in memory (read from a stream or a registry's blob store): <paramref name="name"/> labels messages and
    /// reports. Its weights must be embedded; external data would resolve against the current folder.
    /// </summary>
    public static ModelFile FromBytes(byte[] bytes, string name) => new(Parse(bytes, name), name, Directory.GetCurrentDirectory());

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
