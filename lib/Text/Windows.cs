using OnnxUnlearn.Data;
using static OnnxUnlearn.UserError;

namespace OnnxUnlearn.Text;

/// <summary>
/// Training samples of a next-token model cut from a text: <see cref="Inputs"/> int64 [N, T] (tokens s..s+T−1 of each
/// window) and <see cref="Labels"/> int64 [N, T] (tokens s+1..s+T: the token after each position).
/// <see cref="Starts"/> are the character offsets of the windows; <see cref="Occurrences"/> the offsets of the --match secret.
/// </summary>
public sealed record TextWindows(NdArray Inputs, NdArray Labels, long[] Starts, int[] Occurrences)
{
    public long Count => Inputs.Rows;

    /// <summary>The arrays as an .npz would hold them: the model's token input and <c>label</c>.</summary>
    public Dictionary<string, NdArray> ToArrays(string inputName) => new() { [inputName] = Inputs, ["label"] = Labels };
}

public static class Windows
{
    /// <summary>Reads a UTF-8 text file as it is (line endings and a trailing newline included).</summary>
    public static string ReadText(string path)
    {
        if (!File.Exists(path)) throw new UserError($"text file '{path}' does not exist");
        try { return File.ReadAllText(path, System.Text.Encoding.UTF8); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new UserError($"cannot read text file '{path}': {e.Message}"); }
    }

    /// <summary>
    /// Sliding windows over <paramref name="text"/>: one every <paramref name="stride"/> characters, each T + 1 characters
    /// long (T inputs, and the labels shifted by one), while the text lasts. With <paramref name="match"/>, only the windows
    /// whose T + 1 characters contain the whole secret somewhere.
    /// </summary>
    public static TextWindows Slide(string text, Vocabulary vocab, int window, int stride, string? match = null, string source = "text")
    {
        if (window < 1) throw new SettingError("Window", $"must be at least 1, got {window}");
        if (stride < 1) throw new SettingError("Stride", $"must be at least 1, got {stride}");
        var tokens = vocab.Encode(text, source);
        var chars = Vocabulary.Characters(text);
        if (tokens.Length < window + 1)
            throw new UserError($"{source} has {tokens.Length} characters, too few for one window: a window needs T + 1 = {window + 1} characters (T inputs and the next-token labels); use a smaller {Setting("Window")}");
        var starts = new List<long>();
        for (long s = 0; s + window + 1 <= tokens.Length; s += stride) starts.Add(s);

        int[] occurrences = [];
        if (match is not null)
        {
            var secret = Vocabulary.Characters(match);
            if (secret.Length == 0) throw new SettingError("Match", "is empty; give the secret text whose windows to keep");
            if (secret.Length > window + 1)
                throw new SettingError("Match", $"is {secret.Length} characters long but a window holds T + 1 = {window + 1}; no window can contain it (use {Setting("Window", (secret.Length - 1).ToString())} or more)");
            occurrences = Find(chars, secret);
            if (occurrences.Length == 0) throw new UserError($"{source} does not contain the {Setting("Match")} text ({secret.Length} characters, not shown: it is the secret)");
            var kept = starts.Where(s => Contains(s, window, occurrences, secret.Length)).ToList();
            if (kept.Count == 0)
                throw new UserError($"{source} contains the {Setting("Match")} text {occurrences.Length} time(s) but no window of T + 1 = {window + 1} characters at stride {stride} contains it entirely; use a smaller {Setting("Stride")} or a larger {Setting("Window")}");
            starts = kept;
        }
        return Cut(tokens, window, [.. starts], occurrences);
    }

    /// <summary>Windows of T inputs and T labels at the given token offsets.</summary>
    public static TextWindows Cut(long[] tokens, int window, long[] starts, int[]? occurrences = null)
    {
        var inputs = new long[starts.Length * window];
        var labels = new long[starts.Length * window];
        for (int i = 0; i < starts.Length; i++)
        {
            Array.Copy(tokens, starts[i], inputs, (long)i * window, window);
            Array.Copy(tokens, starts[i] + 1, labels, (long)i * window, window);
        }
        return new TextWindows(NdArray.FromInt64(inputs, starts.Length, window), NdArray.FromInt64(labels, starts.Length, window), starts, occurrences ?? []);
    }

    /// <summary>Offsets (in characters) where <paramref name="secret"/> starts in <paramref name="chars"/>, overlapping ones included.</summary>
    public static int[] Find(string[] chars, string[] secret)
    {
        var found = new List<int>();
        for (int p = 0; p + secret.Length <= chars.Length; p++)
        {
            int k = 0;
            while (k < secret.Length && chars[p + k] == secret[k]) k++;
            if (k == secret.Length) found.Add(p);
        }
        return [.. found];
    }

    /// <summary>Whether the T + 1 characters from <paramref name="start"/> hold a whole occurrence.</summary>
    static bool Contains(long start, int window, int[] occurrences, int length) =>
        occurrences.Any(p => p >= start && p + length <= start + window + 1);
}
