namespace OnnxUnlearn.Tests.Autodiff;

/// <summary>Each shape, indexing and copying rule against finite differences (one line per case).</summary>
public class ShapeGradientTests
{
    const long Huge = long.MaxValue, Tiny = long.MinValue;

    [Theory]
    [InlineData(new long[] { 2, 3, 4 }, new long[] { 4, 6 })]
    [InlineData(new long[] { 2, 3, 4 }, new long[] { 2, -1, 2, 1 })]
    [InlineData(new long[] { 2, 3, 4 }, new long[] { 0, -1 })]
    public void Reshape(long[] x, long[] shape) =>
        new NodeModel { Op = "Reshape", Inputs = [("x", x)], IntConsts = { [1] = shape }, Double = true }.Check();

    [Theory]
    [InlineData(0)] [InlineData(1)] [InlineData(2)] [InlineData(-1)]
    public void Flatten(long axis) => new NodeModel { Op = "Flatten", Inputs = [("x", [2, 3, 4])], Attrs = [("axis", axis)], Double = true }.Check();

    [Theory]
    [InlineData(new long[] { 2, 3, 4 }, new long[] { 1, 2, 0 })]
    [InlineData(new long[] { 2, 3, 4, 5 }, new long[] { 0, 2, 3, 1 })]
    [InlineData(new long[] { 2, 1, 3, 2, 2 }, new long[] { 4, 0, 3, 1, 2 })]
    [InlineData(new long[] { 2, 3, 4 }, null)]
    public void Transpose(long[] x, long[]? perm) =>
        new NodeModel { Op = "Transpose", Inputs = [("x", x)], Attrs = perm is null ? [] : [("perm", perm)], Double = true }.Check();

    [Theory]
    [InlineData("Squeeze", 13, new long[] { 2, 1, 3, 1 }, new long[] { 1, 3 })]
    [InlineData("Squeeze", 17, new long[] { 2, 1, 3, 1 }, new long[] { -1 })]
    [InlineData("Unsqueeze", 13, new long[] { 2, 3 }, new long[] { 0, 3 })]
    [InlineData("Unsqueeze", 17, new long[] { 2, 3 }, new long[] { -1 })]
    public void SqueezeUnsqueeze(string op, long opset, long[] x, long[] axes) =>
        new NodeModel { Op = op, Opset = opset, Inputs = [("x", x)], IntConsts = { [1] = axes }, Double = true }.Check();

    [Fact]
    public void SqueezeAll() => new NodeModel { Op = "Squeeze", Inputs = [("x", [1, 3, 1])], Double = true }.Check();

    [Theory]
    [InlineData(0, new long[] { 2, 3 }, new long[] { 1, 3 }, new long[] { 4, 3 })]
    [InlineData(-1, new long[] { 2, 3, 1 }, new long[] { 2, 3, 4 }, new long[] { 2, 3, 2 })]
    public void Concat(long axis, long[] a, long[] b, long[] c) =>
        new NodeModel { Op = "Concat", Inputs = [("a", a), ("b", b), ("c", c)], Attrs = [("axis", axis)], Double = true }.Check();

    [Fact]
    public void SplitUnequal() =>
        new NodeModel { Op = "Split", Inputs = [("x", [6, 4])], IntConsts = { [1] = [1, 3, 2] }, Outputs = 3, Double = true }.Check();

    [Fact]
    public void SplitEqual() =>
        new NodeModel { Op = "Split", Inputs = [("x", [2, 6])], Attrs = [("axis", -1L)], Outputs = 3, Double = true }.Check();

    [Fact]
    public void SplitNumOutputs() =>
        new NodeModel { Op = "Split", Opset = 18, Inputs = [("x", [2, 6])], Attrs = [("axis", 1L), ("num_outputs", 2L)], Outputs = 2, Double = true }.Check();

    [Theory]
    [InlineData(new long[] { 1 }, new long[] { 3 }, new long[] { 1 }, null)] // unit steps, constant bounds: Pad
    [InlineData(new long[] { -3, 0 }, new long[] { -1, 2 }, null, null)] // negative starts/ends
    [InlineData(new long[] { -100 }, new long[] { Huge }, new long[] { 0 }, null)] // clamped
    [InlineData(new long[] { 1, 0 }, new long[] { Huge, 5 }, new long[] { 2, 1 }, new long[] { 1, 1 })] // axes subset, explicit unit steps
    [InlineData(new long[] { 0 }, new long[] { 5 }, new long[] { 1 }, new long[] { 2 })] // step 2: scatter
    [InlineData(new long[] { -1, 1 }, new long[] { Tiny, Huge }, new long[] { 1, -1 }, new long[] { -1, 2 })] // step −1, clamped
    [InlineData(new long[] { 3 }, new long[] { 0 }, new long[] { 1 }, new long[] { -2 })]
    public void Slice(long[] starts, long[] ends, long[]? axes, long[]? steps)
    {
        var consts = new Dictionary<int, long[]> { [1] = starts, [2] = ends };
        if (axes is not null) consts[3] = axes;
        if (steps is not null) consts[4] = steps;
        new NodeModel { Op = "Slice", Inputs = [("x", [3, 5, 4])], IntConsts = consts, Double = true }.Check();
    }

    [Fact]
    public void SliceRuntimeBounds() => new NodeModel
    {
        Op = "Slice", Inputs = [("x", [3, 5])], IndexInputs = { [1] = ([2], [-2, 1]), [2] = ([2], [Huge, -1]) }, Double = true,
    }.Check();

    [Theory]
    [InlineData(17)] [InlineData(15)]
    public void GatherEmbedding(long opset) => new NodeModel
    {
        Op = "Gather", Opset = opset, Inputs = [("table", [5, 3])], IndexInputs = { [1] = ([2, 3], [0, 2, 0, 1, 2, 2]) }, Double = true,
    }.Check();

    [Theory]
    [InlineData(17)] [InlineData(15)]
    public void GatherAxis1Negative(long opset) => new NodeModel
    {
        Op = "Gather", Opset = opset, Inputs = [("x", [2, 4, 3])], IndexInputs = { [1] = ([2, 2], [-1, 0, 3, -4]) }, Attrs = [("axis", 1L)], Double = true,
    }.Check();

    [Fact]
    public void GatherScalarIndex() => new NodeModel
    {
        Op = "Gather", Inputs = [("x", [2, 4, 3])], IndexInputs = { [1] = ([], [-2]) }, Attrs = [("axis", -1L)], Double = true,
    }.Check();

    [Theory]
    [InlineData(0)] [InlineData(1)]
    public void GatherElements(long axis) => new NodeModel
    {
        Op = "GatherElements", Inputs = [("x", [3, 4])], IndexInputs = { [1] = ([3, 4], [0, 2, -1, 1, 0, 0, 2, -3, 1, 1, 1, 2]) }, Attrs = [("axis", axis)], Double = true,
    }.Check();

    [Fact]
    public void GatherND() => new NodeModel
    {
        Op = "GatherND", Inputs = [("x", [3, 4, 2])], IndexInputs = { [1] = ([3, 2], [0, 1, 2, -1, 0, 1]) }, Double = true,
    }.Check();

    [Fact]
    public void GatherNDBatch() => new NodeModel
    {
        Op = "GatherND", Inputs = [("x", [2, 3, 4])], IndexInputs = { [1] = ([2, 3, 1], [0, 2, 0, -1, 1, 1]) }, Attrs = [("batch_dims", 1L)], Double = true,
    }.Check();

    [Theory]
    [InlineData(new long[] { 3, 1 }, new long[] { 2, 3, 4 })]
    [InlineData(new long[] { 2, 1, 4 }, new long[] { 3, 1 })]
    public void Expand(long[] x, long[] shape) =>
        new NodeModel { Op = "Expand", Inputs = [("x", x)], IntConsts = { [1] = shape }, Double = true }.Check();

    [Theory]
    [InlineData(new long[] { 2, 3 }, new long[] { 2, 3 })]
    [InlineData(new long[] { 2, 1, 3 }, new long[] { 1, 2, 2 })]
    public void Tile(long[] x, long[] repeats) =>
        new NodeModel { Op = "Tile", Inputs = [("x", x)], IntConsts = { [1] = repeats }, Double = true }.Check();

    [Theory]
    [InlineData(new long[] { 1, 0, 2, 1 }, null)]
    [InlineData(new long[] { 1, -1, 0, 2 }, null)] // negative pads crop
    [InlineData(new long[] { 2, 1 }, new long[] { -1 })]
    public void PadConstant(long[] pads, long[]? axes)
    {
        var consts = new Dictionary<int, long[]> { [1] = pads };
        if (axes is not null) consts[3] = axes;
        new NodeModel { Op = "Pad", Opset = 18, Inputs = [("x", [2, 3])], IntConsts = consts, FloatConsts = { [2] = [0.5f] }, Double = true }.Check();
    }

    [Theory]
    [InlineData("reflect")] [InlineData("edge")] [InlineData("wrap")]
    public void PadNonConstantModes(string mode) => new NodeModel
    {
        Op = "Pad", Opset = 19, Inputs = [("x", [2, 3, 4])], IntConsts = { [1] = [0, 1, 2, 1, 0, 2] }, Attrs = [("mode", mode)], Double = true,
    }.Check();

    [Theory]
    [InlineData("DCR")] [InlineData("CRD")]
    public void DepthToSpace(string mode) =>
        new NodeModel { Op = "DepthToSpace", Inputs = [("x", [2, 8, 2, 3])], Attrs = [("blocksize", 2L), ("mode", mode)], Double = true }.Check();

    [Fact]
    public void SpaceToDepth() =>
        new NodeModel { Op = "SpaceToDepth", Inputs = [("x", [2, 2, 4, 6])], Attrs = [("blocksize", 2L)], Double = true }.Check();

    [Theory]
    [InlineData("bij,bjk->bik", new long[] { 2, 3, 4 }, new long[] { 2, 4, 5 })]
    [InlineData("ij,kj->ik", new long[] { 3, 4 }, new long[] { 5, 4 })]
    [InlineData("bhqd,bhkd->bhqk", new long[] { 2, 2, 3, 4 }, new long[] { 2, 2, 5, 4 })]
    [InlineData("ij,jk", new long[] { 3, 4 }, new long[] { 4, 5 })] // implicit output
    [InlineData("...ij, ...jk -> ...ik", new long[] { 2, 3, 4 }, new long[] { 2, 4, 5 })]
    [InlineData("ij,k->jk", new long[] { 3, 4 }, new long[] { 5 })] // a letter only one operand has
    [InlineData("i,j->ij", new long[] { 3 }, new long[] { 4 })]
    public void Einsum(string equation, long[] a, long[] b) =>
        new NodeModel { Op = "Einsum", Inputs = [("a", a), ("b", b)], Attrs = [("equation", equation)], Double = true }.Check();

    [Fact]
    public void EinsumUnary() => new NodeModel { Op = "Einsum", Inputs = [("a", [3, 4])], Attrs = [("equation", "ij->j")], Double = true }.Check();

    [Fact]
    public void EinsumDiagonalIsUserError() => Assert.Contains("'ii->i' repeats a letter", Assert.Throws<UserError>(() =>
        new NodeModel { Op = "Einsum", Inputs = [("a", [3, 3])], Attrs = [("equation", "ii->i")] }.Check()).Message);

    [Fact]
    public void GatherElementsAtOpset15IsUpgraded() => new NodeModel
    {   // opset-15 models are upgraded to 16, where ScatterElements can add
        Op = "GatherElements", Opset = 15, Inputs = [("x", [3, 4])], IndexInputs = { [1] = ([2, 4], [0, 2, -1, 1, 0, 0, 2, 1]) },
    }.Check();

    [Theory]
    [InlineData(1, 1L)] [InlineData(0, 0L)]
    public void TopKValues(long largest, long axis)
    {
        var (model, feeds, wrt) = new NodeModel
        {
            Op = "TopK", Inputs = [("x", [3, 5])], IntConsts = { [1] = [2] }, Attrs = [("axis", axis), ("largest", largest)], Outputs = 2, Double = true,
        }.Build();
        var r = GradCheck.Check(model, feeds, wrt, "y0");
        Assert.True(r.MaxRelError <= GradCheck.Tolerance(true), $"TopK: relative error {r.MaxRelError:E2} ({r.Detail})");
    }
    [Theory]
    [InlineData(0, "none")] [InlineData(1, "none")] [InlineData(-1, "none")] [InlineData(0, "add")] [InlineData(1, "add")]
    public void ScatterElements(long axis, string reduction)
    {   // distinct target positions for 'none'; 'add' repeats one (row 0 of axis 0, column 1 of axis 1)
        long[] idx = reduction == "none" ? (axis == 0 ? [1, 0, 2, 0, 2, -2] : [1, 3, 0, 2, -1, 0]) : [1, 1, 0, 1, 1, 2];
        new NodeModel
        {
            Op = "ScatterElements", Opset = 18, Inputs = [("data", [3, 4]), null, ("updates", [2, 3])], IndexInputs = { [1] = ([2, 3], idx) },
            Attrs = [("axis", axis), ("reduction", reduction)], Double = true,
        }.Check();
    }

    [Theory]
    [InlineData("none", new long[] { 2, 1 }, new long[] { 0, -1 })] // whole rows
    [InlineData("none", new long[] { 3, 2 }, new long[] { 0, 1, 2, 3, -3, 0 })] // elements
    [InlineData("add", new long[] { 3, 1 }, new long[] { 1, 2, 1 })] // repeated rows add up
    public void ScatterND(string reduction, long[] idxShape, long[] idx)
    {
        long[] updates = idxShape[1] == 1 ? [idxShape[0], 4, 2] : [idxShape[0], 2];
        new NodeModel
        {
            Op = "ScatterND", Opset = 18, Inputs = [("data", [3, 4, 2]), null, ("updates", updates)], IndexInputs = { [1] = (idxShape, idx) },
            Attrs = [("reduction", reduction)], Double = true,
        }.Check();
    }

    [Fact]
    public void ScatterElementsRefusesConstantDuplicates()
    {
        var m = new NodeModel
        {
            Op = "ScatterElements", Opset = 18, Inputs = [("data", [4]), null, ("updates", [2])], IntConsts = { [1] = [2, -2] }, Double = true,
        };
        var e = Assert.Throws<UserError>(() => m.Check());
        Assert.Contains("same position", e.Message);
    }

    [Theory]
    [InlineData(0L)] [InlineData(1L)] [InlineData(-1L)] [InlineData(null)]
    public void Compress(long? axis) => new NodeModel
    {   // the condition is shorter than the axis (the rest is dropped) and may be shorter than X flattened
        Op = "Compress", Inputs = [("x", [3, 4, 2])], BoolInputs = { [1] = ([3], [true, false, true]) }, Attrs = axis is { } a ? [("axis", a)] : [], Double = true,
    }.Check();

    [Theory]
    [InlineData(1L, 0L)] [InlineData(0L, 1L)]
    public void ReverseSequence(long batchAxis, long timeAxis) => new NodeModel
    {
        Op = "ReverseSequence", Inputs = [("x", batchAxis == 1 ? [4, 3, 2] : [3, 4, 2])], IndexInputs = { [1] = ([3], [4, 1, 2]) },
        Attrs = [("batch_axis", batchAxis), ("time_axis", timeAxis)], Double = true,
    }.Check();

    [Theory]
    [InlineData(false)] [InlineData(true)]
    public void MaxUnpool(bool outputShape)
    {   // indices as MaxPool gives them: flat over the whole [N, C, H, W] output, one position per 2×2 window
        var idx = new List<long>();
        for (int n = 0; n < 2; n++) for (int ch = 0; ch < 2; ch++) for (int h = 0; h < 2; h++) for (int w = 0; w < 2; w++)
            idx.Add((n * 2 + ch) * 16 + (2 * h + (n + w) % 2) * 4 + 2 * w + (ch + h) % 2);
        new NodeModel
        {
            Op = "MaxUnpool", Opset = 11, Inputs = [("x", [2, 2, 2, 2])], IndexInputs = { [1] = ([2, 2, 2, 2], idx.ToArray()) },
            IntConsts = outputShape ? new() { [2] = [2, 2, 5, 5] } : [], Attrs = [("kernel_shape", new long[] { 2, 2 }), ("strides", new long[] { 2, 2 })],
        }.Check();
    }
}
