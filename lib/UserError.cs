namespace OnnxUnlearn;

/// <summary>
/// A problem with the user's input (model, data, options). The CLI prints <see cref="Exception.Message"/>
/// as one line and exits with code 2; it never shows a stack trace for these.
/// Messages name the file, node or tensor involved and say how to fix it.
/// </summary>
public class UserError(string message, Exception? inner = null) : Exception(message, inner);
