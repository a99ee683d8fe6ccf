using System.Reflection;
using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace OnnxUnlearn.Unlearning;

/// <summary>
/// The audit record a model registry stores next to the new model version (serialised as report.json; its JSON Schema
/// is docs/report.schema.json). It never holds the secret being removed: with an audit key, only its HMAC.
/// </summary>
public sealed record Report
{
    /// <summary>"onnx-unlearn VERSION".</summary>
    public string Tool { get; init; } = "onnx-unlearn " + Version;
    /// <summary>The commit the tool was built from ("unknown" outside a git checkout).</summary>
    public string Commit { get; init; } = ToolCommit;
    public required RunEnvironment Environment { get; init; }
    public required DateTime StartedUtc { get; init; }
    public required DateTime EndedUtc { get; init; }
    /// <summary>Absolute path of the input model (or the name of a model given in memory).</summary>
    public required string InputModel { get; init; }
    /// <summary>Set by whoever read the model (a file's digest, or of the bytes given in memory).</summary>
    public string? InputSha256 { get; init; }
    /// <summary>The new model, when one was written.</summary>
    public string? OutputModel { get; init; }
    public string? OutputSha256 { get; init; }
    /// <summary>What the surgical write-back changed (or, with nothing written, would change) in the model.</summary>
    public WriteBack? Written { get; init; }
    /// <summary>Every data set read: train, forget and, when given, corrected and test.</summary>
    public required IReadOnlyDictionary<string, DataFile> Data { get; init; }
    /// <summary>Every setting with its resolved value (defaults included; settings that do not apply are left out).</summary>
    public required IReadOnlyDictionary<string, object> Settings { get; init; }
    public required int Seed { get; init; }
    public required int SelectedElements { get; init; }
    public required int TrainableElements { get; init; }
    public required IReadOnlyDictionary<string, int> SelectedPerTensor { get; init; }
    /// <summary>Elements of each trainable tensor (for the selected share).</summary>
    public required IReadOnlyDictionary<string, long> TensorElements { get; init; }
    /// <summary>The distribution of the scores the selection ranked (scored selections only).</summary>
    public ScoreDistribution? ScoreHistogram { get; init; }
    /// <summary>The forward gradients and curvature were taken of (<see cref="Runtime.Evaluator.GradientForward"/>), e.g.
    /// "float32 artifact (float16 widened)"; Δg, τ, the scores and the steps' directions come from it.</summary>
    public string GradientForward { get; init; } = "";
    /// <summary>Selected elements the update moved (in float32) whose stored value it leaves as it was: rounded to the stored
    /// type (float16 and bfloat16 round to nearest even when written) the new value equals the old one.</summary>
    public long RoundingCancelled { get; init; }
    /// <summary>Selected elements of quantized weights (<see cref="Onnx.Quantization"/>) whose stored integer the update
    /// changes, i.e. moved by at least one quantization step; null when no quantized weight is trained.</summary>
    public long? QuantizedMoved { get; init; }
    public required double GradientDifferenceNorm { get; init; }
    public required double UpdateNorm { get; init; }
    public double? Tau { get; init; }
    public Solver? Cg { get; init; }
    public required IReadOnlyDictionary<string, Metrics> Before { get; init; }
    public IReadOnlyDictionary<string, Metrics>? After { get; init; }
    public IReadOnlyList<UnlearnStep>? Steps { get; init; }
    public SecretExposure? Exposure { get; init; }
    public required long GradientEvaluations { get; init; }
    public required double Seconds { get; init; }
    public required UnlearnOutcome Outcome { get; init; }
    /// <summary>Why nothing changed (with <see cref="UnlearnOutcome.NoChange"/>).</summary>
    public NoChangeReason? NoChange { get; init; }
    /// <summary>The stated targets that were missed (with <see cref="UnlearnOutcome.TargetMissed"/>).</summary>
    public IReadOnlyList<MissedTarget>? Missed { get; init; }

    public sealed record RunEnvironment(string OnnxRuntime, string DotNet, string Os, string Cpu, int LogicalCores, int Threads)
    {
        public static RunEnvironment Current(int threads) => new(OnnxRuntimeVersion, RuntimeInformation.FrameworkDescription,
            RuntimeInformation.OSDescription, CpuName(), System.Environment.ProcessorCount, threads);
    }
    public sealed record DataFile(string Path, string? Sha256, long Rows);
    /// <summary>Counts of |score| in log-spaced bins (Edges: one more than Counts), where selection starts, and the NaN/∞ scores.</summary>
    public sealed record ScoreDistribution(string Score, double[] Edges, long[] Counts, double? Threshold, long NonFinite);
    public sealed record Solver(int Iterations, double RelativeResidual, CgStop Stop, double Damping, double? StopValue = null);
    /// <summary>A set's figures and the forward they were measured on (<see cref="Runtime.Evaluator.FiguresForward"/>: the model as
    /// stored, in its own precision, e.g. "float16 as stored").</summary>
    public sealed record Metrics(double Loss, double? Accuracy, long Samples, string Forward);
    /// <summary>Elements whose stored value changed, the bytes that differ from the input, and the tensors touched.</summary>
    public sealed record WriteBack(long ElementsChanged, long BytesChanged, int Tensors);
    /// <summary>
    /// A secret's exposure before and after; <see cref="Reached"/>: after (or before, when nothing changed) is below the
    /// target. The secret and its prefix are not recorded; with an audit key, their HMAC-SHA256 (hex) lets whoever holds
    /// the key and the secret verify which secret this record is about.
    /// </summary>
    public sealed record SecretExposure(ExposureFigure Before, ExposureFigure? After, double? Target, bool? Reached,
        int FreeSlots, double Log2SpaceSize, string? SecretHmacSha256, string? PrefixHmacSha256);
    public sealed record ExposureFigure(double Bits, string Method, double Rank, double SecretLogLikelihood)
    {
        public static ExposureFigure Of(Text.ExposureResult e) => new(e.Exposure, e.Method.ToString().ToLowerInvariant(), e.Rank, e.SecretLogLikelihood);
    }

    public static string Sha256(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(f));
    }

    public static string Sha256(ReadOnlySpan<byte> bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    public static string HmacSha256(byte[] key, string text) => Convert.ToHexStringLower(HMACSHA256.HashData(key, System.Text.Encoding.UTF8.GetBytes(text)));

    static string InformationalVersion => typeof(Report).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "?";
    /// <summary>The library's version (without the commit).</summary>
    public static string Version => InformationalVersion.Split('+')[0];
    static string ToolCommit => InformationalVersion.Split('+') is [_, var commit, ..] && commit.Length > 0 ? commit : "unknown";

    static string OnnxRuntimeVersion
    {
        get
        {
            try { return Microsoft.ML.OnnxRuntime.OrtEnv.Instance().GetVersionString(); }
            catch (Exception e) when (e is DllNotFoundException or TypeInitializationException) { return "unavailable"; }
        }
    }

    static string CpuName()
    {
        try
        {
            if (File.Exists("/proc/cpuinfo"))
                foreach (var line in File.ReadLines("/proc/cpuinfo"))
                    if (line.StartsWith("model name")) return line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        return RuntimeInformation.ProcessArchitecture.ToString();
    }
}
