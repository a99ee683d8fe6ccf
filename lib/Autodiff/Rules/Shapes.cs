namespace OnnxUnlearn.Autodiff;

public static partial class GradientRegistry
{
    static void Shapes(Dictionary<string, OpGradient> d)
    {
    }
}
