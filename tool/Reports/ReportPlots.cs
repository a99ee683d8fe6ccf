using ScottPlot;
using SkiaSharp;

namespace OnnxUnlearn.Cli.Reports;

/// <summary>
/// The report's figures, drawn headless with ScottPlot (SkiaSharp, no fontconfig) as PNG bytes. Never sets
/// <c>LabelStyle.RTLSupport</c>: that is ScottPlot's only use of HarfBuzz, whose natives the tool does not ship.
/// </summary>
public static class ReportPlots
{
    /// <summary>At most this many tensors in the selection chart (the largest values; the table lists them all).</summary>
    public const int MaxBars = 40;
    const int Width = 900;

    static readonly Color Bar = Color.FromHex("#4c72b0"), Selected = Color.FromHex("#dd8452"), Threshold = Color.FromHex("#c44e52");

    /// <summary>Whether any font was found: without one the figures are drawn without text (the tables carry the numbers).</summary>
    public static bool HasFont => Font() is not null;

    /// <summary>Horizontal bars, one per tensor, first tensor on top: the share (0–1) of its elements selected, or the selected count.</summary>
    public static byte[] SelectedPerTensor(IReadOnlyList<(string Name, double Value)> tensors, bool share)
    {
        var plot = NewPlot();
        int n = tensors.Count;
        var bars = tensors.Select((t, i) => new ScottPlot.Bar
        {
            Position = n - 1 - i, Value = t.Value, Size = 0.7, FillColor = Bar, LineWidth = 0,
            Label = share ? t.Value.ToString("0.##%", ReportDocument.Culture) : t.Value.ToString("N0", ReportDocument.Culture),
        }).ToList();
        var plottable = plot.Add.Bars(bars);
        plottable.Horizontal = true;
        plottable.ValueLabelStyle.FontSize = 11;
        plot.Axes.Left.SetTicks(Enumerable.Range(0, n).Select(i => (double)(n - 1 - i)).ToArray(), tensors.Select(t => t.Name).ToArray());
        plot.Axes.Left.MajorTickStyle.Length = 0;
        double max = Math.Max(tensors.Count == 0 ? 0 : tensors.Max(t => t.Value), share ? 0.01 : 1);
        plot.Axes.SetLimitsX(0, max * 1.15);
        plot.Axes.SetLimitsY(-0.6, n - 0.4);
        if (share) plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { LabelFormatter = v => v.ToString("0.##%", ReportDocument.Culture) };
        plot.Title(share ? "share of each tensor's elements selected" : "elements selected per tensor");
        plot.XLabel(share ? "selected / elements" : "selected elements");
        plot.Grid.YAxisStyle.MajorLineStyle.Width = 0;
        return plot.GetImageBytes(Width, Math.Max(220, 90 + 26 * n), ImageFormat.Png);
    }

    /// <summary>
    /// A histogram of per-element scores: K bars between K+1 ascending <paramref name="edges"/>. The count axis is
    /// logarithmic when the counts span more than 100×, the score axis when all edges are positive and span 1000× or more.
    /// The threshold (where selection starts) is a vertical line; bins holding selected elements are coloured.
    /// </summary>
    public static byte[] ScoreHistogram(string score, double[] edges, double[] counts, double? threshold, bool smallest)
    {
        var plot = NewPlot();
        bool logX = LogScores(edges);
        var positive = counts.Where(c => c > 0).ToArray();
        bool logY = LogCounts(counts);
        double X(double v) => logX ? Math.Log10(v) : v;
        double floor = logY ? Math.Floor(Math.Log10(positive.Min())) - 0.15 : 0;
        var bars = new List<ScottPlot.Bar>();
        for (int i = 0; i < counts.Length; i++)
        {
            if (counts[i] <= 0) continue;
            double lo = X(edges[i]), hi = X(edges[i + 1]);
            // a bin holding selected elements (wholly or partly on the selected side of the threshold)
            bool chosen = threshold is { } t && (smallest ? edges[i] <= t : edges[i + 1] > t);
            bars.Add(new ScottPlot.Bar
            {
                Position = (lo + hi) / 2, Size = hi - lo, Value = logY ? Math.Log10(counts[i]) : counts[i], ValueBase = floor,
                FillColor = chosen ? Selected : Bar, LineColor = Colors.White, LineWidth = counts.Length > 150 ? 0 : 0.5f,
            });
        }
        plot.Add.Bars(bars);
        if (logY)
        {
            plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
            {
                MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(), IntegerTicksOnly = true,
                LabelFormatter = y => Math.Pow(10, y).ToString("N0", ReportDocument.Culture),
            };
            plot.Axes.SetLimitsY(floor, Math.Log10(positive.Max()) + 0.15);
        }
        else plot.Axes.SetLimitsY(0, Math.Max(1, counts.Max()) * 1.08);
        if (logX)
            plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
            {
                MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(), IntegerTicksOnly = true,
                LabelFormatter = x => Math.Abs(x - Math.Round(x)) < 1e-9 && Math.Abs(x) >= 3 ? "1e" + Math.Round(x).ToString(ReportDocument.Culture) : Math.Pow(10, x).ToString("G3", ReportDocument.Culture),
            };
        double left = X(edges[0]), right = X(edges[^1]);
        if (threshold is { } th && (!logX || th > 0))
        {
            var line = plot.Add.VerticalLine(X(th), 2, Threshold);
            line.LinePattern = LinePattern.Dashed;
            line.LegendText = "threshold " + th.ToString("G4", ReportDocument.Culture);
            left = Math.Min(left, X(th)); right = Math.Max(right, X(th));
            plot.ShowLegend(Alignment.UpperRight);
        }
        double pad = (right - left) * 0.02;
        plot.Axes.SetLimitsX(left - pad, right + pad);
        plot.Title($"distribution of the {score} scores");
        plot.XLabel(score + " score" + (logX ? " (log scale)" : ""));
        plot.YLabel("elements" + (logY ? " (log scale)" : ""));
        return plot.GetImageBytes(Width, 450, ImageFormat.Png);
    }

    /// <summary>The count axis is logarithmic when the nonzero counts span more than 100×.</summary>
    public static bool LogCounts(double[] counts)
    {
        var positive = counts.Where(c => c > 0).ToArray();
        return positive.Length > 0 && positive.Max() > 100 * positive.Min();
    }

    /// <summary>The score axis is logarithmic when every edge is positive and they span 1000× or more.</summary>
    public static bool LogScores(double[] edges) => edges[0] > 0 && edges[^1] >= 1000 * edges[0];

    static Plot NewPlot()
    {
        var plot = new Plot();
        if (Font() is { } font) plot.Font.Set(font);
        plot.Axes.Title.Label.FontSize = 15;
        return plot;
    }

    static string? font;
    static bool fontResolved;
    static readonly object fontLock = new();

    /// <summary>
    /// A sans-serif family Skia can draw with. The bundled Skia reads fonts without fontconfig; where it lists none, the
    /// usual font folders are searched for a TrueType file.
    /// </summary>
    static string? Font()
    {
        lock (fontLock)
        {
            if (fontResolved) return font;
            fontResolved = true;
            string[] preferred = ["DejaVu Sans", "Liberation Sans", "Noto Sans", "Arial", "Helvetica", "Segoe UI", "Open Sans", "FreeSans"];
            var families = SKFontManager.Default.FontFamilies.Where(f => !string.IsNullOrWhiteSpace(f)).ToArray();
            font = preferred.FirstOrDefault(p => families.Contains(p, StringComparer.OrdinalIgnoreCase))
                ?? families.FirstOrDefault(f => f.Contains("Sans", StringComparison.OrdinalIgnoreCase) && !f.Contains("Mono", StringComparison.OrdinalIgnoreCase))
                ?? families.FirstOrDefault();
            if (font is not null) return font;
            var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
            string[] folders = ["/usr/share/fonts", "/usr/local/share/fonts", Path.Combine(home, ".local/share/fonts"), Path.Combine(home, ".fonts"),
                "/System/Library/Fonts", "/Library/Fonts", Environment.GetFolderPath(Environment.SpecialFolder.Fonts)];
            var files = folders.Where(f => f.Length > 0 && Directory.Exists(f))
                .SelectMany(f => { try { return Directory.EnumerateFiles(f, "*.ttf", SearchOption.AllDirectories).Take(500).ToArray(); } catch (IOException) { return []; } catch (UnauthorizedAccessException) { return []; } })
                .OrderBy(f => Path.GetFileName(f).Contains("Sans", StringComparison.OrdinalIgnoreCase) && !f.Contains("Bold", StringComparison.OrdinalIgnoreCase) ? 0 : 1)
                .ToArray();
            foreach (var file in files)
            {
                using var typeface = SKTypeface.FromFile(file);
                if (typeface is null) continue;
                Fonts.AddFontFile(typeface.FamilyName, file);
                return font = typeface.FamilyName;
            }
            return null;
        }
    }
}
