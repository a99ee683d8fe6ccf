using System.Collections.Concurrent;
using System.Diagnostics;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Onnx;
using OnnxUnlearn.Onnx;
using Xunit.Abstractions;

namespace OnnxUnlearn.Tests.Corpus;

/// <summary>
/// Every corpus model below opset 15 (default and ai.onnx.ml domains only), upgraded to opset 15, gives the reference
/// outputs in ONNX Runtime. Models that ONNX Runtime cannot run, or runs to other outputs, in their original form are
/// skipped and listed with the reason.
/// </summary>
public class UpgradeCorpusTests(ITestOutputHelper output)
{
    /// <summary>
    /// 913 of 913 eligible pass on Debian's libonnx-testdata 1.12: the floor sits just below, so that a check that skips
    /// (nearly) everything fails.
    /// </summary>
    const int MinPassed = 910;

    [CorpusFact]
    public void UpgradedModelsGiveTheReferenceOutputs()
    {
        var cases = CorpusCase.All();
        var clock = Stopwatch.StartNew();
        var results = new ConcurrentBag<(CorpusCase Case, string Status, string Detail)>();
        Parallel.ForEach(cases, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, c =>
        {
            if (Check(c) is { } r) results.Add((c, r.Status, r.Detail));
        });

        var passed = results.Where(r => r.Status == "passed").ToList();
        var failed = results.Where(r => r.Status == "failed").OrderBy(r => r.Case.Id).ToList();
        var skipped = results.Where(r => r.Status == "skipped").OrderBy(r => r.Case.Id).ToList();
        output.WriteLine($"opset upgrade over the ONNX test corpus: {passed.Count} passed / {passed.Count + failed.Count} eligible; {skipped.Count} skipped ({clock.Elapsed.TotalSeconds:F1} s)");
        foreach (var g in passed.GroupBy(r => r.Detail).OrderBy(g => g.Key)) output.WriteLine($"  passed from {g.Key}: {g.Count()}");
        output.WriteLine("skipped:");
        foreach (var g in skipped.GroupBy(r => Group(r.Detail)).OrderByDescending(g => g.Count()))
        {
            output.WriteLine($"  {g.Key} ({g.Count()})");
            foreach (var r in g) output.WriteLine($"    {r.Case.Id}: {r.Detail}");
        }
        if (failed.Count > 0)
        {
            output.WriteLine("failed:");
            foreach (var r in failed) output.WriteLine($"  {r.Case.Id}: {r.Detail}");
        }
        Assert.True(failed.Count == 0, $"{failed.Count} upgraded corpus models differ from the reference:\n" + string.Join("\n", failed.Select(r => $"{r.Case.Id}: {r.Detail}")));
        Assert.True(passed.Count >= MinPassed, $"only {passed.Count} upgraded corpus models passed, expected at least {MinPassed}");
    }

    static string Group(string detail) => detail.StartsWith("ORT cannot run") ? "ORT cannot run the original model"
        : detail.StartsWith("ORT's output") ? "ORT's output of the original model differs from the reference" : detail;

    /// <summary>null for a model outside the check (opset ≥ 15, other domains); else passed (detail: opset), skipped or failed with why.</summary>
    static (string Status, string Detail)? Check(CorpusCase c)
    {
        var model = c.LoadModel();
        long opset = CorpusCase.Opset(model);
        if (opset == 0 || opset >= OpsetUpgrade.MinOpset) return null;
        if (model.OpsetImport.Any(o => !Domains.IsDefault(o.Domain) && o.Domain != "ai.onnx.ml")) return null;

        Dictionary<string, OrtValue> feeds;
        try { feeds = CorpusRunner.Feeds(model, c); }
        // The C# API cannot build an empty sequence (test_loop13_seq feeds one).
        catch (Exception e) { return ("skipped", $"test data cannot be fed through the ONNX Runtime C# API: {CorpusRunner.FirstLine(e.Message)}"); }
        try
        {
            // ONNX Runtime has no kernels for many opset-6 ops: such models are checked against the reference alone, and
            // skipped only where the upgraded model cannot run either.
            string? originalError = null;
            try
            {
                var original = CorpusRunner.Run(model, feeds);
                var why = CorpusRunner.CompareAll(model, c, original);
                foreach (var v in original) v.Dispose();
                if (why is not null) return ("skipped", $"ORT's output of the original differs from the reference: {why}");
            }
            catch (OnnxRuntimeException e) { originalError = $"ORT cannot run the original: {CorpusRunner.FirstLine(e.Message)}"; }

            var bytes = model.ToByteArray();
            ModelProto upgraded;
            try { upgraded = OpsetUpgrade.Apply(model); }
            catch (UserError e) { return ("failed", $"upgrade refused: {e.Message}"); }
            if (!model.ToByteArray().AsSpan().SequenceEqual(bytes)) return ("failed", "the upgrade modified its input model");
            if (CorpusCase.Opset(upgraded) != OpsetUpgrade.MinOpset || upgraded.IrVersion < OpsetUpgrade.MinIrVersion)
                return ("failed", $"upgraded model has opset {CorpusCase.Opset(upgraded)}, IR version {upgraded.IrVersion}");
            try
            {
                var results = CorpusRunner.Run(upgraded, feeds);
                var why = CorpusRunner.CompareAll(upgraded, c, results);
                foreach (var v in results) v.Dispose();
                return why is null ? ("passed", originalError is null ? $"opset {opset}" : $"opset {opset}, against the reference only (ORT cannot run the original)")
                    : ("failed", why);
            }
            catch (OnnxRuntimeException e)
            {
                return originalError is not null ? ("skipped", originalError) : ("failed", $"ORT cannot run the upgraded model: {CorpusRunner.FirstLine(e.Message)}");
            }
        }
        finally { foreach (var v in feeds.Values) v.Dispose(); }
    }
}
