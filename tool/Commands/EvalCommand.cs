using OnnxUnlearn.Onnx;
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
            var settings = loss.Read(r);
            var file = ModelFile.Load(r.GetValue(model)!, settings.ExternalData);
            using var d = Dataset.Load(r.GetValue(data)!, file);
            using var m = Evaluator.Open(file, settings, d);
            var result = m.Loss(m.ReadParameters(), d);
            if (r.GetValue(json)) Cli.WriteJson(new { model = r.GetValue(model), data = r.GetValue(data), loss = result.Loss, accuracy = result.Accuracy, count = result.Count });
            else Console.WriteLine($"loss {result.Loss:G6}" + (result.Accuracy is { } a ? $", accuracy {a:P2}" : "") + $" over {result.Count} labelled elements");
            return Cli.Ok;
        }));
        return c;
    }
}
