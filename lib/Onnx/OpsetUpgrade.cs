using Onnx;

namespace OnnxUnlearn.Onnx;

/// <summary>
/// Rewrites a model to default-domain opset <see cref="MinOpset"/> so gradient nodes can use CastLike and the input
/// forms of Squeeze/Unsqueeze/ReduceSum (a model has one opset per domain). Every node whose meaning or signature
/// changed between the model's opset and <see cref="MinOpset"/> is rewritten by a small rule for its op type
/// (<see cref="Rules"/>), in the main graph and in If/Loop/Scan bodies alike, so that the upgraded model computes the
/// same outputs. New constants become initializers with fresh names; the model given is not modified. Other domains
/// (ai.onnx.ml, ...) are left as they are.
/// </summary>
public static partial class OpsetUpgrade
{
    public const long MinOpset = 16;
    /// <summary>IR version 8 is the first that allows opsets 15 and 16.</summary>
    public const long MinIrVersion = 8;

    public static ModelProto Apply(ModelProto model)
    {
        var m = model.Clone();
        var imports = m.OpsetImport.Where(o => Domains.IsDefault(o.Domain)).ToList();
        if (imports.Count == 0)
        {
            // No default-domain node to rewrite; gradient nodes still need the import.
            m.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = MinOpset });
            if (m.IrVersion < MinIrVersion) m.IrVersion = MinIrVersion;
            return m;
        }
        var from = m.DefaultOpset();
        if (from >= MinOpset) return m;
        if (from < 1) throw new UserError($"the model imports default-domain opset {from}, which does not exist; the file is damaged");
        new Upgrader(from, m.Graph).Graph(m.Graph, null);
        foreach (var o in imports) o.Version = MinOpset;
        if (m.IrVersion < MinIrVersion) m.IrVersion = MinIrVersion;
        return m;
    }

    /// <summary>Upgrades one model: holds the names in use (for fresh ones) and the values something reads.</summary>
    sealed class Upgrader
    {
        public long From { get; }
        readonly HashSet<string> names = [];
        readonly HashSet<string> used = [];
        int counter;

        public Upgrader(long from, GraphProto main)
        {
            From = from;
            Collect(main);
        }

        void Collect(GraphProto g)
        {
            foreach (var v in g.Input.Concat(g.Output).Concat(g.ValueInfo)) names.Add(v.Name);
            foreach (var v in g.Output) used.Add(v.Name);
            foreach (var t in g.Initializer) names.Add(t.Name);
            foreach (var n in g.Node)
            {
                names.UnionWith(n.Input); names.UnionWith(n.Output); names.Add(n.Name);
                used.UnionWith(n.Input);
                foreach (var a in n.Attribute)
                {
                    if (a.G is { } sub) Collect(sub);
                    foreach (var s in a.Graphs) Collect(s);
                }
            }
        }

        public string Fresh(string hint)
        {
            string name;
            do name = $"{hint}__up{counter++}"; while (!names.Add(name));
            return name;
        }

        /// <summary>A value that some node or graph output reads.</summary>
        public bool IsUsed(string name) => name.Length > 0 && used.Contains(name);

        public void Graph(GraphProto g, GraphFacts? outer)
        {
            var facts = new GraphFacts(g, outer);
            var nodes = g.Node.ToList();
            g.Node.Clear();
            foreach (var node in nodes)
            {
                foreach (var a in node.Attribute)
                {
                    if (a.G is { } sub) Graph(sub, facts);
                    foreach (var s in a.Graphs) Graph(s, facts);
                }
                var step = new Step(this, g, facts, node);
                step.Run();
                foreach (var n in step.Output) { g.Node.Add(n); facts.Infer(n); }
            }
        }
    }

    /// <summary>
    /// The rewrite of one node: what a rule reads (the node, its attributes, what is known of its inputs) and the
    /// nodes it emits. Nodes emitted before <see cref="Keep"/> run before the (edited) node, those emitted after it,
    /// after; a rule that calls neither <see cref="Keep"/> nor <see cref="Drop"/> keeps the node after what it emitted.
    /// </summary>
    sealed class Step(Upgrader up, GraphProto graph, GraphFacts facts, NodeProto node)
    {
        public NodeProto Node => node;
        public long From => up.From;
        public GraphFacts Facts => facts;
        public List<NodeProto> Output { get; } = [];
        bool kept, dropped;

        public void Run()
        {
            if (!Domains.IsDefault(node.Domain)) { Keep(); return; }
            Take("consumed_inputs");
            if (Removed.TryGetValue(node.OpType, out var why) && From < why.Until)
                throw new UserError($"{Describe()}: op '{node.OpType}' was {why.What} and has no opset-{MinOpset} form; re-export the model with a newer opset");
            if (Rules.TryGetValue(node.OpType, out var rule)) rule(this);
            if (!kept && !dropped) Keep();
        }

        public string Describe() => $"node '{(node.Name.Length > 0 ? node.Name : node.Output.FirstOrDefault())}' ({node.OpType}, opset {From})";

        public void Keep() { if (!kept) Output.Add(node); kept = true; }
        /// <summary>The node is replaced by what the rule emitted.</summary>
        public void Drop() => dropped = true;

        public string Input(int i) => i < node.Input.Count ? node.Input[i] : "";
        public bool IsUsed(string name) => up.IsUsed(name);
        public string Fresh(string hint) => up.Fresh(hint);

        public void SetInput(int i, string name)
        {
            while (node.Input.Count <= i) node.Input.Add("");
            node.Input[i] = name;
            while (node.Input.Count > 0 && node.Input[^1].Length == 0) node.Input.RemoveAt(node.Input.Count - 1);
        }

        /// <summary>Gives output <paramref name="i"/> a fresh name and returns it; a later node must produce the old name.</summary>
        public string RenameOutput(int i)
        {
            var fresh = up.Fresh(node.Output[i]);
            node.Output[i] = fresh;
            return fresh;
        }

        // ---- emitting ----

        public string Op(string opType, IEnumerable<string> inputs, params (string Name, object Value)[] attrs) =>
            OpTo(up.Fresh(opType.ToLowerInvariant()), opType, inputs, attrs);

        public string OpTo(string output, string opType, IEnumerable<string> inputs, params (string Name, object Value)[] attrs)
        {
            var n = new NodeProto { OpType = opType, Name = up.Fresh("upgrade_" + opType), Input = { inputs }, Output = { output } };
            foreach (var (name, value) in attrs) n.Attribute.Add(Attributes.Make(name, value));
            Output.Add(n);
            return output;
        }

        string Initializer(TensorProto t)
        {
            t.Name = up.Fresh("const");
            graph.Initializer.Add(t);
            return t.Name;
        }

        /// <summary>An int64 initializer: 1-D, or rank 0 with <paramref name="scalar"/>.</summary>
        public string Ints(IEnumerable<long> values, bool scalar = false)
        {
            var t = new TensorProto { DataType = DataTypes.Int64, Int64Data = { values } };
            if (!scalar) t.Dims.Add(t.Int64Data.Count);
            return Initializer(t);
        }

        public string Floats(IEnumerable<float> values, long[]? dims = null)
        {
            var t = new TensorProto { DataType = DataTypes.Float, FloatData = { values } };
            t.Dims.AddRange(dims ?? [t.FloatData.Count]);
            return Initializer(t);
        }

        /// <summary>
        /// A constant of the element type of <paramref name="like"/> (rank 0 unless <paramref name="dims"/> says
        /// otherwise): written in that type where it is known, else as float32 followed by CastLike.
        /// </summary>
        public string Typed(IReadOnlyList<float> values, string like, long[]? dims = null)
        {
            int type = facts.Type(like);
            var t = new TensorProto { Dims = { dims ?? [] } };
            switch (type)
            {
                case DataTypes.Float: t.DataType = type; t.FloatData.AddRange(values); return Initializer(t);
                case DataTypes.Double: t.DataType = type; t.DoubleData.AddRange(values.Select(v => (double)v)); return Initializer(t);
                case DataTypes.Float16:
                    t.DataType = type; t.Int32Data.AddRange(values.Select(v => (int)BitConverter.HalfToUInt16Bits((Half)v))); return Initializer(t);
                default:
                    t.DataType = DataTypes.Float; t.FloatData.AddRange(values);
                    return Op("CastLike", [Initializer(t), like]);
            }
        }

        // ---- attributes ----

        public AttributeProto? Attr(string name) => node.Attribute.FirstOrDefault(a => a.Name == name);
        public long Int(string name, long dflt) => Attr(name)?.I ?? dflt;
        public string Str(string name, string dflt) => Attr(name) is { } a ? a.S.ToStringUtf8() : dflt;

        /// <summary>Removes an attribute and returns it (null when absent).</summary>
        public AttributeProto? Take(string name)
        {
            var a = Attr(name);
            if (a is not null) node.Attribute.Remove(a);
            return a;
        }

        public void Set(string name, object value)
        {
            Take(name);
            node.Attribute.Add(Attributes.Make(name, value));
        }
    }

    /// <summary>Experimental ops dropped from the default domain: none has a standard equivalent at opset 16.</summary>
    static readonly Dictionary<string, (long Until, string What)> Removed = new()
    {
        ["ATen"] = (MinOpset, "experimental"), ["Affine"] = (MinOpset, "experimental"), ["ConstantFill"] = (MinOpset, "experimental"),
        ["Crop"] = (MinOpset, "experimental"), ["DynamicSlice"] = (MinOpset, "experimental"), ["GRUUnit"] = (MinOpset, "experimental"),
        ["GivenTensorFill"] = (MinOpset, "experimental"), ["ParametricSoftplus"] = (MinOpset, "experimental"),
        ["ScaledTanh"] = (MinOpset, "experimental"), ["MeanVarianceNormalization"] = (9, "experimental before opset 9"),
    };
}
