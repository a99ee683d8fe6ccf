using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;

namespace OnnxUnlearn.Tests.Autodiff;

/// <summary>Convolution, pooling and resampling rules against finite differences (float32: ORT's Conv kernels are float only).</summary>
public class ConvGradientTests
{
    static long[] L(params long[] v) => v;
    static (string, object)[] A(params (string, object)[] a) => a;

    static void Conv(long[] x, long[] w, bool bias = true, params (string, object)[] attrs) => CheckEachInput(new NodeModel
    {
        Op = "Conv", Inputs = bias ? [("x", x), ("w", w), ("b", [w[0]])] : [("x", x), ("w", w)], Attrs = attrs,
    });

    /// <summary>Checks the gradient of each input on its own, so that a small input (a bias) is not drowned by a big one.</summary>
    static void CheckEachInput(NodeModel node)
    {
        var (model, feeds, wrt) = node.Build();
        foreach (var input in wrt)
        {
            var r = GradCheck.Check(model, feeds, [input], seed: node.Seed);
            Assert.True(r.MaxRelError <= GradCheck.Tolerance(false), $"{node.Op} d{input}: relative error {r.MaxRelError:E2} ({r.Detail})");
        }
    }

    [Fact] public void Conv1D() => Conv([2, 3, 7], [4, 3, 3], attrs: ("pads", L(1, 2)));
    [Fact] public void Conv2D() => Conv([2, 3, 6, 5], [4, 3, 3, 3], attrs: ("pads", L(1, 1, 1, 1)));
    [Fact] public void Conv3D() => Conv([1, 2, 4, 5, 4], [3, 2, 2, 3, 2], attrs: ("pads", L(0, 1, 1, 1, 0, 1)));
    [Fact] public void ConvStrides() => Conv([2, 3, 7, 6], [4, 3, 3, 3], attrs: ("strides", L(2, 1)));
    [Fact] public void ConvAsymmetricPads() => Conv([1, 2, 5, 6], [3, 2, 3, 3], attrs: ("pads", L(0, 1, 0, 1)));
    [Fact] public void ConvAsymmetricPadsStrided() => Conv([1, 2, 7, 6], [3, 2, 3, 2], attrs: [("pads", L(1, 0, 2, 1)), ("strides", L(2, 3))]);
    [Fact] public void ConvSameUpperStrided() => Conv([1, 2, 7, 8], [3, 2, 3, 3], attrs: [("auto_pad", "SAME_UPPER"), ("strides", L(2, 2))]);
    [Fact] public void ConvSameLowerStrided() => Conv([1, 2, 7, 8], [3, 2, 3, 3], attrs: [("auto_pad", "SAME_LOWER"), ("strides", L(2, 2))]);
    [Fact] public void ConvSameLowerEvenKernel() => Conv([1, 2, 5, 6], [3, 2, 2, 4], attrs: ("auto_pad", "SAME_LOWER"));
    [Fact] public void ConvValid() => Conv([1, 2, 7, 8], [3, 2, 3, 3], attrs: [("auto_pad", "VALID"), ("strides", L(2, 2))]);
    [Fact] public void ConvDilations() => Conv([1, 2, 8, 7], [3, 2, 3, 3], attrs: [("dilations", L(2, 2)), ("pads", L(1, 2, 1, 0))]);
    [Fact] public void ConvDilationsStrides() => Conv([1, 2, 9, 9], [3, 2, 3, 2], attrs: [("dilations", L(2, 3)), ("strides", L(2, 2))]);
    [Fact] public void ConvGroups() => Conv([2, 4, 6, 6], [6, 2, 3, 3], attrs: [("group", 2L), ("pads", L(1, 1, 1, 1))]);
    [Fact] public void ConvDepthwise() => Conv([2, 3, 6, 6], [3, 1, 3, 3], attrs: ("group", 3L));
    [Fact] public void ConvDepthwiseMultiplier() => Conv([2, 3, 7, 6], [6, 1, 3, 3], attrs: [("group", 3L), ("strides", L(2, 2)), ("pads", L(1, 1, 1, 1))]);
    [Fact] public void ConvNoBias() => Conv([2, 3, 5, 5], [4, 3, 3, 3], bias: false);
    [Fact] public void ConvStrideLeavesTrailingRows() => Conv([1, 2, 8, 9], [3, 2, 3, 3], attrs: ("strides", L(2, 3)));   // (8−3)%2, (9−3)%3: 1 and 0

    static void ConvTranspose(long[] x, long[] w, params (string, object)[] attrs) => CheckEachInput(new NodeModel
    {
        Op = "ConvTranspose", Inputs = [("x", x), ("w", w), ("b", [w[1] * (attrs.FirstOrDefault(a => a.Item1 == "group").Item2 as long? ?? 1)])], Attrs = attrs,
    });

    [Fact] public void ConvTranspose1D() => ConvTranspose([2, 3, 5], [3, 2, 3], ("strides", L(2)));
    [Fact] public void ConvTranspose2D() => ConvTranspose([2, 3, 4, 4], [3, 2, 3, 3]);
    [Fact] public void ConvTranspose3D() => ConvTranspose([1, 2, 3, 2, 3], [2, 2, 2, 3, 2], ("strides", L(1, 2, 1)));
    [Fact] public void ConvTransposeStridesPadsOutputPadding() =>
        ConvTranspose([1, 3, 4, 3], [3, 2, 3, 3], ("strides", L(2, 3)), ("pads", L(1, 0, 1, 2)), ("output_padding", L(1, 2)));
    [Fact] public void ConvTransposeGroups() => ConvTranspose([1, 4, 3, 3], [4, 3, 3, 3], ("group", 2L), ("strides", L(2, 2)));
    [Fact] public void ConvTransposeDilations() => ConvTranspose([1, 2, 3, 4], [2, 2, 3, 2], ("dilations", L(2, 3)), ("pads", L(1, 1, 0, 1)));
    [Fact] public void ConvTransposeOutputShape() => ConvTranspose([1, 2, 3, 3], [2, 2, 3, 3], ("strides", L(2, 2)), ("output_shape", L(6, 5)));
    [Fact] public void ConvTransposeOutputShapeSameUpper() =>
        ConvTranspose([1, 2, 3, 3], [2, 2, 3, 3], ("strides", L(2, 2)), ("output_shape", L(6, 5)), ("auto_pad", "SAME_UPPER"));
    [Fact] public void ConvTransposeSameUpper() => ConvTranspose([1, 2, 3, 3], [2, 2, 3, 3], ("strides", L(2, 2)), ("auto_pad", "SAME_UPPER"));

    static void Pool(string op, long[] x, long opset = 17, params (string, object)[] attrs) =>
        new NodeModel { Op = op, Inputs = [("x", x)], Attrs = attrs, Opset = opset }.Check();

    [Fact] public void MaxPool2x2() => Pool("MaxPool", [2, 3, 6, 6], attrs: [("kernel_shape", L(2, 2)), ("strides", L(2, 2))]);
    [Fact] public void MaxPool1D() => Pool("MaxPool", [2, 3, 9], attrs: [("kernel_shape", L(3)), ("strides", L(2)), ("pads", L(1, 1))]);
    [Fact] public void MaxPool3D() => Pool("MaxPool", [1, 2, 4, 5, 4], attrs: [("kernel_shape", L(2, 3, 2)), ("strides", L(2, 1, 2))]);
    [Fact] public void MaxPoolOverlappingPadded() => Pool("MaxPool", [2, 2, 5, 6], attrs: [("kernel_shape", L(3, 3)), ("pads", L(1, 1, 1, 1))]);
    [Fact] public void MaxPoolDilatedStridedPadded() => Pool("MaxPool", [1, 2, 11, 9], attrs: [("kernel_shape", L(3, 3)), ("dilations", L(2, 3)), ("strides", L(2, 1)), ("pads", L(1, 2, 1, 0))]);
    [Fact] public void MaxPoolOverlappingOpset15() => Pool("MaxPool", [2, 2, 5, 6], 15, [("kernel_shape", L(3, 3)), ("strides", L(2, 1)), ("pads", L(1, 1, 1, 1))]);
    [Fact] public void MaxPoolCeilMode() => Pool("MaxPool", [1, 2, 7, 8], attrs: [("kernel_shape", L(3, 3)), ("strides", L(2, 2)), ("pads", L(1, 0, 0, 1)), ("ceil_mode", 1L)]);
    [Fact] public void MaxPoolDilations() => Pool("MaxPool", [1, 2, 7, 7], attrs: [("kernel_shape", L(2, 3)), ("dilations", L(2, 2)), ("strides", L(1, 2))]);
    [Fact] public void MaxPoolSameUpper() => Pool("MaxPool", [1, 2, 7, 6], attrs: [("kernel_shape", L(3, 2)), ("strides", L(2, 2)), ("auto_pad", "SAME_UPPER")]);
    [Fact] public void MaxPoolDouble() => new NodeModel { Op = "MaxPool", Inputs = [("x", [1, 2, 6, 5])], Double = true, Attrs = [("kernel_shape", L(3, 2)), ("pads", L(1, 0, 1, 1))] }.Check();
    [Fact] public void MaxPoolIndicesOutput() => new NodeModel { Op = "MaxPool", Inputs = [("x", [1, 2, 6, 5])], Outputs = 2, Attrs = [("kernel_shape", L(3, 2)), ("strides", L(1, 2))] }.Check();

    [Fact] public void AveragePoolExcludePad() => Pool("AveragePool", [2, 2, 7, 6], attrs: [("kernel_shape", L(3, 3)), ("strides", L(2, 1)), ("pads", L(1, 1, 1, 0))]);
    [Fact] public void AveragePoolIncludePad() => Pool("AveragePool", [2, 2, 7, 6], attrs: [("kernel_shape", L(3, 3)), ("strides", L(2, 1)), ("pads", L(1, 1, 1, 0)), ("count_include_pad", 1L)]);
    [Fact] public void AveragePoolCeilMode() => Pool("AveragePool", [1, 2, 7, 8], attrs: [("kernel_shape", L(3, 3)), ("strides", L(2, 2)), ("pads", L(1, 0, 0, 0)), ("ceil_mode", 1L)]);
    [Fact] public void AveragePoolCeilModeIncludePad() => Pool("AveragePool", [1, 2, 7, 8], attrs: [("kernel_shape", L(3, 3)), ("strides", L(2, 2)), ("pads", L(0, 1, 1, 0)), ("ceil_mode", 1L), ("count_include_pad", 1L)]);
    [Fact] public void AveragePoolNoPads() => Pool("AveragePool", [2, 3, 6, 6], attrs: [("kernel_shape", L(2, 2)), ("strides", L(2, 2))]);
    [Fact] public void AveragePool1DOverlapping() => Pool("AveragePool", [2, 3, 8], attrs: [("kernel_shape", L(3)), ("pads", L(2, 1))]);
    [Fact] public void AveragePoolSameLower() => Pool("AveragePool", [1, 2, 7, 6], attrs: [("kernel_shape", L(3, 2)), ("strides", L(2, 2)), ("auto_pad", "SAME_LOWER")]);
    [Fact] public void AveragePoolDilations() => Pool("AveragePool", [1, 2, 7, 8], 19, [("kernel_shape", L(2, 3)), ("dilations", L(2, 2)), ("pads", L(1, 1, 0, 1))]);
    [Fact] public void GlobalAveragePool() => Pool("GlobalAveragePool", [2, 3, 4, 5]);
    [Fact] public void GlobalMaxPool() => Pool("GlobalMaxPool", [2, 3, 4, 5]);
    [Fact] public void GlobalMaxPool1D() => Pool("GlobalMaxPool", [2, 3, 7]);

    static void Resize(long[] x, string mode, string coordinates, float[]? scales = null, long[]? sizes = null, string nearest = "round_prefer_floor", long opset = 18) => new NodeModel
    {
        Op = "Resize", Inputs = [("x", x)], Opset = opset,
        FloatConsts = scales is null ? [] : new() { [2] = scales }, IntConsts = sizes is null ? [] : new() { [3] = sizes },
        Attrs = [("mode", mode), ("coordinate_transformation_mode", coordinates), ("nearest_mode", nearest)],
    }.Check();

    [Fact] public void ResizeNearestAsymmetricFloor() => Resize([1, 2, 3, 4], "nearest", "asymmetric", scales: [1, 1, 2, 3], nearest: "floor");
    [Fact] public void ResizeNearestHalfPixel() => Resize([2, 2, 4, 3], "nearest", "half_pixel", scales: [1, 1, 1.5f, 2.5f]);
    [Fact] public void ResizeNearestAlignCornersSizes() => Resize([1, 2, 3, 4], "nearest", "align_corners", sizes: [1, 2, 7, 5], nearest: "round_prefer_ceil");
    [Fact] public void ResizeNearestDownsample() => Resize([1, 2, 8, 10], "nearest", "half_pixel", scales: [1, 1, 0.5f, 0.6f]);
    [Fact] public void ResizeNearestPytorchHalfPixelCeil() => Resize([1, 2, 5, 4], "nearest", "pytorch_half_pixel", sizes: [1, 2, 8, 3], nearest: "ceil");
    [Fact] public void ResizeNearest1DInput() => Resize([2, 3, 5], "nearest", "asymmetric", scales: [1, 1, 2.5f], nearest: "floor");
    [Fact] public void ResizeNearestOpset15() => Resize([1, 2, 3, 4], "nearest", "half_pixel", scales: [1, 1, 2, 1.5f], opset: 15);
    [Fact] public void ResizeLinearHalfPixelUp() => Resize([2, 2, 3, 4], "linear", "half_pixel", scales: [1, 1, 2, 2]);
    [Fact] public void ResizeLinearHalfPixelDown() => Resize([1, 2, 7, 8], "linear", "half_pixel", sizes: [1, 2, 3, 5]);
    [Fact] public void ResizeLinearAlignCorners() => Resize([1, 2, 4, 5], "linear", "align_corners", sizes: [1, 2, 7, 3]);
    [Fact] public void ResizeLinearAsymmetric() => Resize([1, 2, 4, 3], "linear", "asymmetric", scales: [1, 1, 1.5f, 2.5f]);
    [Fact] public void ResizeLinearPytorchHalfPixel() => Resize([1, 2, 5, 4], "linear", "pytorch_half_pixel", sizes: [1, 2, 1, 7]);
    [Fact] public void ResizeLinearOpset15() => Resize([1, 2, 4, 5], "linear", "align_corners", scales: [1, 1, 1.5f, 0.6f], opset: 15);

    /// <summary>
    /// Ties: windows of a clamped input hold several equal maxima, where finite differences are meaningless. The
    /// gradient must put each window's dY on exactly the element ONNX Runtime's MaxPool Indices names, adding where
    /// overlapping windows pick the same element.
    /// </summary>
    [Theory]
    [InlineData(17, new long[] { 3, 3 }, new long[] { 1, 1 }, new long[] { 1, 1, 1, 1 }, 0L)]
    [InlineData(15, new long[] { 3, 3 }, new long[] { 1, 1 }, new long[] { 1, 1, 1, 1 }, 0L)]
    [InlineData(17, new long[] { 3, 2 }, new long[] { 2, 2 }, new long[] { 1, 0, 0, 1 }, 1L)]
    [InlineData(17, new long[] { 2, 2 }, new long[] { 2, 2 }, new long[] { 0, 0, 0, 0 }, 0L)]
    public void MaxPoolTies(long opset, long[] kernel, long[] strides, long[] pads, long ceilMode)
    {
        long[] shape = [2, 2, 6, 7];
        var rng = new Random(3);
        // Clamped to {0, 1, 2}: most windows hold several equal maxima.
        var x = Enumerable.Range(0, 2 * 2 * 6 * 7).Select(_ => (float)Math.Clamp(rng.Next(-3, 4), 0, 2)).ToArray();
        var node = new NodeModel
        {
            Op = "MaxPool", Inputs = [("x", shape)], Values = { ["x"] = x }, Opset = opset,
            Attrs = [("kernel_shape", kernel), ("strides", strides), ("pads", pads), ("ceil_mode", ceilMode)],
        };
        var (model, feeds, _) = node.Build();

        // ONNX Runtime's choice: the forward with its Indices output.
        var withIndices = model.Clone();
        withIndices.Graph.Node[0].Output.Add("indices");
        withIndices.Graph.Output.Add(new global::Onnx.ValueInfoProto { Name = "indices" });
        using var session = new InferenceSession(withIndices.ToByteArray());
        using var results = session.Run([NamedOnnxValue.CreateFromTensor("x", new DenseTensor<float>(x, shape.Select(d => (int)d).ToArray()))]);
        var indices = results.First(r => r.Name == "indices").AsTensor<long>().ToArray();

        // Integer weights: every sum is exact.
        var dy = indices.Select(_ => (float)rng.Next(-4, 5)).ToArray();
        var expected = new float[x.Length];
        for (int o = 0; o < indices.Length; o++) expected[indices[o]] += dy[o];

        var grad = GeneratedGradient(model, feeds, "x", dy);
        Assert.Equal(expected, grad);
        Assert.Equal(dy.Sum(), grad.Sum());
    }

    /// <summary>The artifact's gradient of Σ dY ⊙ Y with respect to input <paramref name="wrt"/> (made a parameter), as GradCheck builds it.</summary>
    static float[] GeneratedGradient(global::Onnx.ModelProto model, Dictionary<string, NdArray> feeds, string wrt, float[] dy)
    {
        var m = model.Clone();
        var input = m.Graph.Input.First(i => i.Name == wrt);
        m.Graph.Input.Remove(input);
        m.Graph.Initializer.Add(TensorFile.ToTensorProto(wrt, feeds[wrt]));
        var file = new ModelFile(m, "<ties>", Path.GetTempPath());
        var output = m.Graph.Output[0].Name;
        var all = TrainableParameters.Discover(file, output, [wrt]);
        var forward = OpsetUpgrade.Apply(m);
        TensorShapes shapes = null!;
        var artifact = TrainingArtifact.Build(file, forward, model => shapes = ShapeProbe.Run(model, [new Dictionary<string, OrtValue>()]), all, LossKind.Dot, output);
        using var s = new ArtifactSession(artifact, "gradient check");
        var theta = ParameterVector.Read(new ParameterLayout(artifact.Parameters), file);
        using var label = OrtValue.CreateTensorValueFromMemory(dy, shapes[output]!.Dims);
        var grad = new float[theta.Length];
        s.RunBatch(new Dictionary<string, OrtValue> { [LossHead.LabelInput] = label }, theta, grad);
        return grad;
    }
}
