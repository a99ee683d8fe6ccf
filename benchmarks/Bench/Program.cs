// Benchmarks of the gradient graph (Evaluator.Gradient) and of curvature (Hvp.Apply, Diagonal.Hutchinson) on the
// testdata fixtures. One JSON object per line on stdout; benchmarks/torch_bench.py measures the same in PyTorch and
// benchmarks/run.sh puts the two side by side.
//
//   Bench grad|hvp [--testdata DIR] [--fixtures logreg,mlp,cnn,transformer] [--threads T] [--batch B] [--tile K]
//                  [--repeats R] [--min-ms M] [--warmup-ms W] [--probes P]
//
// --tile K repeats the fixture's samples K times (the mean loss, its gradient and Hessian are unchanged), to measure
// throughput on more than the 64 samples of a fixture. Timing: warm-up for W ms (at least one call), then R samples,
// each a block of calls lasting at least M ms; the figure is the median over samples of (block time / calls). The
// process CPU time (all threads) per call is recorded too (cpu_ms): it is less disturbed by other jobs on the machine.
// Sampling stops early after 10 s once 3 samples are in. Hutchinson (after the HVP timing has warmed everything up):
// one untimed run with 2 probes, then max(3, R/2) single runs, stopping early after 10 s once 1 is in.
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using OnnxUnlearn;
using OnnxUnlearn.Curvature;
using OnnxUnlearn.Data;
using OnnxUnlearn.Runtime;

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;

if (args.Length == 0 || args[0] is not ("grad" or "hvp"))
{
    Console.Error.WriteLine("usage: Bench grad|hvp [--testdata DIR] [--fixtures a,b] [--threads T] [--batch B] [--tile K] [--repeats R] [--min-ms M] [--warmup-ms W] [--probes P]");
    return 2;
}
string mode = args[0];
var opt = new Dictionary<string, string>();
for (int i = 1; i < args.Length; i++)
{
    if (!args[i].StartsWith("--") || i + 1 >= args.Length) { Console.Error.WriteLine($"bad argument '{args[i]}'"); return 2; }
    opt[args[i][2..]] = args[++i];
}
string Opt(string k, string d) => opt.TryGetValue(k, out var v) ? v : d;
string testdata = Opt("testdata", FindTestdata());
var fixtures = Opt("fixtures", "logreg,mlp,cnn,transformer").Split(',', StringSplitOptions.RemoveEmptyEntries);
int threads = int.Parse(Opt("threads", "1"));
int batch = int.Parse(Opt("batch", "64"));
int tile = int.Parse(Opt("tile", "1"));
int repeats = int.Parse(Opt("repeats", "7"));
double minMs = double.Parse(Opt("min-ms", "50"));
double warmupMs = double.Parse(Opt("warmup-ms", "300"));
int probes = int.Parse(Opt("probes", "16"));

foreach (var fixture in fixtures)
{
    var row = new Dictionary<string, object?>
    {
        ["impl"] = "onnxunlearn", ["mode"] = mode, ["fixture"] = fixture, ["threads"] = threads, ["batch"] = batch, ["tile"] = tile,
    };
    var reference = Npz.Read(Path.Combine(testdata, fixture, "reference.npz"));
    using var original = Dataset.Load(Path.Combine(testdata, fixture, "data.npz"));
    using var tiled = tile == 1 ? null
        : original.Take(Enumerable.Range(0, tile).SelectMany(_ => Enumerable.Range(0, (int)original.Rows).Select(r => (long)r)).ToList(), $"{fixture} x{tile}");
    var data = tiled ?? original;
    row["samples"] = data.Rows;
    Evaluator session;
    ParameterVector theta;
    try
    {
        session = Evaluator.Open(Path.Combine(testdata, fixture, "model.onnx"), new LossSettings { BatchSize = batch, Threads = threads }, data);
        session.Artifact(); // differentiation errors (an op without a gradient rule) surface here
        theta = session.ReadParameters();
    }
    catch (UserError e)
    {
        row["status"] = e.Message.Contains("no gradient rule") ? "no rule yet" : "cannot open";
        row["error"] = e.Message;
        Emit(row);
        continue;
    }
    using (session)
    {
        int n = session.Layout.Size;
        row["params"] = n;
        var expectedGrad = session.Layout.Parameters.SelectMany(p => reference["grad/" + p.Name].ToDouble()).ToArray();
        var grad = new float[n];
        if (mode == "grad")
        {
            LossResult result = null!;
            var t = Time(() => result = session.Gradient(theta, data, grad), repeats, minMs, warmupMs);
            row["status"] = "ok";
            row["ms"] = t.Median;
            row["ms_min"] = t.Min;
            row["cpu_ms"] = t.CpuMedian;
            row["calls_per_sample"] = t.Inner;
            row["timed_samples"] = t.Samples;
            row["samples_per_s"] = data.Rows / (t.Median / 1000);
            row["loss"] = result.Loss;
            row["grad_rel_err"] = RelativeL2(expectedGrad, grad);
        }
        else
        {
            var hvp = new Hvp(session, data).At(theta);
            var rng = new Random(0);
            var v = Enumerable.Range(0, n).Select(_ => rng.Next(2) == 0 ? -1f : 1f).ToArray();
            var hv = new float[n];
            var t = Time(() => hvp.Apply(v, hv), repeats, minMs, warmupMs);
            Diagonal.Hutchinson(hvp, 2, seed: 1); // warm-up of the bookkeeping code (the HVPs are warm)
            var h = Time(() => Diagonal.Hutchinson(hvp, probes, seed: 0), Math.Max(3, repeats / 2), 0, -1, minRepeats: 1);
            var estimate = Diagonal.Hutchinson(hvp, probes, seed: 0);
            var exactDiag = session.Layout.Parameters.SelectMany(p => reference["hdiag/" + p.Name].ToDouble()).ToArray();
            row["status"] = "ok";
            row["hvp_ms"] = t.Median;
            row["hvp_ms_min"] = t.Min;
            row["hvp_cpu_ms"] = t.CpuMedian;
            row["hvp_per_s"] = 1000 / t.Median;
            row["probes"] = probes;
            row["hutchinson_ms"] = h.Median;
            row["hutchinson_ms_min"] = h.Min;
            row["hutchinson_cpu_ms"] = h.CpuMedian;
            row["hvp_timed_samples"] = t.Samples;
            row["hutchinson_timed_runs"] = h.Samples;
            row["hdiag_rel_err"] = RelativeL2(exactDiag, estimate.Values);
        }
    }
    Emit(row);
    GC.Collect();
}
return 0;

static void Emit(Dictionary<string, object?> row) { Console.WriteLine(JsonSerializer.Serialize(row)); Console.Out.Flush(); }

static Timing Time(Action f, int repeats, double minMs, double warmupMs, int minRepeats = 3, double budgetMs = 10_000)
{
    var sw = Stopwatch.StartNew();
    if (warmupMs >= 0) do f(); while (sw.Elapsed.TotalMilliseconds < warmupMs); // warmupMs < 0: no warm-up
    int inner = 1;
    if (minMs > 0)
    {
        sw.Restart(); f();
        inner = Math.Max(1, (int)Math.Ceiling(minMs / Math.Max(sw.Elapsed.TotalMilliseconds, 1e-3)));
    }
    var wall = new List<double>();
    var cpu = new List<double>();
    var total = Stopwatch.StartNew();
    while (wall.Count < repeats && (wall.Count < minRepeats || total.Elapsed.TotalMilliseconds < budgetMs))
    {
        double c0 = CpuTime.Ms();
        sw.Restart();
        for (int i = 0; i < inner; i++) f();
        wall.Add(sw.Elapsed.TotalMilliseconds / inner);
        cpu.Add((CpuTime.Ms() - c0) / inner);
    }
    return new Timing(Median(wall), wall.Min(), Median(cpu), inner, wall.Count);
}

static double Median(List<double> xs)
{
    var s = xs.Order().ToArray();
    return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
}

static double RelativeL2(double[] expected, float[] actual)
{
    double err = 0, norm = 0;
    for (int i = 0; i < expected.Length; i++) { double d = expected[i] - actual[i]; err += d * d; norm += expected[i] * expected[i]; }
    return Math.Sqrt(err / norm);
}

static string FindTestdata()
{
    foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        for (var dir = new DirectoryInfo(start); dir != null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "testdata");
            if (Directory.Exists(Path.Combine(candidate, "logreg"))) return candidate;
        }
    throw new DirectoryNotFoundException("testdata/ not found; pass --testdata DIR");
}

/// <summary>Median wall time, minimum wall time, median process CPU time (all threads) per call, calls per sample, samples.</summary>
record Timing(double Median, double Min, double CpuMedian, int Inner, int Samples);

/// <summary>CPU time of this process (all threads), clock_gettime(CLOCK_PROCESS_CPUTIME_ID), in ms.</summary>
static partial class CpuTime
{
    struct Timespec { public long Sec, Nsec; }

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int ClockGettime(int clock, out Timespec ts);

    public static double Ms() => OperatingSystem.IsLinux() && ClockGettime(2, out var ts) == 0 ? ts.Sec * 1e3 + ts.Nsec / 1e6 : double.NaN;
}
