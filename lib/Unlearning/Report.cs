using System.Security.Cryptography;

namespace OnnxUnlearn.Unlearning;

/// <summary>The record a model registry stores next to the new model version (serialised as report.json).</summary>
public sealed record Report
{
    public string Tool { get; init; } = "onnx-unlearn " + (typeof(Report).Assembly.GetName().Version?.ToString(3) ?? "?");
    public required string InputModel { get; init; }
    /// <summary>Set by whoever read the model (a file's digest, or of the bytes given in memory).</summary>
    public string? InputSha256 { get; init; }
    public string? OutputModel { get; init; }
    public string? OutputSha256 { get; init; }
    /// <summary>What the surgical write-back changed in the new model.</summary>
    public WriteBack? Written { get; init; }
    public required IReadOnlyDictionary<string, object?> Settings { get; init; }
    public required int Seed { get; init; }
    public required int SelectedElements { get; init; }
    public required int TrainableElements { get; init; }
    public required IReadOnlyDictionary<string, int> SelectedPerTensor { get; init; }
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
    /// <summary>The stated targets that were missed (with <see cref="UnlearnOutcome.TargetMissed"/>).</summary>
    public IReadOnlyList<MissedTarget>? Missed { get; init; }

    public sealed record Solver(int Iterations, double RelativeResidual, CgStop Stop, double Damping, double? StopValue = null);
    public sealed record Metrics(double Loss, double? Accuracy, long Samples);
    /// <summary>Elements whose stored value changed, the bytes that differ from the input, and the tensors touched.</summary>
    public sealed record WriteBack(long ElementsChanged, long BytesChanged, int Tensors);
    /// <summary>A secret's exposure before and after; <see cref="Reached"/>: after (or before, when nothing changed) is below the target.</summary>
    public sealed record SecretExposure(ExposureFigure Before, ExposureFigure? After, double? Target, bool? Reached, string Prefix, string Secret);
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
}
