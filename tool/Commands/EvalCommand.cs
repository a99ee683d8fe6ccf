using OnnxUnlearn.Onnx;
using System.CommandLine;
using OnnxUnlearn.Runtime;
using OnnxUnlearn;

namespace OnnxUnlearn.Cli.Commands;

public static class EvalCommand
{
    public static Command Create()
    {
        var model = Cli.ModelArgument();
        var data = new Option<string>("--data") { Description = ".npz of samples: the model's input names plus 'label'", Required = true };
        var target = new Option<long?>("--target-class") { Description = "also the attack success for a backdoor to class C: the share of samples whose true class is not C that are predicted as C" };
        var json = Cli.JsonFlag();
        var loss = new LossOptions();
        var c = new Command("eval", "Mean loss (and accuracy, for the class losses ce, ce-prob and nll) of a model on a data file.");
        c.Arguments.Add(model); c.Options.Add(data); c.Options.Add(target); c.Options.Add(json); loss.AddTo(c);
        c.SetAction(r => Cli.Guard(() =>
        {
            var settings = loss.Read(r);
            var file = ModelFile.Load(r.GetValue(model)!, settings.ExternalData);
            using var d = Dataset.Load(r.GetValue(data)!, file);
            using var m = Evaluator.Open(file, settings, d);
            var result = m.Loss(m.ReadParameters(), d);
            double? success = r.GetValue(target) is { } cls ? AttackSuccess(r.GetValue(model)!, r.GetValue(data)!, d, m.ModelOutput, cls, settings) : null;
            if (r.GetValue(json)) Cli.WriteJson(new { model = r.GetValue(model), data = r.GetValue(data), loss = result.Loss, accuracy = result.Accuracy, count = result.Count, forward = m.FiguresForward, attackSuccess = success });
            else Console.WriteLine($"loss {result.Loss:G6}" + (result.Accuracy is { } a ? $", accuracy {a:P2}" : "") + $" over {result.Count} labelled elements ({m.FiguresForward})" +
                (success is { } s ? $"; attack success {s:P2} (samples of other classes predicted as class {r.GetValue(target)})" : ""));
            return Cli.Ok;
        }));
        return c;
    }

    /// <summary>Share of the samples whose label is not <paramref name="cls"/> that the model predicts as <paramref name="cls"/>.</summary>
    static double AttackSuccess(string model, string dataPath, Dataset d, string output, long cls, LossSettings settings)
    {
        if (!d.Has("label")) throw new UserError($"data file '{dataPath}' has no 'label' array; the attack success needs each sample's true class");
        var labels = d.Arrays["label"].ToInt64();
        var (preds, _, _) = PredictCommand.Run(model, dataPath, output, settings.BatchSize, settings.Threads, settings.ExternalData);
        if (preds.Length != labels.Length)
            throw new UserError($"output '{output}' of '{model}' gives {preds.Length} predictions for the {labels.Length} labels of '{dataPath}'; the attack success needs one class per sample");
        var others = labels.Select((l, i) => (l, i)).Where(p => p.l != cls).ToList();
        if (others.Count == 0) throw new UserError($"every sample of '{dataPath}' has class {cls}; the attack success is measured on samples of other classes");
        return others.Count(p => preds[p.i] == cls) / (double)others.Count;
    }
}
