using System.Globalization;

namespace OnnxUnlearn.Onnx;

/// <summary>
/// Everything <see cref="WireLayout.Read"/> learned: the patchable parameters, why some names are not patchable,
/// and every external data file the model references (relative to its folder), parameter or not.
/// </summary>
internal sealed record ModelLayout(
    IReadOnlyDictionary<string, ValueLocation> Parameters,
    IReadOnlyDictionary<string, string> Unpatchable,
    IReadOnlyList<string> DataFiles);

/// <summary>
/// Walks a serialized ModelProto and records the byte ranges of every float parameter of the top-level graph:
/// initializers, Constant node values and ai.onnx.ml LinearClassifier/LinearRegressor coefficients; and those of the
/// branches of top-level If nodes (their initializers and Constant values), under the names <see cref="Branches"/> gives them.
/// Subgraphs, sparse tensors, training graphs and functions are walked only for their external data references,
/// because a written copy of the model needs all of its data files. Repeated occurrences of a message field
/// (e.g. two <c>graph</c> fields) are merged, as protobuf parsers do.
/// </summary>
internal static class WireLayout
{
    // Field numbers from onnx.proto.
    const int ModelGraph = 7, ModelTrainingInfo = 20, ModelFunctions = 25;
    const int TrainingInitialization = 1, TrainingAlgorithm = 2;
    const int FunctionNode = 7;
    const int GraphNode = 1, GraphInitializer = 5, GraphSparseInitializer = 15;
    const int NodeOutput = 2, NodeName = 3, NodeOpType = 4, NodeAttribute = 5, NodeDomain = 7;
    const int AttrName = 1, AttrF = 2, AttrT = 5, AttrG = 6, AttrFloats = 7, AttrTensors = 10, AttrGraphs = 11,
        AttrSparseTensor = 22, AttrSparseTensors = 23;
    const int SparseValues = 1, SparseIndices = 2;
    const int TensorDims = 1, TensorDataType = 2, TensorFloatData = 4, TensorInt32Data = 5, TensorStringData = 6, TensorInt64Data = 7,
        TensorName = 8, TensorRawData = 9, TensorDoubleData = 10, TensorUInt64Data = 11, TensorExternalData = 13, TensorDataLocation = 14;
    const int EntryKey = 1, EntryValue = 2;
    const int External = 1; // TensorProto.DataLocation.EXTERNAL

    /// <summary>
    /// Reads the layout and checks every tensor of the model (<see cref="TensorChecks"/>, <see cref="ExternalData"/>): shapes,
    /// value counts, external data locations under <paramref name="policy"/>, and that no two tensors share external bytes.
    /// </summary>
    public static ModelLayout Read(ReadOnlySpan<byte> model, string modelFolder, string source, ExternalDataPolicy? policy = null) =>
        Walk(model, new Walker(Path.GetFullPath(modelFolder), source, policy, referencesOnly: false), source);

    /// <summary>
    /// The external data files a model refers to (normalised, relative to <paramref name="modelFolder"/>), without checking
    /// them or its tensors: which files another model in a folder would lose if they were overwritten.
    /// </summary>
    public static IReadOnlyList<string> References(ReadOnlySpan<byte> model, string modelFolder, string source) =>
        Walk(model, new Walker(Path.GetFullPath(modelFolder), source, null, referencesOnly: true), source).DataFiles;

    static ModelLayout Walk(ReadOnlySpan<byte> model, Walker walker, string source)
    {
        var reader = new WireReader(model, 0, source);
        var sawGraph = false;
        while (reader.NextField([ModelGraph, ModelTrainingInfo, ModelFunctions], out var field, out var message))
        {
            switch (field)
            {
                case ModelGraph:
                    walker.ReadGraph(ref message, topLevel: true);
                    sawGraph = true;
                    break;
                case ModelTrainingInfo:
                    walker.ReadGraphFields(ref message, TrainingInitialization, TrainingAlgorithm);
                    break;
                default:
                    walker.ReadFunction(ref message);
                    break;
            }
        }
        if (!sawGraph)
            throw new UserError($"model file {source} has no graph: it is empty, truncated or not an ONNX model.");
        return walker.Result();
    }

    sealed class Walker(string modelFolder, string source, ExternalDataPolicy? policy, bool referencesOnly)
    {
        readonly ExternalData.DataFiles files = new(policy);
        readonly Dictionary<string, ValueLocation> parameters = new(StringComparer.Ordinal);
        readonly Dictionary<string, string> unpatchable = new(StringComparer.Ordinal);
        readonly HashSet<string> ambiguous = new(StringComparer.Ordinal);
        readonly SortedSet<string> dataFiles = new(StringComparer.Ordinal);
        int nodeIndex; // top-level nodes only, counted across repeated graph fields like the merged graph.node

        public ModelLayout Result()
        {
            if (!referencesOnly) files.CheckOverlaps(source);
            return new(parameters, unpatchable, dataFiles.ToList());
        }

        /// <param name="scope">For the branch of a top-level If: the prefix of its parameters' names (<see cref="Branches.Prefix"/>).</param>
        public void ReadGraph(ref WireReader graph, bool topLevel, string? scope = null)
        {
            while (graph.NextField([GraphNode, GraphInitializer, GraphSparseInitializer], out var field, out var message))
            {
                switch (field)
                {
                    case GraphNode:
                        ReadNode(ref message, topLevel ? nodeIndex++ : null, scope);
                        break;
                    case GraphInitializer:
                        var tensor = new TensorFields();
                        ReadTensor(ref message, tensor);
                        Complete(tensor, tensor.Name, topLevel ? tensor.Name : scope is not null ? scope + tensor.Name : null, $"initializer {tensor.Name}");
                        break;
                    default:
                        foreach (var part in ReadSparse(ref message)) Complete(part, Label(part, "(sparse initializer)"), null, "");
                        break;
                }
            }
        }

        /// <summary>Reads a message whose listed fields are GraphProtos outside the top-level graph (training info).</summary>
        public void ReadGraphFields(ref WireReader message, params int[] graphFields)
        {
            while (message.NextField(graphFields, out _, out var graph)) ReadGraph(ref graph, topLevel: false);
        }

        public void ReadFunction(ref WireReader function)
        {
            while (function.NextField([FunctionNode], out _, out var node)) ReadNode(ref node, null);
        }

        /// <param name="index">Position in the top-level graph.node; null for nodes elsewhere, which hold no parameters.</param>
        /// <param name="scope">Set for the nodes of a top-level If's branch, whose Constant values are parameters under that prefix.</param>
        void ReadNode(ref WireReader node, int? index, string? scope = null)
        {
            string? firstOutput = null;
            string name = "", opType = "", domain = "";
            var attributes = new List<AttributeFields>();
            // Name, type and domain first (protobuf does not order fields): a top-level If's branches are read as parameter scopes.
            var header = node;
            while (header.NextField([NodeOutput, NodeName, NodeOpType, NodeDomain], out var field, out var contents))
            {
                switch (field)
                {
                    case NodeOutput:
                        firstOutput ??= contents.Text();
                        break;
                    case NodeName:
                        name = contents.Text();
                        break;
                    case NodeOpType:
                        opType = contents.Text();
                        break;
                    default:
                        domain = contents.Text();
                        break;
                }
            }
            var branchOf = index is not null && opType == "If" && Domains.IsDefault(domain) ? Branches.Label(name, firstOutput) : null;
            while (node.NextField([NodeAttribute], out _, out var contents))
                attributes.Add(ReadAttribute(ref contents, branchOf));

            // Decided only after the whole node is read: protobuf does not order fields, so op_type may follow the attributes.
            var label = firstOutput ?? (name != "" ? name : opType);
            var constant = (index is not null || scope is not null) && opType == "Constant" && Domains.IsDefault(domain) && firstOutput is not null;
            var output = scope + firstOutput;
            var origin = scope is null ? $"Constant node producing {firstOutput}" : $"Constant node producing {firstOutput} in {scope.TrimEnd('/')}";
            foreach (var attribute in attributes)
            {
                if (attribute.Tensor is { } tensor)
                {
                    var parameter = constant && attribute.Name == "value" ? output : null;
                    Complete(tensor, Label(tensor, label), parameter, origin);
                }
                foreach (var other in attribute.OtherTensors) Complete(other, Label(other, label), null, "");
            }

            if (constant) AddConstantAttributes(output, attributes, origin);
            else if (index is { } position && LinearModels.Is(domain, opType))
            {
                var prefix = LinearModels.Prefix(name, opType, position);
                foreach (var attribute in attributes)
                    if (attribute.Name is "coefficients" or "intercepts")
                        Add(FloatList($"{prefix}.{attribute.Name}", attribute), $"{opType} node {prefix}");
            }
        }

        /// <summary>value_float and value_floats; a Constant's value tensor goes through <see cref="Complete"/>.</summary>
        void AddConstantAttributes(string output, List<AttributeFields> attributes, string origin)
        {
            foreach (var attribute in attributes)
            {
                switch (attribute.Name)
                {
                    case "value_float" when attribute.FOffset is { } offset:
                        Add(new ValueLocation(output, null, ValueStorage.AttributeFloat, StoredType.Float32,
                            [new ValueRun(offset, 1, 4, 4)]), origin);
                        break;
                    case "value_float":
                        // proto3 writers omit a float that equals 0, so there are no bytes to overwrite.
                        unpatchable[output] = $"the {origin} stores value_float = 0 implicitly (no bytes in the file), " +
                                               "so it cannot be patched surgically; re-export the model with a non-zero value.";
                        break;
                    case "value_floats":
                        Add(FloatList(output, attribute), origin);
                        break;
                }
            }
        }

        static string Label(TensorFields tensor, string fallback) => tensor.Name != "" ? tensor.Name : fallback;

        static ValueLocation FloatList(string name, AttributeFields attribute) =>
            new(name, null, ValueStorage.AttributeFloats, StoredType.Float32, attribute.Floats);

        void Add(ValueLocation location, string origin)
        {
            if (ambiguous.Contains(location.Name)) return;
            if (parameters.Remove(location.Name))
            {
                ambiguous.Add(location.Name);
                unpatchable[location.Name] = $"the name {location.Name} is used by more than one parameter " +
                                              $"(the last is the {origin}); rename the nodes or tensors so it is unique.";
                return;
            }
            parameters.Add(location.Name, location);
        }

        /// <summary>
        /// Handles a fully read tensor: validates and records its external data file, and when
        /// <paramref name="parameter"/> is given and the tensor is float, registers it under that name.
        /// </summary>
        void Complete(TensorFields tensor, string label, string? parameter, string origin)
        {
            if (referencesOnly)
            {
                if (tensor.DataLocation == External && tensor.External.TryGetValue("location", out var where) && where.Length > 0 && !where.Contains('\0'))
                    dataFiles.Add(Path.GetRelativePath(modelFolder, Path.GetFullPath(Path.Combine(modelFolder, where))));
                return;
            }
            var count = TensorChecks.ElementCount(tensor.Dims, problem => Bad(label, problem));
            var external = tensor.DataLocation == External ? ResolveExternal(tensor, label, count) : null;
            TensorChecks.CheckValues(tensor.DataType, tensor.Dims, count, tensor.Raw?.Length, tensor.TypedCounts(), external is not null,
                problem => Bad(label, problem));
            if (parameter is not null && TensorLocation(tensor, parameter, external, count) is { } location) Add(location, origin);
        }

        /// <param name="branchOf">The label of a top-level If node: its then_branch and else_branch are parameter scopes.</param>
        AttributeFields ReadAttribute(ref WireReader attribute, string? branchOf = null)
        {
            var result = new AttributeFields();
            string? scope = null;
            if (branchOf is not null)
            {
                var header = attribute;
                while (header.NextField([AttrName], out _, out var text)) result.Name = text.Text();
                if (result.Name is "then_branch" or "else_branch") scope = Branches.Prefix(branchOf, result.Name);
            }
            while (!attribute.AtEnd)
            {
                var (field, wireType) = attribute.ReadTag();
                switch (field)
                {
                    case AttrName:
                        attribute.Expect(field, wireType, WireReader.LengthDelimited);
                        result.Name = attribute.ReadString();
                        break;
                    case AttrF:
                        attribute.Expect(field, wireType, WireReader.Fixed32);
                        result.FOffset = attribute.Offset;
                        attribute.Skip(4);
                        break;
                    case AttrFloats:
                        ReadFixedWidth(ref attribute, field, wireType, 4, result.Floats);
                        break;
                    case AttrT or AttrTensors or AttrG or AttrGraphs or AttrSparseTensor or AttrSparseTensors:
                        attribute.Expect(field, wireType, WireReader.LengthDelimited);
                        var message = attribute.ReadLengthDelimited();
                        switch (field)
                        {
                            case AttrT: // a singular message field: repeats merge into one tensor
                                ReadTensor(ref message, result.Tensor ??= new TensorFields());
                                break;
                            case AttrTensors:
                                var tensor = new TensorFields();
                                ReadTensor(ref message, tensor);
                                result.OtherTensors.Add(tensor);
                                break;
                            case AttrG:
                                ReadGraph(ref message, topLevel: false, scope);
                                break;
                            case AttrGraphs:
                                ReadGraph(ref message, topLevel: false);
                                break;
                            default:
                                result.OtherTensors.AddRange(ReadSparse(ref message));
                                break;
                        }
                        break;
                    default:
                        attribute.SkipField(wireType);
                        break;
                }
            }
            return result;
        }

        /// <summary>The values and indices tensors of a SparseTensorProto, read only for their external data.</summary>
        static List<TensorFields> ReadSparse(ref WireReader sparse)
        {
            TensorFields? values = null, indices = null;
            while (sparse.NextField([SparseValues, SparseIndices], out var field, out var tensor))
                ReadTensor(ref tensor, field == SparseValues ? values ??= new() : indices ??= new());
            return [.. new[] { values, indices }.OfType<TensorFields>()];
        }

        static void ReadTensor(ref WireReader tensor, TensorFields result)
        {
            while (!tensor.AtEnd)
            {
                var (field, wireType) = tensor.ReadTag();
                switch (field)
                {
                    case TensorDims when wireType == WireReader.LengthDelimited:
                        var packed = tensor.ReadLengthDelimited();
                        while (!packed.AtEnd) result.Dims.Add((long)packed.ReadVarint());
                        break;
                    case TensorDims:
                        tensor.Expect(field, wireType, WireReader.Varint);
                        result.Dims.Add((long)tensor.ReadVarint());
                        break;
                    case TensorDataType:
                        tensor.Expect(field, wireType, WireReader.Varint);
                        result.DataType = (int)tensor.ReadVarint();
                        break;
                    case TensorFloatData:
                        ReadFixedWidth(ref tensor, field, wireType, 4, result.FloatData);
                        break;
                    case TensorDoubleData:
                        ReadFixedWidth(ref tensor, field, wireType, 8, result.DoubleData);
                        break;
                    case TensorInt32Data:
                        ReadVarints(ref tensor, wireType, result.Int32Data);
                        break;
                    case TensorInt64Data or TensorUInt64Data:
                        var entries = CountVarints(ref tensor, field, wireType);
                        if (field == TensorInt64Data) result.Int64Count += entries; else result.UInt64Count += entries;
                        break;
                    case TensorStringData:
                        tensor.Expect(field, wireType, WireReader.LengthDelimited);
                        tensor.ReadLengthDelimited();
                        result.StringCount++;
                        break;
                    case TensorName:
                        tensor.Expect(field, wireType, WireReader.LengthDelimited);
                        result.Name = tensor.ReadString();
                        break;
                    case TensorRawData:
                        tensor.Expect(field, wireType, WireReader.LengthDelimited);
                        var raw = tensor.ReadLengthDelimited();
                        result.Raw = (raw.Offset, raw.Remaining);
                        break;
                    case TensorExternalData:
                        tensor.Expect(field, wireType, WireReader.LengthDelimited);
                        var entry = tensor.ReadLengthDelimited();
                        var (key, value) = ReadEntry(ref entry);
                        result.External[key] = value;
                        break;
                    case TensorDataLocation:
                        tensor.Expect(field, wireType, WireReader.Varint);
                        result.DataLocation = (int)tensor.ReadVarint();
                        break;
                    default:
                        tensor.SkipField(wireType);
                        break;
                }
            }
        }

        static (string Key, string Value) ReadEntry(ref WireReader entry)
        {
            string key = "", value = "";
            while (entry.NextField([EntryKey, EntryValue], out var field, out var text))
                if (field == EntryKey) key = text.Text();
                else value = text.Text();
            return (key, value);
        }

        /// <summary>Repeated float/double: a packed block, or one fixed-width field per element (both are legal).</summary>
        static void ReadFixedWidth(ref WireReader reader, int field, int wireType, int width, List<ValueRun> runs)
        {
            if (wireType == WireReader.LengthDelimited)
            {
                var block = reader.ReadLengthDelimited();
                var length = block.Remaining;
                if (length % width != 0) throw block.Malformed($"packed field {field} of {length} bytes is not a multiple of {width}");
                if (length > 0) runs.Add(new ValueRun(block.Offset, length / width, width, width));
                return;
            }
            reader.Expect(field, wireType, width == 4 ? WireReader.Fixed32 : WireReader.Fixed64);
            var offset = reader.Offset;
            var stride = (int)(offset - reader.TagOffset) + width;
            reader.Skip(width);
            // Consecutive tagged elements form one run, so a million-element non-packed list stays one entry.
            if (runs.Count > 0 && runs[^1] is var last && last.Stride == stride && last.Offset + last.Count * stride == offset)
                runs[^1] = last with { Count = last.Count + 1 };
            else runs.Add(new ValueRun(offset, 1, stride, width));
        }

        /// <summary>Repeated int64/uint64, packed or not: only how many values there are.</summary>
        static long CountVarints(ref WireReader reader, int field, int wireType)
        {
            if (wireType != WireReader.LengthDelimited)
            {
                reader.Expect(field, wireType, WireReader.Varint);
                reader.ReadVarint();
                return 1;
            }
            var block = reader.ReadLengthDelimited();
            long count = 0;
            while (!block.AtEnd)
            {
                block.ReadVarint();
                count++;
            }
            return count;
        }

        /// <summary>Repeated int32 (float16/bfloat16 bits): every varint is its own run because widths differ.</summary>
        static void ReadVarints(ref WireReader reader, int wireType, List<ValueRun> runs)
        {
            if (wireType == WireReader.LengthDelimited)
            {
                var block = reader.ReadLengthDelimited();
                while (!block.AtEnd) AddVarint(ref block, runs);
                return;
            }
            reader.Expect(TensorInt32Data, wireType, WireReader.Varint);
            AddVarint(ref reader, runs);
        }

        static void AddVarint(ref WireReader reader, List<ValueRun> runs)
        {
            var start = reader.Offset;
            reader.ReadVarint();
            var width = (int)(reader.Offset - start);
            runs.Add(new ValueRun(start, 1, width, width));
        }

        /// <summary>Location of a float tensor's values, or null for non-float tensors (not parameters).</summary>
        ValueLocation? TensorLocation(TensorFields tensor, string name, ExternalData? external, long count)
        {
            if (!TryStoredType(tensor.DataType, out var type)) return null;
            var width = type switch { StoredType.Float32 => 4, StoredType.Float64 => 8, StoredType.Int8 or StoredType.UInt8 => 1, _ => 2 };

            var typed = type switch
            {
                StoredType.Float32 => (Runs: tensor.FloatData, Storage: ValueStorage.FloatData),
                StoredType.Float64 => (Runs: tensor.DoubleData, Storage: ValueStorage.DoubleData),
                _ => (Runs: tensor.Int32Data, Storage: ValueStorage.Int32Data),
            };
            ValueLocation location;
            if (external is not null)
                location = new(name, external.RelativePath, ValueStorage.ExternalData, type,
                    count == 0 ? [] : [new ValueRun(external.Offset, count, width, width)]);
            else if (tensor.Raw is var (rawOffset, rawLength))
            {
                if (typed.Runs.Count > 0) throw Bad(name, "has values in both raw_data and a typed field");
                if (rawLength != count * width)
                    throw Bad(name, $"has {rawLength} bytes of raw_data but its shape needs {count * width}");
                location = new(name, null, ValueStorage.RawData, type, count == 0 ? [] : [new ValueRun(rawOffset, count, width, width)]);
            }
            else location = new(name, null, typed.Storage, type, typed.Runs);

            if (location.ElementCount != count)
                throw Bad(name, $"stores {location.ElementCount} values but its shape needs {count}");
            return location;
        }

        static bool TryStoredType(int dataType, out StoredType type)
        {
            (var known, type) = dataType switch
            {
                DataTypes.Float => (true, StoredType.Float32),
                DataTypes.Float16 => (true, StoredType.Float16),
                DataTypes.Double => (true, StoredType.Float64),
                DataTypes.BFloat16 => (true, StoredType.BFloat16),
                DataTypes.Int8 => (true, StoredType.Int8),
                DataTypes.UInt8 => (true, StoredType.UInt8),
                _ => (false, default),
            };
            return known;
        }

        /// <summary>Resolves and checks an external-data reference (<see cref="ExternalData.Resolve(ExternalData.Origin, IEnumerable{KeyValuePair{string, string}}, long?, ExternalDataPolicy?, ExternalData.DataFiles?)"/>)
        /// and claims its bytes, so that no other tensor of the model may read them too.</summary>
        ExternalData ResolveExternal(TensorFields tensor, string name, long count)
        {
            var data = ExternalData.Resolve(new ExternalData.Origin(name, source, modelFolder), tensor.External, TensorChecks.Bytes(tensor.DataType, count), files: files);
            files.Claim(data, name);
            dataFiles.Add(data.RelativePath);
            return data;
        }

        UserError Bad(string tensor, string problem) => new($"tensor '{tensor}' in model file '{source}' {problem}");
    }

    sealed class TensorFields
    {
        public string Name = "";
        public int DataType;
        public int DataLocation;
        public (long Offset, int Length)? Raw; // bytes fields are last-one-wins
        public readonly List<long> Dims = [];
        public readonly List<ValueRun> FloatData = [], DoubleData = [], Int32Data = [];
        public long Int64Count, UInt64Count, StringCount;
        public readonly Dictionary<string, string> External = new(StringComparer.Ordinal);

        public Dictionary<TypedField, long> TypedCounts() => new()
        {
            [TypedField.Float] = FloatData.Sum(r => r.Count), [TypedField.Double] = DoubleData.Sum(r => r.Count),
            [TypedField.Int32] = Int32Data.Sum(r => r.Count), [TypedField.Int64] = Int64Count, [TypedField.UInt64] = UInt64Count,
            [TypedField.String] = StringCount,
        };
    }

    sealed class AttributeFields
    {
        public string Name = "";
        public long? FOffset;
        public TensorFields? Tensor;
        public readonly List<ValueRun> Floats = [];
        public readonly List<TensorFields> OtherTensors = []; // tensors and sparse tensors: external data only
    }
}
