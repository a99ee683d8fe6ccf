using System.Collections.Concurrent;
using System.Diagnostics;
using Xunit.Abstractions;

namespace OnnxUnlearn.Tests.Cli;

/// <summary>The fuzz test runs alone: its processes take both cores, and it must finish within its time budget.</summary>
[CollectionDefinition(nameof(FuzzCollection), DisableParallelization = true)]
public sealed class FuzzCollection;

/// <summary>
/// Seeded fuzzing of the model loader, <c>inspect</c> and <c>eval</c>: mutants of the fixtures' model.onnx (flipped,
/// inserted and deleted bytes, truncations, protobuf varints and length prefixes replaced by edge values) are each run
/// out of process, two at a time, so that a native crash in ONNX Runtime cannot take down the test host. Every run must
/// end with exit 0 or 2 within its timeout: never 1, never a signal, never an unhandled exception.
/// </summary>
[Collection(nameof(FuzzCollection))]
public class FuzzTests(ITestOutputHelper output)
{
    /// <summary>Mutants per fixture and the seed; ONNX_UNLEARN_FUZZ_MUTANTS and ONNX_UNLEARN_FUZZ_SEED override them for a longer search.</summary>
    static readonly int MutantsPerFixture = int.TryParse(Environment.GetEnvironmentVariable("ONNX_UNLEARN_FUZZ_MUTANTS"), out int n) ? n : 100;
    static readonly int Seed = int.TryParse(Environment.GetEnvironmentVariable("ONNX_UNLEARN_FUZZ_SEED"), out int s) ? s : 1000;
    static readonly string[] FixtureNames = ["mlp", "cnn", "logreg", "transformer"];
    static readonly TimeSpan PerRun = TimeSpan.FromSeconds(30);
    /// <summary>8 GiB of address space per run: a mutant asking for more fails inside its process instead of exhausting the machine.</summary>
    const long AddressSpaceKiB = 8L << 20;

    sealed record Outcome(string Fixture, int Mutant, string Mutation, string Command, CliResult Result)
    {
        public string Kind => Result.TimedOut ? "hang" : Result.Crashed || Result.Err.Contains("Unhandled exception") ? "crash"
            : Result.Code == 0 ? "ok" : Result.Code == 2 ? "refused" : $"exit {Result.Code}";
    }

    [Fact]
    public void MutatedModelsAreRefusedOrRunNeverCrash()
    {
        using var dir = new TempDir();
        var jobs = new List<(string Fixture, int Mutant, string Mutation, string Model, string Data)>();
        foreach (var (fixture, f) in FixtureNames.Select((f, i) => (f, i)))
        {
            var original = File.ReadAllBytes(Fixtures.File(fixture, "model.onnx"));
            var rng = new Random(Seed + f);
            for (int i = 0; i < MutantsPerFixture; i++)
            {
                var (bytes, mutation) = Mutate(original, rng);
                var path = dir.File($"{fixture}-{i:D3}.onnx");
                File.WriteAllBytes(path, bytes);
                jobs.Add((fixture, i, mutation, path, Fixtures.File(fixture, "data.npz")));
            }
        }

        var outcomes = new ConcurrentBag<Outcome>();
        var clock = Stopwatch.StartNew();
        Parallel.ForEach(jobs.SelectMany(j => new[] { (j, "inspect"), (j, "eval") }), new ParallelOptions { MaxDegreeOfParallelism = 2 }, run =>
        {
            var (j, command) = run;
            string[] args = command == "inspect" ? ["inspect", j.Model] : ["eval", j.Model, "--data", j.Data];
            outcomes.Add(new Outcome(j.Fixture, j.Mutant, j.Mutation, command, CliProcess.Run(PerRun, null, AddressSpaceKiB, args)));
        });

        var all = outcomes.OrderBy(o => o.Fixture).ThenBy(o => o.Mutant).ThenBy(o => o.Command).ToList();
        output.WriteLine($"seed {Seed}: {jobs.Count} mutants, {all.Count} runs in {clock.Elapsed.TotalSeconds:F0} s (2 at a time, {PerRun.TotalSeconds:F0} s timeout each)");
        output.WriteLine("fixture      command  tried  refused(2)  succeeded(0)  crashed  hung  other");
        foreach (var g in all.GroupBy(o => (o.Fixture, o.Command)))
            output.WriteLine($"{g.Key.Fixture,-12} {g.Key.Command,-8} {g.Count(),5}  {g.Count(o => o.Kind == "refused"),10}  {g.Count(o => o.Kind == "ok"),12}  " +
                $"{g.Count(o => o.Kind == "crash"),7}  {g.Count(o => o.Kind == "hang"),4}  {g.Count(o => o.Kind.StartsWith("exit")),5}");
        output.WriteLine($"total        both     {all.Count,5}  {all.Count(o => o.Kind == "refused"),10}  {all.Count(o => o.Kind == "ok"),12}  " +
            $"{all.Count(o => o.Kind == "crash"),7}  {all.Count(o => o.Kind == "hang"),4}  {all.Count(o => o.Kind.StartsWith("exit")),5}");

        // A refusal is one line, never ONNX Runtime's own log.
        var noisy = all.Where(o => o.Kind == "refused" && (o.Result.Err.TrimEnd('\n').Split('\n').Length != 1 || !o.Result.Err.StartsWith("error: "))).ToList();
        var failed = all.Where(o => o.Kind is not ("ok" or "refused")).ToList();
        // ONNX_UNLEARN_FUZZ_KEEP names a folder to keep the failing mutants in, for a closer look.
        var keep = Environment.GetEnvironmentVariable("ONNX_UNLEARN_FUZZ_KEEP");
        if (keep is { Length: > 0 })
        {
            Directory.CreateDirectory(keep);
            foreach (var o in failed.Concat(noisy)) File.Copy(dir.File($"{o.Fixture}-{o.Mutant:D3}.onnx"), Path.Combine(keep, $"{o.Fixture}-{o.Mutant:D3}.onnx"), overwrite: true);
        }
        foreach (var o in failed.Concat(noisy).Take(20))
        {
            output.WriteLine($"{o.Kind}: {o.Fixture} mutant {o.Mutant} ({o.Mutation}), {o.Command}: exit {o.Result.Code?.ToString() ?? "none (killed)"} after {o.Result.Elapsed.TotalSeconds:F1} s");
            output.WriteLine("  " + string.Join("\n  ", o.Result.Err.Split('\n').Take(6)));
        }
        Assert.True(failed.Count == 0, $"{failed.Count} runs crashed, hung or exited otherwise than 0 or 2 (see the test output)");
        Assert.True(noisy.Count == 0, $"{noisy.Count} refusals were not one 'error: ' line (see the test output)");
    }

    /// <summary>One seeded mutation of a model file, and what it did.</summary>
    static (byte[] Bytes, string Mutation) Mutate(byte[] original, Random rng)
    {
        var b = original.ToList();
        switch (rng.Next(6))
        {
            case 0:
            {
                int n = 1 + rng.Next(8);
                for (int k = 0; k < n; k++) { int at = rng.Next(b.Count); b[at] ^= (byte)(1 << rng.Next(8)); }
                return ([.. b], $"{n} bits flipped");
            }
            case 1:
            {
                int at = rng.Next(b.Count + 1), n = 1 + rng.Next(16);
                var bytes = new byte[n];
                rng.NextBytes(bytes);
                b.InsertRange(at, bytes);
                return ([.. b], $"{n} random bytes inserted at {at}");
            }
            case 2:
            {
                int at = rng.Next(b.Count), n = Math.Min(1 + rng.Next(32), b.Count - at);
                b.RemoveRange(at, n);
                return ([.. b], $"{n} bytes deleted at {at}");
            }
            case 3:
            {
                int length = rng.Next(b.Count);
                return ([.. b.Take(length)], $"truncated to {length} of {b.Count} bytes");
            }
            default:
            {
                // A varint of the protobuf encoding (a field value: a dim, an attribute, a data type, an opset; or the length
                // prefix of a nested message, string or tensor data) replaced by an edge value. Half of the time the length
                // prefixes around it are rewritten to match, so the file stays well-formed protobuf with one value changed.
                var varints = new List<Varint>();
                Varints(original, 0, original.Length, 0, [], varints);
                var target = varints[rng.Next(varints.Count)];
                ulong[] edges = [0, 1, 2, 127, 128, 255, 65535, (1UL << 31) - 1, 1UL << 31, 1UL << 32, 1UL << 62, long.MaxValue, ulong.MaxValue, ulong.MaxValue - 1,
                    target.Value + 1, target.Value - 1, target.Value * 2, target.Value << 20, (ulong)rng.NextInt64()];
                ulong replacement = edges[rng.Next(edges.Length)];
                bool reframe = !target.Prefix && rng.Next(2) == 0;
                var encoded = Encode(replacement);
                long delta = encoded.Length - target.Length;
                b.RemoveRange(target.At, target.Length);
                b.InsertRange(target.At, encoded);
                if (reframe)
                {
                    // Innermost first: each prefix lies before the ones inside it, so earlier offsets stay put.
                    foreach (var outer in target.Enclosing.Reverse())
                    {
                        var length = Encode((ulong)((long)outer.Value + delta));
                        delta += length.Length - outer.Length;
                        b.RemoveRange(outer.At, outer.Length);
                        b.InsertRange(outer.At, length);
                    }
                }
                return ([.. b], $"{(target.Prefix ? "length prefix" : "varint")} {target.Value} at {target.At} set to {replacement}{(reframe ? ", reframed" : "")}");
            }
        }
    }

    static byte[] Encode(ulong value)
    {
        var encoded = new List<byte>();
        for (ulong v = value; ; v >>= 7)
        {
            if (v < 0x80) { encoded.Add((byte)v); break; }
            encoded.Add((byte)(v | 0x80));
        }
        return [.. encoded];
    }

    /// <summary>A varint at a position of the file: a field value or a length prefix, and the length prefixes of the messages around it (outermost first).</summary>
    sealed record Varint(int At, int Length, ulong Value, bool Prefix, Varint[] Enclosing);

    /// <summary>Every varint of a protobuf message in [start, end), recursing into length-delimited fields that parse as messages.</summary>
    static bool Varints(byte[] s, int start, int end, int depth, Varint[] enclosing, List<Varint> found)
    {
        var local = new List<Varint>();
        int p = start;
        while (p < end)
        {
            if (!ReadVarint(s, ref p, end, out ulong tag, out _)) return false;
            int wire = (int)(tag & 7);
            if (tag >> 3 == 0) return false;
            switch (wire)
            {
                case 0:
                    int at = p;
                    if (!ReadVarint(s, ref p, end, out ulong v, out int n)) return false;
                    local.Add(new Varint(at, n, v, false, enclosing));
                    break;
                case 1: p += 8; break;
                case 5: p += 4; break;
                case 2:
                    int lengthAt = p;
                    if (!ReadVarint(s, ref p, end, out ulong length, out int ln) || length > (ulong)(end - p)) return false;
                    var prefix = new Varint(lengthAt, ln, length, true, enclosing);
                    local.Add(prefix);
                    if (depth < 8 && length > 0) Varints(s, p, p + (int)length, depth + 1, [.. enclosing, prefix], local);
                    p += (int)length;
                    break;
                default: return false;
            }
            if (p > end) return false;
        }
        found.AddRange(local);
        return true;
    }

    static bool ReadVarint(byte[] s, ref int p, int end, out ulong value, out int length)
    {
        value = 0; length = 0;
        for (int shift = 0; shift < 64 && p < end; shift += 7)
        {
            byte b = s[p++];
            length++;
            value |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80) return true;
        }
        return false;
    }
}
