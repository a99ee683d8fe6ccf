using System.CommandLine;

namespace OnnxUnlearn.Cli;

/// <summary>
/// Where the secret and the audit key come from, so that neither has to be on the command line (where process lists
/// and shell histories keep it): a flag, a file, or an environment variable, in that order.
/// </summary>
public static class Secrets
{
    public const string SecretVariable = "ONNX_UNLEARN_SECRET", AuditKeyVariable = "ONNX_UNLEARN_AUDIT_KEY";

    public static Option<string?> SecretFile() => new("--secret-file") { Description = $"file holding the secret (UTF-8; one trailing newline ignored), instead of --secret; or set {SecretVariable}" };
    public static Option<string?> AuditKeyFile() => new("--audit-key-file") { Description = $"key for an HMAC-SHA256 of the secret and prefix in the report, so an auditor holding the key can verify them (or set {AuditKeyVariable}); without a key the report holds no digest of the secret" };

    /// <summary>The secret from --secret, --secret-file or the environment; null when none is given.</summary>
    public static string? Read(ParseResult r, Option<string?> secret, Option<string?> secretFile)
    {
        if (r.GetValue(secret) is { } text) return text;
        if (r.GetValue(secretFile) is { } path) return ReadFile(path, "--secret-file");
        return Environment.GetEnvironmentVariable(SecretVariable) is { Length: > 0 } fromEnv ? fromEnv : null;
    }

    /// <summary>The audit key's bytes from --audit-key-file or the environment; null when none is given.</summary>
    public static byte[]? AuditKey(ParseResult r, Option<string?> keyFile)
    {
        if (r.GetValue(keyFile) is { } path)
        {
            byte[] key;
            try { key = File.ReadAllBytes(path); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new UserError($"cannot read --audit-key-file '{path}': {e.Message}"); }
            // a key written by `echo` ends with a newline that is not part of it
            int n = key.Length;
            while (n > 0 && key[n - 1] is (byte)'\n' or (byte)'\r') n--;
            return n >= 16 ? key[..n] : throw new UserError($"--audit-key-file '{path}' holds {n} bytes; an HMAC key needs at least 16 (e.g. head -c 32 /dev/urandom > key)");
        }
        if (Environment.GetEnvironmentVariable(AuditKeyVariable) is { Length: > 0 } fromEnv)
            return fromEnv.Length >= 16 ? System.Text.Encoding.UTF8.GetBytes(fromEnv) : throw new UserError($"{AuditKeyVariable} holds {fromEnv.Length} characters; an HMAC key needs at least 16");
        return null;
    }

    static string ReadFile(string path, string flag)
    {
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new UserError($"cannot read {flag} '{path}': {e.Message}"); }
        if (text.EndsWith("\r\n")) text = text[..^2]; else if (text.EndsWith('\n')) text = text[..^1];
        return text.Length > 0 ? text : throw new UserError($"{flag} '{path}' is empty");
    }
}
