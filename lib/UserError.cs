using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace OnnxUnlearn;

/// <summary>
/// A problem with the user's input (model, data, settings). Front ends show the message as one line (the CLI exits with
/// code 2), never a stack trace. Messages name the file, node, tensor or input involved and say how to fix it.
/// A message names a setting through <see cref="Setting"/>, never as a command-line flag: <see cref="Render(Func{string, string?, string})"/> lets each
/// front end name it its own way (the CLI: <c>--frozen</c>, <c>--loss ce-prob</c>); <see cref="Exception.Message"/> uses
/// the library's names (<c>Frozen</c>, <c>Loss = ce-prob</c>). Control characters in a message (a hostile name from a model or
/// data file) come out escaped (<see cref="Escape"/>): the message stays one line and cannot drive the terminal.
/// </summary>
public partial class UserError(string message, Exception? inner = null) : Exception(message, inner)
{
    /// <summary>A reference to a setting (a property of the library's option records), with an example value, inside a message.</summary>
    public static string Setting(string name, string? value = null) => $"\u2039{name}{(value is null ? "" : "=" + value)}\u203A";

    /// <summary>The settings the message refers to, in order.</summary>
    public IReadOnlyList<string> Settings => Marker().Matches(base.Message).Select(m => m.Groups[1].Value).ToList();

    /// <summary>The message, each setting named by <paramref name="name"/>(setting, value or null).</summary>
    public string Render(Func<string, string?, string> name) => Render(base.Message, name);

    /// <summary>Any library text that names settings (a message, a parameter's reason), each named by <paramref name="name"/>.</summary>
    public static string Render(string text, Func<string, string?, string> name) =>
        Escape(Marker().Replace(text, m => name(m.Groups[1].Value, m.Groups[2].Success ? m.Groups[2].Value : null)), markers: false);

    /// <summary>
    /// A name taken from a model or data file (an input, output, tensor, node, array key), quoted for a message:
    /// <c>'name'</c> with its control characters escaped (<see cref="Escape"/>).
    /// </summary>
    public static string Quote(string name) => "'" + Escape(name) + "'";

    /// <summary>
    /// Text from a model or data file made safe for a one-line message: tab, newline and carriage return become \t, \n,
    /// \r; other control characters (ESC, NUL, DEL, C1), invisible formatting characters (bidirectional overrides,
    /// zero-width marks), line and paragraph separators, lone surrogates and (with <paramref name="markers"/>) the
    /// characters that delimit a <see cref="Setting"/> become \uXXXX. Everything else, backslashes included, is kept.
    /// </summary>
    public static string Escape(string text, bool markers = true)
    {
        StringBuilder? sb = null;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            bool pair = char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]);
            if (pair || !NeedsEscape(c, markers))
            {
                sb?.Append(c);
                if (pair) sb?.Append(text[i + 1]);
                i += pair ? 1 : 0;
                continue;
            }
            sb ??= new StringBuilder(text.Length + 16).Append(text, 0, i);
            sb.Append(c switch { '\t' => "\\t", '\n' => "\\n", '\r' => "\\r", _ => $"\\u{(int)c:x4}" });
        }
        return sb?.ToString() ?? text;
    }

    /// <summary>Whether a character (not part of a surrogate pair) is written as an escape.</summary>
    static bool NeedsEscape(char c, bool markers) =>
        c < ' ' || c is >= '\u007f' and <= '\u009f'
        || (c >= '\u00a0' && ((markers && c is '\u2039' or '\u203a') || char.IsSurrogate(c)
            || CharUnicodeInfo.GetUnicodeCategory(c) is UnicodeCategory.Format or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator));

    /// <summary>The library's own naming: Frozen, Loss = ce-prob.</summary>
    public static string LibraryNames(string setting, string? value) => value is null ? setting : $"{setting} = {value}";

    public override string Message => Render(LibraryNames);

    [GeneratedRegex("\u2039([A-Za-z]+)(?:=([^\u203A]*))?\u203A")]
    private static partial Regex Marker();
}

/// <summary>
/// A setting out of range or inconsistent with the others; the message starts with the setting's name
/// (<see cref="UserError.Setting"/>), e.g. "Fraction must lie in (0, 1], got 2".
/// </summary>
public class SettingError(string setting, string message) : UserError(Setting(setting) + " " + message)
{
    public string SettingName => setting;
}
