using System.Globalization;
using System.Text;
using System.Text.Json;

namespace OnnxUnlearn.Text;

/// <summary>
/// A character-level vocabulary: VOCAB.json maps single characters to the model's token ids, <c>{"a": 1, "b": 2}</c>.
/// A "character" is one Unicode scalar value (a rune), so text is tokenised rune by rune. Keys written <c>&lt;name&gt;</c>
/// are special tokens: <c>&lt;unk&gt;</c> (if present) stands for characters the vocabulary lacks, <c>&lt;pad&gt;</c>
/// fills sequences on the right; other special tokens are kept but never produced by <see cref="Encode"/>.
/// </summary>
public sealed class Vocabulary
{
    public const string UnknownToken = "<unk>", PadToken = "<pad>";

    /// <summary>Where the vocabulary came from (a path, or a description), for messages.</summary>
    public string Source { get; }
    /// <summary>Every entry, characters and special tokens, in file order.</summary>
    public IReadOnlyDictionary<string, long> Tokens { get; }
    /// <summary>Id that unknown characters encode to, or null when they are an error.</summary>
    public long? Unknown { get; }
    /// <summary>Id used to pad sequences on the right: <c>&lt;pad&gt;</c> when present, otherwise the smallest id.</summary>
    public long Pad { get; }
    /// <summary>The largest id: a model's logits need at least MaxId + 1 classes.</summary>
    public long MaxId { get; }

    readonly Dictionary<int, long> byRune = [];
    readonly Dictionary<long, string> byId = [];

    public Vocabulary(IReadOnlyList<KeyValuePair<string, long>> entries, string source, string? unknownToken = null)
    {
        Source = source;
        if (entries.Count == 0) throw new UserError($"vocabulary '{source}' is empty; it should map characters to token ids, e.g. {{\"a\": 1, \"b\": 2}}");
        var tokens = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var (key, id) in entries)
        {
            if (!tokens.TryAdd(key, id)) throw new UserError($"vocabulary '{source}': key {Quote(key)} appears twice");
            if (id < 0) throw new UserError($"vocabulary '{source}': key {Quote(key)} has id {id}; token ids must be 0 or greater");
            if (byId.TryGetValue(id, out var other))
                throw new UserError($"vocabulary '{source}': keys {Quote(other)} and {Quote(key)} both have id {id}; every token needs its own id");
            byId[id] = key;
            if (IsSpecial(key)) continue;
            if (key.EnumerateRunes().Count() != 1)
                throw new UserError($"vocabulary '{source}': key {Quote(key)} is not a single character; VOCAB.json maps characters to ids (special tokens are written <name>)");
            byRune[Rune.GetRuneAt(key, 0).Value] = id;
        }
        Tokens = tokens;
        MaxId = tokens.Values.Max();
        if (unknownToken is not null)
        {
            if (!tokens.TryGetValue(unknownToken, out var u))
                throw new UserError($"vocabulary '{source}' has no token {Quote(unknownToken)} for unknown characters");
            Unknown = u;
        }
        else if (tokens.TryGetValue(UnknownToken, out var u)) Unknown = u;
        Pad = tokens.TryGetValue(PadToken, out var p) ? p : tokens.Values.Min();
    }

    /// <summary>Reads VOCAB.json: one JSON object whose keys are characters (or &lt;special&gt; tokens) and whose values are integer ids.</summary>
    public static Vocabulary Load(string path, string? unknownToken = null)
    {
        if (!File.Exists(path)) throw new UserError($"vocabulary file '{path}' does not exist");
        string json;
        try { json = File.ReadAllText(path, Encoding.UTF8); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new UserError($"cannot read vocabulary file '{path}': {e.Message}"); }
        return Parse(json, path, unknownToken);
    }

    public static Vocabulary Parse(string json, string source, string? unknownToken = null)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip }); }
        catch (JsonException e)
        { throw new UserError($"vocabulary '{source}' is not valid JSON: {e.Message.Split('\n')[0]}"); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new UserError($"vocabulary '{source}' must be a JSON object mapping characters to token ids, e.g. {{\"a\": 1, \"b\": 2}}; it is a JSON {doc.RootElement.ValueKind.ToString().ToLowerInvariant()}");
            var entries = new List<KeyValuePair<string, long>>();
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt64(out long id))
                    throw new UserError($"vocabulary '{source}': key {Quote(p.Name)} has value {Abbreviate(p.Value.GetRawText())}; token ids must be integers");
                entries.Add(new(p.Name, id));
            }
            return new Vocabulary(entries, source, unknownToken);
        }
    }

    public static bool IsSpecial(string key) => key.Length > 2 && key[0] == '<' && key[^1] == '>';

    /// <summary>Id of one character, or null when the vocabulary lacks it (ignoring <see cref="Unknown"/>).</summary>
    public long? IdOf(Rune c) => byRune.TryGetValue(c.Value, out var id) ? id : null;

    public long? IdOf(char c) => IdOf(new Rune(c));

    /// <summary>The token with this id, or null.</summary>
    public string? TokenOf(long id) => byId.GetValueOrDefault(id);

    /// <summary>
    /// One token id per character of <paramref name="text"/>. An unknown character encodes as <see cref="Unknown"/> when the
    /// vocabulary has one; otherwise it is a <see cref="UserError"/> naming the character and its position in <paramref name="what"/>
    /// (with <paramref name="reveal"/> false, the position only: the text is a secret).
    /// </summary>
    public long[] Encode(string text, string what, bool reveal = true)
    {
        var ids = new List<long>(text.Length);
        int position = 0;
        foreach (var rune in text.EnumerateRunes())
        {
            if (byRune.TryGetValue(rune.Value, out var id)) ids.Add(id);
            else if (Unknown is { } u) ids.Add(u);
            else throw new UserError($"{what}: {(reveal ? $"{Describe(rune)} at {Locate(text, position)}" : $"the character at position {position + 1}")} is not in vocabulary '{Source}'; add it to the vocabulary, or add an \"{UnknownToken}\" entry to encode unknown characters");
            position++;
        }
        return [.. ids];
    }

    /// <summary>The characters of a text, one per token (what <see cref="Encode"/> tokenises).</summary>
    public static string[] Characters(string text) => text.EnumerateRunes().Select(r => r.ToString()).ToArray();

    /// <summary>'a' for printable characters, U+000A for controls and spaces that do not show.</summary>
    public static string Describe(Rune r)
    {
        var category = Rune.GetUnicodeCategory(r);
        bool invisible = category is UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator
            or UnicodeCategory.Surrogate or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned
            || (category == UnicodeCategory.SpaceSeparator && r.Value != ' ');
        return invisible ? $"character U+{r.Value:X4}" : $"character '{r}' (U+{r.Value:X4})";
    }

    /// <summary>"position 17 (line 2, column 5)" for the character with that index (characters counted from 0, lines and columns from 1).</summary>
    static string Locate(string text, int runeIndex)
    {
        int line = 1, column = 1, i = 0;
        foreach (var r in text.EnumerateRunes())
        {
            if (i++ == runeIndex) break;
            if (r.Value == '\n') { line++; column = 1; } else column++;
        }
        return line == 1 ? $"position {runeIndex}" : $"position {runeIndex} (line {line}, column {column})";
    }

    static readonly JsonSerializerOptions Readable = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    static string Quote(string s) => JsonSerializer.Serialize(s, Readable);

    static string Abbreviate(string s) => s.Length <= 40 ? s : s[..37] + "...";
}
