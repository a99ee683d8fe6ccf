using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Serialization;
using Spectre.Console;

namespace OnnxUnlearn.Cli;

/// <summary>Shared CLI plumbing: exit codes, error printing, options used by several commands, JSON output.</summary>
public static class Cli
{
    /// <summary>Exit codes: 0 an effective update, 2 bad input, 3 a stated target missed, 4 no effective change (docs/method.md#outcomes).</summary>
    public const int Ok = 0, BadInput = 2, TargetMissed = 3, NoChange = 4;

    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower) },
    };

    public static int Run(RootCommand root, string[] args)
    {
        try { return root.Parse(RequestManifest.Expand(args)).Invoke(); }
        catch (UserError e) { return Fail(e); }
    }

    /// <summary>Runs a command body; user mistakes become one line on stderr and exit code 2, never a stack trace.</summary>
    /// <param name="flags">The command's flags for library settings whose flag is not their kebab-cased name (e.g. Samples → --candidates).</param>
    public static int Guard(Func<int> body, IReadOnlyDictionary<string, string>? flags = null)
    {
        try { return body(); }
        catch (UserError e) { return Fail(e, flags); }
        catch (OperationCanceledException) { Console.Error.WriteLine("cancelled"); return 130; }
    }

    static int Fail(UserError e, IReadOnlyDictionary<string, string>? flags = null)
    {
        Console.Error.WriteLine("error: " + Describe(e, flags));
        return BadInput;
    }

    /// <summary>A user error as the CLI says it: each setting it refers to named by its flag (and value: "--loss ce-prob").</summary>
    public static string Describe(UserError e, IReadOnlyDictionary<string, string>? flags = null) => e.Render(Flags(flags));

    /// <summary>Library text that names settings (e.g. why a parameter is not trainable), with flags.</summary>
    public static string Describe(string text, IReadOnlyDictionary<string, string>? flags = null) => UserError.Render(text, Flags(flags));

    static Func<string, string?, string> Flags(IReadOnlyDictionary<string, string>? flags) =>
        (setting, value) => (flags?.GetValueOrDefault(setting) ?? Flag(setting)) + (value is null ? "" : " " + value);

    /// <summary>The flag of a library setting: Probes → --probes, HessianSamples → --hessian-samples (AllowNonFinite → --allow-nonfinite).</summary>
    public static string Flag(string setting) => setting == "AllowNonFinite" ? "--allow-nonfinite" : "--" + Kebab(setting);

    /// <summary>PascalCase or camelCase to kebab-case ("LastLayer" → "last-layer").</summary>
    public static string Kebab(string name) => string.Concat(name.Select((ch, i) => char.IsUpper(ch) && i > 0 ? "-" + char.ToLowerInvariant(ch) : char.ToLowerInvariant(ch).ToString()));

    /// <summary>Kebab-case option values to enum members ("last-layer" → LastLayer).</summary>
    public static T ParseEnum<T>(string value, string option) where T : struct, Enum =>
        Enum.TryParse<T>(value.Replace("-", ""), ignoreCase: true, out var v) && Enum.IsDefined(v) ? v
        : throw new UserError($"{option} must be one of {string.Join(", ", Enum.GetNames<T>().Select(Kebab))}, got '{value}'");

    public static Curvature.DiagonalEstimator ParseEstimator(string value) => value.ToLowerInvariant() switch
    {
        "diag++" or "diagplusplus" => Curvature.DiagonalEstimator.DiagPlusPlus,
        "hutchinson" => Curvature.DiagonalEstimator.Hutchinson,
        _ => throw new UserError($"--estimator must be diag++ or hutchinson, got '{value}'"),
    };

    public static void WriteJson<T>(T value) => Console.Out.WriteLine(JsonSerializer.Serialize(value, Json));

    /// <summary>Tables and progress go to the terminal; piped output stays plain.</summary>
    public static bool Interactive => !Console.IsOutputRedirected;

    public static Argument<string> ModelArgument() => new("MODEL") { Description = "the ONNX model file" };

    public static Option<string> Loss() => new("--loss") { Description = "loss head: ce (softmax cross-entropy on logits, integer labels; on a final Softmax/LogSoftmax output the logits before it are used, on a final Sigmoid −log σ(z_label); refuses outputs that hold probabilities), ce-prob (−log p on probabilities), bce (with logits, or before a final Sigmoid), mse, nll (on log-probabilities)", DefaultValueFactory = _ => "ce" };
    public static Option<string?> Output() => new("--output") { Description = "model output the loss is computed on (default: the first float output; a classifier's labels are skipped)" };
    public static Option<string[]> Params() => new("--params") { Description = "glob(s) of parameters to train (default: every float tensor on a differentiable path)", AllowMultipleArgumentsPerToken = true };
    public static Option<string[]> Frozen() => new("--frozen") { Description = "glob(s) of parameters to keep fixed", AllowMultipleArgumentsPerToken = true };
    public static Option<int> BatchSize() => new("--batch-size") { Description = "samples per ONNX Runtime run (results do not depend on it)", DefaultValueFactory = _ => 256 };
    public static Option<int> Threads() => new("--threads") { Description = "ONNX Runtime intra-op threads: 1 gives bit-identical results run after run; 0 = all cores (faster on large models, last bits may differ between runs)", DefaultValueFactory = _ => 1 };
    public static Option<long?> IgnoreIndex() => new("--ignore-index") { Description = "label value excluded from ce/nll (padding)" };
    public static Option<bool> JsonFlag() => new("--json") { Description = "print a stable JSON document instead of tables" };
    public static Option<bool> AllowNonFinite() => new("--allow-nonfinite") { Description = "feed NaN and infinite values of float inputs and targets as they are (by default they are refused)" };
    public static Option<bool> Verbose() => new("--verbose") { Description = "show ONNX Runtime's own warnings and errors on stderr" };

    /// <summary>With --verbose, ONNX Runtime's log lines (warnings and above) go to stderr; without, none are shown.</summary>
    public static void ReadVerbose(ParseResult r, Option<bool> verbose)
    {
        if (r.GetValue(verbose)) Runtime.OrtSessions.Log = (level, message) => Console.Error.WriteLine($"onnxruntime {level.ToString().Replace("ORT_LOGGING_LEVEL_", "").ToLowerInvariant()}: {UserError.Escape(message)}");
    }

    public static string Shape(IEnumerable<long> dims) => "[" + string.Join(", ", dims) + "]";

    public static Table Table(params string[] columns)
    {
        var t = new Table().Border(TableBorder.Rounded);
        foreach (var c in columns) t.AddColumn(c);
        return t;
    }
}

/// <summary>The options that turn a model into a loss, bound once for every command that needs them.</summary>
public sealed class LossOptions
{
    public Option<string> Loss { get; } = Cli.Loss();
    public Option<string?> Output { get; } = Cli.Output();
    public Option<string[]> Params { get; } = Cli.Params();
    public Option<string[]> Frozen { get; } = Cli.Frozen();
    public Option<int> BatchSize { get; } = Cli.BatchSize();
    public Option<int> Threads { get; } = Cli.Threads();
    public Option<long?> IgnoreIndex { get; } = Cli.IgnoreIndex();
    public Option<bool> AllowNonFinite { get; } = Cli.AllowNonFinite();
    public Option<bool> Verbose { get; } = Cli.Verbose();

    public void AddTo(Command c)
    {
        foreach (Option o in new Option[] { Loss, Output, Params, Frozen, BatchSize, Threads, IgnoreIndex, AllowNonFinite, Verbose }) c.Options.Add(o);
    }

    /// <summary>The settings (and, with --verbose, ONNX Runtime's log lines routed to stderr).</summary>
    public Runtime.LossSettings Read(ParseResult r)
    {
        Cli.ReadVerbose(r, Verbose);
        return ReadSettings(r);
    }

    Runtime.LossSettings ReadSettings(ParseResult r) => new()
    {
        Loss = Autodiff.LossHead.Parse(r.GetValue(Loss)!),
        Output = r.GetValue(Output),
        Params = r.GetValue(Params) is { Length: > 0 } p ? p : null,
        Frozen = r.GetValue(Frozen) is { Length: > 0 } f ? f : null,
        BatchSize = r.GetValue(BatchSize),
        Threads = r.GetValue(Threads),
        IgnoreIndex = r.GetValue(IgnoreIndex),
        AllowNonFinite = r.GetValue(AllowNonFinite),
    };
}
