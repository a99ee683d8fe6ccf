namespace OnnxUnlearn;

/// <summary>
/// A problem with the user's input (model, data, settings). Front ends show <see cref="Exception.Message"/> as one line
/// (the CLI exits with code 2), never a stack trace. Messages name the file, node, tensor or input involved and say how
/// to fix it; they do not name command-line flags, which only the front end knows.
/// </summary>
public class UserError(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// A setting out of range or inconsistent with the others. <see cref="Setting"/> is its name in the library's option
/// records (<c>Probes</c>, <c>Fraction</c>, <c>Output</c>, …); the CLI turns it into the flag its users typed.
/// </summary>
public class SettingError(string setting, string message) : UserError(message)
{
    public string Setting => setting;
}
