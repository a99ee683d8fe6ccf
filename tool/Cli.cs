using System.CommandLine;
using System.CommandLine.Invocation;
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

    /// <summary>Options every command takes. They are read here (--quiet) or before parsing (--request, see <see cref="RequestManifest"/>), never by a command's action; on the root and recursive, so every command's help lists them.</summary>
    static readonly Option<bool> QuietOption = new("--quiet", "-q") { Description = "no output on stdout except what --json asks for (errors and warnings still go to stderr)", Recursive = true };
    static readonly Option<string?> RequestOption = new("--request") { Description = "a JSON file holding this command's options (keys = option names without dashes, e.g. \"perTensor\", plus \"model\"; paths relative to the file); command-line options win", Recursive = true, HelpName = "FILE" };

    /// <summary>True under --quiet: human-readable output is dropped (and progress bars are not drawn).</summary>
    public static bool Quiet { get; private set; }

    /// <summary>The real stdout, kept for --json when --quiet silences <see cref="Console.Out"/>.</summary>
    static TextWriter stdout = Console.Out;

    public static int Run(RootCommand root, string[] args)
    {
        // the options every command takes
        root.Options.Add(QuietOption);
        root.Options.Add(RequestOption);
        ParseResult parsed;
        try { parsed = root.Parse(RequestManifest.Expand(args)); }
        catch (UserError e) { return Fail(e); }
        // System.CommandLine answers a usage error with the whole help on stdout and exit code 1; we promise 2 and one
        // line. (--help and --version are actions of their own, not errors: they still print and exit 0.)
        if (parsed.Action is ParseErrorAction) return Usage(parsed);
        SetUpOutput(parsed.GetValue(QuietOption));
        try { return parsed.Invoke(); }
        catch (UserError e) { return Fail(e); }
    }

    /// <summary>
    /// --quiet silences every human-readable write at once (so no command can forget one); piped output is not wrapped:
    /// Spectre.Console assumes 80 columns when stdout is not a terminal and would break lines (and values) there.
    /// </summary>
    static void SetUpOutput(bool quiet)
    {
        Quiet = quiet;
        stdout = Console.Out;
        if (quiet)
        {
            Console.SetOut(TextWriter.Null);
            AnsiConsole.Console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(TextWriter.Null), Ansi = AnsiSupport.No, Interactive = InteractionSupport.No });
        }
        else if (!Interactive)
        {
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Out), Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors, Interactive = InteractionSupport.No });
            console.Profile.Width = PipedWidth;
            AnsiConsole.Console = console;
        }
    }

    /// <summary>Columns assumed for piped output: wide enough that no line is ever wrapped (tables keep one row per line).</summary>
    const int PipedWidth = 1 << 20;

    /// <summary>A usage error (unknown or misspelt option, missing option, bad value) in one line on stderr, exit code 2.</summary>
    static int Usage(ParseResult r)
    {
        var command = r.CommandResult.Command;
        var options = command.Options.Concat(r.RootCommandResult.Command.Options.Where(o => o.Recursive)).SelectMany(o => o.Aliases.Append(o.Name)).ToList();
        // an unknown option: named with the one probably meant; the value after it is its own, not a second problem
        var unknown = new List<string>();
        var problems = new List<string>();
        for (int i = 0; i < r.UnmatchedTokens.Count; i++)
        {
            var token = r.UnmatchedTokens[i];
            unknown.Add(token);
            if (!token.StartsWith('-'))
            {
                var commands = command.Subcommands.Select(c => c.Name).ToList();
                problems.Add(commands.Count == 0 ? $"unexpected argument '{token}'" : $"unknown command '{token}'" + (Closest(token, commands) is { } name ? $" (did you mean '{name}'?)" : ""));
                continue;
            }
            problems.Add($"unknown option '{token}'" + (Closest(token, options) is { } meant ? $" (did you mean '{meant}'?)" : ""));
            if (i + 1 < r.UnmatchedTokens.Count && !r.UnmatchedTokens[i + 1].StartsWith('-')) unknown.Add(r.UnmatchedTokens[++i]);
        }
        problems.AddRange(r.Errors.Where(e => !unknown.Any(t => e.Message.Contains($"'{t}'"))).Select(e => Sentence(e.Message)).Distinct());
        string help = command == r.RootCommandResult.Command ? command.Name : $"{r.RootCommandResult.Command.Name} {command.Name}";
        Console.Error.WriteLine($"error: {string.Join("; ", problems)}; see '{help} --help'");
        return BadInput;
    }

    /// <summary>System.CommandLine's "Option '--x' is required." as part of a line: "option '--x' is required".</summary>
    static string Sentence(string message)
    {
        message = message.Trim().TrimEnd('.');
        return message.Length > 1 && char.IsUpper(message[0]) && char.IsLower(message[1]) ? char.ToLowerInvariant(message[0]) + message[1..] : message;
    }

    /// <summary>The name nearest to a misspelt one (at most two edits, or the only one it is a prefix of).</summary>
    static string? Closest(string token, IReadOnlyList<string> names)
    {
        var near = names.Select(n => (n, d: Edits(token, n))).Where(x => x.d <= 2).OrderBy(x => x.d).Select(x => x.n).FirstOrDefault();
        var prefixed = names.Where(n => n.StartsWith(token, StringComparison.Ordinal)).Distinct().ToList();
        return near ?? (prefixed.Count == 1 ? prefixed[0] : null);
    }

    /// <summary>Levenshtein distance.</summary>
    static int Edits(string a, string b)
    {
        var row = Enumerable.Range(0, b.Length + 1).ToArray();
        for (int i = 1; i <= a.Length; i++)
        {
            int diagonal = row[0];
            row[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int above = row[j];
                row[j] = Math.Min(Math.Min(row[j] + 1, row[j - 1] + 1), diagonal + (a[i - 1] == b[j - 1] ? 0 : 1));
                diagonal = above;
            }
        }
        return row[b.Length];
    }

    /// <summary>Runs a command body; user mistakes become one line on stderr and exit code 2, never a stack trace.</summary>
    /// <param name="flags">The command's flags for library settings whose flag is not their kebab-cased name (e.g. Samples → --candidates).</param>
    public static int Guard(Func<int> body, IReadOnlyDictionary<string, string>? flags = null)
    {
        try { return body(); }
        catch (UserError e) { return Fail(e, flags); }
        catch (OperationCanceledException) { Console.Error.WriteLine("cancelled"); return 130; }
        catch (TypeInitializationException e) when (e.InnerException is DllNotFoundException)
        {
            // the tool package carries ONNX Runtime's natives for desktop and server platforms only (tool/onnx-unlearn.csproj)
            var carried = typeof(Cli).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyMetadataAttribute), false)
                .Cast<System.Reflection.AssemblyMetadataAttribute>().FirstOrDefault(a => a.Key == "ToolRuntimes")?.Value?.Replace(";", ", ");
            Console.Error.WriteLine($"error: ONNX Runtime's native library could not be loaded on {System.Runtime.InteropServices.RuntimeInformation.RuntimeIdentifier}"
                + (carried is null ? "" : $"; this build of onnx-unlearn carries it for {carried}"));
            return BadInput;
        }
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

    /// <summary>The command's JSON document: one, on stdout (also under --quiet).</summary>
    public static void WriteJson<T>(T value) => stdout.WriteLine(JsonSerializer.Serialize(value, Json));

    /// <summary>Tables and progress go to the terminal; piped output stays plain.</summary>
    public static bool Interactive => !Console.IsOutputRedirected;

    public static Argument<string> ModelArgument() => new("MODEL") { Description = "the ONNX model file" };

    public static Option<string> Loss() => new("--loss") { Description = "loss head: ce (softmax cross-entropy on logits, integer labels; on a final Softmax/LogSoftmax output the logits before it are used, on a final Sigmoid −log σ(z_label); refuses outputs that hold probabilities), ce-prob (−log p on probabilities; refuses values outside [0, 1]), bce (with logits, or before a final Sigmoid; refuses outputs that already are probabilities), mse, nll (on log-probabilities; refuses outputs that are not)", DefaultValueFactory = _ => "ce" };
    public static Option<string?> Output() => new("--output") { Description = "model output the loss is computed on (default: the first float output; a classifier's labels are skipped)" };
    public static Option<string[]> Params() => new("--params") { Description = "glob(s) of parameters to train (default: every float tensor on a differentiable path)", AllowMultipleArgumentsPerToken = true };
    public static Option<string[]> Frozen() => new("--frozen") { Description = "glob(s) of parameters to keep fixed", AllowMultipleArgumentsPerToken = true };
    public static Option<int> BatchSize() => new("--batch-size") { Description = "samples per ONNX Runtime run (results do not depend on it)", DefaultValueFactory = _ => 256 };
    public static Option<int> Threads() => new("--threads") { Description = "ONNX Runtime intra-op threads: 1 gives bit-identical results run after run; 0 = all cores (faster on large models, last bits may differ between runs)", DefaultValueFactory = _ => 1 };
    public static Option<long?> IgnoreIndex() => new("--ignore-index") { Description = "label value excluded from ce/nll (padding)" };
    public static Option<bool> JsonFlag() => new("--json") { Description = "print one JSON document on stdout instead of the text output (its keys: docs/cli-json.md)" };
    public static Option<bool> AllowLinks() => new("--allow-links") { Description = "follow symlinks out of the model's folder and accept hard-linked data files (model caches such as Hugging Face's link into ../../blobs); locations must still be relative" };

    /// <summary>The external-data policy of <see cref="AllowLinks"/>.</summary>
    public static Onnx.ExternalDataPolicy Policy(ParseResult r, Option<bool> allowLinks) => new() { AllowLinks = r.GetValue(allowLinks) };
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
    public Option<bool> AllowLinks { get; } = Cli.AllowLinks();
    public Option<bool> AllowNonFinite { get; } = Cli.AllowNonFinite();
    public Option<bool> Verbose { get; } = Cli.Verbose();

    public void AddTo(Command c)
    {
        foreach (Option o in new Option[] { Loss, Output, Params, Frozen, BatchSize, Threads, IgnoreIndex, AllowLinks, AllowNonFinite, Verbose }) c.Options.Add(o);
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
        ExternalData = Cli.Policy(r, AllowLinks),
        AllowNonFinite = r.GetValue(AllowNonFinite),
    };
}
