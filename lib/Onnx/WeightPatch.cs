using System.Buffers.Binary;

namespace OnnxUnlearn.Onnx;

/// <summary>
/// New values for one parameter. <paramref name="Indices"/> null: <paramref name="Values"/> replaces the whole
/// tensor. Otherwise Indices[i] (flat, C order) gets Values[i].
/// </summary>
public sealed record TensorPatch(long[]? Indices, float[] Values);

/// <summary>What patching one parameter did. Elements whose stored bytes already equal the new value are not "changed".</summary>
public sealed record TensorPatchResult(string Name, string File, long ElementsWritten, long ElementsChanged, long BytesChanged);

public sealed record PatchSummary(string OutputPath, IReadOnlyList<TensorPatchResult> Tensors)
{
    public long ElementsChanged => Tensors.Sum(t => t.ElementsChanged);
    public long BytesChanged => Tensors.Sum(t => t.BytesChanged);
}

/// <summary>
/// Surgical write-back: overwrites parameter values in a copy of the model's bytes without re-serializing it,
/// so every byte outside the changed values (field order, unknown fields, metadata, padding) stays identical.
/// </summary>
public static class WeightPatch
{
    /// <summary>Window for read-modify-write of a file; bounds memory for huge tensors and sparse patches.</summary>
    const int Window = 1 << 20;

    /// <summary>Byte locations of every patchable parameter, by name. <paramref name="modelName"/> only labels errors.</summary>
    public static IReadOnlyDictionary<string, ValueLocation> Locate(
        ReadOnlySpan<byte> modelBytes, string modelFolder, string modelName = "(in-memory model)", ExternalDataPolicy? policy = null) =>
        WireLayout.Read(modelBytes, modelFolder, modelName, policy).Parameters;

    /// <summary>
    /// Writes <paramref name="outputPath"/> = <paramref name="inputPath"/> with <paramref name="patches"/> applied, plus a
    /// copy of each external data file at the same relative location next to it. Every file is written to a temporary
    /// name and renamed into place, so no reader sees a half-written file; temporary files never outlive a failure.
    /// <paramref name="inPlace"/> allows overwriting the input model and its data files. An existing data file in the output
    /// folder is overwritten only when it is the output model's own (the model now at <paramref name="outputPath"/> refers to
    /// it and no other model in that folder does). The input is read under <paramref name="policy"/>.
    /// </summary>
    public static PatchSummary Write(string inputPath, string outputPath, IReadOnlyDictionary<string, TensorPatch> patches,
        bool inPlace = false, ExternalDataPolicy? policy = null)
    {
        var (output, model, plans, copies) = Prepare(inputPath, outputPath, patches, inPlace, policy);
        var outputFolder = Path.GetDirectoryName(output)!;

        var results = new List<TensorPatchResult>();
        var temps = new List<AtomicFile.Temp>();
        var writing = output;
        try
        {
            // The model is patched in memory first: its errors (varint widths) surface before any data file is copied.
            using (var stream = new MemoryStream(model, writable: true))
                results.AddRange(plans.Where(p => p.Location.DataFile is null).Select(p => Apply(p, stream, output)));

            foreach (var (source, target, filePlans) in copies)
            {
                writing = target;
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                var temp = AtomicFile.Temp.Create(target, bufferSize: 0);
                temps.Add(temp);
                // Copied through the temporary file's own handle: if a signal handler deletes the name, nothing is left behind.
                using (var from = OpenSource(source))
                    from.CopyTo(temp.Stream, Window);
                results.AddRange(filePlans.Select(p => Apply(p, temp.Stream, target)));
            }

            writing = output;
            Directory.CreateDirectory(outputFolder);
            var modelTemp = AtomicFile.Temp.Create(output);
            temps.Add(modelTemp);
            modelTemp.Stream.Write(model);

            // Data files before the model, so the new model never points at data that is not there yet.
            foreach (var temp in temps)
            {
                writing = temp.Target;
                temp.Commit();
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UserError($"cannot write '{writing}': {e.Message.TrimEnd('.', ' ')}; check that folder '{Path.GetDirectoryName(writing)}' is writable and has free space, " +
                                "or write the output to another folder");
        }
        finally
        {
            // Committed temps no longer exist, so this only cleans up after a failure.
            foreach (var temp in temps) temp.Dispose();
        }
        return new PatchSummary(output, results.OrderBy(r => r.Name, StringComparer.Ordinal).ToList());
    }

    /// <summary>
    /// Checks, writing nothing, that <see cref="Write"/> could write <paramref name="outputPath"/> from
    /// <paramref name="inputPath"/>: the input's tensors and external data, the output folder, and that no file there which
    /// the output does not own would be overwritten. A long job checks before it starts.
    /// </summary>
    public static void CheckOutput(string inputPath, string outputPath, bool inPlace = false, ExternalDataPolicy? policy = null) =>
        Prepare(inputPath, outputPath, new Dictionary<string, TensorPatch>(), inPlace, policy);

    static (string Output, byte[] Model, List<PlannedPatch> Plans, List<(string Source, string Target, List<PlannedPatch> Plans)> Copies) Prepare(
        string inputPath, string outputPath, IReadOnlyDictionary<string, TensorPatch> patches, bool inPlace, ExternalDataPolicy? policy)
    {
        var input = Path.GetFullPath(inputPath);
        var output = Path.GetFullPath(outputPath);
        if (!File.Exists(input)) throw new UserError($"model file {inputPath} does not exist.");
        if (Directory.Exists(output)) throw new UserError($"output {outputPath} is a folder; give the path of the model file to write.");
        if (!inPlace && SameFile(input, output))
            throw new UserError($"refusing to overwrite the input model {inputPath}; choose a different output path " +
                                "or request an in-place write.");
        var inputFolder = Path.GetDirectoryName(input)!;
        var outputFolder = Path.GetDirectoryName(output)!;

        var model = ReadModel(input, inputPath);
        var layout = WireLayout.Read(model, inputFolder, inputPath, policy);
        var plans = Plan(layout, patches, inputPath);
        CheckFolder(outputFolder, outputPath);

        var copies = new List<(string Source, string Target, List<PlannedPatch> Plans)>();
        var owner = new Lazy<OutputFolder>(() => OutputFolder.Scan(outputFolder, output));
        foreach (var dataFile in layout.DataFiles)
        {
            var source = Path.Combine(inputFolder, dataFile);
            var target = Path.GetFullPath(Path.Combine(outputFolder, dataFile));
            var filePlans = plans.Where(p => p.Location.DataFile == dataFile).ToList();
            if (string.Equals(target, output, OperatingSystem.IsWindows() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal))
                throw new UserError($"model file {inputPath} keeps tensor data in '{dataFile}', the name of the output model {outputPath}; " +
                                    "give the output model another name.");
            if (SameFile(source, target))
            {
                if (!inPlace)
                    throw new UserError($"writing {outputPath} would overwrite the input's external data file {source}; " +
                                        "write the output to another folder or request an in-place write.");
                if (filePlans.Count == 0) continue; // in place and untouched: the existing file is already right
            }
            else CheckTarget(target, dataFile, outputFolder, outputPath, owner);
            copies.Add((source, target, filePlans));
        }
        return (output, model, plans, copies);
    }

    static byte[] ReadModel(string path, string name)
    {
        try { return File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new UserError($"cannot read model file '{name}': {e.Message}"); }
    }

    static FileStream OpenSource(string path)
    {
        try { return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, Window); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new UserError($"cannot read external data file '{path}': {e.Message}"); }
    }

    /// <summary>The output folder, or its nearest existing ancestor, must be a folder (not a file).</summary>
    static void CheckFolder(string folder, string outputPath)
    {
        for (var dir = folder; dir is not null; dir = Path.GetDirectoryName(dir))
        {
            if (Directory.Exists(dir)) return;
            if (File.Exists(dir))
                throw new UserError($"cannot write {outputPath}: '{dir}' is a file, not a folder; choose an output path in a folder.");
        }
    }

    /// <summary>
    /// A data file the output would write: its folder must not lead outside the output folder through a symlink, and an
    /// existing file there is overwritten only when the output model owns it.
    /// </summary>
    static void CheckTarget(string target, string dataFile, string outputFolder, string outputPath, Lazy<OutputFolder> owner)
    {
        var realFolder = ExternalData.RealPath(outputFolder);
        var realParent = ExternalData.RealPath(Path.GetDirectoryName(target)!);
        if (realParent != realFolder && !ExternalData.IsInside(realParent, realFolder))
            throw new UserError($"writing {outputPath} would write its data file '{dataFile}' through a symlink to '{realParent}', outside the output folder " +
                                $"'{outputFolder}'; write the output to another folder.");
        if (Directory.Exists(target))
            throw new UserError($"writing {outputPath} needs to write its data file '{target}', but a folder of that name exists there; write the output to another folder.");
        var info = new FileInfo(target);
        if (!info.Exists && info.LinkTarget is null) return;
        var o = owner.Value;
        if (o.Users.GetValueOrDefault(dataFile) is { } other)
            throw new UserError($"writing {outputPath} would overwrite '{target}', the external data of the model {other} in that folder; " +
                                "write the output to another folder (its data files keep the input's names).");
        if (!o.Own.Contains(dataFile))
            throw new UserError($"writing {outputPath} would overwrite '{target}', which exists and is not the data file of an earlier {Path.GetFileName(outputPath)}; " +
                                "write the output to another folder, or move that file away first.");
    }

    /// <summary>Who in an output folder refers to which data file: the output model as it is now, and every other .onnx file.</summary>
    sealed record OutputFolder(HashSet<string> Own, Dictionary<string, string> Users)
    {
        public static OutputFolder Scan(string folder, string output)
        {
            var own = new HashSet<string>(References(output, folder) ?? [], StringComparer.Ordinal);
            var users = new Dictionary<string, string>(StringComparer.Ordinal);
            if (Directory.Exists(folder))
                foreach (var model in Directory.EnumerateFiles(folder, "*.onnx", new EnumerationOptions { MatchCasing = MatchCasing.CaseInsensitive }))
                {
                    if (Path.GetFullPath(model) == output) continue;
                    foreach (var file in References(model, folder) ?? []) users.TryAdd(file, Path.GetFileName(model));
                }
            return new OutputFolder(own, users);
        }

        /// <summary>The data files a model refers to; null when it is absent, unreadable, too large or not a model.</summary>
        static IReadOnlyList<string>? References(string path, string folder)
        {
            try
            {
                var info = new FileInfo(path);
                if (!info.Exists || info.Length > int.MaxValue) return null;
                return WireLayout.References(File.ReadAllBytes(path), folder, path);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or UserError) { return null; }
        }
    }

    /// <summary>
    /// What <see cref="Write"/> would change, without writing anything: the same plan, each patched element encoded in
    /// its stored format and compared with the bytes there (the model file and its external data files, read only). An
    /// update below one step of the stored format (float16, bfloat16, an int8 scale) changes no element.
    /// </summary>
    public static PatchSummary Measure(string inputPath, IReadOnlyDictionary<string, TensorPatch> patches, ExternalDataPolicy? policy = null)
    {
        var input = Path.GetFullPath(inputPath);
        if (!File.Exists(input)) throw new UserError($"model file {inputPath} does not exist.");
        var folder = Path.GetDirectoryName(input)!;
        var model = ReadModel(input, inputPath);
        var layout = WireLayout.Read(model, folder, inputPath, policy);
        var plans = Plan(layout, patches, inputPath);
        var results = new List<TensorPatchResult>();
        using (var stream = new MemoryStream(model, writable: false))
            results.AddRange(plans.Where(p => p.Location.DataFile is null).Select(p => Apply(p, stream, input, write: false)));
        foreach (var group in plans.Where(p => p.Location.DataFile is not null).GroupBy(p => p.Location.DataFile!))
        {
            var path = Path.Combine(folder, group.Key);
            try
            {
                using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0);
                results.AddRange(group.Select(p => Apply(p, stream, path, write: false)));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            { throw new UserError($"cannot read external data file '{path}': {e.Message}"); }
        }
        return new PatchSummary(input, results.OrderBy(r => r.Name, StringComparer.Ordinal).ToList());
    }

    /// <summary>
    /// The bytes of a model held in memory with <paramref name="patches"/> applied, by the same plan as
    /// <see cref="Write"/>: every byte outside the changed values stays identical. The input array is not modified. Its
    /// weights must be embedded (a patch of a tensor stored in an external data file is refused: write files instead).
    /// </summary>
    public static (byte[] Model, PatchSummary Summary) Apply(byte[] model, IReadOnlyDictionary<string, TensorPatch> patches, string modelName = "(in-memory model)")
    {
        var layout = WireLayout.Read(model, Directory.GetCurrentDirectory(), modelName);
        var plans = Plan(layout, patches, modelName);
        if (plans.FirstOrDefault(p => p.Location.DataFile is not null) is { } external)
            throw new UserError($"{modelName}: parameter '{external.Location.Name}' is stored in the external data file '{external.Location.DataFile}'; patch a model with external data on disk (WeightPatch.Write)");
        var copy = (byte[])model.Clone();
        using var stream = new MemoryStream(copy, writable: true);
        var results = plans.Select(p => Apply(p, stream, modelName)).OrderBy(r => r.Name, StringComparer.Ordinal).ToList();
        return (copy, new PatchSummary(modelName, results));
    }

    /// <summary>A validated patch: indices sorted ascending (so byte offsets ascend) with values permuted alongside.</summary>
    sealed record PlannedPatch(ValueLocation Location, long[]? Indices, float[] Values)
    {
        public long IndexAt(int k) => Indices?[k] ?? k;
    }

    /// <summary>Checks every patch before any file is written, so bad input never leaves partial output.</summary>
    static List<PlannedPatch> Plan(ModelLayout layout, IReadOnlyDictionary<string, TensorPatch> patches, string source)
    {
        var plans = new List<PlannedPatch>();
        foreach (var (name, patch) in patches.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            if (!layout.Parameters.TryGetValue(name, out var location))
            {
                if (layout.Unpatchable.TryGetValue(name, out var reason))
                    throw new UserError($"cannot patch {name} in model file {source}: {reason}");
                throw new UserError(UnknownName(name, layout.Parameters.Keys, source));
            }
            var count = location.ElementCount;
            if (patch.Indices is null)
            {
                if (patch.Values.Length != count)
                    throw new UserError($"patch for {name} gives {patch.Values.Length} values and no indices, but {name} has " +
                                        $"{count} elements; give every value or list the element indices to change.");
                plans.Add(new PlannedPatch(location, null, patch.Values));
                continue;
            }
            if (patch.Indices.Length != patch.Values.Length)
                throw new UserError($"patch for {name} has {patch.Indices.Length} indices but {patch.Values.Length} values; " +
                                    "they must pair up one to one.");
            var indices = (long[])patch.Indices.Clone();
            var values = (float[])patch.Values.Clone();
            Array.Sort(indices, values);
            for (var i = 0; i < indices.Length; i++)
            {
                if (indices[i] < 0 || indices[i] >= count)
                    throw new UserError($"element index {indices[i]} is out of range for {name}, which has {count} elements " +
                                        $"(valid flat C-order indices are 0..{count - 1}).");
                if (i > 0 && indices[i] == indices[i - 1])
                    throw new UserError($"patch for {name} lists element index {indices[i]} more than once; give each index once.");
            }
            plans.Add(new PlannedPatch(location, indices, values));
        }
        return plans;
    }

    static string UnknownName(string name, IEnumerable<string> known, string source)
    {
        var names = known.Order(StringComparer.Ordinal).ToList();
        var close = names
            .Select(k => (Name: k, Distance: EditDistance(name.ToLowerInvariant(), k.ToLowerInvariant())))
            .Where(c => c.Distance <= Math.Max(2, name.Length / 3) || c.Name.Contains(name, StringComparison.OrdinalIgnoreCase))
            .OrderBy(c => c.Distance).Take(5).Select(c => c.Name).ToList();
        var hint = close.Count > 0
            ? $"Close names: {string.Join(", ", close)}."
            : names.Count > 0
                ? $"It has {names.Count} patchable parameters, e.g. {string.Join(", ", names.Take(5))}."
                : "It has no patchable parameters.";
        return $"model file {source} has no parameter named '{name}'. {hint} Patchable parameters are float initializers, " +
               "Constant node outputs and '<node>.coefficients' / '<node>.intercepts' of LinearClassifier/LinearRegressor nodes.";
    }

    static int EditDistance(string a, string b)
    {
        var previous = Enumerable.Range(0, b.Length + 1).ToArray();
        var current = new int[b.Length + 1];
        for (var i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            for (var j = 1; j <= b.Length; j++)
                current[j] = Math.Min(Math.Min(previous[j] + 1, current[j - 1] + 1), previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            (previous, current) = (current, previous);
        }
        return previous[b.Length];
    }

    /// <summary>Read-modify-write of the patched elements, one window of nearby elements at a time; with
    /// <paramref name="write"/> false, only counts what would change (the stream may be read-only).</summary>
    static TensorPatchResult Apply(PlannedPatch plan, Stream file, string filePath, bool write = true)
    {
        var location = plan.Location;
        var count = plan.Values.Length;
        long changedElements = 0, changedBytes = 0;
        if (count > 0)
        {
            var (first, _) = location.ElementRange(plan.IndexAt(0));
            var (last, lastWidth) = location.ElementRange(plan.IndexAt(count - 1));
            var buffer = new byte[Math.Min(Window, last + lastWidth - first)];
            Span<byte> encoded = stackalloc byte[10]; // widest: a negative int8 code as an int32_data varint
            for (var k = 0; k < count;)
            {
                var (start, _) = location.ElementRange(plan.IndexAt(k));
                var end = start;
                var stop = k;
                for (; stop < count; stop++)
                {
                    var (offset, width) = location.ElementRange(plan.IndexAt(stop));
                    if (offset + width - start > buffer.Length) break;
                    end = offset + width;
                }

                var window = buffer.AsSpan(0, (int)(end - start));
                file.Position = start;
                file.ReadExactly(window);
                var dirty = false;
                for (var i = k; i < stop; i++)
                {
                    var (offset, width) = location.ElementRange(plan.IndexAt(i));
                    var slot = window.Slice((int)(offset - start), width);
                    var bytes = encoded[..width];
                    Encode(plan.Values[i], location, plan.IndexAt(i), bytes);
                    var differing = 0;
                    for (var b = 0; b < width; b++)
                        if (slot[b] != bytes[b]) differing++;
                    if (differing == 0) continue;
                    changedElements++;
                    changedBytes += differing;
                    bytes.CopyTo(slot);
                    dirty = true;
                }
                if (dirty && write)
                {
                    file.Position = start;
                    file.Write(window);
                }
                k = stop;
            }
        }
        return new TensorPatchResult(location.Name, filePath, count, changedElements, changedBytes);
    }

    /// <summary>Encodes <paramref name="value"/> in the parameter's stored format into <paramref name="slot"/> (the old value's exact width).</summary>
    static void Encode(float value, ValueLocation location, long index, Span<byte> slot)
    {
        switch (location.Type)
        {
            case StoredType.Float32:
                BinaryPrimitives.WriteSingleLittleEndian(slot, value);
                return;
            case StoredType.Float64:
                BinaryPrimitives.WriteDoubleLittleEndian(slot, value);
                return;
        }
        // Quantized weights get integer codes (ParameterLayout.Patches); int32_data holds int8 sign-extended (10-byte varints when negative).
        bool integer = location.Type is StoredType.Int8 or StoredType.UInt8;
        if (integer && (value != MathF.Round(value) || value < (location.Type == StoredType.Int8 ? -128 : 0) || value > (location.Type == StoredType.Int8 ? 127 : 255)))
            throw new UserError($"tensor {location.Name} holds {location.Type} codes; the value {value} for element {index} is not one of them");
        if (integer && location.Storage != ValueStorage.Int32Data)
        {
            slot[0] = (byte)(int)value;
            return;
        }
        ulong bits = integer ? (ulong)(long)value : location.Type == StoredType.Float16 ? BitConverter.HalfToUInt16Bits((Half)value) : ToBFloat16(value);
        if (location.Storage != ValueStorage.Int32Data)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(slot, (ushort)bits);
            return;
        }

        // int32_data holds the 16 bits as a varint, whose length depends on the value; a different length would
        // shift every later byte, which surgical patching must never do.
        var length = 0;
        for (ulong v = bits; ; v >>= 7)
        {
            length++;
            if (v < 0x80) break;
        }
        if (length != slot.Length)
            throw new UserError($"tensor {location.Name} keeps its {location.Type} values as varints in int32_data; the new value " +
                                $"{value} for element {index} needs {length} bytes where the old one used {slot.Length}, so it cannot be " +
                                "patched without re-serializing the model. Re-save the tensor with raw_data and patch again.");
        for (var i = 0; i < length; i++)
            slot[i] = (byte)((bits >> (7 * i)) & 0x7F | (i < length - 1 ? 0x80u : 0));
    }

    /// <summary>float → bfloat16 with round-to-nearest-even, as ONNX and PyTorch convert.</summary>
    public static ushort ToBFloat16(float value)
    {
        var bits = BitConverter.SingleToUInt32Bits(value);
        // Rounding could carry a NaN's payload into the exponent and make it infinity; keep it a (quiet) NaN instead.
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x0040);
        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1)) >> 16);
    }

    static bool SameFile(string a, string b) =>
        File.Exists(a) && File.Exists(b) && ExternalData.RealPath(a) == ExternalData.RealPath(b);
}
