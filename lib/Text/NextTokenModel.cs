using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using static OnnxUnlearn.UserError;

namespace OnnxUnlearn.Text;

/// <summary>
/// Asks for log p(token | Tokens[0..Index)) — the model's next-token distribution at index <see cref="Index"/> of the
/// sequence — for each token id in <see cref="Want"/>. Queries that share a <see cref="Tokens"/> array (by reference)
/// may be answered from one model row.
/// </summary>
public readonly record struct NextTokenQuery(long[] Tokens, int Index, long[] Want);

/// <summary>A causal next-token model: answers batches of <see cref="NextTokenQuery"/> with natural-log probabilities.</summary>
public interface INextTokenModel
{
    double[][] LogProbs(IReadOnlyList<NextTokenQuery> queries);
}

/// <summary>
/// An ONNX next-token model: token ids [N, T] (int64 or int32) in, logits [N, T, V] out, where the logits at position t
/// score the token at t + 1 (a char-LSTM or a causal transformer). The model must be causal: a position's logits may not
/// depend on later tokens, since rows are padded on the right.
/// <list type="bullet">
/// <item>Dynamic T: the query's whole context Tokens[0..Index) is fed; queries on one sequence share a row, rows of a
/// run are right-padded to the longest.</item>
/// <item>Fixed T: the token at index i is scored from the window of the T tokens before it, Tokens[i−T..i), read at the
/// last position; when i ≤ T the window is Tokens[0..T) (right-padded) read at position i − 1. Each prediction always
/// sees the same window, however queries are grouped.</item>
/// </list>
/// Log-softmax is taken in double precision from the logits.
/// </summary>
public sealed class OnnxNextTokenModel : INextTokenModel, IDisposable
{
    public string Path { get; }
    public string InputName { get; }
    public string OutputName { get; }
    /// <summary>The model's fixed sequence length, or null when T is dynamic.</summary>
    public int? FixedLength { get; }
    /// <summary>The model's fixed batch size, or null when N is dynamic.</summary>
    public int? FixedBatch { get; }
    /// <summary>Rows per ONNX Runtime run (a fixed batch size overrides it).</summary>
    public int BatchRows { get; }
    public long Runs { get; private set; }
    public long RowsRun { get; private set; }
    /// <summary>Classes in the logits (known after the first run).</summary>
    public long? VocabularySize { get; private set; }

    readonly InferenceSession session;
    readonly TensorElementType inputType;
    readonly Vocabulary vocab;

    OnnxNextTokenModel(string path, InferenceSession session, string input, string output, TensorElementType inputType, int? fixedLength, int? fixedBatch, int batchRows, Vocabulary vocab)
    {
        Path = path; this.session = session; InputName = input; OutputName = output; this.inputType = inputType;
        FixedLength = fixedLength; FixedBatch = fixedBatch; BatchRows = fixedBatch ?? batchRows; this.vocab = vocab;
    }

    public static OnnxNextTokenModel Open(string path, Vocabulary vocab, string? input = null, string? output = null, int batchRows = 256, int threads = 1, ExternalDataPolicy? policy = null)
    {
        if (batchRows < 1) throw new SettingError("BatchSize", $"must be at least 1, got {batchRows}");
        var file = ModelFile.Load(path, policy);
        var g = file.Graph;
        var data = Evaluator.DataInputs(g);
        string inputName;
        if (input is not null)
        {
            if (!g.Input.Any(i => i.Name == input))
                throw new UserError($"model '{path}' has no input '{input}'; its inputs are {string.Join(", ", data.Select(d => $"'{d}'"))}");
            inputName = input;
        }
        else if (data.Count == 1) inputName = data[0];
        else throw new UserError($"model '{path}' has {data.Count} inputs ({string.Join(", ", data.Select(d => $"'{d}'"))}); name the token input ({Setting("Input")})");
        var others = data.Where(d => d != inputName).ToList();
        if (others.Count > 0)
            throw new UserError($"model '{path}' needs inputs {string.Join(", ", others.Select(d => $"'{d}'"))} besides the tokens '{inputName}'; a next-token model for exposure takes token ids only");

        var info = g.Input.First(i => i.Name == inputName).Type?.TensorType
            ?? throw new UserError($"model '{path}': input '{inputName}' is not a tensor; it should take token ids [N, T]");
        var type = info.ElemType switch
        {
            DataTypes.Int64 => TensorElementType.Int64,
            DataTypes.Int32 => TensorElementType.Int32,
            var t => throw new UserError($"model '{path}': input '{inputName}' is {DataTypes.Name(t)}; a next-token model takes token ids (int64 or int32) [N, T]"),
        };
        int? fixedLength = null, fixedBatch = null;
        if (info.Shape is { } shape)
        {
            if (shape.Dim.Count != 2)
                throw new UserError($"model '{path}': input '{inputName}' has rank {shape.Dim.Count}; a next-token model takes token ids [N, T]");
            static int? Fixed(TensorShapeProto.Types.Dimension d) =>
                d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue && d.DimValue > 0 ? checked((int)d.DimValue) : null;
            fixedBatch = Fixed(shape.Dim[0]);
            fixedLength = Fixed(shape.Dim[1]);
        }

        string outputName = output ?? g.Output.FirstOrDefault()?.Name ?? throw new UserError($"model '{path}' has no outputs");
        if (!g.Output.Any(o => o.Name == outputName))
            throw new UserError($"model '{path}' has no output '{outputName}'; its outputs are {string.Join(", ", g.Output.Select(o => $"'{o.Name}'"))}");

        using var options = OrtSessions.Options(threads);
        // ONNX Runtime refuses external data reached through links out of the model's folder itself: allowed links are
        // followed here, with the data inlined.
        var session = file.Policy.AllowLinks && file.Graph.Initializer.Any(t => t.IsExternal())
            ? OrtSessions.Create(Inlined(file), options, $"model '{path}'")
            : OrtSessions.Create(path, options, $"model '{path}'");
        return new OnnxNextTokenModel(path, session, inputName, outputName, type, fixedLength, fixedBatch, batchRows, vocab);
    }

    static byte[] Inlined(ModelFile file)
    {
        var m = file.Model.Clone();
        foreach (var t in m.Graph.Initializer) t.Inline(file);
        return Google.Protobuf.MessageExtensions.ToByteArray(m);
    }

    sealed class Row(long[] tokens)
    {
        public long[] Tokens = tokens;
        public readonly List<(int Query, int Position)> Reads = [];
    }

    public double[][] LogProbs(IReadOnlyList<NextTokenQuery> queries)
    {
        var results = new double[queries.Count][];
        var rows = new List<Row>();
        var byKey = new Dictionary<(long[] Tokens, int Start), Row>(new KeyComparer());
        for (int q = 0; q < queries.Count; q++)
        {
            var (tokens, index, _) = queries[q];
            if (index < 1 || index > tokens.Length)
                throw new ArgumentOutOfRangeException(nameof(queries), $"Query index {index} is outside 1..{tokens.Length}: the first token has no context.");
            int start = FixedLength is { } t ? Math.Max(0, index - t) : 0;
            if (!byKey.TryGetValue((tokens, start), out var row))
            {
                row = new Row(tokens);
                byKey[(tokens, start)] = row;
                rows.Add(row);
            }
            row.Reads.Add((q, index - 1 - start));
        }
        // For dynamic T a row needs only the tokens up to its last read; fixed T rows are their window.
        var widths = new Dictionary<Row, (int Start, int Width)>(ReferenceEqualityComparer.Instance);
        foreach (var (key, row) in byKey)
            widths[row] = FixedLength is { } t ? (key.Start, t) : (0, row.Reads.Max(x => x.Position) + 1);
        // Similar widths together keep right-padding small; results do not depend on the order.
        var order = rows.OrderBy(r => widths[r].Width).ToList();
        for (int i = 0; i < order.Count; i += BatchRows)
            RunBatch(order.GetRange(i, Math.Min(BatchRows, order.Count - i)), widths, queries, results);
        return results;
    }

    sealed class KeyComparer : IEqualityComparer<(long[] Tokens, int Start)>
    {
        public bool Equals((long[] Tokens, int Start) a, (long[] Tokens, int Start) b) => ReferenceEquals(a.Tokens, b.Tokens) && a.Start == b.Start;
        public int GetHashCode((long[] Tokens, int Start) k) => HashCode.Combine(System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(k.Tokens), k.Start);
    }

    void RunBatch(List<Row> batch, Dictionary<Row, (int Start, int Width)> widths, IReadOnlyList<NextTokenQuery> queries, double[][] results)
    {
        int width = batch.Max(r => widths[r].Width);
        int n = FixedBatch ?? batch.Count;
        var ids = new long[(long)n * width];
        Array.Fill(ids, vocab.Pad);
        for (int r = 0; r < n; r++)
        {
            // a fixed batch is filled up with copies of the last row
            var row = batch[Math.Min(r, batch.Count - 1)];
            var (start, _) = widths[row];
            int count = Math.Min(width, row.Tokens.Length - start);
            Array.Copy(row.Tokens, start, ids, (long)r * width, count);
        }
        using var feed = inputType == TensorElementType.Int64
            ? OrtValue.CreateTensorValueFromMemory(ids, [n, width])
            : OrtValue.CreateTensorValueFromMemory(ids.Select(v => checked((int)v)).ToArray(), [n, width]);
        using var outputs = OrtSessions.Run(session, [InputName], [feed], [OutputName], $"model '{Path}'");
        Runs++; RowsRun += batch.Count;
        var value = outputs[0];
        if (!value.IsTensor) throw new UserError($"model '{Path}': output '{OutputName}' is not a tensor; it should be logits [N, T, V]");
        var info = value.GetTensorTypeAndShape();
        var shape = info.Shape;
        if (shape.Length != 3 || shape[0] != n || shape[1] != width)
            throw new UserError($"model '{Path}': output '{OutputName}' has shape [{string.Join(", ", shape)}] for tokens [{n}, {width}]; a next-token model returns logits [N, T, V]");
        long v = shape[2];
        if (VocabularySize is null)
        {
            if (v <= vocab.MaxId)
                throw new UserError($"model '{Path}' scores {v} tokens but vocabulary '{vocab.Source}' uses ids up to {vocab.MaxId} (token \"{vocab.TokenOf(vocab.MaxId)}\"); the vocabulary does not belong to this model");
            VocabularySize = v;
        }
        double[] logits = info.ElementDataType switch
        {
            TensorElementType.Float => ToDouble(value.GetTensorDataAsSpan<float>()),
            TensorElementType.Double => value.GetTensorDataAsSpan<double>().ToArray(),
            TensorElementType.Float16 => value.GetTensorDataAsSpan<Float16>().ToArray().Select(h => (double)h.ToFloat()).ToArray(),
            var t => throw new UserError($"model '{Path}': output '{OutputName}' is {t}; logits should be float32, float16 or float64"),
        };
        for (int r = 0; r < batch.Count; r++)
            foreach (var (q, position) in batch[r].Reads)
            {
                var slice = logits.AsSpan((int)(((long)r * width + position) * v), (int)v);
                double max = double.NegativeInfinity;
                foreach (var x in slice) max = Math.Max(max, x);
                double sum = 0;
                foreach (var x in slice) sum += Math.Exp(x - max);
                double lse = max + Math.Log(sum);
                if (!double.IsFinite(lse))
                    throw new UserError($"model '{Path}': output '{OutputName}' holds non-finite logits (NaN or infinity) for a sequence; check the model");
                var want = queries[q].Want;
                var lp = new double[want.Length];
                for (int k = 0; k < want.Length; k++) lp[k] = slice[(int)want[k]] - lse;
                results[q] = lp;
            }
    }

    static double[] ToDouble(ReadOnlySpan<float> s)
    {
        var d = new double[s.Length];
        for (int i = 0; i < s.Length; i++) d[i] = s[i];
        return d;
    }

    public void Dispose() => session.Dispose();
}
