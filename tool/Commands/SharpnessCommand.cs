using OnnxUnlearn.Onnx;
using System.CommandLine;
using OnnxUnlearn.Curvature;
using OnnxUnlearn.Data;
using OnnxUnlearn.Runtime;
using OnnxUnlearn.Selection;
using Spectre.Console;

namespace OnnxUnlearn.Cli.Commands;

public static class SharpnessCommand
{
    public static Command Create()
    {
        var model = Cli.ModelArgument();
        var data = new Option<string>("--data") { Description = ".npz of samples defining the mean loss L", Required = true };
        var output = new Option<string>("--out") { Description = ".npz of scores keyed by parameter name (and 'stderr/<name>': the standard error of a diag++ or hutchinson estimate)", Required = true };
        var score = new Option<string>("--score") { Description = "hessian (diag ∇²L), fisher (mean squared per-sample gradient), gradient (|∇L|), magnitude (|θ|)", DefaultValueFactory = _ => "hessian" };
        var probes = new Option<int>("--probes") { Description = "Hessian-vector products for the estimate (hutchinson: one per Rademacher probe; diag++: a third sketch H, a third read the sketch's part of the diagonal exactly, the rest are Rademacher probes)", DefaultValueFactory = _ => 150 };
        var estimator = new Option<string>("--estimator") { Description = "diag++ (Hutchinson with a low-rank sketch of H: far lower variance) or hutchinson", DefaultValueFactory = _ => "diag++" };
        var seed = new Option<int>("--seed") { Description = "probe seed (results depend only on it and the thread count)", DefaultValueFactory = _ => 0 };
        var exact = new Option<bool>("--exact") { Description = "exact diagonal: one HVP per element" };
        var force = new Option<bool>("--force") { Description = $"allow --exact above {ExactLimit:N0} elements" };
        var step = new Option<double>("--step") { Description = "relative finite-difference step c: the largest coordinate moves by c·rms(θ)", DefaultValueFactory = _ => 1e-3 };
        var topFraction = new Option<double>("--top") { Description = "share of elements whose top-k set the summary and stability refer to", DefaultValueFactory = _ => 0.05 };
        var json = Cli.JsonFlag();
        var loss = new LossOptions();
        var sharding = new Sharding("Hutchinson probes", Chunked.ProbeChunk);
        var c = new Command("sharpness", "Estimate the Hessian diagonal (Hutchinson or exact, from finite-difference HVPs) or a baseline score per parameter element.");
        c.Arguments.Add(model);
        foreach (Option o in new Option[] { data, output, score, probes, estimator, seed, exact, force, step, topFraction, json }) c.Options.Add(o);
        loss.AddTo(c);
        sharding.AddTo(c);
        c.SetAction(r => Cli.Guard(() =>
        {
            var settings = loss.Read(r);
            var shard = sharding.Read(r);
            if (shard is not null && (r.GetValue(score) != "hessian" || r.GetValue(exact) || Cli.ParseEstimator(r.GetValue(estimator)!) != DiagonalEstimator.Hutchinson))
                throw new UserError("--shard splits the probes of --estimator hutchinson only (diag++'s sketch, exact part and projected probes depend on each other; --exact and the baseline scores are not sharded): add --estimator hutchinson");
            var file = ModelFile.Load(r.GetValue(model)!, settings.ExternalData);
            Evaluator.Preflight(file, settings);
            using var d = Dataset.Load(r.GetValue(data)!, file);
            using var s = Evaluator.Open(file, settings, d);
            var clock = System.Diagnostics.Stopwatch.StartNew();
            string kind = r.GetValue(score)!;
            var scoreKind = Cli.ParseEnum<ScoreKind>(kind, "--score");
            if (scoreKind == ScoreKind.Hessian && r.GetValue(exact) && s.Layout.Size > ExactLimit && !r.GetValue(force))
                throw new UserError($"--exact needs {s.Layout.Size:N0} HVPs ({2L * s.Layout.Size:N0} gradient evaluations); above {ExactLimit:N0} elements add --force, or use Hutchinson (--probes)");
            var options = new ScoreOptions
            {
                Probes = r.GetValue(probes), Estimator = Cli.ParseEstimator(r.GetValue(estimator)!), Exact = r.GetValue(exact), Seed = r.GetValue(seed),
                StabilityFraction = r.GetValue(topFraction), RelativeStep = r.GetValue(step), Chunk = r.GetValue(sharding.Chunk),
            };
            var theta = s.ReadParameters();
            if (shard is { } part)
            {
                var chunks = Progress.Run(p => Chunked.Hutchinson(new Hvp(s, d) { RelativeStep = options.RelativeStep }.At(theta), options.Probes, options.Seed, options.Chunk, part, p));
                var identity = Sharding.Settings(s);
                foreach (var (key, value) in new[] { ("--score", kind), ("--estimator", "hutchinson"), ("--probes", options.Probes.ToString()), ("--seed", options.Seed.ToString()),
                    ("--step", options.RelativeStep.ToString("R", System.Globalization.CultureInfo.InvariantCulture)), ("--top", options.StabilityFraction.ToString("R", System.Globalization.CultureInfo.InvariantCulture)) }) identity[key] = value;
                var info = Sharding.Info("sharpness", r.GetValue(model)!, r.GetValue(data)!, s, identity, options.Chunk, options.Probes, part);
                PartFile.Write(r.GetValue(output)!, info, chunks);
                Sharding.Done(r.GetValue(json), info, r.GetValue(output)!, clock.Elapsed.TotalSeconds);
                return Cli.Ok;
            }
            var est = Progress.Run(p => Scores.Compute(scoreKind, s, theta, d, options, p));
            var arrays = s.Layout.Split(est.Values);
            if (est.StandardError is { } se) foreach (var (k, v) in s.Layout.Split(se, "stderr/")) arrays[k] = v;
            Npz.Write(r.GetValue(output)!, arrays);
            var summary = Summary(s, est, kind, r.GetValue(topFraction), clock.Elapsed.TotalSeconds, r.GetValue(seed));
            if (r.GetValue(json)) Cli.WriteJson(summary); else Print(summary);
            if (summary.TopKOverlap is { } overlap && overlap < StableOverlap)
                Console.Error.WriteLine($"warning: the top-{summary.TopFraction:P0} sets of the two probe halves overlap only {overlap:F2} (Jaccard); the selection is unstable: raise --probes (now {r.GetValue(probes)})");
            return Cli.Ok;
        }));
        return c;
    }

    public const int ExactLimit = 20_000;

    /// <summary>Below this Jaccard overlap of the two probe halves' top-k sets, another seed would select mostly other elements.</summary>
    const double StableOverlap = 0.5;

    sealed record TensorRow(string Name, long Elements, double Mean, double Max, double ShareOfTopK);
    sealed record SummaryDoc(string Score, int Elements, int Probes, int Seed, int HvpCount, long GradientEvaluations, double Seconds, double? TopKOverlap, double TopFraction, IReadOnlyList<TensorRow> Tensors);

    static SummaryDoc Summary(Evaluator s, DiagonalEstimate est, string kind, double top, double seconds, int seed)
    {
        int k = Masks.Count(top, null, s.Layout.Size);
        var selected = TopK.Indices(est.Values, k); // NaN scores are never selected: shares are of what was
        var perTensor = Masks.PerTensor(s.Layout, selected);
        var rows = s.Layout.Parameters.Select((p, i) =>
        {
            var v = s.Layout.Of(est.Values.AsSpan(), i).ToArray();
            return new TensorRow(p.Name, p.Elements, v.Length > 0 ? v.Average() : 0, v.Length > 0 ? v.Max() : 0, perTensor[p.Name] / (double)Math.Max(1, selected.Length));
        }).ToList();
        return new SummaryDoc(kind, s.Layout.Size, est.Probes, seed, est.HvpCount, s.GradientEvaluations, seconds, est.TopKOverlap, top, rows);
    }

    static void Print(SummaryDoc d)
    {
        var t = Cli.Table("tensor", "elements", "mean", "max", $"share of top {d.TopFraction:P0}");
        foreach (var row in d.Tensors) t.AddRow(Markup.Escape(row.Name), row.Elements.ToString("N0"), row.Mean.ToString("E3"), row.Max.ToString("E3"), row.ShareOfTopK.ToString("P1"));
        AnsiConsole.Write(t);
        AnsiConsole.MarkupLine($"{d.Score}: {d.Elements:N0} elements, {d.HvpCount} HVPs, {d.GradientEvaluations} gradient evaluations, {d.Seconds:F2} s"
            + (d.TopKOverlap is { } o ? $"; top-{d.TopFraction:P0} overlap between probe halves (Jaccard): {o:F3}" : ""));
    }
}
