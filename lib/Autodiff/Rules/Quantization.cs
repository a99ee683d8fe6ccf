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
    }
}
