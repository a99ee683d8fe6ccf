using System.Runtime.InteropServices;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using OnnxUnlearn.Unlearning;

namespace OnnxUnlearn.Tests.Exporters;

/// <summary>
/// Models written the way third-party exporters write them (see shared EXPORTERS.md), built in memory, plus the
/// data, runs and in-memory edits that the exporter tests compare against.
/// </summary>
internal static class Exporter
{
    /// <summary>A tensor input or output; a dimension of -1 is the symbolic batch "N".</summary>
    public static global::Onnx.ValueInfoProto Value(string name, int type, params long[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims) shape.Dim.Add(d >= 0 ? new TensorShapeProto.Types.Dimension { DimValue = d } : new TensorShapeProto.Types.Dimension { DimParam = "N" });
        return new global::Onnx.ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = type, Shape = shape } } };
    }

    public static NodeProto Node(string op, string[] inputs, string[] outputs, params (string Name, object Value)[] attrs)
    {
        var n = new NodeProto { OpType = op, Name = outputs[0] + "_" + op, Input = { inputs }, Output = { outputs } };
        foreach (var (name, value) in attrs) n.Attribute.Add(Attributes.Make(name, value));
        return n;
    }

    /// <summary>float32 tensor with its values in raw_data (torch.onnx, paddle2onnx) or, with <paramref name="typed"/>, float_data.</summary>
    public static TensorProto Floats(string name, long[] dims, float[] values, bool typed = false)
    {
        var t = new TensorProto { Name = name, DataType = DataTypes.Float, Dims = { dims } };
        if (typed) t.FloatData.AddRange(values);
        else t.RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(values.AsSpan()));
        return t;
    }

    /// <summary>A Constant node whose output carries the parameter's name (the tensor itself is unnamed, as paddle2onnx writes it).</summary>
    public static NodeProto Constant(string output, long[] dims, float[] values, bool typed = false) =>
        new() { OpType = "Constant", Output = { output }, Attribute = { Attributes.Make("value", Floats("", dims, values, typed)) } };

    public static ModelProto Model(GraphProto g, long opset, long ir = 8, string producer = "", params (string Domain, long Version)[] domains)
    {
        var m = new ModelProto { IrVersion = ir, ProducerName = producer, Graph = g, OpsetImport = { new OperatorSetIdProto { Domain = "", Version = opset } } };
        foreach (var (domain, version) in domains) m.OpsetImport.Add(new OperatorSetIdProto { Domain = domain, Version = version });
        return m;
    }

    public static float[] Random(Random rng, long n, double scale = 1) => Enumerable.Range(0, (int)n).Select(_ => (float)((rng.NextDouble() * 2 - 1) * scale)).ToArray();

    /// <summary>Samples x [rows, features] (uniform ±1, seeded) with class labels in [0, classes).</summary>
    public static Dictionary<string, NdArray> Samples(int rows, int features, int classes, int seed = 3, string input = "x")
    {
        var rng = new Random(seed);
        return new()
        {
            [input] = NdArray.FromFloat(Random(rng, rows * features), rows, features),
            [LossHead.LabelInput] = NdArray.FromInt64(Enumerable.Range(0, rows).Select(_ => (long)rng.Next(classes)).ToArray(), rows),
        };
    }

    public static string Save(ModelProto m, string path) { File.WriteAllBytes(path, m.ToByteArray()); return path; }

    /// <summary>One output of a model run by ONNX Runtime on float input arrays.</summary>
    public static float[] Run(ModelProto m, IReadOnlyDictionary<string, NdArray> inputs, string output)
    {
        using var session = new InferenceSession(m.ToByteArray());
        var names = session.InputNames.ToArray();
        var values = names.Select(n => OrtValue.CreateTensorValueFromMemory(inputs[n].ToFloat(), inputs[n].Shape)).ToArray();
        using var results = session.Run(new RunOptions(), names, values, [output]);
        foreach (var v in values) v.Dispose();
        return results[0].GetTensorDataAsSpan<float>().ToArray();
    }

    /// <summary>
    /// Writes parameter values into a model held in memory, independently of the surgical write-back: initializers,
    /// Constant values (value, value_float, value_floats) and linear ai.onnx.ml attributes.
    /// </summary>
    public static void SetValues(ModelProto m, ParameterLayout layout, float[] theta)
    {
        var g = m.Graph;
        for (int i = 0; i < layout.Count; i++)
        {
            var name = layout.Parameters[i].Name;
            var values = layout.Of(theta, i).ToArray();
            if (g.Initializer.FirstOrDefault(t => t.Name == name) is { } init) { Set(init, values); continue; }
            if (g.Node.FirstOrDefault(n => n.OpType == "Constant" && n.Output[0] == name) is { } c)
            {
                var a = c.Attribute.Single();
                if (a.Name == "value") Set(a.T, values);
                else if (a.Name == "value_floats") { a.Floats.Clear(); a.Floats.AddRange(values); }
                else a.F = values[0];
                continue;
            }
            var dot = name.LastIndexOf('.');
            var node = g.Node.Select((n, k) => (n, k)).Single(p => LinearModels.Is(p.n) && LinearModels.Prefix(p.n, p.k) == name[..dot]).n;
            var attr = node.Attribute.Single(x => x.Name == name[(dot + 1)..]);
            attr.Floats.Clear(); attr.Floats.AddRange(values);
        }

        static void Set(TensorProto t, float[] values)
        {
            if (t.DataType != DataTypes.Float) throw new NotSupportedException("float32 tensors only");
            if (t.FloatData.Count > 0) { t.FloatData.Clear(); t.FloatData.AddRange(values); }
            else t.RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(values.AsSpan()));
        }
    }

    /// <summary>
    /// What <c>unlearn</c> does, step by step: the update of <see cref="Unlearner"/>, the surgical write-back of the selected
    /// elements to <paramref name="output"/>, and the same new values written into an in-memory copy of the model.
    /// </summary>
    public static (int[] Selected, ModelProto Edited) Unlearn(string model, Dataset train, Dataset forget, Dataset corrected, UnlearnOptions options, string output, LossSettings? loss = null)
    {
        using var s = Evaluator.Open(model, loss ?? new LossSettings(), train);
        var theta0 = s.ReadParameters();
        var result = Unlearner.Run(s, theta0, train, forget, corrected, options);
        var theta = theta0.Span.ToArray().Zip(result.Update, (t, u) => t + u).ToArray();
        WeightPatch.Write(model, output, s.Layout.Patches(result.Selected, theta));
        var edited = s.File.Model.Clone();
        SetValues(edited, s.Layout, theta);
        return (result.Selected, edited);
    }

    /// <summary>The forget set (first rows) and the same samples with the next label: a label-correction request.</summary>
    public static (Dataset Forget, Dataset Corrected) Correction(Dataset train, int rows, int classes)
    {
        var idx = Enumerable.Range(0, rows).Select(i => (long)i).ToArray();
        var forget = train.Take(idx, "forget");
        var arrays = forget.Arrays.ToDictionary(kv => kv.Key, kv => kv.Value);
        arrays[LossHead.LabelInput] = NdArray.FromInt64(arrays[LossHead.LabelInput].ToInt64().Select(y => (y + 1) % classes).ToArray(), rows);
        return (forget, new Dataset(arrays, "corrected"));
    }
}
