using System.CommandLine;
using OnnxUnlearn.Runtime;

namespace OnnxUnlearn.Cli.Commands;

public static class EvalCommand
{
    public static Command Create()
    {
        var model = Cli.ModelArgument();
        var data = new Option<string>("--data") { Description = ".npz of samples: the model's input names plus 'label'", Required = true };
        var json = Cli.JsonFlag();
        var loss = new LossOptions();
        var c = new Command("eval", "Mean loss (and accuracy, for the class losses ce, ce-prob and nll) of a model on a data file.");
        c.Arguments.Add(model); c.Options.Add(data); c.Options.Add(json); loss.AddTo(c);
        c.SetAction(r => Cli.Guard(() =>
        {
            using var d = Dataset.Load(r.GetValue(data)!);
            using var m = Evaluator.Open(r.GetValue(model)!, loss.Read(r), d);
            var result = m.Loss(m.ReadParameters(), d);
            if (r.GetValue(json)) Cli.WriteJson(new { model = r.GetValue(model), data = r.GetValue(data), loss = result.Loss, accuracy = result.Accuracy, count = result.Count, forward = m.FiguresForward });
            else Console.WriteLine($"loss {result.Loss:G6}" + (result.Accuracy is { } a ? $", accuracy {a:P2}" : "") + $" over {result.Count} labelled elements ({m.FiguresForward})");
            return Cli.Ok;
        }));
        return c;
    }
}
