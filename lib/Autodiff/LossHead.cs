using OnnxUnlearn.Onnx;
using static OnnxUnlearn.UserError;

namespace OnnxUnlearn.Autodiff;

public enum LossKind
{
    /// <summary>Softmax cross-entropy on logits (class axis last) with integer labels.</summary>
    CrossEntropy,
    /// <summary>Sigmoid binary cross-entropy on logits with 0/1 float labels of the same shape.</summary>
    BinaryCrossEntropy,
    /// <summary>Mean squared error against float targets of the same shape.</summary>
    MeanSquaredError,
    /// <summary>Negative log-likelihood on log-probabilities (class axis last) with integer labels.</summary>
    NegativeLogLikelihood,
    /// <summary>−log p[label] on probabilities (clamped at 1e-12), for probabilities not made by a final Softmax.</summary>
    CrossEntropyProb,
    /// <summary>Σ label ⊙ output: a linear function of the output with weights given as the label (gradient checks).</summary>
    Dot,
    /// <summary>
    /// −log p[label] for one-vs-rest probabilities p = σ(z)/Σσ(z) (skl2onnx: LOGISTIC scores, then an L1 Normalizer),
    /// computed from the scores z: p = softmax(log σ(z)), so this is cross-entropy on the logits log σ(z) = −softplus(−z).
    /// Not chosen by name: <see cref="LossHead.LookThrough"/> picks it for <c>ce</c> on such probabilities.
    /// </summary>
    CrossEntropyOfSigmoids,
    /// <summary>
    /// −log p[label] for independent probabilities p = σ(z) (a final Sigmoid with no normalisation after it, as a
    /// LinearClassifier with LOGISTIC and no Normalizer gives them: rows need not sum to 1), computed from the scores z:
    /// −log σ(z_label) = softplus(−z_label), the log-loss of the label's sigmoid alone (what ce-prob computes, without its
    /// clamp). Not chosen by name: <see cref="LossHead.LookThrough"/> picks it for <c>ce</c> on such probabilities.
    /// </summary>
    SigmoidLogLoss,
    /// <summary>
    /// −log p[label] for a binary classifier's p = [1 − σ(s), σ(s)] from its one score s [..., 1] (a one-row
    /// LinearClassifier with LOGISTIC): <see cref="SigmoidLogLoss"/> of [−s, s], i.e. softplus(−s) for label 1 and
    /// softplus(s) for label 0. Not chosen by name: <see cref="LossHead.LookThrough"/> picks it for <c>ce</c>.
    /// </summary>
    BinarySigmoidLogLoss,
}

/// <summary>What the rows (last axis) of a value held when the forward model was probed (<see cref="LossHead.Rows{T}"/>).</summary>
public enum RowKind { Other, Probabilities, LogProbabilities }

/// <summary>
/// Loss heads: the loss (mean over all labelled elements) and its gradient with respect to the model output, written in
/// closed form (softmax − one-hot, sigmoid − y, ...) so they stay accurate where the softmax saturates.
/// </summary>
public static class LossHead
{
    public const string LabelInput = "label";

    public static LossKind Parse(string name) => name.ToLowerInvariant() switch
    {
        "ce" or "cross-entropy" => LossKind.CrossEntropy,
        "ce-prob" => LossKind.CrossEntropyProb,
        "bce" => LossKind.BinaryCrossEntropy,
        "mse" => LossKind.MeanSquaredError,
        "nll" => LossKind.NegativeLogLikelihood,
        "dot" => LossKind.Dot,
        _ => throw new UserError($"unknown loss '{name}'; choose one of ce, ce-prob, bce, mse, nll"),
    };

    /// <summary>The name <see cref="Parse"/> takes for a loss (derived kinds: that of the loss they are chosen for, ce).</summary>
    public static string Name(LossKind k) => k switch
    {
        LossKind.CrossEntropyProb => "ce-prob",
        LossKind.BinaryCrossEntropy => "bce",
        LossKind.MeanSquaredError => "mse",
        LossKind.NegativeLogLikelihood => "nll",
        LossKind.Dot => "dot",
        _ => "ce",
    };

    public static bool HasClasses(LossKind k) => k is LossKind.CrossEntropy or LossKind.NegativeLogLikelihood or LossKind.CrossEntropyProb
        or LossKind.CrossEntropyOfSigmoids or LossKind.SigmoidLogLoss or LossKind.BinarySigmoidLogLoss;

    /// <summary>
    /// The value and loss the head reads for <paramref name="kind"/> of <paramref name="output"/> (<see cref="LookThrough"/>).
    /// Where nothing was looked through, an output whose probed values cannot be what the loss takes is refused
    /// (<see cref="RefuseProbabilities"/>, <see cref="RefuseWrongValues"/>).
    /// </summary>
    public static (string Value, LossKind Kind) Source(global::Onnx.GraphProto g, string output, LossKind kind, TensorShapes shapes)
    {
        var source = LookThrough(g, output, kind, shapes);
        if (source == (output, kind))
        {
            RefuseProbabilities(g, output, kind, shapes);
            RefuseWrongValues(g, output, kind, shapes);
        }
        return source;
    }

    /// <summary>A probed row counts as a distribution when its sum (of exponentials, for log-probabilities) is within this of 1.</summary>
    public const double RowSumTolerance = 1e-4;

    /// <summary>
    /// Slack on the bounds of probed values (probabilities in [0, 1], log-probabilities ≤ 0 with a log-sum-exp of 0):
    /// float32 rounding oversteps them by far less.
    /// </summary>
    public const double ValueTolerance = 1e-4;

    /// <summary>
    /// Classifies probed values with the class axis last: probabilities (every element in [0, 1], every row summing to 1
    /// within <see cref="RowSumTolerance"/>), log-probabilities (every element ≤ 0 and every row's log-sum-exp 0, within
    /// <see cref="ValueTolerance"/>), or other (anything else, NaN, no rows, or fewer than two classes).
    /// </summary>
    public static RowKind Rows<T>(ReadOnlySpan<T> values, long classes) where T : System.Numerics.INumberBase<T> =>
        ProbedValues.Of(values, classes).Rows;

    /// <summary>
    /// The safety net behind <see cref="LookThrough"/>: ce takes logits (it applies a softmax itself) and nll
    /// log-probabilities, so given probabilities made some other way (a softmax written as Exp/ReduceSum/Div, a custom
    /// op) either would silently train on a wrong loss. The shape probe runs the model on real data: rows all in [0, 1]
    /// and summing to 1 are refused. (Log-probabilities are fine for both: softmax(log p) = p, so ce of them is exact.)
    /// </summary>
    static void RefuseProbabilities(global::Onnx.GraphProto g, string output, LossKind kind, TensorShapes shapes)
    {
        if (kind is not (LossKind.CrossEntropy or LossKind.NegativeLogLikelihood) || shapes[output]?.Rows != RowKind.Probabilities) return;
        var expects = kind == LossKind.CrossEntropy ? $"{Setting("Loss", "ce")} expects logits (it applies a softmax itself)" : $"{Setting("Loss", "nll")} expects log-probabilities";
        throw new UserError($"output '{output}', made by {MadeBy(g, output)}, holds probabilities: on the probed samples every row along the last axis " +
            $"lies in [0, 1] and sums to 1. {expects}, so it would train on a wrong loss. Use {Setting("Loss", "ce-prob")} (−log p[label] of " +
            $"probabilities), or name the logits before the normalisation ({Setting("Output")})");
    }

    /// <summary>
    /// The other safety nets, each on what the probe saw (nothing is refused where it saw nothing, or NaN):
    /// <list type="bullet">
    /// <item>nll takes −output[label] as the loss, right only for log-probabilities: every value ≤ 0 and every row's
    /// log-sum-exp 0 (both within <see cref="ValueTolerance"/>). Logits give a wrong loss, often a negative one.</item>
    /// <item>ce-prob takes −log output[label], right only for probabilities: every value in [0, 1] (within
    /// <see cref="ValueTolerance"/>). Rows need not sum to 1: independent probabilities (sigmoids without a normaliser) are
    /// what ce-prob is for.</item>
    /// <item>bce applies a sigmoid itself, so it takes logits. Logits may fall in [0, 1] on a few samples, so only an
    /// output that is surely probabilities is refused: every value in [0, 1] and either every row summing to 1, or made by
    /// a Sigmoid, HardSigmoid, Softmax or ai.onnx.ml Normalizer (through ops that only move or retype elements) that the
    /// look-through did not reach (it takes the logits before a final Sigmoid itself).</item>
    /// </list>
    /// </summary>
    static void RefuseWrongValues(global::Onnx.GraphProto g, string output, LossKind kind, TensorShapes shapes)
    {
        if (shapes[output]?.Values is not { Known: true } v) return;
        var seen = $"on the probed samples its values range over [{v.Min:G4}, {v.Max:G4}]";
        switch (kind)
        {
            case LossKind.NegativeLogLikelihood when !v.LogProbabilities:
            {
                var why = v.Max > ValueTolerance ? ", where log-probabilities are ≤ 0"
                    : $" and its rows' log-sum-exp (along the last axis) over [{v.MinLogSumExp:G4}, {v.MaxLogSumExp:G4}], not 0 as for log-probabilities";
                var fits = v.InUnitInterval
                    ? $"Its values lie in [0, 1]: for probabilities use {Setting("Loss", "ce-prob")}; for logits, {Setting("Loss", "ce")}"
                    : $"For logits use {Setting("Loss", "ce")} (it applies a log-softmax itself); for probabilities, {Setting("Loss", "ce-prob")}";
                throw new UserError($"output '{output}', made by {MadeBy(g, output)}, does not hold log-probabilities: {seen}{why}. " +
                    $"{Setting("Loss", "nll")} takes −output[label] as the loss, so it would train on a wrong (possibly negative) loss. " +
                    $"{fits}; or name the log-probabilities ({Setting("Output")})");
            }
            case LossKind.CrossEntropyProb when !v.InUnitInterval:
            {
                var fits = v.LogProbabilities
                    ? $"They are log-probabilities (every row's log-sum-exp is 0): use {Setting("Loss", "nll")} (or {Setting("Loss", "ce")}: softmax(log p) = p)"
                    : $"For logits use {Setting("Loss", "ce")} (it applies a softmax itself); for log-probabilities, {Setting("Loss", "nll")}; or name the probabilities ({Setting("Output")})";
                throw new UserError($"output '{output}', made by {MadeBy(g, output)}, does not hold probabilities: {seen}, outside [0, 1]. " +
                    $"{Setting("Loss", "ce-prob")} takes −log output[label] as the loss, so it would train on a wrong (possibly negative) loss. {fits}");
            }
            case LossKind.BinaryCrossEntropy when v.InUnitInterval:
            {
                var maker = ProbabilityMaker(g, output);
                bool rows = v.Rows == RowKind.Probabilities;
                if (maker is null && !rows) return;
                var producer = Producer(g, output);
                var from = maker is not null && maker != producer ? $" from {Describe(maker)}" : "";
                var holds = rows ? "every row along the last axis lies in [0, 1] and sums to 1" : "every value lies in [0, 1]";
                var fits = maker is { OpType: "Sigmoid" or "HardSigmoid" }
                    ? $"Name the logits the {maker.OpType} reads ({Setting("Output", maker.Input[0])}), with labels shaped like them"
                    : $"For class probabilities with integer labels use {Setting("Loss", "ce-prob")}" +
                      (maker is { OpType: "Softmax" } ? $" (or {Setting("Loss", "ce")}, which takes the logits before a final Softmax)" : "") +
                      $"; or name the logits ({Setting("Output")})";
                throw new UserError($"output '{output}', made by {MadeBy(g, output)}{from}, holds probabilities: on the probed samples {holds}. " +
                    $"{Setting("Loss", "bce")} expects logits (it applies a sigmoid itself), so it would train on a wrong loss. {fits}");
            }
        }
    }

    /// <summary>Ops that only move, select or retype elements: probabilities stay probabilities through them.</summary>
    static readonly HashSet<string> Layout = ["Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Cast", "CastLike", "Slice", "Gather", "Expand"];

    /// <summary>The Sigmoid, HardSigmoid, Softmax or L1/L2/MAX Normalizer whose values <paramref name="value"/> holds, through <see cref="Layout"/> ops; null if none.</summary>
    static global::Onnx.NodeProto? ProbabilityMaker(global::Onnx.GraphProto g, string value)
    {
        var node = Producer(g, value);
        while (node is not null && Domains.IsDefault(node.Domain) && Layout.Contains(node.OpType)) node = Producer(g, node.Input[0]);
        return node switch
        {
            { OpType: "Sigmoid" or "HardSigmoid" or "Softmax" } when Domains.IsDefault(node.Domain) => node,
            { Domain: "ai.onnx.ml", OpType: "Normalizer" } => node,
            _ => null,
        };
    }

    /// <summary>"Div node 'normalise'", "an unnamed Div node", or "a graph input" (the node that makes a value, Identity looked through).</summary>
    static string MadeBy(global::Onnx.GraphProto g, string value) => Producer(g, value) is { } node ? Describe(node) : "a graph input";

    static string Describe(global::Onnx.NodeProto node) => node.Name.Length > 0 ? $"{node.OpType} node '{node.Name}'" : $"an unnamed {node.OpType} node";

    /// <summary>
    /// Deployed classifiers often return probabilities: a final Softmax/LogSoftmax over the last axis (ce) or Sigmoid
    /// (bce). The loss is then computed from that node's input, the logits — exact, and stable where the probabilities
    /// saturate. Identity nodes in between are looked through, and so is an L1 ai.onnx.ml Normalizer after a Softmax
    /// (skl2onnx puts one after every multinomial LogisticRegression): softmax rows already sum to 1, so it changes
    /// nothing but rounding. An L1 Normalizer after a Sigmoid (one-vs-rest: p = σ(z)/Σσ(z)) gives, for ce,
    /// <see cref="LossKind.CrossEntropyOfSigmoids"/> of z, the same loss computed stably. For ce, a Sigmoid with no
    /// Normalizer (independent probabilities, as a LinearClassifier with LOGISTIC gives them, skl2onnx's binary
    /// LogisticRegression included: two rows ±w, so p = [σ(−s), σ(s)]) gives <see cref="LossKind.SigmoidLogLoss"/> of z,
    /// and a binary classifier's Concat(1 − σ(s), σ(s)) (a one-row LinearClassifier with LOGISTIC, lowered), with or
    /// without the Normalizer, gives <see cref="LossKind.BinarySigmoidLogLoss"/> of s: in every case −log p[label] of
    /// the probabilities the model outputs, never the probabilities taken as logits.
    /// </summary>
    static (string Value, LossKind Kind) LookThrough(global::Onnx.GraphProto g, string output, LossKind kind, TensorShapes shapes)
    {
        var producer = Producer(g, output);
        if (kind == LossKind.CrossEntropy && producer is { Domain: "ai.onnx.ml", OpType: "Normalizer" } normalizer
            && normalizer.Attribute.FirstOrDefault(a => a.Name == "norm")?.S.ToStringUtf8() == "L1")
        {
            var before = Producer(g, normalizer.Input[0]);
            if (before is { OpType: "Sigmoid" } && Domains.IsDefault(before.Domain)) return (before.Input[0], LossKind.CrossEntropyOfSigmoids);
            if (before is { OpType: "Softmax" } && Domains.IsDefault(before.Domain) && LastAxis(before, shapes)) return (before.Input[0], kind);
            // [1 − σ(s), σ(s)] already sums to 1: the Normalizer changes nothing but rounding.
            if (BinaryScore(g, before, shapes) is { } score) return (score, LossKind.BinarySigmoidLogLoss);
            return (output, kind);
        }
        if (producer is null || !Domains.IsDefault(producer.Domain)) return (output, kind);
        var input = producer.Input[0];
        bool lastAxis = LastAxis(producer, shapes);
        return (kind, producer.OpType) switch
        {
            (LossKind.CrossEntropy, "Softmax" or "LogSoftmax") when lastAxis => (input, LossKind.CrossEntropy),
            (LossKind.NegativeLogLikelihood, "Softmax") when lastAxis => (input, LossKind.CrossEntropy),
            (LossKind.BinaryCrossEntropy, "Sigmoid") => (input, LossKind.BinaryCrossEntropy),
            (LossKind.CrossEntropy, "Sigmoid") => (input, LossKind.SigmoidLogLoss),
            (LossKind.CrossEntropy, "Concat") when BinaryScore(g, producer, shapes) is { } score => (score, LossKind.BinarySigmoidLogLoss),
            _ => (output, kind),
        };
    }

    /// <summary>
    /// The score s [..., 1] when <paramref name="concat"/> is Concat(1 − σ(s), σ(s)) over the last axis: a binary
    /// classifier's probabilities, as <see cref="Lowering.LinearScores"/> lowers a one-row LinearClassifier with LOGISTIC
    /// (ONNX Runtime's semantics) and as models written by hand give them. Null for anything else.
    /// </summary>
    static string? BinaryScore(global::Onnx.GraphProto g, global::Onnx.NodeProto? concat, TensorShapes shapes)
    {
        static bool Standard(global::Onnx.NodeProto? n, string op) => n is not null && n.OpType == op && Domains.IsDefault(n.Domain);
        if (!Standard(concat, "Concat") || concat!.Input.Count != 2 || shapes[concat.Output[0]] is not { } info
            || GradContext.Axis(concat.Attribute.FirstOrDefault(a => a.Name == "axis")?.I ?? 0, info.Rank) != info.Rank - 1)
            return null;
        var positive = Producer(g, concat.Input[1]);
        var complement = Producer(g, concat.Input[0]);
        if (!Standard(positive, "Sigmoid") || !Standard(complement, "Sub") || Producer(g, complement!.Input[1]) != positive
            || !IsOne(g, complement.Input[0]))
            return null;
        var score = positive!.Input[0];
        return shapes[score] is { Rank: > 0 } s && s.Dims[^1] == 1 ? score : null;
    }

    /// <summary>Whether a value is the constant 1 (one element; an initializer or Constant node, through Identity/Cast/CastLike).</summary>
    static bool IsOne(global::Onnx.GraphProto g, string value)
    {
        while (true)
        {
            var node = g.Node.LastOrDefault(n => n.Output.Contains(value));
            if (node is { OpType: "Identity" or "Cast" or "CastLike" }) { value = node.Input[0]; continue; }
            // The artifact's initializers are inline by now (TrainingArtifact.Build), so no folder is needed.
            var t = node is null ? g.Initializer.FirstOrDefault(i => i.Name == value) : node.OpType == "Constant" ? node.ConstantValue() : null;
            return t is not null && t.ElementCount() == 1 && DataTypes.IsFloat(t.DataType) && t.ReadFloats("")[0] == 1f;
        }
    }

    /// <summary>The node that makes <paramref name="value"/>, Identity nodes looked through; null for a graph input or initializer.</summary>
    static global::Onnx.NodeProto? Producer(global::Onnx.GraphProto g, string value)
    {
        var producer = g.Node.LastOrDefault(n => n.Output.Contains(value));
        while (producer is { OpType: "Identity" }) { var x = producer.Input[0]; producer = g.Node.LastOrDefault(n => n.Output.Contains(x)); }
        return producer;
    }

    /// <summary>Whether a Softmax/LogSoftmax works over the last axis of its input.</summary>
    static bool LastAxis(global::Onnx.NodeProto softmax, TensorShapes shapes) =>
        shapes[softmax.Input[0]] is { } info && GradContext.Axis(softmax.Attribute.FirstOrDefault(a => a.Name == "axis")?.I ?? -1, info.Rank) == info.Rank - 1;

    /// <summary>Emits the loss head. Returns the scalar loss, the gradient of the output and, for class losses, the number of correct predictions.</summary>
    public static (string Loss, string Grad, string? Correct, string Count) Build(GraphBuilder b, LossKind kind, string output, string label, long? ignoreIndex = null)
    {
        switch (kind)
        {
            case LossKind.CrossEntropyOfSigmoids:
            {   // logits u = log σ(z) = −softplus(−z), overflow-free; du/dz = σ(−z), so dℓ/dz = dℓ/du ⊙ σ(−z)
                var u = b.Neg(b.Op("Softplus", [b.Neg(output)]));
                var (loss, gu, correct, count) = Build(b, LossKind.CrossEntropy, u, label, ignoreIndex);
                return (loss, b.Mul(gu, b.StableSigmoid(b.Neg(output))), correct, count);
            }
            case LossKind.BinarySigmoidLogLoss:
            {   // u = [−s, s] along the class axis, so σ(u) = [1 − σ(s), σ(s)]; dℓ/ds = dℓ/du₁ − dℓ/du₀
                var u = b.Op("Concat", [b.Neg(output), output], ("axis", -1L));
                var (loss, gu, correct, count) = Build(b, LossKind.SigmoidLogLoss, u, label, ignoreIndex);
                var gNeg = b.Op("Slice", [gu, b.Ints(0), b.Ints(1), b.Ints(-1)]);
                var gPos = b.Op("Slice", [gu, b.Ints(1), b.Ints(2), b.Ints(-1)]);
                return (loss, b.Sub(gPos, gNeg), correct, count);
            }
            case LossKind.CrossEntropy:
            case LossKind.NegativeLogLikelihood:
            case LossKind.SigmoidLogLoss:
            {
                bool ce = kind == LossKind.CrossEntropy, sigmoid = kind == LossKind.SigmoidLogLoss;
                string? keep = ignoreIndex is { } ii ? b.Op("Not", [b.Op("Equal", [label, b.Op("CastLike", [b.Int(ii), label])])]) : null;
                var safeLabel = keep is null ? label : b.Where(keep, label, b.Op("CastLike", [b.Int(0), label]));
                // log p: log softmax(z) for ce, log σ(z) = −softplus(−z) (overflow-free) for sigmoids, the output itself for nll
                var logp = ce ? b.Op("LogSoftmax", [output], ("axis", -1L)) : sigmoid ? b.Neg(b.Op("Softplus", [b.Neg(output)])) : output;
                var picked = b.Squeeze(b.Op("GatherElements", [logp, b.Unsqueeze(safeLabel, -1)], ("axis", -1L)), -1);
                var depth = b.Op("Gather", [b.Shape(output), b.Ints(-1)]);
                var oneHot = b.Op("CastLike", [b.Op("OneHot", [safeLabel, depth, b.Ints(0, 1)]), output]);
                var count = keep is null ? b.Op("CastLike", [b.Op("Size", [label]), output]) : b.Op("ReduceSum", [b.Mask(keep, output)], ("keepdims", 0L));
                var kept = keep is null ? picked : b.Mul(picked, b.Mask(keep, output));
                var loss = b.Neg(b.Div(b.Op("ReduceSum", [kept], ("keepdims", 0L)), count));
                // dℓ/dz per labelled element: softmax − onehot (ce); −onehot ⊙ σ(−z) (sigmoids: d log σ(z)/dz = σ(−z)); −onehot (nll)
                var diff = ce ? b.Sub(b.Op("Softmax", [output], ("axis", -1L)), oneHot)
                    : sigmoid ? b.Neg(b.Mul(oneHot, b.StableSigmoid(b.Neg(output)))) : b.Neg(oneHot);
                if (keep is not null) diff = b.Mul(diff, b.Unsqueeze(b.Mask(keep, output), -1));
                var grad = b.Div(diff, count);
                var predicted = b.Op("ArgMax", [output], ("axis", -1L), ("keepdims", 0L));
                var hit = b.Op("Equal", [predicted, b.Op("Cast", [label], ("to", 7L))]);
                if (keep is not null) hit = b.Op("And", [hit, keep]);
                var correct = b.Op("ReduceSum", [b.Op("Cast", [hit], ("to", 7L))], ("keepdims", 0L));
                return (loss, grad, correct, count);
            }
            case LossKind.CrossEntropyProb:
            {   // ℓ = −log max(p[label], 1e-12): dℓ/dp = −onehot / p where p is above the clamp, else 0
                var p = b.Op("Max", [output, b.Scalar(1e-12, output)]);
                var picked = b.Squeeze(b.Op("GatherElements", [p, b.Unsqueeze(label, -1)], ("axis", -1L)), -1);
                var count = b.Op("CastLike", [b.Op("Size", [label]), output]);
                var loss = b.Neg(b.Div(b.Op("ReduceSum", [b.Log(picked)], ("keepdims", 0L)), count));
                var depth = b.Op("Gather", [b.Shape(output), b.Ints(-1)]);
                var oneHot = b.Op("CastLike", [b.Op("OneHot", [label, depth, b.Ints(0, 1)]), output]);
                var live = b.Mask(b.Op("Greater", [output, b.Scalar(1e-12, output)]), output);
                var grad = b.Div(b.Neg(b.Mul(b.Div(oneHot, p), live)), count);
                var hit = b.Op("Equal", [b.Op("ArgMax", [output], ("axis", -1L), ("keepdims", 0L)), b.Op("Cast", [label], ("to", 7L))]);
                return (loss, grad, b.Op("ReduceSum", [b.Op("Cast", [hit], ("to", 7L))], ("keepdims", 0L)), count);
            }
            case LossKind.BinaryCrossEntropy:
            {
                // ℓ = max(x,0) − x·y + log(1 + e^−|x|), the overflow-free form; dℓ/dx = σ(x) − y.
                var y = b.Op("CastLike", [label, output]);
                var count = b.Op("CastLike", [b.Op("Size", [output]), output]);
                var terms = b.Add(b.Sub(b.Op("Relu", [output]), b.Mul(output, y)), b.Op("Softplus", [b.Neg(b.Op("Abs", [output]))]));
                var loss = b.Div(b.Op("ReduceSum", [terms], ("keepdims", 0L)), count);
                return (loss, b.Div(b.Sub(b.StableSigmoid(output), y), count), null, count);
            }
            case LossKind.MeanSquaredError:
            {
                var y = b.Op("CastLike", [label, output]);
                var count = b.Op("CastLike", [b.Op("Size", [output]), output]);
                var d = b.Sub(output, y);
                var loss = b.Div(b.Op("ReduceSum", [b.Mul(d, d)], ("keepdims", 0L)), count);
                return (loss, b.Div(b.Scale(d, 2), count), null, count);
            }
            case LossKind.Dot:
            {
                var w = b.Op("CastLike", [label, output]);
                return (b.Op("ReduceSum", [b.Mul(output, w)], ("keepdims", 0L)), w, null, b.Scalar(1, output));
            }
            default: throw new ArgumentOutOfRangeException(nameof(kind));
        }
    }
}
