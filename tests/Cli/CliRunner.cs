namespace OnnxUnlearn.Tests.Cli;

/// <summary>Runs the CLI as a user does: a separate process, returning exit code, stdout and stderr (<see cref="CliProcess"/>).</summary>
public static class CliRunner
{
    static readonly TimeSpan Limit = TimeSpan.FromMinutes(10);

    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var r = CliProcess.Run(Limit, null, args);
        if (r.TimedOut) throw new TimeoutException($"onnx-unlearn {string.Join(' ', args)} ran past {Limit}");
        return (r.Code!.Value, r.Out, r.Err);
    }
}
