using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Autodiff;

// ai.onnx.ml ops that scikit-learn converters put after a model's scores. (LinearClassifier/LinearRegressor need no rule:
// Lowering.LinearScores rewrites them in standard ops, since their weights are attributes.)
public static partial class GradientRegistry
{
    static void MachineLearning(Dictionary<string, OpGradient> d)
    {
        // Normalizer, as ONNX Runtime computes it (the spec's formulas leave signs open): over the last axis of a [C] or
        // [N, C] input, Y = X / s with s = max(X) (MAX, signed: not max |X|), Σ|X| (L1) or √ΣX² (L2); a row whose s is
        // 0 is copied unchanged. With σ = Σ dY⊙Y per row: dX = (dY − σ·∂s/∂X) / s, ∂s/∂X = [X = max]/#ties (MAX, ties
        // split as ReduceMax does), sign(X) (L1), Y (L2); dX = dY on rows where s = 0.
        d.Add(Domains.OpName("ai.onnx.ml", "Normalizer"), new OpGradient(c =>
        {
            var b = c.B; var y = c.Y();
            var x = b.Op("CastLike", [c.X(0), y]); // Y is float whatever X is (double, int)
            var norm = c.Str("norm", "MAX");
            var s = norm switch
            {
                "MAX" => b.Reduce("ReduceMax", x, [-1], keepDims: true),
                "L1" => b.ReduceSum(b.Op("Abs", [x]), [-1], keepDims: true),
                "L2" => b.Sqrt(b.ReduceSum(b.Mul(x, x), [-1], keepDims: true)),
                _ => throw new UserError($"Normalizer '{c.Node.Name}' has norm '{norm}'; the ai.onnx.ml spec knows MAX, L1 and L2"),
            };
            var zero = b.Op("Equal", [s, b.Scalar(0, s)]);
            var sigma = b.Where(zero, b.ZerosLike(s), b.ReduceSum(b.Mul(c.dY, y), [-1], keepDims: true));
            string ds = norm switch
            {
                "MAX" => MaxShare(b, x, s),
                "L1" => b.Op("Sign", [x]),
                _ => y,
            };
            var dx = b.Div(b.Sub(c.dY, b.Mul(sigma, ds)), b.Where(zero, b.Scalar(1, s), s));
            c.Give(0, b.Op("CastLike", [dx, c.X(0)]));
        }, i => i == 0));

        static string MaxShare(GraphBuilder b, string x, string max)
        {
            var hit = b.Mask(b.Op("Equal", [x, max]), x);
            return b.Div(hit, b.ReduceSum(hit, [-1], keepDims: true));
        }
    }
}
