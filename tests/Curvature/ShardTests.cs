using OnnxUnlearn.Curvature;
using OnnxUnlearn.Runtime;
using Xunit.Abstractions;

namespace OnnxUnlearn.Tests.Curvature;

/// <summary>Chunked sums (docs/method.md#shards): shards of any count combine into the one-process result, bit for bit, and that result is the plain estimate.</summary>
public class ShardTests(ITestOutputHelper log)
{
    /// <summary>A dense symmetric matrix as an operator: z ⊙ Hz is known exactly, so the estimate's moments can be derived by hand.</summary>
    sealed class Matrix(double[,] h) : ILinearOperator
    {
        public int Size => h.GetLength(0);
        public void Apply(ReadOnlySpan<float> v, Span<float> result)
        {
            for (int i = 0; i < Size; i++) { double s = 0; for (int j = 0; j < Size; j++) s += h[i, j] * v[j]; result[i] = (float)s; }
        }
    }

    static double[,] Random(int n, int seed)
    {
        var rng = new Random(seed);
        var h = new double[n, n];
        for (int i = 0; i < n; i++) for (int j = 0; j <= i; j++) h[i, j] = h[j, i] = Math.Round(rng.NextDouble() * 8 - 4); // small integers: H z is exact in float
        return h;
    }

    [Theory]
    [InlineData(25, 4, 1)]
    [InlineData(25, 4, 2)]
    [InlineData(25, 4, 3)]
    [InlineData(25, 4, 5)]
    [InlineData(25, 4, 9)] // more shards than the 7 chunks: two hold none
    [InlineData(12, 12, 2)] // one chunk
    [InlineData(7, 1, 3)] // a chunk per probe
    public void HutchinsonShardsCombineIntoTheOneProcessEstimateBitForBit(int probes, int chunk, int shards)
    {
        var h = new Matrix(Random(30, 5));
        var whole = Diagonal.Hutchinson(h, probes, seed: 3, chunk: chunk);
        var parts = Enumerable.Range(0, shards).SelectMany(k => Chunked.Hutchinson(h, probes, 3, chunk, new Shard(k, shards))).Reverse().ToList();
        var merged = Chunked.Combine(parts, probes, 0.05);
        Assert.Equal(whole.Values, merged.Values);
        Assert.Equal(whole.StandardError, merged.StandardError);
        Assert.Equal(whole.TopKOverlap, merged.TopKOverlap);
    }

    [Theory]
    [InlineData(25, 4)]
    [InlineData(25, 1)]
    [InlineData(25, 25)]
    public void ChunkedHutchinsonIsTheMeanAndStandardErrorOfItsProbes(int probes, int chunk)
    {
        // Reference: xⱼ = zⱼ ⊙ Hzⱼ from the same probes, mean and sample variance in two passes (float64).
        int n = 30;
        var m = Random(n, 5);
        var est = Diagonal.Hutchinson(new Matrix(m), probes, seed: 3, chunk: chunk);
        var x = new double[probes, n];
        var z = new float[n];
        for (int j = 0; j < probes; j++)
        {
            var rng = new Random(Diagonal.ProbeSeed(3, j));
            for (int i = 0; i < n; i++) z[i] = rng.Next(2) == 0 ? -1f : 1f;
            for (int i = 0; i < n; i++) { double s = 0; for (int k = 0; k < n; k++) s += m[i, k] * z[k]; x[j, i] = z[i] * s; }
        }
        double worstMean = 0, worstSe = 0;
        for (int i = 0; i < n; i++)
        {
            double mean = Enumerable.Range(0, probes).Average(j => x[j, i]);
            double se = Math.Sqrt(Enumerable.Range(0, probes).Sum(j => (x[j, i] - mean) * (x[j, i] - mean)) / (probes - 1) / probes);
            worstMean = Math.Max(worstMean, Math.Abs(est.Values[i] - mean) / Math.Max(1, Math.Abs(mean)));
            worstSe = Math.Max(worstSe, Math.Abs(est.StandardError![i] - se) / Math.Max(1, se));
        }
        log.WriteLine($"probes {probes}, chunk {chunk}: worst mean error {worstMean:E2}, worst stderr error {worstSe:E2}");
        Assert.True(worstMean < 1e-6, $"mean off by {worstMean:E2}");
        Assert.True(worstSe < 1e-6, $"standard error off by {worstSe:E2}");
    }

    [Fact]
    public void HutchinsonOfADiagonalMatrixIsExactWithZeroStandardError()
    {
        // z ⊙ Dz = diag(D) for every Rademacher z: each probe gives the diagonal, the variance is 0 (not a tiny negative).
        var d = new double[6, 6];
        for (int i = 0; i < 6; i++) d[i, i] = i - 2.5;
        var est = Diagonal.Hutchinson(new Matrix(d), 11, seed: 1, chunk: 3);
        Assert.Equal(Enumerable.Range(0, 6).Select(i => (float)(i - 2.5)), est.Values);
        Assert.All(est.StandardError!, se => Assert.Equal(0f, se));
    }

    /// <summary>A chunk whose every label is the ignore index (padding) adds nothing; the mean is over the labelled elements.</summary>
    [Fact]
    public void AChunkOfPaddingAddsNothing()
    {
        using var loaded = Dataset.Load(Fixtures.File("charlstm", "data.npz"));
        var arrays = loaded.Arrays.ToDictionary(kv => kv.Key, kv => kv.Value);
        var labels = arrays["label"].ToInt64();
        Array.Fill(labels, -100L, 0, 8 * 12); // the first 8 sequences: all padding
        arrays["label"] = OnnxUnlearn.Data.NdArray.FromInt64(labels, arrays["label"].Shape);
        using var data = new Dataset(arrays, "padded");
        using var s = Evaluator.Open(Fixtures.File("charlstm", "model.onnx"), new LossSettings { IgnoreIndex = -100 }, data);
        var theta = s.ReadParameters();
        var (chunked, loss) = Chunked.Combine(Chunked.Gradient(s, theta, data, 8, Shard.Whole), hasAccuracy: true);
        var g = new float[s.Layout.Size];
        var plain = s.Gradient(theta, data, g);
        Assert.Equal(plain.Count, loss.Count);
        Assert.Equal(24 * 12, loss.Count);
        Assert.Equal(plain.Loss, loss.Loss, 1e-6);
        Assert.True(Numerics.RelativeL2(g, chunked) < 1e-6, $"relative L2 {Numerics.RelativeL2(g, chunked):E2}");
    }

    [Theory]
    [InlineData(10, 1)]
    [InlineData(10, 3)]
    [InlineData(7, 4)]
    [InlineData(64, 2)]
    public void GradientShardsCombineBitForBitAndEqualTheMeanGradient(int chunk, int shards)
    {
        using var data = Dataset.Load(Fixtures.File("mlp", "data.npz"));
        using var s = Evaluator.Open(Fixtures.File("mlp", "model.onnx"), new LossSettings(), data);
        var theta = s.ReadParameters();
        var (whole, loss) = Chunked.Combine(Chunked.Gradient(s, theta, data, chunk, Shard.Whole), hasAccuracy: true);
        var parts = Enumerable.Range(0, shards).SelectMany(k => Chunked.Gradient(s, theta, data, chunk, new Shard(k, shards))).Reverse().ToList();
        var (merged, mergedLoss) = Chunked.Combine(parts, hasAccuracy: true);
        Assert.Equal(whole, merged);
        Assert.Equal(loss, mergedLoss);
        // against the evaluator's own mean over all rows (ONNX Runtime's gradient graph, batches of 256)
        var g = new float[s.Layout.Size];
        var plain = s.Gradient(theta, data, g);
        double scale = g.Max(v => Math.Abs(v)), worst = g.Zip(whole, (a, b) => Math.Abs(a - b)).Max() / scale;
        log.WriteLine($"chunk {chunk}: worst gradient error {worst:E2} of max |g| {scale:E2}; loss {loss.Loss} vs {plain.Loss}");
        Assert.True(worst < 1e-5, $"gradient off by {worst:E2}");
        Assert.Equal(plain.Loss, loss.Loss, 1e-6);
        Assert.Equal(plain.Count, loss.Count);
        Assert.Equal(plain.Accuracy!.Value, loss.Accuracy!.Value, 1e-12);
    }

    [Theory]
    [InlineData("3/3")]
    [InlineData("-1/2")]
    [InlineData("1")]
    [InlineData("a/b")]
    [InlineData("0/0")]
    public void MalformedShardsAreRefused(string text) =>
        Assert.Contains("--shard must be K/M", Assert.Throws<UserError>(() => Shard.Parse(text)).Message);

    [Fact]
    public void ChunkCOfShardKOfMIsCModM()
    {
        Assert.Equal([1, 4], new Shard(1, 3).Of(6));
        Assert.Equal([], new Shard(4, 5).Of(3));
        Assert.Equal([0, 1, 2], Shard.Whole.Of(3));
        Assert.Equal(7, Shard.Chunks(25, 4));
    }
}
