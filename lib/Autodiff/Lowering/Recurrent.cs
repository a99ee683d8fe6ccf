using Onnx;
using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Autodiff.Lowering;

/// <summary>A recurrent node rewritten as a fixed number of time steps.</summary>
public sealed record UnrolledNode(string Node, string Op, long SequenceLength);

/// <summary>
/// Rewrites the ONNX recurrent ops (LSTM, GRU, RNN) into equivalent unrolled subgraphs of standard ops — one MatMul of
/// all time steps with W, then per step a MatMul with R, gate activations and state updates — which the existing
/// gradient rules differentiate. The sequence length is the static one the shape probe measured, so the result is
/// specific to it. Supported: every direction, layout 0 and 1, optional B, initial_h, initial_c, P (peepholes),
/// sequence_lens (steps past a sequence's end keep the state and give zeros in Y), clip, input_forget, GRU's
/// linear_before_reset and every activation the spec lists (alpha/beta consumed as ONNX Runtime does).
/// </summary>
public static class Recurrent
{
    public static bool Is(string opType, string domain = "") => Domains.IsDefault(domain) && opType is "LSTM" or "GRU" or "RNN";

    /// <summary>Positions of the recurrent nodes whose outputs depend on <paramref name="wrt"/> and reach <paramref name="output"/>.</summary>
    public static List<int> Active(GraphProto g, IReadOnlyCollection<string> wrt, string output)
    {
        var requires = new HashSet<string>(wrt);
        foreach (var node in g.Node)
        {
            var entry = GradientRegistry.Find(node.OpType, node.Domain);
            bool flows = node.Input.Select((x, i) => (x, i)).Any(p => requires.Contains(p.x) && (entry is null || entry.Differentiable(p.i)));
            if (flows) foreach (var o in node.Output) if (o.Length > 0) requires.Add(o);
        }
        var reaches = new HashSet<string> { output };
        var result = new List<int>();
        for (int n = g.Node.Count - 1; n >= 0; n--)
        {
            var node = g.Node[n];
            if (!node.Output.Any(reaches.Contains)) continue;
            foreach (var x in node.Input) if (x.Length > 0) reaches.Add(x);
            if (Is(node.OpType, node.Domain) && node.Output.Any(o => o.Length > 0 && requires.Contains(o) && reaches.Contains(o))) result.Add(n);
        }
        result.Reverse();
        return result;
    }

    /// <summary>
    /// Unrolls the recurrent nodes between <paramref name="wrt"/> and <paramref name="output"/>, one at a time in graph
    /// order, each after probing the part of the graph that computes its inputs (so the model never needs to run a
    /// recurrent kernel ONNX Runtime lacks, such as double or layout 1). Returns the model unchanged when there are none.
    /// </summary>
    public static (ModelProto Model, List<UnrolledNode> Unrolled) LowerActive(ModelProto model, IReadOnlyCollection<string> wrt, string output,
        Func<ModelProto, TensorShapes> probe, Func<string, long[]?> constInts)
    {
        var active = Active(model.Graph, wrt, output).Select(i => model.Graph.Node[i].Output.ToArray()).ToList();
        var unrolled = new List<UnrolledNode>();
        foreach (var outputs in active)
        {
            int pos = model.Graph.Node.ToList().FindIndex(n => Is(n.OpType, n.Domain) && n.Output.SequenceEqual(outputs));
            var shapes = probe(InputsOf(model, pos));
            (model, var one) = Lower(model, shapes, [pos], constInts);
            unrolled.AddRange(one);
        }
        return (model, unrolled);
    }

    /// <summary>The part of a model that computes the inputs of node <paramref name="pos"/>, with those inputs as outputs.</summary>
    static ModelProto InputsOf(ModelProto model, int pos)
    {
        var m = model.Clone();
        var g = m.Graph;
        var target = g.Node[pos];
        var needed = new HashSet<string>(target.Input.Where(x => x.Length > 0));
        var keep = new List<NodeProto>();
        for (int n = pos - 1; n >= 0; n--)
            if (g.Node[n].Output.Any(needed.Contains))
            {
                keep.Add(g.Node[n]);
                foreach (var x in g.Node[n].Input) if (x.Length > 0) needed.Add(x);
            }
        keep.Reverse();
        g.Output.Clear();
        // Identity copies give the probe at least one node, and an output, even where the inputs are graph inputs.
        int k = 0;
        foreach (var x in target.Input.Where(x => x.Length > 0).Distinct())
        {
            var copy = new NodeProto { OpType = "Identity", Name = $"probe_input_{k}", Input = { x }, Output = { $"{x}__probe_{k++}" } };
            keep.Add(copy);
            g.Output.Add(new ValueInfoProto { Name = copy.Output[0] });
        }
        g.Node.Clear();
        g.Node.AddRange(keep);
        g.ValueInfo.Clear();
        return m;
    }

    /// <summary>
    /// A copy of <paramref name="model"/> with the recurrent nodes at <paramref name="positions"/> unrolled. Every other
    /// node and every value name stays; the new values need a fresh shape probe.
    /// </summary>
    /// <param name="shapes">Measured shapes of the model (the sequence length is read from X).</param>
    /// <param name="constInts">Values of a constant integer tensor (sequence_lens), or null if computed at run time.</param>
    public static (ModelProto Model, List<UnrolledNode> Unrolled) Lower(ModelProto model, TensorShapes shapes, IReadOnlyCollection<int> positions,
        Func<string, long[]?> constInts)
    {
        var m = model.Clone();
        var g = m.Graph;
        long opset = m.DefaultOpset();
        var taken = new HashSet<string>(g.Node.SelectMany(n => n.Output).Concat(g.Node.SelectMany(n => n.Input))
            .Concat(g.Input.Select(i => i.Name)).Concat(g.Initializer.Select(t => t.Name)).Concat(g.Output.Select(o => o.Name)));
        var b = new GraphBuilder(opset, taken.Contains, "unrolled_");
        var nodes = new List<NodeProto>();
        var unrolled = new List<UnrolledNode>();
        for (int n = 0; n < g.Node.Count; n++)
        {
            if (!positions.Contains(n)) { nodes.Add(g.Node[n]); continue; }
            int start = b.Nodes.Count;
            unrolled.Add(new Unroller(g.Node[n], b, shapes, constInts).Emit());
            nodes.AddRange(b.Nodes.Skip(start));
        }
        g.Node.Clear();
        g.Node.AddRange(nodes);
        g.Initializer.AddRange(b.Constants);
        return (m, unrolled);
    }

    sealed class Unroller
    {
        readonly NodeProto node;
        readonly GraphBuilder b;
        readonly TensorShapes shapes;
        readonly Func<string, long[]?> constInts;
        readonly string op, name, what;
        readonly int dirs, gates;
        readonly long layout, hidden;

        public Unroller(NodeProto node, GraphBuilder b, TensorShapes shapes, Func<string, long[]?> constInts)
        {
            this.node = node; this.b = b; this.shapes = shapes; this.constInts = constInts;
            op = node.OpType;
            name = node.Name.Length > 0 ? node.Name : node.Output.FirstOrDefault(o => o.Length > 0) ?? "";
            what = $"{op} node '{name}'";
            gates = op switch { "LSTM" => 4, "GRU" => 3, _ => 1 };
            var direction = Str("direction", "forward");
            dirs = direction switch
            {
                "forward" or "reverse" => 1,
                "bidirectional" => 2,
                _ => throw new UserError($"{what}: unknown direction '{direction}' (expected forward, reverse or bidirectional)"),
            };
            layout = Int("layout", 0);
            if (layout is not (0 or 1)) throw new UserError($"{what}: layout {layout} is not 0 or 1");
            hidden = Int("hidden_size", -1);
            if (hidden < 0 && shapes[node.Input[2]] is { Rank: 3 } r) hidden = r.Dims[2];
            if (hidden <= 0) throw new UserError($"{what}: hidden_size is not given and R's shape does not tell it");
        }

        AttributeProto? A(string name) => node.Attribute.FirstOrDefault(a => a.Name == name);
        long Int(string name, long def) => A(name) is { } a ? a.I : def;
        string Str(string name, string def) => A(name) is { } a ? a.S.ToStringUtf8() : def;
        string? In(int i) => i < node.Input.Count && node.Input[i].Length > 0 ? node.Input[i] : null;
        string Out(int i) => i < node.Output.Count ? node.Output[i] : "";

        public UnrolledNode Emit()
        {
            var x = In(0)!;
            var xs = shapes[x] ?? throw new UserError($"{what}: the shape probe measured no shape for its input '{x}'");
            if (xs.Rank != 3) throw new UserError($"{what}: input X has rank {xs.Rank}, expected 3");
            long T = xs.Dims[layout == 0 ? 0 : 1];
            if (T == 0) throw new UserError($"{what}: the sequences are empty (T = 0)");
            if (T < 0)
                throw new UserError($"{what}: its sequence length changed between the shape probes (it depends on the batch size); unrolling needs a fixed sequence length");
            if (Int("input_forget", 0) != 0 && op != "LSTM") throw new UserError($"{what}: input_forget is an LSTM attribute");
            var acts = Activations();
            float? clip = A("clip") is { } c ? c.F : null;
            if (clip is <= 0) throw new UserError($"{what}: clip must be positive (got {clip})");

            // Time-major X: [T, N, I].
            var xt = layout == 0 ? x : b.Transpose(x, [1, 0, 2]);
            var w = PerDirection(In(1)!, 0);
            var r = PerDirection(In(2)!, 0);
            var bias = In(3) is { } bb ? PerDirection(bb, 0) : null;
            int stateAxis = layout == 0 ? 0 : 1;
            var h0 = In(5) is { } ih ? PerDirection(ih, stateAxis) : null;
            var c0 = op == "LSTM" && In(6) is { } ic ? PerDirection(ic, stateAxis) : null;
            var peep = op == "LSTM" && In(7) is { } p ? PerDirection(p, 0) : null;
            var lens = SequenceLengths(T);

            string direction = Str("direction", "forward");
            var ys = new string[dirs]; var hs = new string[dirs]; var cs = new string[dirs];
            for (int d = 0; d < dirs; d++)
            {
                bool reverse = direction == "reverse" || d == 1;
                (ys[d], hs[d], cs[d]) = Direction(xt, T, reverse, w[d], r[d], bias?[d], h0?[d], c0?[d], peep?[d], acts[d], clip, lens);
            }
            if (Out(0).Length > 0) b.Nodes.Add(Identity(Concat(ys, layout == 0 ? 1 : 2), Out(0)));
            if (Out(1).Length > 0) b.Nodes.Add(Identity(Concat(hs.Select(h => b.Unsqueeze(h, stateAxis)).ToArray(), stateAxis), Out(1)));
            if (op == "LSTM" && Out(2).Length > 0) b.Nodes.Add(Identity(Concat(cs.Select(h => b.Unsqueeze(h, stateAxis)).ToArray(), stateAxis), Out(2)));
            return new UnrolledNode(name, op, T);
        }

        static NodeProto Identity(string from, string to) => new() { OpType = "Identity", Name = to + "_unrolled", Input = { from }, Output = { to } };

        string Concat(string[] parts, long axis) => parts.Length == 1 ? parts[0] : b.Op("Concat", parts, ("axis", axis));

        /// <summary>The slices of a [dirs, …] tensor (or [N, dirs, …] for states in layout 1) along <paramref name="axis"/>, that axis dropped.</summary>
        string[] PerDirection(string t, long axis)
        {
            if (dirs == 1) return [b.Squeeze(t, axis)];
            return b.OpN("Split", [t, b.Ints(1, 1)], 2, ("axis", axis)).Select(s => b.Squeeze(s, axis)).ToArray();
        }

        /// <summary>sequence_lens as int64 [N, 1], or null when absent or every length is the full T.</summary>
        string? SequenceLengths(long T)
        {
            if (In(4) is not { } s) return null;
            var known = constInts(s);
            if (known is not null && known.All(l => l == T)) return null;
            if (known is not null && known.Any(l => l < 0 || l > T))
                throw new UserError($"{what}: sequence_lens [{string.Join(", ", known)}] lie outside 0..{T}");
            return b.Unsqueeze(b.Op("Cast", [s], ("to", (long)DataTypes.Int64)), 1);
        }

        /// <summary>One direction: returns Y as [T, 1, N, H] (layout 0) or [N, T, 1, H] (layout 1), and the final H and C ([N, H]).</summary>
        (string Y, string H, string C) Direction(string x, long T, bool reverse, string w, string r, string? bias, string? h, string? c,
            string? peep, Func<string, string>[] act, float? clip, string? lens)
        {
            long H = hidden;
            // Input projections of every step at once: [T, N, G·H], with the biases that add outside the gates' products.
            var proj = b.MatMul(x, b.Transpose(w, [1, 0]));
            string? rbh = null;
            if (bias is not null)
            {
                var wr = b.OpN("Split", [bias, b.Ints(gates * H, gates * H)], 2, ("axis", 0L));
                string add;
                if (op == "GRU" && Int("linear_before_reset", 0) != 0)
                {   // Rbh multiplies with the reset gate: kept apart
                    var rb = b.OpN("Split", [wr[1], b.Ints(2 * H, H)], 2, ("axis", 0L));
                    rbh = rb[1];
                    add = b.Add(wr[0], b.Op("Pad", [rb[0], b.Ints(0, H)]));
                }
                else add = b.Add(wr[0], wr[1]);
                proj = b.Add(proj, add);
            }
            string[] steps = T == 1 ? [b.Squeeze(proj, 0)] : b.OpN("Split", [proj, b.Ints(Enumerable.Repeat(1L, (int)T).ToArray())], (int)T, ("axis", 0L)).Select(s => b.Squeeze(s, 0)).ToArray();
            var rt = b.Transpose(r, [1, 0]); // [H, G·H]
            string[]? rGru = op == "GRU" ? b.OpN("Split", [rt, b.Ints(2 * H, H)], 2, ("axis", 1L)) : null;
            string[]? p = peep is null ? null : b.OpN("Split", [peep, b.Ints(H, H, H)], 3, ("axis", 0L));
            string Clip(string v) => clip is { } k ? b.Op("Clip", [v, b.Scalar(-k, v), b.Scalar(k, v)]) : v;

            var ys = new string[T];
            for (long i = 0; i < T; i++)
            {
                long t = reverse ? T - 1 - i : i;
                var xt = steps[t];
                string hn, cn = "";
                switch (op)
                {
                    case "RNN":
                        hn = act[0](Clip(h is null ? xt : b.Add(xt, b.MatMul(h, rt))));
                        break;
                    case "GRU":
                    {
                        var xs = b.OpN("Split", [xt, b.Ints(2 * H, H)], 2, ("axis", 1L));
                        var zr = b.OpN("Split", [act[0](Clip(h is null ? xs[0] : b.Add(xs[0], b.MatMul(h, rGru![0])))), b.Ints(H, H)], 2, ("axis", 1L));
                        string pre;
                        if (Int("linear_before_reset", 0) == 0)
                            pre = h is null ? xs[1] : b.Add(xs[1], b.MatMul(b.Mul(zr[1], h), rGru![1]));
                        else
                        {
                            string? inner = h is null ? rbh : rbh is null ? b.MatMul(h, rGru![1]) : b.Add(b.MatMul(h, rGru![1]), rbh);
                            pre = inner is null ? xs[1] : b.Add(xs[1], b.Mul(zr[1], inner));
                        }
                        var cand = act[1](Clip(pre));
                        // H = (1 − z)·ĥ + z·H₋₁ = ĥ + z·(H₋₁ − ĥ)
                        hn = h is null ? b.Sub(cand, b.Mul(zr[0], cand)) : b.Add(cand, b.Mul(zr[0], b.Sub(h, cand)));
                        break;
                    }
                    default:
                    {
                        var pre = h is null ? xt : b.Add(xt, b.MatMul(h, rt));
                        string i_, o_, f_, g_;
                        if (p is null)
                        {
                            var parts = b.OpN("Split", [pre, b.Ints(3 * H, H)], 2, ("axis", 1L));
                            var iof = b.OpN("Split", [act[0](Clip(parts[0])), b.Ints(H, H, H)], 3, ("axis", 1L));
                            (i_, o_, f_, g_) = (iof[0], iof[1], iof[2], act[1](Clip(parts[1])));
                        }
                        else
                        {
                            var parts = b.OpN("Split", [pre, b.Ints(H, H, H, H)], 4, ("axis", 1L));
                            i_ = act[0](Clip(c is null ? parts[0] : b.Add(parts[0], b.Mul(p[0], c))));
                            f_ = act[0](Clip(c is null ? parts[2] : b.Add(parts[2], b.Mul(p[2], c))));
                            g_ = act[1](Clip(parts[3]));
                            o_ = parts[1]; // needs the new cell state
                        }
                        if (Int("input_forget", 0) != 0) f_ = b.Sub(b.Scalar(1, i_), i_);
                        var ig = b.Mul(i_, g_);
                        cn = c is null ? ig : b.Add(b.Mul(f_, c), ig);
                        if (p is not null) o_ = act[0](Clip(b.Add(o_, b.Mul(p[1], cn))));
                        hn = b.Mul(o_, act[2](cn));
                        break;
                    }
                }
                if (lens is null) { ys[t] = hn; h = hn; if (op == "LSTM") c = cn; continue; }
                // Past a sequence's end: the state stays, Y is zero.
                var live = b.Op("Less", [b.Ints(t), lens]);
                var zero = b.Scalar(0, hn);
                ys[t] = b.Where(live, hn, zero);
                h = b.Where(live, hn, h ?? zero);
                if (op == "LSTM") c = b.Where(live, cn, c ?? zero);
            }
            if (Out(0).Length == 0) return ("", h!, c ?? "");
            long[] axes = layout == 0 ? [0, 1] : [1, 2];
            var y = Concat(ys.Select(v => b.Unsqueeze(v, axes)).ToArray(), layout == 0 ? 0 : 1);
            return (y, h!, c ?? "");
        }

        /// <summary>The activation functions of each direction, alpha and beta taken in order by those that use them (as ONNX Runtime does).</summary>
        Func<string, string>[][] Activations()
        {
            int count = op switch { "LSTM" => 3, "GRU" => 2, _ => 1 };
            string[] defaults = op switch { "LSTM" => ["Sigmoid", "Tanh", "Tanh"], "GRU" => ["Sigmoid", "Tanh"], _ => ["Tanh"] };
            var names = A("activations") is { } a ? a.Strings.Select(s => s.ToStringUtf8()).ToList() : Enumerable.Range(0, dirs).SelectMany(_ => defaults).ToList();
            if (names.Count == count && dirs == 2) names.AddRange(names.ToList());
            if (names.Count != count * dirs)
                throw new UserError($"{what}: {names.Count} activations given, expected {count * dirs} ({count} per direction)");
            var alphas = new Queue<float>(A("activation_alpha")?.Floats ?? []);
            var betas = new Queue<float>(A("activation_beta")?.Floats ?? []);
            float Take(Queue<float> q, float def) => q.Count > 0 ? q.Dequeue() : def;
            var fns = new List<Func<string, string>>();
            foreach (var name in names)
            {
                Func<string, string> f = name.ToLowerInvariant() switch
                {
                    "sigmoid" => v => b.Sigmoid(v),
                    "tanh" => v => b.Op("Tanh", [v]),
                    "relu" => v => b.Op("Relu", [v]),
                    "softsign" => v => b.Op("Softsign", [v]),
                    "softplus" => v => b.Op("Softplus", [v]),
                    "leakyrelu" => Alpha(Take(alphas, 0.01f), (v, al) => b.Op("LeakyRelu", [v], ("alpha", al))),
                    "thresholdedrelu" => Alpha(Take(alphas, 0f), (v, al) => b.Op("ThresholdedRelu", [v], ("alpha", al))),
                    "elu" => Alpha(Take(alphas, 1f), (v, al) => b.Op("Elu", [v], ("alpha", al))),
                    "hardsigmoid" => AlphaBeta(Take(alphas, 0.2f), Take(betas, 0.5f), (v, al, be) => b.Op("HardSigmoid", [v], ("alpha", al), ("beta", be))),
                    "affine" => AlphaBeta(Take(alphas, 0f), Take(betas, 0f), (v, al, be) => b.Add(b.Scale(v, al), b.Scalar(be, v))),
                    "scaledtanh" => AlphaBeta(Take(alphas, 0f), Take(betas, 0f), (v, al, be) => b.Scale(b.Op("Tanh", [b.Scale(v, be)]), al)),
                    _ => throw new UserError($"{what}: activation '{name}' is not one the ONNX spec lists (Relu, Tanh, Sigmoid, Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu, Softsign, Softplus)"),
                };
                fns.Add(f);
            }
            return Enumerable.Range(0, dirs).Select(d => fns.Skip(d * count).Take(count).ToArray()).ToArray();
        }

        static Func<string, string> Alpha(float alpha, Func<string, float, string> f) => v => f(v, alpha);
        static Func<string, string> AlphaBeta(float alpha, float beta, Func<string, float, float, string> f) => v => f(v, alpha, beta);
    }
}
