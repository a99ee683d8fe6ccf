using Google.Protobuf;
using Onnx;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Text;

namespace OnnxUnlearn.Tests.Text;

/// <summary>
/// A hand-designed character "language model" as an ONNX file: logits = Gather(table, tokens) → [N, T, V], so the
/// next-token distribution after a token is a row of a [V, V] logit table (a bigram model). Log-likelihoods are
/// computed here in C# from the same float table, independently of the library, to check it.
/// </summary>
internal sealed class Bigram
{
    /// <summary>&lt;pad&gt; is id 0; then these characters, ids 1, 2, ...</summary>
    public const string Characters = " abcdefghijklmnopqrstuvwxyz:-0123456789";

    public int V => Characters.Length + 1;
    /// <summary>Row-major [V, V]: Table[prev * V + next].</summary>
    public float[] Table { get; }
    public Vocabulary Vocab { get; }

    public Bigram(float[] table)
    {
        Table = table;
        Vocab = new Vocabulary([new("<pad>", 0), .. Characters.Select((c, i) => new KeyValuePair<string, long>(c.ToString(), i + 1))], "bigram vocab");
    }

    public static long Id(char c) => Characters.IndexOf(c) is var i and >= 0 ? i + 1 : throw new ArgumentException($"'{c}' is not in the bigram vocabulary");

    /// <summary>Seeded N(0, sigma) logits, plus <paramref name="boost"/> on each transition of prefix-end + secret.</summary>
    public static Bigram Random(int seed, double sigma = 1, string? plant = null, float boost = 0, string? uniformDigits = null)
    {
        var rng = new Random(seed);
        int v = Characters.Length + 1;
        var t = new float[v * v];
        for (int i = 0; i < t.Length; i++)
        {
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
            t[i] = (float)(sigma * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        if (plant is not null)
            for (int k = 0; k + 1 < plant.Length; k++) t[Id(plant[k]) * v + Id(plant[k + 1])] += boost;
        return new Bigram(t);
    }

    /// <summary>Every logit equal: all candidates are equally likely.</summary>
    public static Bigram Uniform() => new(new float[(Characters.Length + 1) * (Characters.Length + 1)]);

    /// <summary>log p(next | prev) in double from the float table.</summary>
    public double LogProb(long prev, long next)
    {
        logProbs ??= new double?[V * V];
        return logProbs[prev * V + next] ??= ComputeLogProb(prev, next);
    }

    double?[]? logProbs;

    double ComputeLogProb(long prev, long next)
    {
        var row = Table.AsSpan((int)(prev * V), V);
        double max = double.NegativeInfinity;
        foreach (var x in row) max = Math.Max(max, x);
        double sum = 0;
        foreach (var x in row) sum += Math.Exp(x - max);
        return row[(int)next] - (max + Math.Log(sum));
    }

    /// <summary>Σ log p(candidate char | previous char), the first one following the prefix's last character.</summary>
    public double LogLikelihood(string prefix, string candidate)
    {
        double ll = 0;
        long prev = Id(prefix[^1]);
        foreach (var c in candidate) { long id = Id(c); ll += LogProb(prev, id); prev = id; }
        return ll;
    }

    /// <summary>The ONNX model: input "tokens" int64 (or int32) [N, T] (N and T dynamic unless fixed), output "logits" float [N, T, V].</summary>
    public ModelProto Model(int? fixedLength = null, int? fixedBatch = null, bool int32 = false, string input = "tokens")
    {
        var g = new GraphProto { Name = "bigram" };
        g.Initializer.Add(new TensorProto { Name = "table", DataType = DataTypes.Float, Dims = { V, V }, RawData = ByteString.CopyFrom(Table.SelectMany(BitConverter.GetBytes).ToArray()) });
        var n = fixedBatch is { } b ? Dim(b) : Dim("N");
        g.Input.Add(Value(input, int32 ? DataTypes.Int32 : DataTypes.Int64, n, fixedLength is { } t ? Dim(t) : Dim("T")));
        g.Output.Add(Value("logits", DataTypes.Float, n.Clone(), fixedLength is { } t2 ? Dim(t2) : Dim("T"), Dim(V)));
        g.Node.Add(new NodeProto { OpType = "Gather", Input = { "table", input }, Output = { "logits" }, Attribute = { new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 0 } } });
        return new ModelProto { IrVersion = 8, ProducerName = "onnx-unlearn-tests", OpsetImport = { new OperatorSetIdProto { Domain = "", Version = 13 } }, Graph = g };
    }

    public string Save(string path, int? fixedLength = null, int? fixedBatch = null, bool int32 = false)
    {
        File.WriteAllBytes(path, Model(fixedLength, fixedBatch, int32).ToByteArray());
        return path;
    }

    public string SaveVocab(string path)
    {
        var entries = new[] { "\"<pad>\": 0" }.Concat(Characters.Select((c, i) => $"{System.Text.Json.JsonSerializer.Serialize(c.ToString())}: {i + 1}"));
        File.WriteAllText(path, "{" + string.Join(", ", entries) + "}");
        return path;
    }

    static TensorShapeProto.Types.Dimension Dim(long v) => new() { DimValue = v };
    static TensorShapeProto.Types.Dimension Dim(string p) => new() { DimParam = p };

    static ValueInfoProto Value(string name, int type, params TensorShapeProto.Types.Dimension[] dims) => new()
    {
        Name = name,
        Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = type, Shape = new TensorShapeProto { Dim = { dims } } } },
    };

    /// <summary>Every candidate of a format (d = digit), in lexicographic order.</summary>
    public static IEnumerable<string> Enumerate(string format)
    {
        IEnumerable<string> acc = [""];
        foreach (var c in format)
            acc = c == 'd' ? acc.SelectMany(s => Enumerable.Range(0, 10).Select(d => s + (char)('0' + d))) : acc.Select(s => s + c);
        return acc;
    }

    /// <summary>Brute-force rank with the library's tie rule: 1 + #more likely + #tied/2 (the secret excluded), and the tolerance it uses.</summary>
    public (double Rank, long Greater, long Ties) BruteRank(string prefix, string secret, string format, double relTol = 1e-5)
    {
        double s = LogLikelihood(prefix, secret), tol = relTol * Math.Max(1, Math.Abs(s));
        long greater = 0, ties = 0;
        foreach (var c in Enumerate(format))
        {
            if (c == secret) continue;
            double ll = LogLikelihood(prefix, c);
            if (ll > s + tol) greater++;
            else if (ll >= s - tol) ties++;
        }
        return (1 + greater + ties / 2.0, greater, ties);
    }
}
