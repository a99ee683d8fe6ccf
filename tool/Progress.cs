using OnnxUnlearn.Curvature;
using Spectre.Console;

namespace OnnxUnlearn.Cli;

/// <summary>Progress bars (what, how far, ETA) on a terminal; nothing when output is piped or under --quiet.</summary>
public static class Progress
{
    public static T Run<T>(Func<ProgressCallback, T> work)
    {
        if (!Cli.Interactive || Cli.Quiet || Console.IsErrorRedirected) return work((_, _, _) => { });
        T result = default!;
        AnsiConsole.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                var tasks = new Dictionary<string, ProgressTask>();
                result = work((what, done, total) =>
                {
                    if (!tasks.TryGetValue(what, out var task)) tasks[what] = task = ctx.AddTask(Markup.Escape(what), maxValue: Math.Max(1, total));
                    task.MaxValue = Math.Max(1, total);
                    task.Value = done;
                });
                foreach (var t in tasks.Values) t.StopTask();
            });
        return result;
    }
}
