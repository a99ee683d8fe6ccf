using System.Diagnostics;

namespace OnnxUnlearn.Tests.Cli;

/// <summary>How one CLI process ended: exit code (null: killed after the timeout), output, and its peak resident memory.</summary>
public sealed record CliResult(int? Code, string Out, string Err, long PeakRssKiB, TimeSpan Elapsed)
{
    public bool TimedOut => Code is null;
    /// <summary>Killed by a signal (.NET reports 128 + the signal) or aborted by the runtime: a crash, never a refusal.</summary>
    public bool Crashed => Code is { } c && (c > 128 || c < 0);
}

/// <summary>
/// Runs the CLI out of process like <see cref="CliRunner"/>, with a timeout (the process tree is killed), extra
/// environment variables and the peak resident set size (VmHWM, sampled while it runs).
/// </summary>
public static class CliProcess
{
    public static CliResult Run(TimeSpan timeout, IReadOnlyDictionary<string, string>? environment, params string[] args) =>
        Run(timeout, environment, null, args);

    /// <param name="addressSpaceKiB">A cap on the process's virtual memory (ulimit -v), so that a model asking for
    /// terabytes fails inside the process instead of exhausting the machine.</param>
    public static CliResult Run(TimeSpan timeout, IReadOnlyDictionary<string, string>? environment, long? addressSpaceKiB, params string[] args)
    {
        var clock = Stopwatch.StartNew();
        using var p = Start(environment, addressSpaceKiB, args);
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        long peak = 0;
        string status = $"/proc/{p.Id}/status";
        while (!p.WaitForExit(10))
        {
            peak = Math.Max(peak, PeakRss(status));
            if (clock.Elapsed > timeout)
            {
                try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                p.WaitForExit();
                return new CliResult(null, stdout.Result, stderr.Result, peak, clock.Elapsed);
            }
        }
        p.WaitForExit();
        return new CliResult(p.ExitCode, stdout.Result, stderr.Result, peak, clock.Elapsed);
    }

    /// <summary>Starts the CLI with its output redirected, for a test that acts on the process while it runs.</summary>
    public static Process Start(IReadOnlyDictionary<string, string>? environment, long? addressSpaceKiB, params string[] args)
    {
        var psi = new ProcessStartInfo(addressSpaceKiB is null ? "dotnet" : "/bin/sh") { RedirectStandardOutput = true, RedirectStandardError = true };
        if (addressSpaceKiB is { } cap)
            foreach (var a in new[] { "-c", $"ulimit -v {cap} && exec dotnet \"$@\"", "sh" }) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "onnx-unlearn.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        // Plain output: no colours or terminal-width tables from the child.
        psi.Environment["NO_COLOR"] = "1";
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        foreach (var (k, v) in environment ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        return Process.Start(psi)!;
    }

    static long PeakRss(string status)
    {
        try
        {
            foreach (var line in File.ReadLines(status))
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    return long.Parse(line["VmHWM:".Length..].Trim().Split(' ')[0]);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return 0;
    }
}
