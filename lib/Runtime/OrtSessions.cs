using Microsoft.ML.OnnxRuntime;

namespace OnnxUnlearn.Runtime;

public static class OrtSessions
{
    /// <summary>
    /// Receives ONNX Runtime's own log lines (severity and message) at or above <see cref="LogLevel"/>. Null (the default):
    /// none are shown; ONNX Runtime's failures still surface as <see cref="UserError"/>s. Effective when set before the
    /// first session or tensor of the process (when this library creates ONNX Runtime's environment).
    /// </summary>
    public static Action<OrtLoggingLevel, string>? Log { get; set; }

    /// <summary>The least severity passed to <see cref="Log"/>; warnings by default.</summary>
    public static OrtLoggingLevel LogLevel { get; set; } = OrtLoggingLevel.ORT_LOGGING_LEVEL_WARNING;

    static readonly object Gate = new();
    static volatile bool initialized;
    // Kept in a static field: the native environment calls it for the life of the process.
    static readonly DOrtLoggingFunction Forward = (_, severity, _, _, _, message) =>
    {
        if (Log is { } log && severity >= LogLevel) log(severity, message);
    };

    /// <summary>
    /// Creates ONNX Runtime's process-wide environment with its log lines routed to <see cref="Log"/> (so none reach the
    /// console by themselves), once. Where something else created the environment first, its logging is turned down to
    /// fatal errors unless <see cref="Log"/> is set. Every session and tensor this library makes calls it first.
    /// </summary>
    public static void Initialize()
    {
        if (initialized) return;
        lock (Gate)
        {
            if (initialized) return;
            bool ours = false;
            if (!OrtEnv.IsCreated)
            {
                var options = new EnvironmentCreationOptions
                {
                    logId = "onnx-unlearn", logLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_WARNING, loggingFunction = Forward,
                };
                try { OrtEnv.CreateInstanceWithOptions(ref options); ours = true; }
                catch (OnnxRuntimeException) { } // created meanwhile by another thread's direct use of ONNX Runtime
            }
            if (!ours && Log is null) OrtEnv.Instance().EnvLogLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL;
            initialized = true;
        }
    }

    /// <summary>Creates a session, turning ONNX Runtime's load errors into a user-facing message.</summary>
    public static InferenceSession Create(byte[] model, SessionOptions options, string what)
    {
        Initialize();
        try { return new InferenceSession(model, options); }
        catch (OnnxRuntimeException e)
        { throw new UserError($"ONNX Runtime cannot load the {what}: {FirstLine(e.Message)}"); }
    }

    /// <summary>Creates a session from a model file (ONNX Runtime resolves external data beside it).</summary>
    public static InferenceSession Create(string modelPath, SessionOptions options, string what)
    {
        Initialize();
        try { return new InferenceSession(modelPath, options); }
        catch (OnnxRuntimeException e)
        { throw new UserError($"ONNX Runtime cannot load the {what}: {FirstLine(e.Message)}"); }
    }

    /// <summary>Default run options, shared: they carry no per-run state (one set logs nothing, the other to <see cref="Log"/>).</summary>
    static RunOptions? quiet, logged;

    /// <summary>Runs a session; a failure (bad input shapes, a kernel error) becomes a user-facing message naming what ran.</summary>
    public static IDisposableReadOnlyCollection<OrtValue> Run(InferenceSession session, IReadOnlyCollection<string> inputNames,
        IReadOnlyCollection<OrtValue> inputs, IReadOnlyCollection<string> outputNames, string what)
    {
        Initialize();
        var options = Log is null
            ? LazyInitializer.EnsureInitialized(ref quiet, () => new RunOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL })
            : LazyInitializer.EnsureInitialized(ref logged, () => new RunOptions { LogSeverityLevel = LogLevel });
        try { return session.Run(options, inputNames, inputs, outputNames); }
        catch (OnnxRuntimeException e)
        { throw new UserError($"ONNX Runtime failed running the {what}: {FirstLine(e.Message)}"); }
    }

    /// <summary>Session options: full graph optimisation, <paramref name="threads"/> intra-op threads (0 = all cores).</summary>
    public static SessionOptions Options(int threads = 1) => Options(GraphOptimizationLevel.ORT_ENABLE_ALL, threads);

    /// <summary>Session options whose log lines go to <see cref="Log"/> (warnings and above), or are not made at all.</summary>
    public static SessionOptions Options(GraphOptimizationLevel optimization, int threads)
    {
        Initialize();
        var o = new SessionOptions
        {
            GraphOptimizationLevel = optimization,
            // Severity 4 (fatal) when nobody listens: ONNX Runtime then does not even format its warnings and errors.
            LogSeverityLevel = Log is null ? OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL : LogLevel,
        };
        if (threads > 0) { o.IntraOpNumThreads = threads; o.InterOpNumThreads = 1; }
        return o;
    }

    /// <summary>The first line of ONNX Runtime's message, with the control characters of model-provided names escaped.</summary>
    static string FirstLine(string s) => UserError.Escape(s.Split('\n')[0].Trim());
}
