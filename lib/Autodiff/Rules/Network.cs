namespace OnnxUnlearn.Autodiff;

public static partial class GradientRegistry
{
    static void Network(Dictionary<string, OpGradient> d)
    {
    }
}
