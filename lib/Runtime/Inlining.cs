using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Onnx;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Onnx;

namespace OnnxUnlearn.Runtime;

/// <summary>
/// Replaces each top-level If whose condition is the same for every sample — it depends only on inputs given once
/// (<see cref="SampleAxes.Once"/>: a sample rate, optimum's use_cache_branch) and constants — by the branch it takes, so
/// gradients flow through it. The condition is evaluated with ONNX Runtime on the data (its part of the graph only). The
/// branch's values are renamed <see cref="Branches.Prefix"/> + name, so that its Constant weights and initializers become
/// parameters under the names write-back finds them by; the outer values it reads stay as they are, and Identity nodes give
/// its outputs the If's output names. An If whose condition varies per sample stays (a gradient through it is refused).
/// </summary>
public static class Inlining
{
    /// <summary>The model with the decided If nodes inlined; <paramref name="file"/> itself when there are none.</summary>
    /// <param name="data">Values of the inputs given once; null (inspect without data) decides only constant conditions.</param>
    public static ModelFile Apply(ModelFile file, SampleAxes axes, Dataset? data)
    {
        if (!file.Graph.Node.Any(Branches.IsIf)) return file;
        var model = file.Model.Clone();
        var g = model.Graph;
        var inlined = new Dictionary<string, string>();
        var inputs = Evaluator.DataInputs(g).ToHashSet();
        bool changed = false;
        for (int i = 0; i < g.Node.Count; i++)
        {
            var n = g.Node[i];
            if (!Branches.IsIf(n) || n.Input.Count == 0) continue;
            var (cone, reads) = Cone(g, i, n.Input[0]);
            var fed = reads.Where(inputs.Contains).ToList();
            if (fed.Any(x => axes.Of(x) != SampleAxes.Once) || (fed.Count > 0 && data is null)) continue;
            bool taken = Condition(model, file, cone, reads, fed, n, data);
            var branch = taken ? "then_branch" : "else_branch";
            var body = n.Attribute.FirstOrDefault(a => a.Name == branch)?.G
                ?? throw new UserError($"If '{Branches.Label(n)}' of '{file.Path}' has no {branch}; the model is damaged: re-export it");
            var nodes = Inline(g, n, body, branch, file.Path, inlined);
            g.Node.RemoveAt(i);
            for (int k = 0; k < nodes.Count; k++) g.Node.Insert(i + k, nodes[k]);
            i += nodes.Count - 1;
            changed = true;
        }
        return changed ? file with { Model = model, Inlined = inlined } : file;
    }

    /// <summary>Whether a top-level If's condition reads inputs given once (and no per-sample input): which branch runs, and so
    /// which weights are trainable, is known only once the data is read.</summary>
    public static bool NeedsData(GraphProto g, SampleAxes axes)
    {
        var inputs = Evaluator.DataInputs(g).ToHashSet();
        for (int i = 0; i < g.Node.Count; i++)
        {
            if (!Branches.IsIf(g.Node[i]) || g.Node[i].Input.Count == 0) continue;
            var fed = Cone(g, i, g.Node[i].Input[0]).Reads.Where(inputs.Contains).ToList();
            if (fed.Count > 0 && fed.All(x => axes.Of(x) == SampleAxes.Once)) return true;
        }
        return false;
    }

    /// <summary>Why each top-level If still in <paramref name="g"/> was not inlined, for messages.</summary>
    public static IEnumerable<string> Undecided(GraphProto g, SampleAxes axes)
    {
        var inputs = Evaluator.DataInputs(g).ToHashSet();
        for (int i = 0; i < g.Node.Count; i++)
        {
            var n = g.Node[i];
            if (!Branches.IsIf(n) || n.Input.Count == 0) continue;
            var sampled = Cone(g, i, n.Input[0]).Reads.Where(x => inputs.Contains(x) && axes.Of(x) != SampleAxes.Once).ToList();
            yield return sampled.Count > 0
                ? $"If '{Branches.Label(n)}' stays control flow: its condition depends on {string.Join(", ", sampled.Select(x => $"input '{x}'"))}, which varies per sample " +
                  "(an If is inlined only when inputs given once or constants decide its condition), and control flow (If/Loop/Scan) on the loss path is not differentiable by this tool"
                : $"If '{Branches.Label(n)}' stays control flow: no data decided its condition";
        }
    }

    /// <summary>The nodes before <paramref name="at"/> that <paramref name="value"/> depends on (in graph order), and every value they read.</summary>
    static (List<NodeProto> Nodes, HashSet<string> Reads) Cone(GraphProto g, int at, string value)
    {
        var need = new HashSet<string> { value };
        var nodes = new List<NodeProto>();
        for (int k = at - 1; k >= 0; k--)
        {
            var node = g.Node[k];
            if (!node.Output.Any(need.Contains)) continue;
            nodes.Insert(0, node);
            need.UnionWith(node.Input.Where(x => x.Length > 0));
            if (ControlFlow.Is(node)) need.UnionWith(ControlFlow.OuterReads(node));
        }
        return (nodes, need);
    }

    /// <summary>The condition's value: its part of the graph run in ONNX Runtime on the inputs given once.</summary>
    static bool Condition(ModelProto model, ModelFile file, List<NodeProto> cone, HashSet<string> reads, List<string> fed, NodeProto n, Dataset? data)
    {
        var g = model.Graph;
        var sub = new ModelProto { IrVersion = model.IrVersion, OpsetImport = { model.OpsetImport }, Graph = new GraphProto { Name = "condition" } };
        sub.Graph.Node.Add(cone.Select(x => x.Clone()));
        foreach (var t in g.Initializer.Where(t => reads.Contains(t.Name)))
        {
            var copy = t.Clone();
            copy.Inline(file);
            sub.Graph.Initializer.Add(copy);
        }
        sub.Graph.Input.Add(g.Input.Where(v => fed.Contains(v.Name)));
        string cond = n.Input[0];
        sub.Graph.Output.Add(new ValueInfoProto { Name = cond, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = DataTypes.Bool } } });
        string what = $"the condition '{cond}' of If '{Branches.Label(n)}' in '{file.Path}'";
        OrtSessions.Initialize();
        using var options = OrtSessions.Options(1);
        using var session = OrtSessions.Create(sub.ToByteArray(), options, what);
        var values = fed.Select(x => OrtFeeds.Create(data!.Arrays[x], (TensorElementType)g.Input.First(v => v.Name == x).Type.TensorType.ElemType, $"'{data.Source}' array {UserError.Quote(x)}")).ToArray();
        try
        {
            using var result = OrtSessions.Run(session, fed.ToArray(), values, [cond], what);
            var span = result[0].GetTensorDataAsSpan<bool>();
            if (span.Length != 1) throw new UserError($"{what} holds {span.Length} values; an If condition holds one");
            return span[0];
        }
        finally { foreach (var v in values) v.Dispose(); }
    }

    /// <summary>The branch's nodes renamed into the outer graph, then an Identity per If output.</summary>
    static List<NodeProto> Inline(GraphProto g, NodeProto n, GraphProto body, string branch, string model, Dictionary<string, string> inlined)
    {
        string label = Branches.Label(n), prefix = Branches.Prefix(label, branch), where = Branches.Describe(label, branch);
        var defined = body.Initializer.Select(t => t.Name).Concat(body.Node.SelectMany(x => x.Output).Where(o => o.Length > 0)).Distinct().ToList();
        var rename = defined.ToDictionary(x => x, x => prefix + x);
        var taken = g.Input.Select(v => v.Name).Concat(g.Initializer.Select(t => t.Name)).Concat(g.Node.SelectMany(x => x.Output.Concat(x.Input))).ToHashSet();
        if (rename.Values.FirstOrDefault(taken.Contains) is { } clash)
            throw new UserError($"inlining {where} of '{model}' names a value '{clash}', a name the graph already uses; rename that value or the If node");
        foreach (var t in body.Initializer)
        {
            var copy = t.Clone();
            copy.Name = rename[t.Name];
            g.Initializer.Add(copy);
            if (DataTypes.IsFloat(t.DataType)) inlined[copy.Name] = where;
        }
        var nodes = new List<NodeProto>();
        foreach (var x in body.Node)
        {
            var copy = x.Clone();
            if (copy.Name.Length > 0) copy.Name = prefix + copy.Name;
            for (int k = 0; k < copy.Input.Count; k++) if (rename.TryGetValue(copy.Input[k], out var r)) copy.Input[k] = r;
            for (int k = 0; k < copy.Output.Count; k++) if (copy.Output[k].Length > 0) copy.Output[k] = rename[copy.Output[k]];
            foreach (var sub in copy.Attribute.SelectMany(a => a.Graphs.Prepend(a.G)).OfType<GraphProto>()) RenameOuter(sub, rename);
            if (copy.OpType == "Constant" && Domains.IsDefault(copy.Domain)) inlined[copy.Output[0]] = where;
            nodes.Add(copy);
        }
        if (body.Output.Count != n.Output.Count)
            throw new UserError($"{where} of '{model}' has {body.Output.Count} outputs but the If node {n.Output.Count}; the model is damaged: re-export it");
        for (int k = 0; k < n.Output.Count; k++)
        {
            if (n.Output[k].Length == 0) continue;
            var source = rename.GetValueOrDefault(body.Output[k].Name, body.Output[k].Name);
            nodes.Add(new NodeProto { OpType = "Identity", Name = $"{prefix}output_{k}", Input = { source }, Output = { n.Output[k] } });
        }
        return nodes;
    }

    /// <summary>Renames the outer reads of a nested body (a Loop inside the branch) to the inlined names; its own values keep theirs.</summary>
    static void RenameOuter(GraphProto g, Dictionary<string, string> rename)
    {
        var own = g.Input.Select(v => v.Name).Concat(g.Initializer.Select(t => t.Name)).Concat(g.Node.SelectMany(x => x.Output)).ToHashSet();
        foreach (var x in g.Node)
        {
            for (int k = 0; k < x.Input.Count; k++) if (!own.Contains(x.Input[k]) && rename.TryGetValue(x.Input[k], out var r)) x.Input[k] = r;
            foreach (var sub in x.Attribute.SelectMany(a => a.Graphs.Prepend(a.G)).OfType<GraphProto>()) RenameOuter(sub, rename.Where(kv => !own.Contains(kv.Key)).ToDictionary());
        }
        foreach (var o in g.Output) if (!own.Contains(o.Name) && rename.TryGetValue(o.Name, out var r)) o.Name = r;
    }
}
