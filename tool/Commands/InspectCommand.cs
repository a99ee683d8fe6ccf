using System.CommandLine;
using OnnxUnlearn.Autodiff;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using Spectre.Console;

namespace OnnxUnlearn.Cli.Commands;

public static class InspectCommand
{
    public static Command Create()
    {
        var model = Cli.ModelArgument();
        var json = Cli.JsonFlag();
        var output = Cli.Output();
        var allowLinks = Cli.AllowLinks();
        var noVerify = new Option<bool>("--no-verify") { Description = "list the model without checking its tensors (shapes, value counts, external data files and ranges)" };
        var data = new Option<string?>("--data") { Description = ".npz whose inputs given once (e.g. a sample rate) decide which branch of an If runs; its weights are then listed as parameters" };
        var c = new Command("inspect", "Show a model's IR, opsets, inputs/outputs, ops, parameters (trainable or not, and why) and ops without a gradient rule.");
        c.Arguments.Add(model); c.Options.Add(output); c.Options.Add(json); c.Options.Add(allowLinks); c.Options.Add(noVerify); c.Options.Add(data);
        c.SetAction(r => Cli.Guard(() =>
        {
            var file = ModelFile.Load(r.GetValue(model)!, Cli.Policy(r, allowLinks), verify: !r.GetValue(noVerify));
            var axes = SampleAxes.For(file.Graph, file.Path);
            using var d = r.GetValue(data) is { } path ? Dataset.Load(path, axes) : null;
            d?.Require(Evaluator.DataInputs(file.Graph).Where(i => axes.Of(i) == SampleAxes.Once), $"inputs given once of '{file.Path}'");
            var summary = ModelSummary.Of(Inlining.Apply(file, axes, d), r.GetValue(output), axes.Describe);
            summary = summary with { Parameters = summary.Parameters.Select(p => p with { Reason = p.Reason is { } why ? Cli.Describe(why) : null }).ToList() };
            if (r.GetValue(json)) { Cli.WriteJson(summary); return Cli.Ok; }
            Print(summary);
            return Cli.Ok;
        }));
        return c;
    }

    static void Print(ModelSummary s)
    {
        var console = AnsiConsole.Console;
        console.MarkupLine($"[bold]{Markup.Escape(s.Path)}[/]  IR {s.IrVersion}, opsets {Markup.Escape(string.Join(", ", s.Opsets.Select(o => $"{o.Key} {o.Value}")))}, producer {Markup.Escape(s.Producer.Length > 0 ? s.Producer : "(none)")}");
        var io = Cli.Table("", "name", "type", "shape", "samples");
        foreach (var v in s.Inputs) io.AddRow("input", Markup.Escape(UserError.Escape(v.Name)), v.Type, Markup.Escape("[" + string.Join(", ", v.Shape) + "]"), v.Samples ?? "");
        foreach (var v in s.Outputs) io.AddRow("output", Markup.Escape(UserError.Escape(v.Name)), v.Type, Markup.Escape("[" + string.Join(", ", v.Shape) + "]"), "");
        console.Write(io);
        console.MarkupLine("ops: " + Markup.Escape(string.Join(", ", s.Ops.Select(o => $"{o.Key} ×{o.Value}"))));
        var t = Cli.Table("parameter", "type", "shape", "elements", "storage", "trainable");
        foreach (var p in s.Parameters)
            t.AddRow(Markup.Escape(UserError.Escape(p.Name)), p.Type, Markup.Escape(Cli.Shape(p.Shape)), p.Elements.ToString("N0"),
                Markup.Escape(p.Branch is null ? p.Storage : $"{p.Storage} in {p.Branch}"), p.Trainable ? "yes" : Markup.Escape("no: " + p.Reason));
        console.Write(t);
        console.MarkupLine($"trainable elements: [bold]{s.TrainableElements:N0}[/] in {s.Parameters.Count(p => p.Trainable)} tensors");
        if (s.OpsWithoutGradient.Count > 0)
            console.MarkupLine("[yellow]no gradient rule:[/] " + Markup.Escape(string.Join("; ", s.OpsWithoutGradient.Select(m => $"{m.Op} (node '{m.Node}', opset {m.Opset})"))));
    }
}
