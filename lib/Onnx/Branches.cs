using Onnx;

namespace OnnxUnlearn.Onnx;

/// <summary>
/// Names of the tensors inside the branches of top-level If nodes. A branch is its own scope, so its Constant outputs and
/// initializers may repeat names used elsewhere (the other branch often uses the same ones); as parameters they are called
/// <c>IF/BRANCH/NAME</c>: the If node's name (its first output when unnamed), then_branch or else_branch, and the name in
/// the branch. The same names label them when a branch is inlined for a run, in <c>inspect</c>, and in write-back.
/// </summary>
public static class Branches
{
    public static readonly string[] Attributes = ["then_branch", "else_branch"];

    /// <summary>The If node's name, or its first output when it has none.</summary>
    public static string Label(string name, string? firstOutput) => name.Length > 0 ? name : firstOutput ?? "";

    public static string Label(NodeProto n) => Label(n.Name, n.Output.FirstOrDefault());

    /// <summary>The prefix of the branch's parameter names: "IF/then_branch/".</summary>
    public static string Prefix(string label, string branch) => $"{label}/{branch}/";

    /// <summary>"If 'IF' then_branch", for inspect.</summary>
    public static string Describe(string label, string branch) => $"If '{label}' {branch}";

    public static bool IsIf(NodeProto n) => n.OpType == "If" && Domains.IsDefault(n.Domain);

    /// <summary>A float tensor of a top-level If's branch that may be a parameter: its name as a parameter, storage, value and branch.</summary>
    public sealed record Tensor(string Name, ParameterStorage Storage, TensorProto Value, string Branch, NodeProto If);

    /// <summary>Initializers and Constant values of the branches of every top-level If node still in <paramref name="g"/>.</summary>
    public static IEnumerable<Tensor> Candidates(GraphProto g)
    {
        foreach (var n in g.Node.Where(IsIf))
            foreach (var a in n.Attribute.Where(a => Attributes.Contains(a.Name) && a.G is not null))
            {
                string label = Label(n), prefix = Prefix(label, a.Name), where = Describe(label, a.Name);
                foreach (var t in a.G.Initializer) yield return new(prefix + t.Name, ParameterStorage.Initializer, t, where, n);
                foreach (var c in a.G.Node)
                    if (c.OpType == "Constant" && Domains.IsDefault(c.Domain) && c.Output.Count > 0 && c.ConstantValue() is { } t)
                        yield return new(prefix + c.Output[0], ParameterStorage.Constant, t, where, n);
            }
    }
}
