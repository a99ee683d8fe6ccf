using System.Buffers.Binary;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Tests.Corpus;

/// <summary>
/// Where the ONNX backend test corpus (Debian's libonnx-testdata) is, and whether a test may go without it. CI installs
/// it (.ci/run), so there (CI set) a missing corpus fails the tests that read it; elsewhere they are skipped, visibly.
/// </summary>
public static class OnnxCorpus
{
    const string Dir = "/usr/share/libonnx-testdata/data";

    public static bool Installed => Directory.Exists(Dir);

    public static bool Required => Environment.GetEnvironmentVariable("CI") is { Length: > 0 } ci && ci is not ("false" or "0");

    /// <summary>The corpus root; fails the test where the corpus is missing (reached only under CI: elsewhere <see cref="CorpusFactAttribute"/> skips first).</summary>
    public static string Root
    {
        get
        {
            if (!Installed) Assert.Fail($"CI is set, so the ONNX test corpus is required, but {Dir} is missing: apt-get install libonnx-testdata");
            return Dir;
        }
    }
}

/// <summary>A fact that reads the ONNX test corpus: skipped where it is not installed, unless CI requires it.</summary>
public sealed class CorpusFactAttribute : FactAttribute
{
    public CorpusFactAttribute()
    {
        // xunit 2 has no skip from inside a test: the attribute decides at discovery.
        if (!OnnxCorpus.Installed && !OnnxCorpus.Required) Skip = "ONNX test corpus not installed (apt-get install libonnx-testdata)";
    }
}

/// <summary>One model of the ONNX backend test corpus (Debian's libonnx-testdata) with its first test data set.</summary>
public sealed record CorpusCase(string Suite, string Name, string Dir)
{
    public static readonly string[] Suites = ["node", "pytorch-converted", "pytorch-operator", "simple"];

    public string Id => $"{Suite}/{Name}";

    /// <summary>Every model of the suites above, in a fixed order.</summary>
    public static List<CorpusCase> All()
    {
        var root = OnnxCorpus.Root;
        var list = new List<CorpusCase>();
        foreach (var suite in Suites)
        {
            var dir = Path.Combine(root, suite);
            if (!Directory.Exists(dir)) continue;
            foreach (var d in Directory.GetDirectories(dir).Order(StringComparer.Ordinal))
                if (File.Exists(Path.Combine(d, "model.onnx")) && Directory.Exists(Path.Combine(d, "test_data_set_0")))
                    list.Add(new CorpusCase(suite, Path.GetFileName(d), d));
        }
        return list;
    }

    public ModelProto LoadModel() => ModelProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(Dir, "model.onnx")));

    string Data(string kind, int i) => Path.Combine(Dir, "test_data_set_0", $"{kind}_{i}.pb");

    static int Count(Func<int, string> path) { int n = 0; while (File.Exists(path(n))) n++; return n; }

    public int InputFiles => Count(i => Data("input", i));
    public int OutputFiles => Count(i => Data("output", i));
    public byte[] Input(int i) => File.ReadAllBytes(Data("input", i));
    public byte[] Output(int i) => File.ReadAllBytes(Data("output", i));
    public string InputPath(int i) => Data("input", i);

    /// <summary>Default-domain opset; 0 when the model imports none (the opset checks leave such models out).</summary>
    public static long Opset(ModelProto m) => m.OpsetImport.Any(o => Domains.IsDefault(o.Domain)) ? m.DefaultOpset() : 0;

    /// <summary>Graph inputs that the test data feeds (initializers listed as inputs keep their values).</summary>
    public static List<global::Onnx.ValueInfoProto> FedInputs(GraphProto g)
    {
        var inits = g.Initializer.Select(t => t.Name).ToHashSet();
        return g.Input.Where(i => !inits.Contains(i.Name)).ToList();
    }

    /// <summary>Op types (with domain) of every node, subgraphs included.</summary>
    public static IEnumerable<(string Domain, string Op)> Ops(GraphProto g)
    {
        foreach (var n in g.Node)
        {
            yield return (Domains.IsDefault(n.Domain) ? "" : n.Domain, n.OpType);
            foreach (var a in n.Attribute)
            {
                if (a.G is { } sub) foreach (var o in Ops(sub)) yield return o;
                foreach (var s in a.Graphs) foreach (var o in Ops(s)) yield return o;
            }
        }
    }
}

/// <summary>Corpus values (.pb TensorProto / SequenceProto) as ONNX Runtime values, runs, and comparisons.</summary>
public static class CorpusRunner
{
    /// <summary>Feeds for a model's inputs from the case's input_N.pb files, by position.</summary>
    public static Dictionary<string, OrtValue> Feeds(ModelProto m, CorpusCase c)
    {
        var inputs = CorpusCase.FedInputs(m.Graph);
        int files = c.InputFiles;
        if (files > inputs.Count) throw new InvalidDataException($"{files} input files for {inputs.Count} inputs");
        var feeds = new Dictionary<string, OrtValue>();
        for (int i = 0; i < files; i++) feeds[inputs[i].Name] = ToOrt(c.Input(i), inputs[i].Type);
        return feeds;
    }

    /// <summary>Runs a model (one thread, no log noise) and returns its outputs in graph order.</summary>
    public static List<OrtValue> Run(ModelProto m, IReadOnlyDictionary<string, OrtValue> feeds)
    {
        using var options = new SessionOptions
        {
            IntraOpNumThreads = 1, InterOpNumThreads = 1, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL,
        };
        using var session = new InferenceSession(m.ToByteArray(), options);
        var names = m.Graph.Output.Select(o => o.Name).ToArray();
        var inputNames = feeds.Keys.ToArray();
        var results = session.Run(new RunOptions(), inputNames, inputNames.Select(n => feeds[n]).ToArray(), names);
        return results.ToList();
    }

    public static OrtValue ToOrt(byte[] pb, TypeProto? type)
    {
        if (type?.SequenceType is not null)
        {
            var items = ReadSequence(pb).Select(TensorToOrt).ToList();
            return OrtValue.CreateSequence(items);
        }
        var t = TensorProto.Parser.ParseFrom(pb);
        // Older test data stores bfloat16 as uint16: the declared type wins where the element size agrees.
        if (type?.TensorType is { ElemType: var declared and not 0 } && declared != t.DataType && DataTypes.Size(declared) == DataTypes.Size(t.DataType) && DataTypes.Size(declared) > 0)
            t.DataType = declared;
        return TensorToOrt(t);
    }

    /// <summary>Tensors of a SequenceProto (name = 1, elem_type = 2, tensor_values = 3), read by hand: OnnxSharp has no SequenceProto.</summary>
    public static List<TensorProto> ReadSequence(byte[] pb)
    {
        var list = new List<TensorProto>();
        var input = new CodedInputStream(pb);
        uint tag;
        while ((tag = input.ReadTag()) != 0)
        {
            if (WireFormat.GetTagFieldNumber(tag) == 3) list.Add(TensorProto.Parser.ParseFrom(input.ReadBytes()));
            else input.SkipLastField();
        }
        return list;
    }

    public static OrtValue TensorToOrt(TensorProto t)
    {
        var shape = t.Dims.ToArray();
        if (t.DataType == DataTypes.String)
        {
            var v = OrtValue.CreateTensorWithEmptyStrings(OrtAllocator.DefaultInstance, shape);
            for (int i = 0; i < t.StringData.Count; i++) v.StringTensorSetElementAt(t.StringData[i].Span, i);
            return v;
        }
        var bytes = RawBytes(t);
        var value = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, (TensorElementType)t.DataType, shape);
        bytes.CopyTo(value.GetTensorMutableRawData());
        return value;
    }

    /// <summary>The tensor's values as little-endian bytes, whichever field holds them.</summary>
    public static byte[] RawBytes(TensorProto t)
    {
        if (!t.RawData.IsEmpty) return t.RawData.ToByteArray();
        int size = DataTypes.Size(t.DataType);
        long n = t.Dims.Aggregate(1L, (a, d) => a * d);
        var b = new byte[n * size];
        for (int i = 0; i < n; i++)
        {
            var span = b.AsSpan(i * size, size);
            switch (t.DataType)
            {
                case DataTypes.Float: BinaryPrimitives.WriteSingleLittleEndian(span, t.FloatData[i]); break;
                case DataTypes.Double: BinaryPrimitives.WriteDoubleLittleEndian(span, t.DoubleData[i]); break;
                case DataTypes.Int64: BinaryPrimitives.WriteInt64LittleEndian(span, t.Int64Data[i]); break;
                case DataTypes.UInt32: BinaryPrimitives.WriteUInt32LittleEndian(span, (uint)t.Uint64Data[i]); break;
                case DataTypes.UInt64: BinaryPrimitives.WriteUInt64LittleEndian(span, t.Uint64Data[i]); break;
                case DataTypes.Int32: BinaryPrimitives.WriteInt32LittleEndian(span, t.Int32Data[i]); break;
                default:
                    if (size == 1) span[0] = (byte)t.Int32Data[i];
                    else BinaryPrimitives.WriteUInt16LittleEndian(span, (ushort)t.Int32Data[i]);
                    break;
            }
        }
        return b;
    }

    /// <summary>Null when <paramref name="actual"/> matches the expected .pb value, else what differs.</summary>
    public static string? Compare(OrtValue actual, byte[] expectedPb, TypeProto? type, double rtol, double atol)
    {
        if (type?.SequenceType is not null || actual.OnnxType == OnnxValueType.ONNX_TYPE_SEQUENCE)
        {
            var expected = ReadSequence(expectedPb);
            int count = actual.GetValueCount();
            if (count != expected.Count) return $"sequence of {count} tensors, expected {expected.Count}";
            for (int i = 0; i < count; i++)
            {
                using var item = actual.GetValue(i, OrtAllocator.DefaultInstance);
                if (CompareTensor(item, expected[i], rtol, atol) is { } why) return $"sequence item {i}: {why}";
            }
            return null;
        }
        return CompareTensor(actual, TensorProto.Parser.ParseFrom(expectedPb), rtol, atol);
    }

    static string? CompareTensor(OrtValue actual, TensorProto expected, double rtol, double atol)
    {
        if (!actual.IsTensor) return $"a {actual.OnnxType}, expected a tensor";
        var info = actual.GetTensorTypeAndShape();
        if (expected.DataType == DataTypes.UInt16 && (int)info.ElementDataType is DataTypes.BFloat16 or DataTypes.Float16)
            expected.DataType = (int)info.ElementDataType;   // 16-bit floats stored as uint16 by older test data
        if ((int)info.ElementDataType != expected.DataType)
            return $"type {DataTypes.Name((int)info.ElementDataType)}, expected {DataTypes.Name(expected.DataType)}";
        if (!info.Shape.SequenceEqual(expected.Dims))
            return $"shape [{string.Join(",", info.Shape)}], expected [{string.Join(",", expected.Dims)}]";
        if (expected.DataType == DataTypes.String)
        {
            var a = actual.GetStringTensorAsArray();
            for (int i = 0; i < a.Length; i++)
                if (a[i] != expected.StringData[i].ToStringUtf8()) return $"element {i}: '{a[i]}', expected '{expected.StringData[i].ToStringUtf8()}'";
            return null;
        }
        var x = Decode(actual.GetTensorMutableRawData().ToArray(), expected.DataType);
        var e = Decode(RawBytes(expected), expected.DataType);
        bool exact = !DataTypes.IsFloat(expected.DataType);
        for (int i = 0; i < e.Length; i++)
        {
            double d = x[i], r = e[i];
            bool ok = exact ? d == r : double.IsNaN(r) ? double.IsNaN(d) : double.IsInfinity(r) ? d == r : Math.Abs(d - r) <= atol + rtol * Math.Abs(r);
            if (!ok) return $"element {i}: {d:R}, expected {r:R}";
        }
        return null;
    }

    static double[] Decode(byte[] raw, int type)
    {
        int size = DataTypes.Size(type);
        var r = new double[raw.Length / size];
        for (int i = 0; i < r.Length; i++)
        {
            var s = raw.AsSpan(i * size, size);
            r[i] = type switch
            {
                DataTypes.Float => BinaryPrimitives.ReadSingleLittleEndian(s),
                DataTypes.Double => BinaryPrimitives.ReadDoubleLittleEndian(s),
                DataTypes.Float16 => (double)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(s)),
                DataTypes.BFloat16 => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(s) << 16),
                DataTypes.Int8 => (sbyte)s[0],
                DataTypes.UInt8 or DataTypes.Bool => s[0],
                DataTypes.Int16 => BinaryPrimitives.ReadInt16LittleEndian(s),
                DataTypes.UInt16 => BinaryPrimitives.ReadUInt16LittleEndian(s),
                DataTypes.Int32 => BinaryPrimitives.ReadInt32LittleEndian(s),
                DataTypes.UInt32 => BinaryPrimitives.ReadUInt32LittleEndian(s),
                DataTypes.Int64 => BinaryPrimitives.ReadInt64LittleEndian(s),
                DataTypes.UInt64 => BinaryPrimitives.ReadUInt64LittleEndian(s),
                _ => throw new NotSupportedException($"element type {type}"),
            };
        }
        return r;
    }

    /// <summary>Compares every output; null when all match.</summary>
    public static string? CompareAll(ModelProto m, CorpusCase c, IReadOnlyList<OrtValue> outputs, double rtol = 1e-4, double atol = 1e-5)
    {
        int n = Math.Min(c.OutputFiles, outputs.Count);
        for (int i = 0; i < n; i++)
            if (Compare(outputs[i], c.Output(i), m.Graph.Output[i].Type, rtol, atol) is { } why)
                return $"output {i} ('{m.Graph.Output[i].Name}'): {why}";
        return null;
    }

    public static string FirstLine(string s) => s.Split('\n')[0].Trim();
}
