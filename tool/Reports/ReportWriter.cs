using System.Net;
using System.Text;

namespace OnnxUnlearn.Cli.Reports;

/// <summary>
/// Writes a document's blocks as Markdown (figures as PNG files next to it: R.md → R.selected.png, R.scores.png) or as
/// one self-contained HTML file (inline CSS, figures embedded as base64 PNG, no scripts). Every file is written atomically.
/// </summary>
public static class ReportWriter
{
    public enum Format { Markdown, Html }

    /// <summary>The format an output path asks for by its extension (.md/.markdown or .html/.htm).</summary>
    public static Format FormatOf(string path) => Path.GetExtension(path).ToLowerInvariant() switch
    {
        ".md" or ".markdown" => Format.Markdown,
        ".html" or ".htm" => Format.Html,
        var e => throw new UserError($"--out must end in .md (Markdown with PNG files next to it) or .html (one self-contained file), got '{(e.Length == 0 ? path : e)}'"),
    };

    /// <summary>The file a Markdown document's figure is written to: R.md, "selected" → R.selected.png in the same folder.</summary>
    public static string FigurePath(string markdownPath, string key) =>
        Path.Combine(Path.GetDirectoryName(markdownPath) ?? "", Path.GetFileNameWithoutExtension(markdownPath) + "." + key + ".png");

    /// <summary>The format of an output path whose folder exists; otherwise a <see cref="UserError"/>, before anything is rendered.</summary>
    public static Format Check(string path)
    {
        var format = FormatOf(path);
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        if (!Directory.Exists(dir)) throw new UserError($"cannot write '{path}': folder '{dir}' does not exist");
        return format;
    }

    /// <summary>Writes the document (and, for Markdown, its figures first); returns every path written, the document last.</summary>
    public static IReadOnlyList<string> Write(IReadOnlyList<Block> blocks, string path)
    {
        var format = Check(path);
        var written = new List<string>();
        string text;
        if (format == Format.Markdown)
        {
            foreach (var f in blocks.OfType<Figure>())
            {
                var png = FigurePath(path, f.Key);
                AtomicFile.Write(png, s => s.Write(f.Png));
                written.Add(png);
            }
            text = Markdown(blocks, f => Uri.EscapeDataString(Path.GetFileName(FigurePath(path, f.Key))));
        }
        else text = Html(blocks);
        AtomicFile.Write(path, s => s.Write(new UTF8Encoding(false).GetBytes(text)));
        written.Add(path);
        return written;
    }

    // ---- Markdown ----

    public static string Markdown(IReadOnlyList<Block> blocks, Func<Figure, string> link)
    {
        var sb = new StringBuilder();
        foreach (var b in blocks)
        {
            switch (b)
            {
                case Heading h: sb.Append('#', h.Level).Append(' ').AppendLine(Md(h.Text)); break;
                case Paragraph p: sb.AppendLine((p.Lead is null ? "" : "**" + Md(p.Lead) + "** ") + Md(p.Text)); break;
                case Table t:
                    sb.AppendLine("| " + string.Join(" | ", t.Columns.Select(c => c.Length == 0 ? " " : Md(c))) + " |");
                    sb.AppendLine("|" + string.Join("|", t.Columns.Select((_, i) => t.Numeric?.Contains(i) == true ? "---:" : "---")) + "|");
                    foreach (var row in t.Rows) sb.AppendLine("| " + string.Join(" | ", row.Select(MdCell)) + " |");
                    break;
                case Figure f:
                    sb.AppendLine($"![{Md(f.Caption)}]({link(f)})").AppendLine().AppendLine("*" + Md(f.Caption) + "*");
                    break;
            }
            sb.AppendLine();
        }
        return sb.ToString();
    }

    static string Md(string s)
    {
        var sb = new StringBuilder(s.Length);
        foreach (var ch in s)
        {
            if (ch is '\r' or '\n') { sb.Append(' '); continue; }
            if (ch is '\\' or '`' or '*' or '_' or '[' or ']' or '<' or '>' or '|' or '#') sb.Append('\\');
            sb.Append(ch);
        }
        return sb.ToString();
    }

    static string MdCell(Cell c)
    {
        if (!c.Code) return c.Text.Length == 0 ? " " : Md(c.Text);
        var text = c.Text.Replace("\r", " ").Replace("\n", " ").Replace("|", "\\|");
        return text.Contains('`') ? "`` " + text + " ``" : "`" + text + "`";
    }

    // ---- HTML ----

    const string Css = """
        body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1f2328;background:#fff;margin:0}
        main{max-width:980px;margin:0 auto;padding:24px 28px 48px}
        h1{font-size:1.6em;margin:.2em 0 .6em}h2{font-size:1.25em;margin:1.6em 0 .5em;padding-bottom:.2em;border-bottom:1px solid #d8dee4}
        table{border-collapse:collapse;margin:.6em 0 1em;font-variant-numeric:tabular-nums}
        th,td{border:1px solid #d0d7de;padding:4px 10px;text-align:left;vertical-align:top}th{background:#f6f8fa}
        td.num,th.num{text-align:right}tr:nth-child(even) td{background:#fbfcfd}
        code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;word-break:break-all}
        figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #d0d7de}figcaption{color:#59636e;font-size:.9em}
        .lead{font-weight:600}
        """;

    public static string Html(IReadOnlyList<Block> blocks)
    {
        var sb = new StringBuilder();
        string title = blocks.OfType<Heading>().FirstOrDefault()?.Text ?? "Unlearning report";
        sb.AppendLine("<!DOCTYPE html>").AppendLine("<html lang=\"en\">").AppendLine("<head>").AppendLine("<meta charset=\"utf-8\">")
          .AppendLine("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
          .AppendLine($"<title>{E(title)}</title>").AppendLine("<style>").Append(Css).AppendLine().AppendLine("</style>")
          .AppendLine("</head>").AppendLine("<body>").AppendLine("<main>");
        foreach (var b in blocks)
        {
            switch (b)
            {
                case Heading h: sb.AppendLine($"<h{h.Level}>{E(h.Text)}</h{h.Level}>"); break;
                case Paragraph p: sb.AppendLine("<p>" + (p.Lead is null ? "" : $"<span class=\"lead\">{E(p.Lead)}</span> ") + E(p.Text) + "</p>"); break;
                case Table t:
                    sb.AppendLine("<table>");
                    if (t.Columns.Any(c => c.Length > 0))
                        sb.AppendLine("<thead><tr>" + string.Concat(t.Columns.Select((c, i) => $"<th{Num(t, i)}>{E(c)}</th>")) + "</tr></thead>");
                    sb.AppendLine("<tbody>");
                    foreach (var row in t.Rows)
                        sb.AppendLine("<tr>" + string.Concat(row.Select((c, i) => $"<td{Num(t, i)}>{(c.Code ? "<code>" + E(c.Text) + "</code>" : E(c.Text))}</td>")) + "</tr>");
                    sb.AppendLine("</tbody>").AppendLine("</table>");
                    break;
                case Figure f:
                    var (w, hgt) = PngSize(f.Png);
                    sb.AppendLine($"<figure><img alt=\"{E(f.Caption)}\" width=\"{w}\" height=\"{hgt}\" src=\"data:image/png;base64,{Convert.ToBase64String(f.Png)}\">")
                      .AppendLine($"<figcaption>{E(f.Caption)}</figcaption></figure>");
                    break;
            }
        }
        sb.AppendLine("</main>").AppendLine("</body>").AppendLine("</html>");
        return sb.ToString();
    }

    static string Num(Table t, int column) => t.Numeric?.Contains(column) == true ? " class=\"num\"" : "";

    static string E(string s) => WebUtility.HtmlEncode(s);

    /// <summary>Width and height from a PNG's IHDR chunk.</summary>
    public static (int Width, int Height) PngSize(byte[] png) =>
        png.Length >= 24 ? (System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(16)), System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(20))) : (0, 0);
}
