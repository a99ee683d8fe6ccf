using System.Globalization;
using System.Text.Json;

namespace OnnxUnlearn.Cli.Reports;

/// <summary>A piece of the document, rendered by <see cref="ReportWriter"/> as Markdown or HTML.</summary>
public abstract record Block;
public sealed record Heading(int Level, string Text) : Block;
/// <summary>Plain text, optionally led by a bold phrase.</summary>
public sealed record Paragraph(string Text, string? Lead = null) : Block;
/// <summary>A table; <see cref="Numeric"/> columns are right-aligned.</summary>
public sealed record Table(IReadOnlyList<string> Columns, IReadOnlyList<IReadOnlyList<Cell>> Rows, IReadOnlySet<int>? Numeric = null) : Block;
/// <summary>A PNG figure; <see cref="Key"/> names its file next to a Markdown document (R.selected.png).</summary>
public sealed record Figure(string Key, string Caption, byte[] Png) : Block;

/// <summary>A table cell: plain text, or code (paths, digests).</summary>
public readonly record struct Cell(string Text, bool Code = false)
{
    public static implicit operator Cell(string text) => new(text);
}

/// <summary>
/// The JSON report of <c>unlearn --report</c> as a document for a person (a model-registry reviewer): outcome, models
/// and settings, the sets before and after, every step, the exposure, the selection and the scores. Reads the report
/// with <see cref="JsonDocument"/>, so keys it does not know are ignored; never shows a secret or its prefix.
/// </summary>
public sealed class ReportDocument
{
    public static readonly CultureInfo Culture = CultureInfo.InvariantCulture;

    /// <summary>Keys never rendered wherever they appear (an older report stored the secret and its prefix).</summary>
    static readonly HashSet<string> Hidden = new(StringComparer.OrdinalIgnoreCase) { "secret", "prefix" };

    readonly string file;
    readonly JsonElement root;

    ReportDocument(string file, JsonElement root) { this.file = file; this.root = root; }

    /// <summary>Reads a report file; a missing, unreadable or malformed file is a <see cref="UserError"/> naming it.</summary>
    public static ReportDocument Load(string path)
    {
        string text;
        try { text = File.ReadAllText(path); }
        catch (FileNotFoundException) { throw new UserError($"report '{path}' not found"); }
        catch (DirectoryNotFoundException) { throw new UserError($"report '{path}' not found"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new UserError($"cannot read report '{path}': {OneLine(e.Message)}"); }
        JsonElement root;
        try
        {
            using var doc = JsonDocument.Parse(text, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
            root = doc.RootElement.Clone();
        }
        catch (JsonException e) { throw new UserError($"report '{path}' is not valid JSON: {OneLine(e.Message)}"); }
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("outcome", out _) || !root.TryGetProperty("before", out _))
            throw new UserError($"'{path}' is not a report of unlearn (it has no \"outcome\" and \"before\"); write one with unlearn --report");
        var d = new ReportDocument(path, root);
        d.Validate();
        return d;
    }

    /// <summary>Reads every part once, so that a malformed value fails before any file is written.</summary>
    void Validate()
    {
        Outcome();
        Sets();
        Steps();
        Selection();
        Histogram();
        Exposure(null);
    }

    public string Outcome() => String(root, "outcome", "outcome") ?? throw Bad("outcome", "is missing");

    /// <summary>The document's blocks; <paramref name="plots"/> false (or no usable native Skia) leaves the figures out.</summary>
    public IReadOnlyList<Block> Build(bool plots = true, Action<string>? warn = null)
    {
        var blocks = new List<Block>();
        var input = String(root, "inputModel", "inputModel");
        blocks.Add(new Heading(1, "Unlearning report" + (input is null ? "" : ": " + Path.GetFileName(input))));
        Header(blocks);
        SettingsTable(blocks);
        BeforeAfter(blocks);
        StepsTable(blocks);
        ExposureBlock(blocks);
        SelectionBlock(blocks, plots, warn);
        ScoresBlock(blocks, plots, warn);
        blocks.Add(new Paragraph($"Rendered by onnx-unlearn {Version} from {Path.GetFileName(file)}."));
        return blocks;
    }

    public static string Version => typeof(ReportDocument).Assembly.GetName().Version?.ToString(3) ?? "?";

    void Header(List<Block> blocks)
    {
        string outcome = Outcome();
        var missed = Missed();
        blocks.Add(new Paragraph(outcome switch
        {
            "updated" => "— the selected parameters were updated and every stated target was met.",
            "target-missed" => $"— the selected parameters were updated, but {(missed.Count == 1 ? "a stated target was" : $"{missed.Count} stated targets were")} missed.",
            "no-change" => "— no update was made; the output model is the input model (nothing changed).",
            _ => "— (an outcome this version does not know).",
        }, "Outcome: " + outcome));
        if (missed.Count > 0)
            blocks.Add(new Table(["missed target", "wanted", "reached"],
                missed.Select(m => (IReadOnlyList<Cell>)[m.Target, Target(m.Target, m.Wanted), m.Reached is { } r ? Target(m.Target, r) : "n/a"]).ToList(), new HashSet<int> { 1, 2 }));

        var rows = new List<IReadOnlyList<Cell>>();
        void Row(string name, Cell? value) { if (value is { } v) rows.Add([name, v]); }
        Cell? Code(string key) => String(root, key, key) is { } s ? (Cell?)new Cell(s, true) : null;
        Row("input model", Code("inputModel") ?? "–");
        Row("input sha256", Code("inputSha256") ?? "–");
        Row("output model", Code("outputModel") ?? "– (none written)");
        Row("output sha256", Code("outputSha256") ?? "–");
        if (Object(root, "written", "written") is { } w)
            Row("written", $"{Count(Number(w, "elementsChanged", "written"))} elements changed, {Count(Number(w, "bytesChanged", "written"))} bytes differ, in {Count(Number(w, "tensors", "written"))} tensor(s)");
        Row("tool", String(root, "tool", "tool") ?? "–");
        Row("seed", Raw(root, "seed") ?? "–");
        double? selected = Number(root, "selectedElements", "selectedElements"), trainable = Number(root, "trainableElements", "trainableElements");
        if (selected is { } s)
            Row("selected elements", Count(s) + (trainable is { } t ? $" of {Count(t)} trainable" + (t > 0 ? $" ({Percent(s / t)})" : "") : ""));
        if (Number(root, "gradientDifferenceNorm", "gradientDifferenceNorm") is { } g) Row("‖Δg‖", Num(g));
        if (Number(root, "updateNorm", "updateNorm") is { } u) Row("‖update‖", Num(u));
        if (Number(root, "tau", "tau") is { } tau) Row("τ (first step)", Num(tau));
        if (Object(root, "cg", "cg") is { } cg)
            Row("conjugate gradients", $"{Count(Number(cg, "iterations", "cg"))} iterations, λ = {Num(Number(cg, "damping", "cg"))}, relative residual {Num(Number(cg, "relativeResidual", "cg"))}, stop: {String(cg, "stop", "cg") ?? "–"}"
                + (Number(cg, "stopValue", "cg") is { } sv ? $" ({Num(sv)})" : ""));
        if (Number(root, "gradientEvaluations", "gradientEvaluations") is { } ge) Row("gradient evaluations", Count(ge));
        if (Number(root, "seconds", "seconds") is { } sec) Row("seconds", sec.ToString("F2", Culture));
        blocks.Add(new Table(["", ""], rows));
    }

    void SettingsTable(List<Block> blocks)
    {
        if (Object(root, "settings", "settings") is not { } settings) return;
        blocks.Add(new Heading(2, "Settings"));
        var rows = settings.EnumerateObject().Where(p => !Hidden.Contains(p.Name)).Select(p => (IReadOnlyList<Cell>)[p.Name, Value(p.Value)]).ToList();
        blocks.Add(rows.Count == 0 ? new Paragraph("(none recorded)") : new Table(["setting", "value"], rows));
    }

    void BeforeAfter(List<Block> blocks)
    {
        blocks.Add(new Heading(2, "Before and after"));
        var sets = Sets();
        if (sets.Count == 0) { blocks.Add(new Paragraph("(no sets measured)")); return; }
        bool after = sets.Any(s => s.After is not null);
        blocks.Add(new Table(["set", "samples", "loss before", "loss after", "accuracy before", "accuracy after"],
            sets.Select(s => (IReadOnlyList<Cell>)[s.Name, Count(s.Before.Samples), Num(s.Before.Loss), Num(s.After?.Loss), Percent(s.Before.Accuracy), Percent(s.After?.Accuracy)]).ToList(),
            new HashSet<int> { 1, 2, 3, 4, 5 }));
        if (!after) blocks.Add(new Paragraph("Nothing was measured after: the model did not change."));
    }

    void StepsTable(List<Block> blocks)
    {
        var steps = Steps();
        if (steps.Count == 0) return;
        blocks.Add(new Heading(2, $"Steps ({Math.Max(0, steps.Count - 1)} after the start)"));
        bool exposure = steps.Any(s => s.Exposure is not null);
        string[] columns = ["step", "tau", "objective", "retainLoss", "updateNorm", "gradientEvaluations", "outcome", .. exposure ? new[] { "exposure (bits)" } : []];
        var rows = steps.Select(s => (IReadOnlyList<Cell>)[
            Raw(s.Json, "step") ?? "–", Num(s.Tau), Num(s.Objective), Num(s.RetainLoss), Num(s.UpdateNorm), Count(s.GradientEvaluations),
            (s.Outcome ?? "–") + (s.Cg is { } cg ? $" (CG: {cg})" : ""), .. exposure ? new[] { new Cell(s.Exposure is { } e ? e.ToString("F2", Culture) : "–") } : []]).ToList();
        blocks.Add(new Table(columns, rows, new HashSet<int> { 0, 1, 2, 3, 4, 5, 7 }));
    }

    void ExposureBlock(List<Block> blocks) => Exposure(blocks);

    /// <summary>The exposure: before/after bits, method and rank, the target and whether it was reached — only these keys.</summary>
    void Exposure(List<Block>? blocks)
    {
        if (Object(root, "exposure", "exposure") is not { } e) return;
        var before = Object(e, "before", "exposure") ?? throw Bad("exposure.before", "is missing");
        var after = Object(e, "after", "exposure");
        IReadOnlyList<Cell> Row(string name, Func<JsonElement, string> get) => [name, get(before), after is { } a ? get(a) : "– (unchanged)"];
        var rows = new List<IReadOnlyList<Cell>>
        {
            Row("exposure (bits)", x => Num(Number(x, "bits", "exposure") ?? throw Bad("exposure.*.bits", "is missing"), "F2")),
            Row("method", x => String(x, "method", "exposure") ?? "–"),
            Row("rank", x => Num(Number(x, "rank", "exposure"))),
        };
        double? target = Number(e, "target", "exposure.target");
        bool? reached = Bool(e, "reached", "exposure.reached");
        if (blocks is null) return;
        blocks.Add(new Heading(2, "Exposure of the secret"));
        blocks.Add(new Table(["", "before", "after"], rows, new HashSet<int> { 1, 2 }));
        if (target is { } t)
            blocks.Add(new Paragraph($"target: below {t.ToString("G4", Culture)} bits — {(reached == true ? "reached" : reached == false ? "NOT reached" : "not stated")}."));
        blocks.Add(new Paragraph("The secret and the text it follows are not shown in this document."));
    }

    void SelectionBlock(List<Block> blocks, bool plots, Action<string>? warn)
    {
        var (tensors, hasElements) = Selection();
        if (tensors.Count == 0) return;
        blocks.Add(new Heading(2, "Selection per tensor"));
        blocks.Add(new Table(hasElements ? ["tensor", "selected", "elements", "share"] : ["tensor", "selected"],
            tensors.Select(t => (IReadOnlyList<Cell>)(hasElements
                ? [new Cell(t.Name, true), Count(t.Selected), Count(t.Elements), t.Elements is > 0 ? Percent(t.Selected / t.Elements.Value) : "–"]
                : [new Cell(t.Name, true), Count(t.Selected)])).ToList(), new HashSet<int> { 1, 2, 3 }));
        if (!plots) return;
        var values = tensors.Select(t => (t.Name, Value: hasElements ? (t.Elements is > 0 ? t.Selected / t.Elements.Value : 0) : t.Selected)).ToList();
        string caption = hasElements ? "Share of each tensor's elements selected" : "Elements selected per tensor (the report has no tensorElements)";
        if (values.Count > ReportPlots.MaxBars)
        {
            var keep = values.Select((v, i) => (v, i)).OrderByDescending(x => x.v.Value).ThenBy(x => x.i).Take(ReportPlots.MaxBars).Select(x => x.i).ToHashSet();
            values = values.Where((_, i) => keep.Contains(i)).ToList();
            caption += $" — the {ReportPlots.MaxBars} largest of {tensors.Count} tensors";
        }
        if (Plot("selected", caption, () => ReportPlots.SelectedPerTensor(values, hasElements), warn) is { } figure) blocks.Add(figure);
    }

    void ScoresBlock(List<Block> blocks, bool plots, Action<string>? warn)
    {
        if (Histogram() is not { } h) return;
        blocks.Add(new Heading(2, "Scores"));
        long total = (long)h.Counts.Sum();
        blocks.Add(new Paragraph($"{h.Score} scores of {Count(total)} elements in {h.Counts.Length} bins from {Num(h.Edges[0])} to {Num(h.Edges[^1])}"
            + (h.Threshold is { } t ? $"; selection starts at {Num(t)} ({(h.Smallest ? "at or below" : "at or above")} it)." : ".")));
        if (!plots) return;
        string caption = $"Distribution of the {h.Score} scores" + (ReportPlots.LogCounts(h.Counts) ? " (counts on a log scale)" : "")
            + (h.Threshold is not null ? "; dashed line: the selection threshold, orange: bins holding selected elements" : "");
        if (Plot("scores", caption, () => ReportPlots.ScoreHistogram(h.Score, h.Edges, h.Counts, h.Threshold, h.Smallest), warn) is { } figure) blocks.Add(figure);
    }

    bool noNative, warnedFont;

    /// <summary>A figure, or null (with one warning) where Skia's native library cannot load on this platform.</summary>
    Figure? Plot(string key, string caption, Func<byte[]> draw, Action<string>? warn)
    {
        if (noNative) return null;
        try
        {
            if (!ReportPlots.HasFont)
            {
                if (!warnedFont) warn?.Invoke("no font found: the figures are drawn without text (the tables carry every number)");
                warnedFont = true;
                caption += " (drawn without text: no font was found where this was rendered)";
            }
            return new Figure(key, caption, draw());
        }
        catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or BadImageFormatException or EntryPointNotFoundException)
        {
            noNative = true;
            warn?.Invoke("figures left out: SkiaSharp's native library cannot be loaded here (" + OneLine(e.Message) + ")");
            return null;
        }
    }

    // ---- the report's parts, read tolerantly (absent keys and nulls are fine; a wrong type names its key) ----

    public sealed record SetMetrics(double? Loss, double? Accuracy, double? Samples);
    public sealed record Set(string Name, SetMetrics Before, SetMetrics? After);
    public sealed record Step(JsonElement Json, double? Tau, double? Objective, double? RetainLoss, double? UpdateNorm, double? GradientEvaluations, string? Outcome, double? Exposure, string? Cg);
    public sealed record MissedTarget(string Target, double Wanted, double? Reached);
    public sealed record Tensor(string Name, double Selected, double? Elements);
    public sealed record ScoreHistogram(string Score, double[] Edges, double[] Counts, double? Threshold, bool Smallest);

    public IReadOnlyList<Set> Sets()
    {
        var before = Object(root, "before", "before") ?? throw Bad("before", "must be an object of sets");
        var after = Object(root, "after", "after");
        SetMetrics Metrics(JsonElement m, string path) => m.ValueKind == JsonValueKind.Object
            ? new(Number(m, "loss", path), Number(m, "accuracy", path), Number(m, "samples", path))
            : throw Bad(path, "must be an object");
        return before.EnumerateObject().Select(p => new Set(p.Name, Metrics(p.Value, "before." + p.Name),
            after is { } a && Object(a, p.Name, "after." + p.Name) is { } m ? Metrics(m, "after." + p.Name) : null)).ToList();
    }

    public IReadOnlyList<Step> Steps()
    {
        var steps = Array(root, "steps", "steps");
        if (steps is null) return [];
        return steps.Value.EnumerateArray().Select((s, i) =>
        {
            string path = $"steps[{i}]";
            if (s.ValueKind != JsonValueKind.Object) throw Bad(path, "must be an object");
            return new Step(s, Number(s, "tau", path), Number(s, "objective", path), Number(s, "retainLoss", path), Number(s, "updateNorm", path),
                Number(s, "gradientEvaluations", path), String(s, "outcome", path), Number(s, "exposure", path), String(s, "cg", path));
        }).ToList();
    }

    public IReadOnlyList<MissedTarget> Missed()
    {
        var missed = Array(root, "missed", "missed");
        if (missed is null) return [];
        return missed.Value.EnumerateArray().Select((m, i) =>
        {
            string path = $"missed[{i}]";
            if (m.ValueKind != JsonValueKind.Object) throw Bad(path, "must be an object");
            return new MissedTarget(String(m, "target", path) ?? "?", Number(m, "wanted", path) ?? double.NaN, Number(m, "reached", path));
        }).ToList();
    }

    /// <summary>Each tensor's selected count and, where the report has <c>tensorElements</c>, its element count.</summary>
    public (IReadOnlyList<Tensor> Tensors, bool HasElements) Selection()
    {
        var selected = Object(root, "selectedPerTensor", "selectedPerTensor");
        if (selected is null) return ([], false);
        var elements = Object(root, "tensorElements", "tensorElements");
        var list = selected.Value.EnumerateObject().Select(p => new Tensor(p.Name,
            Number(selected.Value, p.Name, "selectedPerTensor") ?? 0,
            elements is { } e ? Number(e, p.Name, "tensorElements") : null)).ToList();
        return (list, elements is not null);
    }

    /// <summary><c>scoreHistogram</c>: K+1 ascending edges, K counts, the threshold where selection starts.</summary>
    public ScoreHistogram? Histogram()
    {
        if (Object(root, "scoreHistogram", "scoreHistogram") is not { } h) return null;
        double[] Numbers(string key)
        {
            var a = Array(h, key, "scoreHistogram") ?? throw Bad("scoreHistogram." + key, "is missing");
            return a.EnumerateArray().Select((x, i) => ToNumber(x, $"scoreHistogram.{key}[{i}]") ?? throw Bad($"scoreHistogram.{key}[{i}]", "must be a number")).ToArray();
        }
        var edges = Numbers("edges");
        var counts = Numbers("counts");
        if (counts.Length == 0) throw Bad("scoreHistogram.counts", "is empty");
        if (edges.Length != counts.Length + 1) throw Bad("scoreHistogram.edges", $"must hold {counts.Length + 1} edges for {counts.Length} counts, it holds {edges.Length}");
        if (edges.Any(e => !double.IsFinite(e))) throw Bad("scoreHistogram.edges", "must be finite");
        for (int i = 1; i < edges.Length; i++)
            if (!(edges[i] > edges[i - 1])) throw Bad("scoreHistogram.edges", $"must ascend (edge {i} is {Num(edges[i])}, after {Num(edges[i - 1])})");
        if (counts.Any(c => !double.IsFinite(c) || c < 0)) throw Bad("scoreHistogram.counts", "must be finite and not negative");
        var threshold = Number(h, "threshold", "scoreHistogram");
        if (threshold is { } t && !double.IsFinite(t)) threshold = null;
        bool smallest = Object(root, "settings", "settings") is { } s && s.TryGetProperty("order", out var o) && o.ValueKind == JsonValueKind.String && o.GetString() == "smallest";
        return new ScoreHistogram(String(h, "score", "scoreHistogram") ?? "selection", edges, counts, threshold, smallest);
    }

    // ---- JSON access ----

    UserError Bad(string path, string what) => new($"report '{file}': {path} {what}");

    static JsonElement? Get(JsonElement obj, string key) =>
        obj.ValueKind == JsonValueKind.Object && obj.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    JsonElement? Object(JsonElement obj, string key, string path) => Get(obj, key) is { } v
        ? v.ValueKind == JsonValueKind.Object ? v : throw Bad(Join(path, key), "must be an object") : null;

    JsonElement? Array(JsonElement obj, string key, string path) => Get(obj, key) is { } v
        ? v.ValueKind == JsonValueKind.Array ? v : throw Bad(Join(path, key), "must be an array") : null;

    string? String(JsonElement obj, string key, string path) => Get(obj, key) is { } v
        ? v.ValueKind == JsonValueKind.String ? v.GetString() : throw Bad(Join(path, key), "must be a string") : null;

    bool? Bool(JsonElement obj, string key, string path) => Get(obj, key) is { } v
        ? v.ValueKind switch { JsonValueKind.True => true, JsonValueKind.False => false, _ => throw Bad(Join(path, key), "must be true or false") } : null;

    double? Number(JsonElement obj, string key, string path) => Get(obj, key) is { } v ? ToNumber(v, Join(path, key)) ?? throw Bad(Join(path, key), "must be a number") : null;

    /// <summary>A JSON number, or one of the strings NaN/Infinity/-Infinity; null for anything else.</summary>
    static double? ToNumber(JsonElement v, string path) => v.ValueKind switch
    {
        JsonValueKind.Number => v.GetDouble(),
        JsonValueKind.String when double.TryParse(v.GetString(), NumberStyles.Float, Culture, out var d) => d,
        _ => null,
    };

    static string Join(string path, string key) => path == key || path.EndsWith("." + key) ? path : path + "." + key;

    static string? Raw(JsonElement obj, string key) => Get(obj, key) is { } v ? Value(v).Text : null;

    /// <summary>A setting's value as text: strings as they are, numbers as written, lists joined, objects as compact JSON.</summary>
    static Cell Value(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.Null or JsonValueKind.Undefined => "–",
        JsonValueKind.String => v.GetString()!,
        JsonValueKind.Array => string.Join(", ", v.EnumerateArray().Select(x => Value(x).Text)),
        JsonValueKind.Object => new Cell(JsonSerializer.Serialize(Strip(v)), true),
        _ => v.GetRawText(),
    };

    /// <summary>An object without the hidden keys, at any depth.</summary>
    static object? Strip(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.Object => v.EnumerateObject().Where(p => !Hidden.Contains(p.Name)).ToDictionary(p => p.Name, p => Strip(p.Value)),
        JsonValueKind.Array => v.EnumerateArray().Select(Strip).ToList(),
        _ => v,
    };

    // ---- formatting (invariant culture) ----

    /// <summary>Losses, norms, step sizes: 6 significant digits.</summary>
    public static string Num(double? v, string format = "G6") => v is { } x ? x.ToString(format, Culture) : "–";
    /// <summary>Accuracies and shares: percent with 2 decimals ("83.33 %").</summary>
    public static string Percent(double? v) => v is { } x ? (x * 100).ToString("F2", Culture) + " %" : "–";
    public static string Count(double? v) => v is { } x ? (x == Math.Floor(x) && Math.Abs(x) < 1e15 ? x.ToString("N0", Culture) : x.ToString("G6", Culture)) : "–";

    static string Target(string target, double v) => double.IsNaN(v) ? "n/a" : target == "accuracy" ? Percent(v) : target == "exposure" ? v.ToString("F2", Culture) + " bits" : Num(v);

    static string OneLine(string s) => string.Join(' ', s.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries)).Trim();
}
