using OnnxUnlearn.Text;

namespace OnnxUnlearn.Tests.Text;

/// <summary>Exposure of secrets planted in a bigram ONNX model, checked against brute-force enumeration of the candidates.</summary>
public class ExposureTests
{
    const string Prefix = "my pin is ";

    static ExposureResult Measure(Bigram b, ExposureOptions o, int? fixedLength = null, int batchRows = 256, int? fixedBatch = null, bool int32 = false)
    {
        using var dir = new TempDir();
        using var model = OnnxNextTokenModel.Open(b.Save(dir.File("bigram.onnx"), fixedLength, fixedBatch, int32), b.Vocab, batchRows: batchRows);
        return Exposure.Measure(model, b.Vocab, o);
    }

    // the planted secret (rank 1 or near), and secrets of no particular likelihood (middle and low ranks)
    [Theory]
    [InlineData("4929", "dddd")]
    [InlineData("0000", "dddd")]
    [InlineData("7351", "dddd")]
    [InlineData("1838", "dddd")]
    [InlineData("49-29", "dd-dd")]
    [InlineData("3-07", "d-dd")]
    public void ExactRankEqualsBruteForce(string secret, string format)
    {
        var b = Bigram.Random(seed: 11, plant: " 49-29", boost: 2.5f);
        var e = Measure(b, new ExposureOptions { Prefix = Prefix, Secret = secret, Format = format });
        var (rank, greater, ties) = b.BruteRank(Prefix, secret, format);
        Assert.Equal(ExposureMethod.Exact, e.Method);
        Assert.True(e.SearchComplete);
        Assert.True(e.SecretFound);
        Assert.Equal(greater, e.Greater);
        Assert.Equal(ties, e.Ties);
        Assert.Equal(rank, e.Rank);
        double size = Math.Pow(10, format.Count(c => c == 'd'));
        Assert.Equal(size, e.SpaceSize);
        Assert.Equal(Math.Log2(size) - Math.Log2(rank), e.Exposure, 9);
        Assert.Equal(b.LogLikelihood(Prefix, secret), e.SecretLogLikelihood, 9);
    }

    [Fact]
    public void BestCandidatesAreTheTopOfTheEnumeration()
    {
        var b = Bigram.Random(seed: 5, plant: " 1234", boost: 1.5f);
        var e = Measure(b, new ExposureOptions { Prefix = Prefix, Secret = "1234", Top = 15 });
        var brute = Bigram.Enumerate("dddd").Select(c => (c, ll: b.LogLikelihood(Prefix, c))).OrderByDescending(x => x.ll).Take(15).ToList();
        Assert.Equal(brute.Select(x => x.c), e.Best.Select(x => x.Text));
        for (int i = 0; i < 15; i++) Assert.Equal(brute[i].ll, e.Best[i].LogLikelihood, 9);
        Assert.Equal("search", e.BestFrom);
    }

    [Fact]
    public void FixedLengthModelsGiveTheSameLikelihoods()
    {
        // T = 4 is shorter than prefix + secret (10 + 5): predictions use windows of the 4 previous tokens
        var b = Bigram.Random(seed: 3, plant: " 49-29", boost: 2f);
        var o = new ExposureOptions { Prefix = Prefix, Secret = "81-30", Top = 5 };
        var dynamic = Measure(b, o);
        var fixedT = Measure(b, o, fixedLength: 4, batchRows: 7);
        var longT = Measure(b, o, fixedLength: 32);
        foreach (var e in new[] { fixedT, longT })
        {
            Assert.Equal(dynamic.SecretLogLikelihood, e.SecretLogLikelihood, 12);
            Assert.Equal(dynamic.Rank, e.Rank);
            Assert.Equal(dynamic.Best.Select(c => c.Text), e.Best.Select(c => c.Text));
        }
        Assert.Equal(b.BruteRank(Prefix, "81-30", "dd-dd").Rank, dynamic.Rank);
    }

    [Fact]
    public void FixedBatchAndInt32TokensGiveTheSameResult()
    {
        var b = Bigram.Random(seed: 4);
        var o = new ExposureOptions { Prefix = Prefix, Secret = "305", Top = 4 };
        var reference = Measure(b, o);
        var e = Measure(b, o, fixedLength: 6, fixedBatch: 1, int32: true);
        Assert.Equal(reference.SecretLogLikelihood, e.SecretLogLikelihood, 12);
        Assert.Equal(reference.Rank, e.Rank);
        Assert.Equal(reference.Best, e.Best);
        Assert.Equal(b.BruteRank(Prefix, "305", "ddd").Rank, e.Rank);
    }

    [Fact]
    public void TiesCountHalf()
    {
        // every candidate equally likely: rank (|R| + 1) / 2, exposure log2(2|R| / (|R| + 1)) ≈ 1 bit
        var e = Measure(Bigram.Uniform(), new ExposureOptions { Prefix = Prefix, Secret = "123" });
        Assert.Equal(ExposureMethod.Exact, e.Method);
        Assert.Equal(0, e.Greater);
        Assert.Equal(999, e.Ties);
        Assert.Equal(500.5, e.Rank);
        Assert.Equal(Math.Log2(1000 / 500.5), e.Exposure, 12);
    }

    [Fact]
    public void MemorisedSecretInAHugeSpaceIsRankedExactly()
    {
        // 10^10 candidates; each digit of the secret appears once, so a bigram can memorise the whole path. The search
        // only follows the few nodes more likely than the secret.
        const string prefix = "my code is ", secret = "49285-17306";
        var b = Bigram.Random(seed: 2, plant: " " + secret, boost: 9f);
        var e = Measure(b, new ExposureOptions { Prefix = prefix, Secret = secret, Top = 3 });
        Assert.Equal(ExposureMethod.Exact, e.Method);
        Assert.Equal("ddddd-ddddd", e.Format);
        Assert.Equal(1e10, e.SpaceSize);
        Assert.Equal(1, e.Rank);
        Assert.Equal(10 * Math.Log2(10), e.Exposure, 9);
        Assert.Equal(secret, e.Best[0].Text);
        Assert.True(e.Expansions < 200, $"{e.Expansions} expansions");
        // the most likely candidate by dynamic programming over the bigram is the secret
        Assert.Equal(secret, Viterbi(b, prefix, "ddddd-ddddd"));
    }

    static string Viterbi(Bigram b, string prefix, string format)
    {
        var best = new Dictionary<long, (double Ll, string Text)> { [Bigram.Id(prefix[^1])] = (0, "") };
        foreach (var f in format)
        {
            var next = new Dictionary<long, (double, string)>();
            foreach (var c in f == 'd' ? "0123456789" : f.ToString())
            {
                long id = Bigram.Id(c);
                next[id] = best.Select(kv => (kv.Value.Ll + b.LogProb(kv.Key, id), kv.Value.Text + c)).MaxBy(x => x.Item1);
            }
            best = next;
        }
        return best.Values.MaxBy(v => v.Ll).Text;
    }

    static readonly Lazy<(Bigram Model, List<string> ByLikelihood)> Six = new(() =>
    {
        var b = Bigram.Random(seed: 17, sigma: 1);
        return (b, Bigram.Enumerate("dddddd").OrderByDescending(c => b.LogLikelihood(Prefix, c)).ToList());
    });

    /// <summary>
    /// The case the estimate is designed for: 10^6 candidates whose log-likelihoods, sums of six digit-to-digit terms of
    /// random logits, are close to a skew-normal; secrets at exact ranks 100 to 100 000, 20 000 sampled candidates, three
    /// seeds. Within the samples' reach (rank ≥ 1000, ≥ 20 samples above the secret) the estimate is within 0.5 bits of
    /// the brute-force exposure (0.35 measured); beyond it, extrapolating the fitted tail, within 1.2 bits (0.95 measured at rank 100).
    /// </summary>
    [Theory]
    [InlineData(100, 1, 1.2)] [InlineData(100, 2, 1.2)] [InlineData(100, 3, 1.2)]
    [InlineData(1_000, 1, 0.5)] [InlineData(1_000, 2, 0.5)] [InlineData(1_000, 3, 0.5)]
    [InlineData(10_000, 1, 0.3)] [InlineData(10_000, 2, 0.3)] [InlineData(10_000, 3, 0.3)]
    [InlineData(100_000, 1, 0.15)] [InlineData(100_000, 2, 0.15)] [InlineData(100_000, 3, 0.15)]
    public void SampledEstimateIsCloseToTheExactExposure(int targetRank, int seed, double tolerance)
    {
        var (b, byLikelihood) = Six.Value;
        var secret = byLikelihood[targetRank - 1];
        double exact = Math.Log2(1e6) - Math.Log2(b.BruteRank(Prefix, secret, "dddddd").Rank);
        var e = Measure(b, new ExposureOptions { Prefix = Prefix, Secret = secret, Budget = 0, Samples = 20_000, Seed = seed });
        Assert.Equal(ExposureMethod.Estimated, e.Method);
        Assert.Equal("samples", e.BestFrom);
        Assert.Equal(20_000, e.Estimate!.Samples);
        Assert.Equal("skew-normal", e.Estimate.Distribution);
        Assert.True(Math.Abs(e.Exposure - exact) < tolerance, $"estimated {e.Exposure:F3} bits, exact {exact:F3} bits (rank {targetRank}, seed {seed})");
    }

    [Fact]
    public void SearchOverBudgetFallsBackToTheEstimateWithItsLowerBound()
    {
        var (b, byLikelihood) = Six.Value;
        var secret = byLikelihood[4_999];
        var e = Measure(b, new ExposureOptions { Prefix = Prefix, Secret = secret, Budget = 10_000, Samples = 5_000 });
        var exact = b.BruteRank(Prefix, secret, "dddddd");
        Assert.Equal(ExposureMethod.Estimated, e.Method);
        Assert.False(e.SearchComplete);
        Assert.True(e.Expansions <= 10_000);
        Assert.True(e.Greater > 0 && e.Greater <= exact.Greater, $"found {e.Greater} of {exact.Greater}");
        Assert.True(e.Rank >= 1 + e.Greater);
        Assert.Equal("search", e.BestFrom);
        // the search's candidates are the true best ones
        Assert.Equal(byLikelihood.Take(10), e.Best.Select(c => c.Text));
        Assert.True(Math.Abs(e.Exposure - (Math.Log2(1e6) - Math.Log2(exact.Rank))) < 0.5);
    }

    [Fact]
    public void ListShortOfTopIsFilledWithTheBestSampledCandidates()
    {
        // the search's budget completes fewer candidates than asked for: they come first (the exact top), then the most
        // likely sampled candidates not among them
        var (b, byLikelihood) = Six.Value;
        var secret = byLikelihood[4_999];
        var e = Measure(b, new ExposureOptions { Prefix = Prefix, Secret = secret, Budget = 10_000, Samples = 5_000, Top = 400 });
        Assert.Equal(ExposureMethod.Estimated, e.Method);
        Assert.Equal("search+samples", e.BestFrom);
        Assert.Equal(400, e.Best.Count);
        Assert.Equal(400, e.Best.Select(c => c.Text).Distinct().Count());
        int searched = e.Best.Select(c => c.Text).Zip(byLikelihood).TakeWhile(p => p.First == p.Second).Count();
        Assert.True(searched is >= 10 and < 400, $"{searched} from the search");
        Assert.Equal(e.Best.OrderByDescending(c => c.LogLikelihood).Select(c => c.Text), e.Best.Select(c => c.Text));
        foreach (var c in e.Best) Assert.Equal(b.LogLikelihood(Prefix, c.Text), c.LogLikelihood, 9);
    }

    [Fact]
    public void SameSeedSameEstimate()
    {
        var b = Bigram.Random(seed: 8);
        var o = new ExposureOptions { Prefix = Prefix, Secret = "12345", Budget = 0, Samples = 500, Seed = 42 };
        var first = Measure(b, o);
        var second = Measure(b, o);
        Assert.Equal(first.Exposure, second.Exposure);
        Assert.Equal(first.Estimate, second.Estimate);
        Assert.NotEqual(first.Estimate!.Mean, Measure(b, o with { Seed = 43 }).Estimate!.Mean);
    }

    [Theory]
    // The messages locate the problem without repeating the secret or any of its characters.
    [InlineData("4929", "ddd", "--format \"ddd\" has 3 characters but the --secret has 4")]
    [InlineData("4929", "dd-d", "character 3 of the --secret differs from the literal '-' that --format \"dd-d\" has there")]
    [InlineData("49-9", "dddd", "character 3 of the --secret is not any digit, but --format \"dddd\" has d there")]
    [InlineData("abc", null, "no free slots")]
    public void FormatErrors(string secret, string? format, string message)
    {
        var e = Assert.Throws<UserError>(() => SecretSpace.Parse(format, secret));
        Assert.Contains(message, OnnxUnlearn.Cli.Cli.Describe(e));
        Assert.DoesNotContain(secret, e.Message);
    }

    [Fact]
    public void FormatEscapesAndDefaults()
    {
        var s = SecretSpace.Parse(null, "id: 42-d7");
        Assert.Equal(@"i\d: dd-\dd", s.Format);
        Assert.Equal(3, s.FreeSlots);
        var t = SecretSpace.Parse(@"i\d: dd-\dd", "id: 42-d7");
        Assert.Equal(s.Slots, t.Slots);
        Assert.Equal("id: 05-d9", s.Candidate([0, 5, 9]));
    }

    [Fact]
    public void VocabularyWithoutDigitsIsAnError()
    {
        var vocab = Vocabulary.Parse("""{"<pad>": 0, " ": 1, "a": 2, "0": 3, "1": 4}""", "v.json");
        var e = Assert.Throws<UserError>(() => Exposure.Measure(new NeverCalled(), vocab, new ExposureOptions { Prefix = "a ", Secret = "10" }));
        Assert.Contains("'2', '3', '4', '5', '6', '7', '8', '9'", e.Message);
        Assert.Contains("v.json", e.Message);
    }

    [Fact]
    public void EmptyPrefixIsAnError()
    {
        var e = Assert.ThrowsAny<UserError>(() => Exposure.Measure(new NeverCalled(), new Bigram(new float[1]).Vocab, new ExposureOptions { Prefix = "", Secret = "10" }));
        Assert.Contains("--prefix is empty", OnnxUnlearn.Cli.Cli.Describe(e));
    }

    sealed class NeverCalled : INextTokenModel
    {
        public double[][] LogProbs(IReadOnlyList<NextTokenQuery> queries) => throw new InvalidOperationException("the model should not run");
    }
}
