using System.CommandLine;
using OnnxUnlearn.Cli.Reports;

namespace OnnxUnlearn.Cli.Commands;

/// <summary>The JSON report of <c>unlearn --report</c> as a document a person reads: Markdown (+ PNG figures) or one HTML file.</summary>
public static class ReportCommand
{
    public static Command Create()
    {
        var report = new Argument<string>("REPORT") { Description = "the JSON report written by unlearn --report" };
        var output = new Option<string>("--out") { Description = "R.md (Markdown, figures written next to it as R.selected.png and R.scores.png) or R.html (one self-contained file, figures embedded)", Required = true };
        var noPlots = new Option<bool>("--no-plots") { Description = "tables only, no figures" };
        var json = Cli.JsonFlag();
        var c = new Command("report", "Render an unlearn report (JSON) for a reviewer: outcome, models and digests, settings, the sets before and after, every step, the exposure, the selection per tensor and the scores' distribution, with figures.");
        c.Arguments.Add(report);
        foreach (Option o in new Option[] { output, noPlots, json }) c.Options.Add(o);
        c.SetAction(r => Cli.Guard(() =>
        {
            string path = r.GetValue(output)!;
            ReportWriter.Check(path);
            var document = ReportDocument.Load(r.GetValue(report)!);
            var blocks = document.Build(plots: !r.GetValue(noPlots), warn: w => Console.Error.WriteLine("warning: " + w));
            var written = ReportWriter.Write(blocks, path);
            if (r.GetValue(json)) Cli.WriteJson(new { written });
            else foreach (var w in written) Console.WriteLine("wrote " + w);
            return Cli.Ok;
        }));
        return c;
    }
}
