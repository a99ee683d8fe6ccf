using Onnx;
using OnnxUnlearn.Autodiff;

namespace OnnxUnlearn.Onnx;

/// <summary>
/// ai.onnx.ml LinearClassifier and LinearRegressor, as skl2onnx writes LogisticRegression, LinearRegression and LinearSVC.
/// Their weights are float-list attributes, exposed as the parameters <c>&lt;node name&gt;.coefficients</c> [rows,
/// features] and <c>&lt;node name&gt;.intercepts</c> [rows] (an unnamed node is called <c>&lt;op type&gt;_&lt;index&gt;</c>,
/// as <see cref="WeightPatch"/> names it). For gradients, <see cref="Lower"/> rewrites the scores in standard ops.
/// </summary>
public static class LinearModels
{
    public static bool Is(NodeProto n) => n.Domain == "ai.onnx.ml" && n.OpType is "LinearClassifier" or "LinearRegressor";

    public static string Prefix(NodeProto n, int index) => n.Name.Length > 0 ? n.Name : $"{n.OpType}_{index}";

    /// <summary>The float output that depends on the weights: a classifier's second output (scores), a regressor's only one.</summary>
    public static string ScoresOutput(NodeProto n) => n.OpType == "LinearClassifier" ? n.Output.ElementAtOrDefault(1) ?? "" : n.Output[0];

    /// <summary>The node's weight tensors (float32, shaped), named after <see cref="Prefix"/>; only those the node has.</summary>
    public static IEnumerable<(string Name, TensorProto Tensor)> Tensors(NodeProto n, int index)
    {
        var w = Floats(n, "coefficients");
        int rows = Rows(n);
        if (w is not null)
            yield return (Prefix(n, index) + ".coefficients", Float(rows > 0 && w.Length % rows == 0 ? [rows, w.Length / rows] : [w.Length], w));
        if (Floats(n, "intercepts") is { } b) yield return (Prefix(n, index) + ".intercepts", Float([b.Length], b));
    }

    /// <summary>
    /// Rewrites the scores of every LinearClassifier/LinearRegressor of the top-level graph in standard ops, with the
    /// weights as initializers named like the parameters (so the training artifact can turn them into inputs):
    /// scores = Cast(X)·Wᵀ + b, then post_transform, giving what ONNX Runtime computes. A classifier's node stays for its
    /// label output (its own scores output is renamed away); a regressor's node goes.
    /// </summary>
    /// <param name="model">A model already upgraded to opset ≥ 15 (the new ops use CastLike).</param>
    /// <param name="stored">The graph as stored: unnamed nodes are named by their position there, which upgrading may shift.</param>
    public static ModelProto Lower(ModelProto model, GraphProto stored)
    {
        var prefixes = stored.Node.Select((n, i) => (n, i)).Where(p => Is(p.n)).Select(p => Prefix(p.n, p.i)).ToList();
        if (prefixes.Count == 0) return model;
        var m = model.Clone();
        var g = m.Graph;
        var nodes = g.Node.ToList();
        if (nodes.Count(Is) != prefixes.Count) throw new InvalidOperationException("upgrading changed the number of linear ai.onnx.ml nodes");
        var taken = new HashSet<string>(nodes.SelectMany(n => n.Input.Concat(n.Output)).Concat(g.Input.Select(i => i.Name)).Concat(g.Initializer.Select(t => t.Name)));
        long opset = m.OpsetImport.Where(o => o.Domain is "" or "ai.onnx").Select(o => o.Version).Max();
        var b = new GraphBuilder(opset, taken.Contains);
        g.Node.Clear();
        int k = 0;
        foreach (var n in nodes)
        {
            if (!Is(n)) { g.Node.Add(n); continue; }
            int start = b.Nodes.Count;
            var scores = ScoresOutput(n);
            var prefix = prefixes[k++];
            foreach (var name in new[] { prefix + ".coefficients", prefix + ".intercepts" })
                if (taken.Contains(name)) throw new UserError($"the weights of {n.OpType} '{prefix}' would be named '{name}', which the graph already uses; rename the node");
            var y = Scores(b, n, prefix, g);
            if (b.Nodes[^1].Output[0] != y) throw new InvalidOperationException("the scores must come from the last op emitted");
            b.Nodes[^1].Output[0] = scores;
            if (n.OpType == "LinearClassifier") { n.Output[1] = b.Fresh(scores + "_ml"); g.Node.Add(n); }
            g.Node.AddRange(b.Nodes.Skip(start));
        }
        g.Initializer.AddRange(b.Constants);
        return m;
    }

    /// <summary>Emits the ops of one node's scores; returns the output of the last op, which the caller renames to the scores output.</summary>
    static string Scores(GraphBuilder b, NodeProto n, string prefix, GraphProto g)
    {
        string what = $"{n.OpType} '{prefix}'";
        var w = Floats(n, "coefficients") ?? throw new UserError($"{what} has no coefficients");
        var intercepts = Floats(n, "intercepts");
        int rows = Rows(n);
        if (rows <= 0 || w.Length % rows != 0)
            throw new UserError($"{what} has {w.Length} coefficients, which is not a whole number of rows for its {rows} classes or targets");
        long features = w.Length / rows;
        if (intercepts is not null && intercepts.Length != rows)
            throw new UserError($"{what} has {intercepts.Length} intercepts for {rows} classes or targets");
        var post = n.Attribute.FirstOrDefault(a => a.Name == "post_transform")?.S.ToStringUtf8() is { Length: > 0 } p ? p : "NONE";
        // PROBIT is refused outright: ONNX Runtime's binary PROBIT scores are not even defined (uninitialised memory).
        if (post is not ("NONE" or "LOGISTIC" or "SOFTMAX" or "SOFTMAX_ZERO"))
            throw new UserError($"{what} has post_transform {post}; only NONE, LOGISTIC and SOFTMAX can be differentiated");

        g.Initializer.Add(Float([rows, features], w, prefix + ".coefficients"));
        if (intercepts is not null) g.Initializer.Add(Float([rows], intercepts, prefix + ".intercepts"));
        // Inputs may be int or double (ONNX Runtime casts to float) and 1-D (one sample).
        var x = b.Reshape(b.Op("Cast", [n.Input[0]], ("to", (long)DataTypes.Float)), b.Ints(-1, features));
        var s = b.Op("Gemm", intercepts is null ? [x, prefix + ".coefficients"] : [x, prefix + ".coefficients", prefix + ".intercepts"], ("transB", 1L));
        if (rows > 1)
            return post switch
            {
                "LOGISTIC" => b.Sigmoid(s),
                "SOFTMAX" => b.Op("Softmax", [s], ("axis", 1L)),
                "SOFTMAX_ZERO" => throw new UserError($"{what} has post_transform SOFTMAX_ZERO; only NONE, LOGISTIC and SOFTMAX can be differentiated"),
                _ => s,
            };
        // One row. ONNX Runtime (1.31, checked by the tests) applies no post_transform to a lone score, except for a
        // binary classifier (two class labels), whose scores are [1 − p, p] with p = σ(s) under LOGISTIC and p = s otherwise.
        if (n.OpType != "LinearClassifier" || Labels(n) != 2) return s;
        var positive = post == "LOGISTIC" ? b.Sigmoid(s) : s;
        return b.Op("Concat", [b.Sub(b.Scalar(1, positive), positive), positive], ("axis", 1L));
    }

    /// <summary>Classes (a classifier has one row per intercept, as ONNX Runtime counts them) or targets.</summary>
    static int Rows(NodeProto n) => n.OpType == "LinearRegressor"
        ? (int)(n.Attribute.FirstOrDefault(a => a.Name == "targets")?.I ?? 1)
        : Floats(n, "intercepts") is { Length: > 0 } b ? b.Length
        : Math.Max(1, Labels(n));

    static int Labels(NodeProto n) =>
        n.Attribute.Where(a => a.Name is "classlabels_ints" or "classlabels_strings").Select(a => Math.Max(a.Ints.Count, a.Strings.Count)).DefaultIfEmpty(0).Max();

    static float[]? Floats(NodeProto n, string name) => n.Attribute.FirstOrDefault(a => a.Name == name)?.Floats.ToArray();

    static TensorProto Float(long[] dims, float[] values, string name = "") => new() { Name = name, DataType = DataTypes.Float, Dims = { dims }, FloatData = { values } };
}
