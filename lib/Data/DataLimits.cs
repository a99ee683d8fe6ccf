namespace OnnxUnlearn.Data;

/// <summary>
/// How much array data a file may declare. The sizes in a file's headers (an .npy header's shape × dtype, each .npz
/// member's) are checked against this before any data is read or decompressed, so a damaged or hostile file (a header
/// claiming 16 GB, a 1 MB archive declaring 1 GiB) is refused with a message instead of exhausting memory.
/// </summary>
public static class DataLimits
{
    /// <summary>Most bytes of array data one file (an .npy, or all members of an .npz together) may declare; 8 GiB by default.</summary>
    public static long MaxBytes { get; set; } = 8L << 30;

    /// <summary>
    /// The bytes a file may declare now: <see cref="MaxBytes"/>, or the memory still available to this process if that is
    /// less (the machine's, a container's limit, or <c>DOTNET_GCHeapHardLimit</c>).
    /// </summary>
    public static long Available => Math.Min(MaxBytes, AvailableMemory);

    static long AvailableMemory => Math.Max(0, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes - GC.GetTotalMemory(forceFullCollection: false));

    /// <summary>Refuses <paramref name="bytes"/> of declared data (of <paramref name="what"/>) beyond <see cref="Available"/>.</summary>
    internal static void Check(long bytes, string name, string what)
    {
        if (bytes > MaxBytes)
            throw new UserError($"{name}: {what} would take {Format(bytes)}, more than the {Format(MaxBytes)} a data file may hold; " +
                "the file is damaged, or split the data into several files.");
        long memory = AvailableMemory;
        if (bytes > memory)
            throw new UserError($"{name}: {what} would take {Format(bytes)}, but only {Format(memory)} of memory is available; " +
                "the file is damaged, or split the data into several files, or run where more memory is available.");
    }

    /// <summary>A byte count for messages: "1.5 GiB (1610612736 bytes)".</summary>
    internal static string Format(long bytes)
    {
        string[] units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        double v = bytes;
        int u = 0;
        while (v >= 1024 && u < units.Length - 1) { v /= 1024; u++; }
        return u == 0 ? $"{bytes} bytes" : $"{v:0.#} {units[u]} ({bytes} bytes)";
    }
}
