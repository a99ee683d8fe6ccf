namespace OnnxUnlearn.Autodiff;

public static partial class GradientRegistry
{
    static void Reductions(Dictionary<string, OpGradient> d)
    {
    }
}
