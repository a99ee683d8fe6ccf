using static OnnxUnlearn.UserError;

namespace OnnxUnlearn.Text;

/// <summary>
/// The space R of candidate secrets: a format with one slot per character, each slot either free (any character of
/// the alphabet, written <c>d</c> in a format for the default digit alphabet) or a literal.
/// </summary>
public sealed class SecretSpace
{
    /// <summary>Per slot: null for a free slot, otherwise the literal character.</summary>
    public IReadOnlyList<string?> Slots { get; }
    /// <summary>Characters a free slot takes.</summary>
    public IReadOnlyList<string> Alphabet { get; }
    public int Length => Slots.Count;
    public int FreeSlots { get; }
    /// <summary>log₂|R| = free slots · log₂|alphabet|.</summary>
    public double Log2Size => FreeSlots * Math.Log2(Alphabet.Count);
    /// <summary>|R| (a double: it can exceed 2⁶³).</summary>
    public double Size => Math.Pow(Alphabet.Count, FreeSlots);

    SecretSpace(IReadOnlyList<string?> slots, IReadOnlyList<string> alphabet)
    {
        Slots = slots; Alphabet = alphabet; FreeSlots = slots.Count(s => s is null);
    }

    public const string Digits = "0123456789";

    /// <summary>
    /// The space of <paramref name="format"/> (<c>d</c> = a free slot, <c>\x</c> = the literal x, anything else literal),
    /// checked against <paramref name="secret"/>; without a format, the secret with each alphabet character made a free slot.
    /// </summary>
    public static SecretSpace Parse(string? format, string secret, string alphabet = Digits)
    {
        var letters = Vocabulary.Characters(alphabet);
        if (letters.Length < 2) throw new UserError($"{Setting("Alphabet", $"\"{alphabet}\"")} needs at least two characters");
        if (letters.Distinct().Count() != letters.Length) throw new UserError($"{Setting("Alphabet", $"\"{alphabet}\"")} repeats a character");
        var chars = Vocabulary.Characters(secret);
        if (chars.Length == 0) throw new SettingError("Secret", "is empty");
        List<string?> slots;
        if (format is null) slots = chars.Select(c => letters.Contains(c) ? null : c).ToList();
        else
        {
            slots = [];
            var f = Vocabulary.Characters(format);
            for (int i = 0; i < f.Length; i++)
            {
                if (f[i] == "\\" && i + 1 < f.Length) slots.Add(f[++i]);
                else slots.Add(f[i] == "d" ? null : f[i]);
            }
            string free = alphabet == Digits ? "any digit" : $"any of \"{alphabet}\"";
            if (slots.Count != chars.Length)
                throw new UserError($"{Setting("Format", $"\"{format}\"")} has {slots.Count} characters but the {Setting("Secret")} has {chars.Length}; the format needs one character per secret character (d = {free}, anything else literal)");
            for (int i = 0; i < chars.Length; i++)
            {
                if (slots[i] is null && !letters.Contains(chars[i]))
                    throw new UserError($"character {i + 1} of the {Setting("Secret")} is not {free}, but {Setting("Format", $"\"{format}\"")} has d there");
                if (slots[i] is { } lit && lit != chars[i])
                    throw new UserError($"character {i + 1} of the {Setting("Secret")} differs from the literal '{lit}' that {Setting("Format", $"\"{format}\"")} has there");
            }
        }
        if (!slots.Any(s => s is null))
            throw new UserError($"the secret's format has no free slots (d), so there is nothing to rank the secret against; give a {Setting("Format")} with d for each secret digit");
        if (slots.Count(s => s is null) * Math.Log2(letters.Length) > 1000)
            throw new UserError($"the secret's format has {slots.Count(s => s is null)} free slots; at most {(int)(1000 / Math.Log2(letters.Length))} are supported");
        return new SecretSpace(slots, letters);
    }

    /// <summary>The format as a string: d for free slots (digit alphabet), literals escaped where they would read as d or \.</summary>
    public string Format => string.Concat(Slots.Select(s => s is null ? "d" : s is "d" or "\\" ? "\\" + s : s));

    /// <summary>The candidate whose free slots take the given alphabet indices, in order.</summary>
    public string Candidate(IReadOnlyList<int> choices)
    {
        var sb = new System.Text.StringBuilder();
        int k = 0;
        foreach (var s in Slots) sb.Append(s ?? Alphabet[choices[k++]]);
        return sb.ToString();
    }
}

public sealed record ExposureOptions
{
    /// <summary>Text before the secret (at least one character: the first secret character is predicted from it).</summary>
    public required string Prefix { get; init; }
    public required string Secret { get; init; }
    /// <summary>d = any alphabet character, other characters literal; null: the secret with each digit a free slot.</summary>
    public string? Format { get; init; }
    public string Alphabet { get; init; } = SecretSpace.Digits;
    /// <summary>Most nodes the best-first search expands before falling back to the sampled estimate (0: sample only).</summary>
    public long Budget { get; init; } = 100_000;
    /// <summary>Random candidates scored for the estimate.</summary>
    public int Samples { get; init; } = 10_000;
    public int Seed { get; init; }
    /// <summary>Best candidates to list.</summary>
    public int Top { get; init; } = 10;
    /// <summary>Search nodes expanded per model batch.</summary>
    public int BatchNodes { get; init; } = 256;
    /// <summary>
    /// Candidates whose log-likelihood is within TieTolerance·max(1, |ll(secret)|) of the secret's tie with it (float32
    /// logits are not reproducible to the last bit across batch shapes).
    /// </summary>
    public double TieTolerance { get; init; } = 1e-5;
}

public enum ExposureMethod { Exact, Estimated }

/// <summary>A candidate secret and its log-likelihood (nats) given the prefix.</summary>
public sealed record Candidate(string Text, double LogLikelihood);

/// <summary>
/// The sampled estimate: a skew-normal fitted (method of moments) to the log-likelihoods of <see cref="Samples"/>
/// uniform random candidates; <see cref="TailProbability"/> = P(ll > ll(secret)) under the fit.
/// <see cref="EmpiricalFraction"/> is the share of samples above the secret (ties half), for comparison.
/// </summary>
public sealed record ExposureEstimate(int Samples, int Seed, string Distribution, double Location, double Scale, double Shape,
    double Mean, double StdDev, double Skewness, double TailProbability, double Log2TailProbability, double EmpiricalFraction);

/// <summary>
/// Exposure of a secret (Carlini et al., The Secret Sharer): log₂|R| − log₂ rank. <see cref="Rank"/> is the secret's
/// rank by log-likelihood among all candidates (1 = most likely); candidates tied with it count half, so
/// rank = 1 + greater + ties/2. With <see cref="ExposureMethod.Exact"/>, <see cref="Greater"/> and <see cref="Ties"/>
/// are exact counts; with <see cref="ExposureMethod.Estimated"/>, they are what the search found before its budget ran
/// out (a lower bound: rank ≥ 1 + Greater + Ties/2), and Rank = max(that bound, |R|·P(ll > ll(secret))) from the fit.
/// <see cref="Best"/> lists up to <see cref="ExposureOptions.Top"/> likely candidates, most likely first; <see cref="BestFrom"/>
/// says whence: "search" (the exact top), "samples" (the most likely sampled candidates: the search completed none) or
/// "search+samples" (the exact top candidates the search completed, then the most likely sampled ones).
/// </summary>
public sealed record ExposureResult(
    string Format, int FreeSlots, double SpaceSize, double Log2SpaceSize, double SecretLogLikelihood,
    ExposureMethod Method, double Rank, double Log2Rank, double Exposure,
    long Greater, long Ties, bool SecretFound, long Expansions, long Budget, bool SearchComplete,
    string BestFrom, IReadOnlyList<Candidate> Best, ExposureEstimate? Estimate, long ModelRows);

/// <summary>
/// Measures how exposed a secret is in a next-token model.
/// <para>
/// Exact rank: best-first search over the candidates' tree (one level per free slot; literal slots are scored on the way).
/// A node's priority is the log-likelihood of its filled part, which only decreases as characters are added, so nodes are
/// popped in an order where every complete candidate comes out before any candidate less likely than it. The search
/// expands every node whose partial log-likelihood is at least ll(secret) − tolerance (no completion of any other node
/// can reach the secret) — batching many nodes per model run — and counts the complete candidates above and tied with the
/// secret. It stops as soon as the queue holds only nodes below that line (and the top list is full): the count is then
/// exact however large R is. More than <see cref="ExposureOptions.Budget"/> expansions: falls back to the estimate.
/// </para>
/// </summary>
public static class Exposure
{
    sealed class Node(Node? parent, int depth, int symbol, double logLikelihood)
    {
        public readonly Node? Parent = parent;
        /// <summary>Slots filled (and scored) so far.</summary>
        public readonly int Depth = depth;
        /// <summary>Alphabet index chosen for slot Depth − 1 (−1 when this node only added literals).</summary>
        public readonly int Symbol = symbol;
        public readonly double LogLikelihood = logLikelihood;
    }

    public static ExposureResult Measure(INextTokenModel model, Vocabulary vocab, ExposureOptions o)
    {
        var space = SecretSpace.Parse(o.Format, o.Secret, o.Alphabet);
        if (Vocabulary.Characters(o.Prefix).Length == 0)
            throw new SettingError("Prefix", "is empty; the model predicts the first secret character from the text before it, so give at least one character");
        if (o.Budget < 0) throw new SettingError("Budget", $"must be 0 or more, got {o.Budget}");
        if (o.Top < 0) throw new SettingError("Top", $"must be 0 or more, got {o.Top}");
        if (o.BatchNodes < 1) throw new UserError($"the search batch must be at least 1 node, got {o.BatchNodes}");
        var missing = space.Alphabet.Where(c => vocab.IdOf(System.Text.Rune.GetRuneAt(c, 0)) is null).ToList();
        if (missing.Count > 0)
            throw new UserError($"vocabulary '{vocab.Source}' has no token for {(missing.Count == 1 ? "candidate character" : "candidate characters")} {string.Join(", ", missing.Select(m => $"'{m}'"))}; every character a free slot can take needs one");
        var prefix = vocab.Encode(o.Prefix, Setting("Prefix"));
        var alphabetIds = space.Alphabet.Select(c => vocab.IdOf(System.Text.Rune.GetRuneAt(c, 0))!.Value).ToArray();
        var literalIds = space.Slots.Select((s, i) => s is null ? -1 : vocab.Encode(s, $"{Setting("Secret")} (character {i + 1})", reveal: false)[0]).ToArray();
        var secretChoices = SecretChoices(space, o.Secret);
        long rowsBefore = Rows(model);

        double secretLl = Score(model, prefix, space, alphabetIds, literalIds, [secretChoices])[0];
        double tolerance = o.TieTolerance * Math.Max(1, Math.Abs(secretLl));

        // ---- best-first search ----
        var queue = new PriorityQueue<Node, (double, long)>();
        long order = 0, expansions = 0, greater = 0, ties = 0;
        bool secretFound = false;
        var completes = new List<Candidate>();
        var root = new Node(null, 0, -1, 0);
        if (o.Budget > 0) queue.Enqueue(root, (0, order++));
        double line = secretLl - tolerance;
        bool Done() => queue.Count == 0 || (queue.Peek().LogLikelihood < line && completes.Count >= o.Top);
        while (!Done() && expansions < o.Budget)
        {
            var batch = new List<Node>();
            // below the line, nodes are expanded only to fill the list of best candidates: a few at a time
            bool filling = queue.Peek().LogLikelihood < line;
            int size = filling ? Math.Min(o.BatchNodes, Math.Max(1, o.Top - completes.Count)) : o.BatchNodes;
            while (queue.Count > 0 && batch.Count < size && expansions + batch.Count < o.Budget)
            {
                var top = queue.Peek();
                if (top.LogLikelihood < line && (completes.Count >= o.Top || !filling)) break;
                if (top.Depth == space.Length)
                {
                    // a complete candidate is final only if no node popped before it is still waiting to be expanded
                    if (batch.Count > 0) break;
                    queue.Dequeue();
                    var text = space.Candidate(Choices(top, space));
                    completes.Add(new Candidate(text, top.LogLikelihood));
                    if (text == o.Secret) secretFound = true;
                    else if (top.LogLikelihood > secretLl + tolerance) greater++;
                    else if (top.LogLikelihood >= line) ties++;
                    continue;
                }
                batch.Add(queue.Dequeue());
            }
            if (batch.Count == 0) continue;
            Expand(model, prefix, space, alphabetIds, literalIds, batch, child => queue.Enqueue(child, (-child.LogLikelihood, order++)));
            expansions += batch.Count;
        }
        bool complete = o.Budget > 0 && (queue.Count == 0 || queue.Peek().LogLikelihood < line);
        var best = completes.Take(o.Top).ToList();

        double log2Size = space.Log2Size;
        double boundRank = 1 + greater + ties / 2.0;
        if (complete)
        {
            double log2Rank = Math.Log2(boundRank);
            return new ExposureResult(space.Format, space.FreeSlots, space.Size, log2Size, secretLl, ExposureMethod.Exact, boundRank, log2Rank,
                log2Size - log2Rank, greater, ties, secretFound, expansions, o.Budget, true, "search", best, null, Rows(model) - rowsBefore);
        }

        // ---- sampled estimate ----
        if (o.Samples < 10)
            throw new UserError($"the search stopped at {Setting("Budget", o.Budget.ToString())} expansions before ranking the secret exactly, and the estimate needs {Setting("Samples")} of at least 10 (got {o.Samples}); raise either");
        var rng = new Random(o.Seed);
        var samples = new List<int[]>(o.Samples);
        for (int i = 0; i < o.Samples; i++)
            samples.Add(Enumerable.Range(0, space.FreeSlots).Select(_ => rng.Next(space.Alphabet.Count)).ToArray());
        var lls = Score(model, prefix, space, alphabetIds, literalIds, samples);
        var estimate = Estimate(lls, secretLl, tolerance, o.Samples, o.Seed);
        double log2Estimated = log2Size + estimate.Log2TailProbability;
        double log2RankEst = Math.Max(0, Math.Max(Math.Log2(boundRank), log2Estimated));
        if (best.Count >= o.Top) return Result("search");
        // A budget spent on the wide upper levels of the tree can run out before the search completes (m)any candidates:
        // the list is topped up with the most likely sampled ones (each below every candidate the search completed).
        int searched = best.Count;
        var listed = best.Select(c => c.Text).ToHashSet();
        best.AddRange(lls.Select((ll, i) => new Candidate(space.Candidate(samples[i]), ll)).DistinctBy(c => c.Text).Where(c => !listed.Contains(c.Text))
            .OrderByDescending(c => c.LogLikelihood).ThenBy(c => c.Text, StringComparer.Ordinal).Take(o.Top - searched));
        return Result(searched == 0 ? "samples" : best.Count > searched ? "search+samples" : "search");

        ExposureResult Result(string from) => new(space.Format, space.FreeSlots, space.Size, log2Size, secretLl, ExposureMethod.Estimated,
            Math.Pow(2, log2RankEst), log2RankEst, log2Size - log2RankEst, greater, ties, secretFound, expansions, o.Budget, false, from, best,
            estimate, Rows(model) - rowsBefore);
    }

    /// <summary>Fits the skew-normal to sampled log-likelihoods and reads off the tail beyond the secret.</summary>
    internal static ExposureEstimate Estimate(IReadOnlyList<double> lls, double secretLl, double tolerance, int samples, int seed)
    {
        double above = lls.Count(x => x > secretLl + tolerance) + 0.5 * lls.Count(x => Math.Abs(x - secretLl) <= tolerance);
        var fit = SkewNormal.FitMoments(lls, out double mean, out double sd, out double skew);
        double log2Tail;
        if (fit is null)
            // every sample has the same log-likelihood: the secret is above, tied with (half) or below all of them
            log2Tail = secretLl > mean + tolerance ? double.NegativeInfinity : secretLl < mean - tolerance ? 0 : -1;
        else log2Tail = fit.LogSurvival(secretLl) / Math.Log(2);
        // below 2^-2000 the rank is 1 for any supported space (|R| ≤ 2^1000); keeps the value finite for JSON
        log2Tail = Math.Max(log2Tail, -2000);
        return new ExposureEstimate(samples, seed, "skew-normal", fit?.Location ?? mean, fit?.Scale ?? 0, fit?.Shape ?? 0, mean, sd, skew,
            Math.Pow(2, log2Tail), log2Tail, above / lls.Count);
    }

    static int[] SecretChoices(SecretSpace space, string secret)
    {
        var chars = Vocabulary.Characters(secret);
        var choices = new List<int>();
        for (int i = 0; i < chars.Length; i++)
            if (space.Slots[i] is null) choices.Add(space.Alphabet.ToList().IndexOf(chars[i]));
        return [.. choices];
    }

    /// <summary>Alphabet indices of a node's free slots, in slot order.</summary>
    static int[] Choices(Node node, SecretSpace space)
    {
        var choices = new List<int>();
        for (var n = node; n is not null; n = n.Parent) if (n.Symbol >= 0) choices.Add(n.Symbol);
        choices.Reverse();
        return [.. choices];
    }

    /// <summary>Prefix tokens, then the first <paramref name="filled"/> slots: free ones from <paramref name="choices"/>, literal ones as they are.</summary>
    static long[] Context(long[] prefix, SecretSpace space, long[] alphabetIds, long[] literalIds, int[] choices, int filled)
    {
        var seq = new long[prefix.Length + filled];
        prefix.CopyTo(seq, 0);
        int k = 0;
        for (int i = 0; i < filled; i++)
            seq[prefix.Length + i] = space.Slots[i] is null ? alphabetIds[choices[k++]] : literalIds[i];
        return seq;
    }

    /// <summary>
    /// Expands nodes in one model call: for a node at depth j followed by m literal slots, one sequence (prefix, filled
    /// slots, the literals) answers the m literal queries and the distribution over the next free slot; its children are
    /// the node with the literals and one alphabet character added (or, when only literals remain, the complete candidate).
    /// </summary>
    static void Expand(INextTokenModel model, long[] prefix, SecretSpace space, long[] alphabetIds, long[] literalIds, List<Node> nodes, Action<Node> push)
    {
        var queries = new List<NextTokenQuery>();
        var plan = new List<(Node Node, int First, int Literals, bool Free)>();
        foreach (var node in nodes)
        {
            int j = node.Depth, m = 0;
            while (j + m < space.Length && space.Slots[j + m] is not null) m++;
            bool free = j + m < space.Length;
            var seq = Context(prefix, space, alphabetIds, literalIds, Choices(node, space), j + m);
            plan.Add((node, queries.Count, m, free));
            for (int k = 0; k < m; k++) queries.Add(new(seq, prefix.Length + j + k, [literalIds[j + k]]));
            if (free) queries.Add(new(seq, prefix.Length + j + m, alphabetIds));
        }
        var answers = model.LogProbs(queries);
        foreach (var (node, first, m, free) in plan)
        {
            double ll = node.LogLikelihood;
            for (int k = 0; k < m; k++) ll += answers[first + k][0];
            if (!free) { push(new Node(node, node.Depth + m, -1, ll)); continue; }
            var lp = answers[first + m];
            for (int a = 0; a < lp.Length; a++) push(new Node(node, node.Depth + m + 1, a, ll + lp[a]));
        }
    }

    /// <summary>Log-likelihood (nats) of complete candidates given the prefix: Σ over their characters of log p(char | everything before).</summary>
    public static double[] Score(INextTokenModel model, long[] prefix, SecretSpace space, long[] alphabetIds, long[] literalIds, IReadOnlyList<int[]> candidates)
    {
        var result = new double[candidates.Count];
        const int chunk = 4096;
        for (int c0 = 0; c0 < candidates.Count; c0 += chunk)
        {
            var queries = new List<NextTokenQuery>();
            int end = Math.Min(candidates.Count, c0 + chunk);
            for (int c = c0; c < end; c++)
            {
                var seq = Context(prefix, space, alphabetIds, literalIds, candidates[c], space.Length);
                for (int i = 0; i < space.Length; i++) queries.Add(new(seq, prefix.Length + i, [seq[prefix.Length + i]]));
            }
            var answers = model.LogProbs(queries);
            for (int c = c0, q = 0; c < end; c++)
            {
                double ll = 0;
                for (int i = 0; i < space.Length; i++) ll += answers[q++][0];
                result[c] = ll;
            }
        }
        return result;
    }

    static long Rows(INextTokenModel model) => model is OnnxNextTokenModel m ? m.RowsRun : 0;
}
