namespace OnnxUnlearn.Autodiff;

// Reduce* over the node's axes: an attribute (ReduceSum before opset 13, the others before 18) or an input (absent =
// all axes; empty with noop_with_empty_axes = 1 = no reduction), keepdims 0/1, negative axes. Each rule brings dY (and
// Y where it needs it) back to X's rank by unsqueezing the reduced axes (ReducedKept) and lets broadcasting do the rest.
public static partial class GradientRegistry
{
    static void Reductions(Dictionary<string, OpGradient> d)
    {
        void Reduce(string op, Func<GradContext, string> dX) => Rule(d, op, c => c.Give(0, dX(c)), 1);

        Reduce("ReduceSum", c => c.B.Expand(ReducedKept(c, c.dY), c.B.Shape(c.X(0))));
        // dX = dY / n, n = |X| / |Y| elements reduced into each output
        Reduce("ReduceMean", c =>
        {
            var b = c.B;
            var n = b.Op("CastLike", [b.Div(b.Op("Size", [c.X(0)]), b.Op("Size", [c.Y()])), c.X(0)]);
            return b.Expand(ReducedKept(c, b.Div(c.dY, n)), b.Shape(c.X(0)));
        });
        // Ties: dY is split evenly among the elements equal to the extremum (PyTorch's amax/amin): dX = dY·[X = Y]/#[X = Y]
        Reduce("ReduceMax", ReduceExtremumGrad);
        Reduce("ReduceMin", ReduceExtremumGrad);
        // Y = Σ|X|: dX = dY·sign(X)
        Reduce("ReduceL1", c => c.B.Mul(ReducedKept(c, c.dY), c.B.Op("Sign", [c.X(0)])));
        // Y = √ΣX²: dX = dY·X/Y (0 where Y = 0, the subgradient autograd frameworks pick)
        Reduce("ReduceL2", c =>
        {
            var b = c.B; var y = c.Y();
            var g = b.Where(b.Op("Equal", [y, b.Scalar(0, y)]), b.ZerosLike(y), b.Div(c.dY, y));
            return b.Mul(ReducedKept(c, g), c.X(0));
        });
        // Y = ΣX²: dX = 2·dY·X
        Reduce("ReduceSumSquare", c => c.B.Mul(ReducedKept(c, c.dY), c.B.Scale(c.X(0), 2)));
        // Y = log Σ exp X: dX = dY·exp(X − Y)
        Reduce("ReduceLogSumExp", c => c.B.Mul(ReducedKept(c, c.dY), c.B.Exp(c.B.Sub(c.X(0), ReducedKept(c, c.Y())))));
        // Y = log ΣX: dX = dY/ΣX = dY·exp(−Y)
        Reduce("ReduceLogSum", c => c.B.Expand(ReducedKept(c, c.B.Div(c.dY, c.B.Exp(c.Y()))), c.B.Shape(c.X(0))));
        // Y = ΠX: dX = dY·Y/X (inf/NaN where an X is 0: the zero-aware form is not implemented)
        Reduce("ReduceProd", c => c.B.Div(ReducedKept(c, c.B.Mul(c.dY, c.Y())), c.X(0)));
    }

    static string ReduceExtremumGrad(GradContext c)
    {
        var b = c.B; var x = c.X(0);
        var hit = b.Mask(b.Op("Equal", [x, ReducedKept(c, c.Y())]), x);
        var ties = b.Op("ReduceSum", [hit, .. ReducedAxesInput(c)], ("keepdims", 1L), ("noop_with_empty_axes", c.Int("noop_with_empty_axes", 0)));
        return b.Mul(hit, b.Div(ReducedKept(c, c.dY), ties));
    }

    /// <summary>The node's reduction axes as ReduceSum's input list (an attribute becomes a constant; none = all axes).</summary>
    static string[] ReducedAxesInput(GradContext c) =>
        c.Ints("axes") is { Length: > 0 } axes ? [c.B.Ints(axes)] : c.HasAttr("axes") || !c.HasX(1) ? [] : [c.X(1)];

    /// <summary>A value shaped like the reduction's output, with the reduced axes put back (extent 1) when keepdims = 0.</summary>
    static string ReducedKept(GradContext c, string v)
    {
        if (c.Int("keepdims", 1) != 0) return v;
        var axes = ReducedAxesInput(c);
        // No axes: everything was reduced to a scalar, which broadcasts as it is.
        return axes.Length == 0 ? v : c.B.Op("Unsqueeze", [v, axes[0]]);
    }
}
