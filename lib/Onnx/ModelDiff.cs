namespace OnnxUnlearn.Onnx;

public sealed record ParameterDifference(string Name, long ElementsDiffering, long ElementCount);

/// <summary>
/// Outcome of <see cref="ModelDiff.Compare"/>. When <see cref="StructureDifference"/> is set the files are not laid out
/// alike (lengths, parameter names or positions differ) and the other fields are empty: byte-wise comparison is meaningless.
/// </summary>
public sealed record ModelDiffResult(string? StructureDifference, long OtherBytesDiffering, IReadOnlyList<ParameterDifference> Parameters)
{
    public bool StructureDiffers => StructureDifference is not null;

    /// <summary>Bytes outside parameter values differ: metadata, names, attributes, field tags.</summary>
    public bool OtherBytesDiffer => OtherBytesDiffering > 0;

    public bool Identical => !StructureDiffers && !OtherBytesDiffer && Parameters.Count == 0;
}

/// <summary>
/// Byte-level comparison of two models with the same layout (typically a model and its surgically patched copy):
/// which parameters differ in how many elements, and whether anything else changed. Covers external data files too.
/// </summary>
public static class ModelDiff
{
    const int Chunk = 1 << 20;

    public static ModelDiffResult Compare(string modelA, string modelB)
    {
        var bytesA = ReadModel(modelA);
        var bytesB = ReadModel(modelB);
        if (bytesA.Length != bytesB.Length)
            return Structure($"the model files differ in length ({bytesA.Length} vs {bytesB.Length} bytes)");

        var folderA = Path.GetDirectoryName(Path.GetFullPath(modelA))!;
        var folderB = Path.GetDirectoryName(Path.GetFullPath(modelB))!;
        var layoutA = WireLayout.Read(bytesA, folderA, modelA);
        var layoutB = WireLayout.Read(bytesB, folderB, modelB);
        if (LayoutDifference(layoutA, layoutB) is { } layoutDifference) return Structure(layoutDifference);

        var parameters = layoutA.Parameters.Values;
        foreach (var dataFile in layoutA.DataFiles)
        {
            long lengthA = DataFileLength(folderA, dataFile), lengthB = DataFileLength(folderB, dataFile);
            if (lengthA != lengthB)
                return Structure($"external data file {dataFile} differs in length ({lengthA} vs {lengthB} bytes)");
        }

        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        long other;
        using (MemoryStream a = new(bytesA), b = new(bytesB))
            other = Scan(a, b, bytesA.Length, new SlotIndex(parameters.Where(l => l.DataFile is null)), counts);
        foreach (var dataFile in layoutA.DataFiles)
        {
            using var a = File.OpenRead(Path.Combine(folderA, dataFile));
            using var b = File.OpenRead(Path.Combine(folderB, dataFile));
            other += Scan(a, b, a.Length, new SlotIndex(parameters.Where(l => l.DataFile == dataFile)), counts);
        }

        var differences = counts.OrderBy(c => c.Key, StringComparer.Ordinal)
            .Select(c => new ParameterDifference(c.Key, c.Value, layoutA.Parameters[c.Key].ElementCount)).ToList();
        return new ModelDiffResult(null, other, differences);
    }

    // FileInfo on a symlink measures the link itself, so measure its target.
    static long DataFileLength(string folder, string dataFile) =>
        new FileInfo(ExternalData.RealPath(Path.Combine(folder, dataFile))).Length;

    static ModelDiffResult Structure(string why) => new(why, 0, []);

    static byte[] ReadModel(string path) =>
        File.Exists(path) ? File.ReadAllBytes(path) : throw new UserError($"model file {path} does not exist.");

    static string? LayoutDifference(ModelLayout layoutA, ModelLayout layoutB)
    {
        if (!layoutA.DataFiles.SequenceEqual(layoutB.DataFiles))
            return $"the models use different external data files ({string.Join(", ", layoutA.DataFiles)} vs {string.Join(", ", layoutB.DataFiles)})";
        var (a, b) = (layoutA.Parameters, layoutB.Parameters);
        if (a.Keys.Except(b.Keys).Order(StringComparer.Ordinal).FirstOrDefault() is { } onlyA)
            return $"parameter {onlyA} exists only in the first model";
        if (b.Keys.Except(a.Keys).Order(StringComparer.Ordinal).FirstOrDefault() is { } onlyB)
            return $"parameter {onlyB} exists only in the second model";
        foreach (var (name, la) in a)
        {
            var lb = b[name];
            if (la.DataFile != lb.DataFile || la.Storage != lb.Storage || la.Type != lb.Type || !la.Runs.SequenceEqual(lb.Runs))
                return $"parameter {name} is stored differently ({la} vs {lb}, or at other offsets)";
        }
        return null;
    }

    /// <summary>
    /// Compares two equally long streams; counts differing elements per parameter and returns the number of differing
    /// bytes outside parameter values. Once a byte of an element differs, the rest of that element is skipped so the
    /// element counts once.
    /// </summary>
    static long Scan(Stream a, Stream b, long length, SlotIndex slots, Dictionary<string, long> counts)
    {
        var bufferA = new byte[(int)Math.Min(Chunk, length)];
        var bufferB = new byte[bufferA.Length];
        long other = 0, resume = 0, chunkStart = 0;
        while (chunkStart < length)
        {
            var n = (int)Math.Min(bufferA.Length, length - chunkStart);
            var spanA = bufferA.AsSpan(0, n);
            var spanB = bufferB.AsSpan(0, n);
            a.ReadExactly(spanA);
            b.ReadExactly(spanB);
            var i = (int)Math.Clamp(resume - chunkStart, 0, n);
            while (true)
            {
                i += spanA[i..].CommonPrefixLength(spanB[i..]);
                if (i >= n) break;
                if (slots.Find(chunkStart + i) is var (name, elementEnd))
                {
                    counts[name] = counts.GetValueOrDefault(name) + 1;
                    resume = elementEnd;
                    i = (int)Math.Min(resume - chunkStart, n);
                }
                else
                {
                    other++;
                    i++;
                }
            }
            chunkStart += n;
        }
        return other;
    }

    /// <summary>Maps a byte offset in one file to the parameter element covering it.</summary>
    sealed class SlotIndex
    {
        readonly (ValueRun Run, string Name)[] runs;
        readonly long[] starts;

        public SlotIndex(IEnumerable<ValueLocation> locations)
        {
            runs = locations.SelectMany(l => l.Runs.Select(r => (r, l.Name))).OrderBy(e => e.r.Offset).ToArray();
            starts = runs.Select(e => e.Run.Offset).ToArray();
        }

        /// <summary>The parameter and the end of the element containing <paramref name="offset"/>, or null for other bytes (including field tags between non-packed elements).</summary>
        public (string Name, long ElementEnd)? Find(long offset)
        {
            var i = Array.BinarySearch(starts, offset);
            if (i < 0) i = ~i - 1;
            if (i < 0) return null;
            var (run, name) = runs[i];
            var relative = offset - run.Offset;
            var element = relative / run.Stride;
            if (element >= run.Count || relative % run.Stride >= run.Width) return null;
            return (name, run.Offset + element * run.Stride + run.Width);
        }
    }
}
