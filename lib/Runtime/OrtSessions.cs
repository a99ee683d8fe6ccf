using Microsoft.ML.OnnxRuntime;

namespace OnnxUnlearn.Runtime;

public static class OrtSessions
{
    /// <summary>Creates a session, turning ONNX Runtime's load errors into a user-facing message.</summary>
    public static InferenceSession Create(byte[] model, SessionOptions options, string what)
    {
        try { return new InferenceSession(model, options); }
        catch (OnnxRuntimeException e)
        { throw new UserError($"ONNX Runtime cannot load the {what}: {FirstLine(e.Message)}"); }
    }

    /// <summary>Creates a session from a model file (ONNX Runtime resolves external data beside it).</summary>
    public static InferenceSession Create(string modelPath, SessionOptions options, string what)
    {
        try { return new InferenceSession(modelPath, options); }
        catch (OnnxRuntimeException e)
        { throw new UserError($"ONNX Runtime cannot load the {what}: {FirstLine(e.Message)}"); }
    }

    /// <summary>Default run options, shared: they carry no per-run state.</summary>
    static readonly RunOptions Shared = new();

    /// <summary>Runs a session; a failure (bad input shapes, a kernel error) becomes a user-facing message naming what ran.</summary>
    public static IDisposableReadOnlyCollection<OrtValue> Run(InferenceSession session, IReadOnlyCollection<string> inputNames,
        IReadOnlyCollection<OrtValue> inputs, IReadOnlyCollection<string> outputNames, string what)
    {
        try { return session.Run(Shared, inputNames, inputs, outputNames); }
        catch (OnnxRuntimeException e)
        { throw new UserError($"ONNX Runtime failed running the {what}: {FirstLine(e.Message)}"); }
    }

    public static SessionOptions Options(int threads = 1)
    {
        // ORT warnings (e.g. constant folding it skips) are not the user's business; errors still surface as exceptions.
        var o = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        if (threads > 0) { o.IntraOpNumThreads = threads; o.InterOpNumThreads = 1; }
        return o;
    }

    static string FirstLine(string s) => s.Split('\n')[0].Trim();
}
