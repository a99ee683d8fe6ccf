namespace OnnxUnlearn.Autodiff;

// Products: MatMul (batched, broadcasting, 1-D operands), Gemm, Det.
public static partial class GradientRegistry
{
    static void Linear(Dictionary<string, OpGradient> d)
    {
        Rule(d, "MatMul", MatMulRule);
        Rule(d, "Gemm", c =>
        {   // Y = α·op(A)·op(B) + β·C, op = optional transpose
            var b = c.B;
            long ta = c.Int("transA", 0), tb = c.Int("transB", 0);
            float alpha = c.Float("alpha", 1f), beta = c.Float("beta", 1f);
            (string, string, long, long) dA = ta == 0 ? (c.dY, c.X(1), 0, 1 - tb) : (c.X(1), c.dY, tb, 1);
            (string, string, long, long) dB = tb == 0 ? (c.X(0), c.dY, 1 - ta, 0) : (c.dY, c.X(0), 1, ta);
            string Product((string P, string Q, long TP, long TQ) t) =>
                b.Op("Gemm", [t.P, t.Q], ("transA", t.TP), ("transB", t.TQ), ("alpha", alpha));
            if (c.Needs(0)) c.Give(0, Product(dA));
            if (c.Needs(1)) c.Give(1, Product(dB));
            if (c.Needs(2)) c.Give(2, c.Unbroadcast(b.Scale(c.dY, beta), 2));
        });
        Rule(d, "Det", c =>
        {   // Y = det A over the last two axes: dA = dY·adj(A)ᵀ, the cofactor matrix (exact for singular A too), built from
            // the determinants of all n² minors; n must be fixed
            var b = c.B; var a = c.X(0); int r = c.Rank(a);
            long n = c.Dims(a)[^1];
            if (n < 1) throw new UserError($"the gradient of {Backprop.Describe(c.Node, c.Opset)} needs a fixed matrix size");
            var g = b.Unsqueeze(c.dY, -1, -2);
            if (n == 1) { c.Give(0, b.Expand(g, b.Shape(a))); return; }
            var others = b.Reshape(b.Ints([.. Enumerable.Range(0, (int)n).SelectMany(i => Enumerable.Range(0, (int)n).Where(k => k != i).Select(k => (long)k))]), b.Ints(n, n - 1));
            var rows = b.Op("Gather", [a, others], ("axis", (long)r - 2));      // […, i, n−1 rows, n]
            var minors = b.Op("Gather", [rows, others], ("axis", (long)r));     // […, i, rows, j, n−1 columns]
            minors = b.Transpose(minors, [.. Enumerable.Range(0, r - 2).Select(k => (long)k), r - 2, r, r - 1, r + 1]);
            var signs = b.Op("CastLike", [b.Reshape(b.Ints([.. Enumerable.Range(0, (int)(n * n)).Select(k => (k / n + k % n) % 2 == 0 ? 1L : -1L)]), b.Ints(n, n)), a]);
            c.Give(0, b.Mul(g, b.Mul(signs, b.Op("Det", [minors]))));
        });
    }

    /// <summary>
    /// Y = A·B over the last two axes, batch axes broadcasting: dA = dY·Bᵀ, dB = Aᵀ·dY, each summed back to its
    /// operand's shape. 1-D operands are promoted to matrices first, as the forward does.
    /// </summary>
    static void MatMulRule(GradContext c)
    {
        var b = c.B;
        var (a, bb, y) = (c.Shapes[c.X(0)]!, c.Shapes[c.X(1)]!, c.Shapes[c.Y()]!);
        string A = c.X(0), B = c.X(1), dY = c.dY;
        // Restore the axes the forward dropped: first B's column axis (last), then A's row axis (second to last).
        if (bb.Rank == 1) { B = b.Unsqueeze(B, -1); bb = bb.Unsqueezed(-1); dY = b.Unsqueeze(dY, -1); y = y.Unsqueezed(-1); }
        if (a.Rank == 1) { A = b.Unsqueeze(A, 0); a = a.Unsqueezed(0); dY = b.Unsqueeze(dY, -2); y = y.Unsqueezed(-2); }

        if (c.Needs(0))
        {
            var g = b.MatMul(dY, b.SwapLast2(B, bb.Rank));
            g = c.UnbroadcastTo(g, y.WithTail(a, 2), A, a);
            c.Give(0, c.Shapes[c.X(0)]!.Rank == 1 ? b.Squeeze(g, 0) : g);
        }
        if (c.Needs(1))
        {
            string g;
            if (bb.Rank == 2 && a.Rank > 2)
            {   // Shared weight under batched activations: one big product instead of a batch of them and a sum.
                var k = b.Op("Gather", [b.Shape(A), b.Ints(-1)]);
                var n = b.Op("Gather", [b.Shape(dY), b.Ints(-1)]);
                var a2 = b.Reshape(A, b.Op("Concat", [b.Ints(-1), k], ("axis", 0L)));
                var y2 = b.Reshape(dY, b.Op("Concat", [b.Ints(-1), n], ("axis", 0L)));
                g = b.MatMul(b.Transpose(a2, [1, 0]), y2);
            }
            else g = c.UnbroadcastTo(b.MatMul(b.SwapLast2(A, a.Rank), dY), y.WithTail(bb, 2), B, bb);
            c.Give(1, c.Shapes[c.X(1)]!.Rank == 1 ? b.Squeeze(g, -1) : g);
        }
    }
}
