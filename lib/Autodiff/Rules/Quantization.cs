namespace OnnxUnlearn.Autodiff;

// Activation quantizers on the data path (QDQ models: y = DequantizeLinear(QuantizeLinear(x))) pass the gradient straight
// through (straight-through estimator): rounding has derivative 0 almost everywhere, which would stop all learning, so
// d DQ(Q(x))/dx is taken as 1. Each op hands dY on unchanged (the integer tensor between them carries the float gradient
// in real units), so the pair is exactly the identity in the backward pass while the forward keeps the model's rounding.
// Quantized weights never reach these rules: Quantization.Lower replaces their DequantizeLinear by their real values.
// Scale and zero point are constants of the quantizer: not differentiable.
public static partial class GradientRegistry
{
    static void Quantization(Dictionary<string, OpGradient> d)
    {
        RuleOnly(d, "QuantizeLinear", c => c.Give(0, c.dY), 0);   // straight through: dX = dY
        RuleOnly(d, "DequantizeLinear", c => c.Give(0, c.dY), 0); // straight through, in real units: dX = dY
        // Dynamic quantization (Quantization.Lower puts a DequantizeLinear after it): the codes take dY; scale and zero point,
        // computed from min/max of x, are held constant like static ones.
        RuleOnly(d, "DynamicQuantizeLinear", c => c.Give(0, c.GradY(0) ?? c.B.ZerosLike(c.X(0))), 0); // straight through: dX = dY_codes
        // Quantization.Lower turns ONNX Runtime's MatMulInteger → Cast → Mul into a float MatMul before differentiation; one
        // left here is in another form (its weight is listed frozen with the reason).
        RuleOnly(d, "MatMulInteger", c => throw new UserError($"{Backprop.Describe(c.Node, c.Opset)}: only ONNX Runtime's dynamic form DynamicQuantizeLinear → MatMulInteger → Cast → Mul by Mul(x_scale, w_scale) is differentiated"), 1);
    }
}
