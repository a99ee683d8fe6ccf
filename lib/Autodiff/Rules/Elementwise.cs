namespace OnnxUnlearn.Autodiff;

// Y = f(X) elementwise, and broadcasting binary ops: dX = unbroadcast(dY ⊙ ∂f/∂X, X).
public static partial class GradientRegistry
{
    static void Elementwise(Dictionary<string, OpGradient> d)
    {
        Rule(d, "Add", c => { c.Give(0, c.Unbroadcast(c.dY, 0)); c.Give(1, c.Unbroadcast(c.dY, 1)); });
        Rule(d, "Sub", c => { c.Give(0, c.Unbroadcast(c.dY, 0)); if (c.Needs(1)) c.Give(1, c.Unbroadcast(c.B.Neg(c.dY), 1)); });
        Rule(d, "Mul", c =>
        {
            if (c.Needs(0)) c.Give(0, c.Unbroadcast(c.B.Mul(c.dY, c.X(1)), 0));
            if (c.Needs(1)) c.Give(1, c.Unbroadcast(c.B.Mul(c.dY, c.X(0)), 1));
        });
        Rule(d, "Div", c =>
        {   // Y = A/B: dA = dY/B, dB = −dY·Y/B
            if (c.Needs(0)) c.Give(0, c.Unbroadcast(c.B.Div(c.dY, c.X(1)), 0));
            if (c.Needs(1)) c.Give(1, c.Unbroadcast(c.B.Neg(c.B.Div(c.B.Mul(c.dY, c.Y()), c.X(1))), 1));
        });
        Rule(d, "Pow", c =>
        {   // Y = A^B: dA = dY·B·A^(B−1), dB = dY·Y·ln A (taken as 0 where A ≤ 0, as autograd frameworks do for A = 0)
            var b = c.B;
            var e = b.Op("CastLike", [c.X(1), c.X(0)]);
            if (c.Needs(0)) c.Give(0, c.Unbroadcast(b.Mul(c.dY, b.Mul(e, b.Op("Pow", [c.X(0), b.Sub(e, b.Scalar(1, e))]))), 0));
            if (c.Needs(1))
            {
                var positive = b.Op("Greater", [c.X(0), b.Scalar(0, c.X(0))]);
                var lnA = b.Where(positive, b.Log(b.Where(positive, c.X(0), b.Op("CastLike", [b.Scalar(1, c.X(0)), c.X(0)]))), b.ZerosLike(c.X(0)));
                c.Give(1, c.Unbroadcast(b.Op("CastLike", [b.Mul(c.dY, b.Mul(c.Y(), lnA)), c.X(1)]), 1));
            }
        });
        Rule(d, "Mod", c =>
        {   // floats need fmod = 1: Y = A − B·trunc(A/B), so dA = dY, dB = −dY·trunc(A/B) (integer Mod carries no gradient)
            var b = c.B;
            if (c.Shapes[c.Y()] is { } v && !Onnx.DataTypes.IsFloat(v.ElementType)) return;
            if (c.Needs(0)) c.Give(0, c.Unbroadcast(c.dY, 0));
            if (c.Needs(1))
            {
                var q = b.Div(c.X(0), c.X(1));
                var trunc = b.Mul(b.Op("Sign", [q]), b.Op("Floor", [b.Op("Abs", [q])]));
                c.Give(1, c.Unbroadcast(b.Neg(b.Mul(c.dY, trunc)), 1));
            }
        });
        Rule(d, "Neg", c => c.Give(0, c.B.Neg(c.dY)));
        Rule(d, "Identity", c => c.Give(0, c.dY));
        Rule(d, "Abs", c => c.Give(0, c.B.Mul(c.dY, c.B.Op("Sign", [c.X(0)]))));
        Rule(d, "Exp", c => c.Give(0, c.B.Mul(c.dY, c.Y())));
        Rule(d, "Log", c => c.Give(0, c.B.Div(c.dY, c.X(0))));
        Rule(d, "Sqrt", c => c.Give(0, c.B.Div(c.dY, c.B.Scale(c.Y(), 2))));
        Rule(d, "Reciprocal", c => c.Give(0, c.B.Neg(c.B.Mul(c.dY, c.B.Mul(c.Y(), c.Y())))));
        Rule(d, "Sin", c => c.Give(0, c.B.Mul(c.dY, c.B.Op("Cos", [c.X(0)]))));
        Rule(d, "Cos", c => c.Give(0, c.B.Neg(c.B.Mul(c.dY, c.B.Op("Sin", [c.X(0)])))));
        Rule(d, "Tan", c => c.Give(0, c.B.Mul(c.dY, c.B.Add(c.B.Scalar(1, c.Y()), c.B.Mul(c.Y(), c.Y())))));            // 1 + tan²
        Rule(d, "Asin", c => c.Give(0, c.B.Div(c.dY, c.B.Sqrt(c.B.Sub(c.B.Scalar(1, c.X(0)), c.B.Mul(c.X(0), c.X(0)))))));  // 1/√(1−x²)
        Rule(d, "Acos", c => c.Give(0, c.B.Neg(c.B.Div(c.dY, c.B.Sqrt(c.B.Sub(c.B.Scalar(1, c.X(0)), c.B.Mul(c.X(0), c.X(0))))))));
        Rule(d, "Atan", c => c.Give(0, c.B.Div(c.dY, c.B.Add(c.B.Scalar(1, c.X(0)), c.B.Mul(c.X(0), c.X(0))))));           // 1/(1+x²)
        Rule(d, "Sinh", c => c.Give(0, c.B.Mul(c.dY, c.B.Op("Cosh", [c.X(0)]))));
        Rule(d, "Cosh", c => c.Give(0, c.B.Mul(c.dY, c.B.Op("Sinh", [c.X(0)]))));
        Rule(d, "Asinh", c => c.Give(0, c.B.Div(c.dY, c.B.Sqrt(c.B.Add(c.B.Mul(c.X(0), c.X(0)), c.B.Scalar(1, c.X(0)))))));  // 1/√(x²+1)
        Rule(d, "Acosh", c => c.Give(0, c.B.Div(c.dY, c.B.Sqrt(c.B.Sub(c.B.Mul(c.X(0), c.X(0)), c.B.Scalar(1, c.X(0)))))));  // 1/√(x²−1)
        Rule(d, "Atanh", c => c.Give(0, c.B.Div(c.dY, c.B.Sub(c.B.Scalar(1, c.X(0)), c.B.Mul(c.X(0), c.X(0))))));           // 1/(1−x²)
        Rule(d, "Shrink", c =>
        {   // y = x − bias·sign(x) where |x| > λ, else 0: slope 1 outside [−λ, λ]
            var x = c.X(0);
            c.Give(0, c.B.Mul(c.dY, c.B.Mask(c.B.Op("Greater", [c.B.Op("Abs", [x]), c.B.Scalar(c.Float("lambd", 0.5f), x)]), x)));
        });
        Rule(d, "Tanh", c => c.Give(0, c.B.Mul(c.dY, c.B.Sub(c.B.Scalar(1, c.Y()), c.B.Mul(c.Y(), c.Y())))));
        // dσ = e/(1+e)², e = exp(−|x|): from the input, exact to float32 precision where σ saturates (σ(1−σ) from a
        // rounded σ is not).
        Rule(d, "Sigmoid", c =>
        {
            var b = c.B; var e = b.Exp(b.Neg(b.Op("Abs", [c.X(0)])));
            var onePlus = b.Add(b.Scalar(1, e), e);
            c.Give(0, b.Mul(c.dY, b.Div(e, b.Mul(onePlus, onePlus))));
        });
        Rule(d, "Softplus", c => c.Give(0, c.B.Mul(c.dY, c.B.StableSigmoid(c.X(0)))));
        Rule(d, "Softsign", c =>
        {   // y = x/(1+|x|): dy = 1/(1+|x|)²
            var den = c.B.Add(c.B.Scalar(1, c.X(0)), c.B.Op("Abs", [c.X(0)]));
            c.Give(0, c.B.Div(c.dY, c.B.Mul(den, den)));
        });
        Rule(d, "Erf", c => c.Give(0, c.B.Mul(c.dY, c.B.Scale(c.B.Exp(c.B.Neg(c.B.Mul(c.X(0), c.X(0)))), 2 / Math.Sqrt(Math.PI)))));
        Rule(d, "Relu", c => c.Give(0, c.B.Mul(c.dY, c.B.Mask(c.B.Op("Greater", [c.X(0), c.B.Scalar(0, c.X(0))]), c.X(0)))));
        Rule(d, "LeakyRelu", c =>
        {
            var b = c.B; var x = c.X(0);
            var slope = b.Where(b.Op("Greater", [x, b.Scalar(0, x)]), b.Scalar(1, x), b.Scalar(c.Float("alpha", 0.01f), x));
            c.Give(0, b.Mul(c.dY, slope));
        });
        Rule(d, "ThresholdedRelu", c =>
        {
            var x = c.X(0);
            c.Give(0, c.B.Mul(c.dY, c.B.Mask(c.B.Op("Greater", [x, c.B.Scalar(c.Float("alpha", 1f), x)]), x)));
        });
        Rule(d, "Elu", c =>
        {   // y = x (x > 0), α(eˣ − 1) otherwise: dy = 1 or y + α
            var b = c.B; var x = c.X(0); var alpha = c.Float("alpha", 1f);
            c.Give(0, b.Mul(c.dY, b.Where(b.Op("Greater", [x, b.Scalar(0, x)]), b.Scalar(1, x), b.Add(c.Y(), b.Scalar(alpha, x)))));
        });
        Rule(d, "Selu", c =>
        {
            var b = c.B; var x = c.X(0);
            double alpha = c.Float("alpha", 1.67326319217681884765625f), gamma = c.Float("gamma", 1.05070102214813232421875f);
            var neg = b.Scale(b.Exp(x), alpha * gamma);
            c.Give(0, b.Mul(c.dY, b.Where(b.Op("Greater", [x, b.Scalar(0, x)]), b.Scalar(gamma, x), neg)));
        });
        Rule(d, "Celu", c =>
        {   // y = max(0,x) + min(0, α(e^(x/α) − 1)): dy = 1 (x > 0) or e^(x/α)
            var b = c.B; var x = c.X(0); double alpha = c.Float("alpha", 1f);
            c.Give(0, b.Mul(c.dY, b.Where(b.Op("Greater", [x, b.Scalar(0, x)]), b.Scalar(1, x), b.Exp(b.Scale(x, 1 / alpha)))));
        });
        Rule(d, "HardSigmoid", c =>
        {   // y = clip(αx + β, 0, 1): dy = α inside (0, 1)
            var b = c.B; var x = c.X(0); double alpha = c.Float("alpha", 0.2f), beta = c.Float("beta", 0.5f);
            var z = b.Add(b.Scale(x, alpha), b.Scalar(beta, x));
            var inside = b.Op("And", [b.Op("Greater", [z, b.Scalar(0, x)]), b.Op("Less", [z, b.Scalar(1, x)])]);
            c.Give(0, b.Mul(c.dY, b.Scale(b.Mask(inside, x), alpha)));
        });
        Rule(d, "HardSwish", c =>
        {   // y = x·clip(x/6 + 1/2, 0, 1): dy = 0 (x ≤ −3), x/3 + 1/2 (−3 < x < 3), 1 (x ≥ 3)
            var b = c.B; var x = c.X(0);
            var mid = b.Add(b.Scale(x, 1.0 / 3), b.Scalar(0.5, x));
            var slope = b.Where(b.Op("Less", [x, b.Scalar(-3, x)]), b.Scalar(0, x), b.Where(b.Op("Greater", [x, b.Scalar(3, x)]), b.Scalar(1, x), mid));
            c.Give(0, b.Mul(c.dY, slope));
        });
        Rule(d, "Mish", c =>
        {   // y = x·tanh(softplus(x)): dy = tanh(sp) + x·σ(x)·(1 − tanh²(sp))
            var b = c.B; var x = c.X(0);
            var t = b.Op("Tanh", [b.Op("Softplus", [x])]);
            var slope = b.Add(t, b.Mul(b.Mul(x, b.StableSigmoid(x)), b.Sub(b.Scalar(1, x), b.Mul(t, t))));
            c.Give(0, b.Mul(c.dY, slope));
        });
        Rule(d, "Gelu", c =>
        {
            var b = c.B; var x = c.X(0);
            string slope;
            if (c.Str("approximate", "none") == "tanh")
            {   // y = x/2·(1 + tanh(u)), u = √(2/π)(x + 0.044715x³)
                double k = Math.Sqrt(2 / Math.PI);
                var x2 = b.Mul(x, x);
                var t = b.Op("Tanh", [b.Scale(b.Add(x, b.Scale(b.Mul(x2, x), 0.044715)), k)]);
                var du = b.Scale(b.Add(b.Scalar(1, x), b.Scale(x2, 3 * 0.044715)), k);
                slope = b.Add(b.Scale(b.Add(b.Scalar(1, x), t), 0.5), b.Mul(b.Scale(x, 0.5), b.Mul(b.Sub(b.Scalar(1, x), b.Mul(t, t)), du)));
            }
            else
            {   // y = x·Φ(x): dy = Φ(x) + x·φ(x)
                var cdf = b.Scale(b.Add(b.Scalar(1, x), b.Op("Erf", [b.Scale(x, 1 / Math.Sqrt(2))])), 0.5);
                var pdf = b.Scale(b.Exp(b.Scale(b.Mul(x, x), -0.5)), 1 / Math.Sqrt(2 * Math.PI));
                slope = b.Add(cdf, b.Mul(x, pdf));
            }
            c.Give(0, b.Mul(c.dY, slope));
        });
        Rule(d, "PRelu", c =>
        {   // y = x (x > 0), s·x otherwise; s broadcasts to x
            var b = c.B; var x = c.X(0); var s = c.X(1);
            var pos = b.Op("Greater", [x, b.Scalar(0, x)]);
            if (c.Needs(0)) c.Give(0, b.Mul(c.dY, b.Where(pos, b.Scalar(1, x), b.Expand(s, b.Shape(x)))));
            if (c.Needs(1)) c.Give(1, c.Unbroadcast(b.Mul(c.dY, b.Where(pos, b.ZerosLike(x), x)), 1));
        });
        Rule(d, "Clip", c =>
        {   // Pass-through strictly inside the bounds (bounds are inputs from opset 11; older forms are upgraded first).
            var b = c.B; var x = c.X(0);
            var inside = b.Mask(b.Op("Equal", [c.Y(), x]), x);
            c.Give(0, b.Mul(c.dY, inside));
        }, 1, 2);
        Rule(d, "Where", c =>
        {
            var b = c.B;
            if (c.Needs(1)) c.Give(1, c.Unbroadcast(b.Where(c.X(0), c.dY, b.ZerosLike(c.dY)), 1));
            if (c.Needs(2)) c.Give(2, c.Unbroadcast(b.Where(c.X(0), b.ZerosLike(c.dY), c.dY), 2));
        }, 0);
        Rule(d, "Cast", c =>
        {
            if (c.Shapes[c.X(0)] is { } v && Onnx.DataTypes.IsFloat(v.ElementType))
                c.Give(0, c.B.Op("CastLike", [c.dY, c.X(0)]));
        });
        Rule(d, "CastLike", c => c.Give(0, c.B.Op("CastLike", [c.dY, c.X(0)])), 1);
        Rule(d, "Dropout", c => c.Give(0, c.dY), 1, 2);
        // Sum/Mean of n broadcasting inputs; Max/Min route each element's gradient to the input that produced it.
        Rule(d, "Sum", c => { for (int i = 0; i < c.Inputs; i++) if (c.Needs(i)) c.Give(i, c.Unbroadcast(c.dY, i)); });
        Rule(d, "Mean", c =>
        {
            var g = c.B.Scale(c.dY, 1.0 / c.Inputs);
            for (int i = 0; i < c.Inputs; i++) if (c.Needs(i)) c.Give(i, c.Unbroadcast(g, i));
        });
        Rule(d, "Max", SelectRule);
        Rule(d, "Min", SelectRule);
    }

    /// <summary>Max/Min: each output element came from the first input equal to it (ties go to the lowest index, as in the forward).</summary>
    static void SelectRule(GradContext c)
    {
        var b = c.B;
        string? taken = null;
        for (int i = 0; i < c.Inputs; i++)
        {
            var hit = b.Op("Equal", [c.X(i), c.Y()]);
            var mine = taken is null ? hit : b.Op("And", [hit, b.Op("Not", [taken])]);
            if (c.Needs(i)) c.Give(i, c.Unbroadcast(b.Mul(c.dY, b.Mask(mine, c.dY)), i));
            taken = taken is null ? hit : b.Op("Or", [taken, hit]);
        }
    }
}
