using System.CommandLine;
using OnnxUnlearn.Text;
using Spectre.Console;

namespace OnnxUnlearn.Cli.Commands;

public static class ExposureCommand
{
    /// <summary>Exposure settings whose flag here is not their kebab-cased name.</summary>
    static readonly Dictionary<string, string> Flags = new() { ["Samples"] = "--candidates" };

    public static Command Create()
    {
        var model = Cli.ModelArgument();
        var vocab = new Option<string>("--vocab") { Description = "VOCAB.json mapping characters to the model's token ids", Required = true };
        var prefix = new Option<string>("--prefix") { Description = "text the secret follows, e.g. \"my credit card number is \"", Required = true };
        var secret = new Option<string?>("--secret") { Description = $"the secret whose exposure to measure (or --secret-file, or {Secrets.SecretVariable}); never printed" };
        var secretFile = Secrets.SecretFile();
        var showCandidates = new Option<bool>("--show-candidates") { Description = "print the most likely candidates' characters (masked by default: the top candidate of a memorising model is the secret)" };
        var format = new Option<string?>("--format") { Description = "candidate format: d = any digit (any --alphabet character), \\x = literal x, anything else literal (default: the secret with each digit a d)" };
        var alphabet = new Option<string>("--alphabet") { Description = "characters a d slot takes", DefaultValueFactory = _ => SecretSpace.Digits };
        var candidates = new Option<int>("--candidates") { Description = "random candidates scored for the estimate when the exact search exceeds --budget", DefaultValueFactory = _ => 10_000 };
        var seed = new Option<int>("--seed") { Description = "seed of the sampled candidates", DefaultValueFactory = _ => 0 };
        var budget = new Option<long>("--budget") { Description = "most search nodes expanded for the exact rank before estimating (0: estimate only)", DefaultValueFactory = _ => 100_000 };
        var top = new Option<int>("--top") { Description = "best candidates to list", DefaultValueFactory = _ => 10 };
        var input = new Option<string?>("--input") { Description = "the model's token input (default: its only input)" };
        var output = new Option<string?>("--output") { Description = "the model's logits output [N, T, V] (default: the first output)" };
        var unknown = new Option<string?>("--unknown") { Description = "vocabulary token for prefix characters it lacks (default: \"<unk>\" when present)" };
        var batch = Cli.BatchSize();
        var threads = Cli.Threads();
        var json = Cli.JsonFlag();
        var allowLinks = Cli.AllowLinks();
        var c = new Command("exposure", "Exposure of a secret in a next-token model (Carlini et al., The Secret Sharer): log2|R| - log2 rank of the secret among all candidates of its format, by log-likelihood after the prefix. Exact rank by best-first search; a skew-normal fit to sampled candidates when the search exceeds its budget.");
        c.Arguments.Add(model);
        foreach (Option o in new Option[] { vocab, prefix, secret, secretFile, showCandidates, format, alphabet, candidates, seed, budget, top, input, output, unknown, batch, threads, json, allowLinks }) c.Options.Add(o);
        c.SetAction(r => Cli.Guard(() =>
        {
            var v = Vocabulary.Load(r.GetValue(vocab)!, r.GetValue(unknown));
            var options = new ExposureOptions
            {
                Prefix = r.GetValue(prefix)!,
                Secret = Secrets.Read(r, secret, secretFile) ?? throw new UserError($"give the secret: --secret, --secret-file or {Secrets.SecretVariable}"),
                Format = r.GetValue(format), Alphabet = r.GetValue(alphabet)!,
                Samples = r.GetValue(candidates), Seed = r.GetValue(seed), Budget = r.GetValue(budget), Top = r.GetValue(top), BatchNodes = r.GetValue(batch),
            };
            // checks the secret, format and vocabulary before loading the model
            var secretSpace = SecretSpace.Parse(options.Format, options.Secret, options.Alphabet);
            using var m = OnnxNextTokenModel.Open(r.GetValue(model)!, v, r.GetValue(input), r.GetValue(output), r.GetValue(batch), r.GetValue(threads), Cli.Policy(r, allowLinks));
            var measured = Exposure.Measure(m, v, options);
            var e = r.GetValue(showCandidates) ? measured : Masked(measured, options, secretSpace);
            if (r.GetValue(json))
            {
                Cli.WriteJson(new { model = r.GetValue(model), input = m.InputName, output = m.OutputName, sequenceLength = m.FixedLength, candidatesMasked = !r.GetValue(showCandidates), result = e });
                return Cli.Ok;
            }
            string space = e.Log2SpaceSize < 53 ? e.SpaceSize.ToString("N0") : $"{e.SpaceSize:G4}";
            if (e.Method == ExposureMethod.Exact)
                Console.WriteLine($"exposure {e.Exposure:F3} bits: exact rank {e.Rank:0.#} of {space} (best-first search, {e.Expansions:N0} expansions; {Count(e.Greater)} more likely, {e.Ties:N0} tied)");
            else
            {
                var s = e.Estimate!;
                Console.WriteLine($"exposure {e.Exposure:F3} bits (estimated): rank ~{e.Rank:G4} of {space}");
                Console.WriteLine(e.Expansions > 0
                    ? $"  the search stopped at --budget {e.Budget:N0} expansions with {Count(e.Greater)} found more likely and {e.Ties:N0} tied (rank >= {1 + e.Greater + e.Ties / 2.0:0.#})"
                    : "  no exact search (--budget 0)");
                Console.WriteLine($"  skew-normal fit to {s.Samples:N0} sampled candidates (seed {s.Seed}): mean {s.Mean:G6}, sd {s.StdDev:G4}, skewness {s.Skewness:F3}; P(ll > secret) = {s.TailProbability:G4} (empirical {s.EmpiricalFraction:G4})");
            }
            Console.WriteLine($"the secret after the prefix: log-likelihood {e.SecretLogLikelihood:F4} nats, format \"{e.Format}\" ({e.FreeSlots} free slots)");
            if (e.Best.Count > 0)
            {
                var t = Cli.Table("#", e.BestFrom switch
                {
                    "search" => "most likely candidates",
                    "samples" => "most likely sampled candidates",
                    _ => "most likely candidates (searched, then sampled)",
                }, "log-likelihood");
                int i = 0;
                foreach (var (cand, isSecret) in e.Best.Zip(measured.Best, (shown, real) => (shown, real.Text == options.Secret)))
                    t.AddRow((++i).ToString(), Markup.Escape(cand.Text) + (isSecret ? " [bold](secret)[/]" : ""), cand.LogLikelihood.ToString("F4"));
                AnsiConsole.Write(t);
            }
            return Cli.Ok;
        }, Flags));
        return c;
    }

    /// <summary>
    /// The result with each candidate's characters and a format derived from the secret masked (its literal characters are
    /// the secret's): ranks and log-likelihoods stay, so the list still shows how the secret compares.
    /// </summary>
    static ExposureResult Masked(ExposureResult e, ExposureOptions o, SecretSpace space)
    {
        string Mask(string text) => string.Concat(Vocabulary.Characters(text).Select((ch, i) => o.Format is not null && i < space.Slots.Count && space.Slots[i] is not null ? ch : "*"));
        return e with
        {
            Format = o.Format ?? string.Concat(space.Slots.Select(slot => slot is null ? "d" : "*")),
            Best = e.Best.Select(c => c with { Text = Mask(c.Text) }).ToList(),
        };
    }

    static string Count(long n) => n == 1 ? "1 candidate" : $"{n:N0} candidates";
}
