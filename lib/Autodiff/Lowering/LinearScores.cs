using Onnx;
using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Autodiff.Lowering;

/// <summary>
/// The scores of ai.onnx.ml LinearClassifier/LinearRegressor nodes (<see cref="LinearModels"/>) written in standard ops,
/// which the gradient rules differentiate.
/// </summary>
public static class LinearScores
{
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
        var prefixes = stored.Node.Select((n, i) => (n, i)).Where(p => LinearModels.Is(p.n)).Select(p => LinearModels.Prefix(p.n, p.i)).ToList();
        if (prefixes.Count == 0) return model;
        var m = model.Clone();
        var g = m.Graph;
        var nodes = g.Node.ToList();
        if (nodes.Count(LinearModels.Is) != prefixes.Count) throw new InvalidOperationException("upgrading changed the number of linear ai.onnx.ml nodes");
        var taken = new HashSet<string>(nodes.SelectMany(n => n.Input.Concat(n.Output)).Concat(g.Input.Select(i => i.Name)).Concat(g.Initializer.Select(t => t.Name)));
        long opset = m.DefaultOpset();
        var b = new GraphBuilder(opset, taken.Contains);
        g.Node.Clear();
        int k = 0;
        foreach (var n in nodes)
        {
            if (!LinearModels.Is(n)) { g.Node.Add(n); continue; }
            int start = b.Nodes.Count;
            var scores = LinearModels.ScoresOutput(n);
            var prefix = prefixes[k++];
            foreach (var name in new[] { prefix + ".coefficients", prefix + ".intercepts" })
                if (taken.Contains(name)) throw new UserError($"the weights of {n.OpType} '{prefix}' would be named '{name}', which the graph already uses; rename the node");
            var y = Emit(b, n, prefix, g);
            if (b.Nodes[^1].Output[0] != y) throw new InvalidOperationException("the scores must come from the last op emitted");
            b.Nodes[^1].Output[0] = scores;
            if (n.OpType == "LinearClassifier") { n.Output[1] = b.Fresh(scores + "_ml"); g.Node.Add(n); }
            g.Node.AddRange(b.Nodes.Skip(start));
        }
        g.Initializer.AddRange(b.Constants);
        return m;
    }

    /// <summary>Emits the ops of one node's scores; returns the output of the last op, which the caller renames to the scores output.</summary>
    static string Emit(GraphBuilder b, NodeProto n, string prefix, GraphProto g)
    {
        string what = $"{n.OpType} '{prefix}'";
        var w = LinearModels.Floats(n, "coefficients") ?? throw new UserError($"{what} has no coefficients");
        var intercepts = LinearModels.Floats(n, "intercepts");
        int rows = LinearModels.Rows(n);
        if (rows <= 0 || w.Length % rows != 0)
            throw new UserError($"{what} has {w.Length} coefficients, which is not a whole number of rows for its {rows} classes or targets");
        long features = w.Length / rows;
        if (intercepts is not null && intercepts.Length != rows)
            throw new UserError($"{what} has {intercepts.Length} intercepts for {rows} classes or targets");
        var post = n.Attribute.FirstOrDefault(a => a.Name == "post_transform")?.S.ToStringUtf8() is { Length: > 0 } p ? p : "NONE";
        // PROBIT is refused outright: ONNX Runtime's binary PROBIT scores are not even defined (uninitialised memory).
        if (post is not ("NONE" or "LOGISTIC" or "SOFTMAX" or "SOFTMAX_ZERO"))
            throw new UserError($"{what} has post_transform {post}; only NONE, LOGISTIC and SOFTMAX can be differentiated");

        g.Initializer.Add(LinearModels.Float([rows, features], w, prefix + ".coefficients"));
        if (intercepts is not null) g.Initializer.Add(LinearModels.Float([rows], intercepts, prefix + ".intercepts"));
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
        if (n.OpType != "LinearClassifier" || LinearModels.Labels(n) != 2) return s;
        var positive = post == "LOGISTIC" ? b.Sigmoid(s) : s;
        return b.Op("Concat", [b.Sub(b.Scalar(1, positive), positive), positive], ("axis", 1L));
    }
}
