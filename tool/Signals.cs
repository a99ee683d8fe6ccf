using System.Runtime.InteropServices;

namespace OnnxUnlearn.Cli;

/// <summary>
/// On SIGINT or SIGTERM (Ctrl-C, kill), removes the temporary files of a write in progress before the process ends
/// (<see cref="AtomicFile.CancelAll"/>); the signal's default action then ends it as usual.
/// </summary>
public static class Signals
{
    static readonly List<PosixSignalRegistration> registrations = [];

    public static void CleanUpTempFilesOnExit()
    {
        foreach (var signal in new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM })
        {
            try { registrations.Add(PosixSignalRegistration.Create(signal, _ => AtomicFile.CancelAll())); }
            catch (PlatformNotSupportedException) { } // no signals here: exceptions still clean up
        }
    }
}
