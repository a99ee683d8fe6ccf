using System.CommandLine;
using OnnxUnlearn.Data;
using OnnxUnlearn.Text;

namespace OnnxUnlearn.Cli.Commands;

public static class TextToNpzCommand
{
    public static Command Create()
    {
        var text = new Argument<string>("TEXT") { Description = "UTF-8 text file, tokenised one character per token" };
        var vocab = new Option<string>("--vocab") { Description = "VOCAB.json mapping characters to the model's token ids, e.g. {\"a\": 1, \"b\": 2}", Required = true };
        var window = new Option<int>("--window") { Description = "T: tokens per sample", Required = true };
        var stride = new Option<int>("--stride") { Description = "characters between the starts of consecutive windows", DefaultValueFactory = _ => 1 };
        var output = new Option<string>("--out") { Description = ".npz to write: the token input int64 [N, T] and 'label' int64 [N, T] (the token after each position)", Required = true };
        var match = new Option<string?>("--match") { Description = "keep only the windows whose T + 1 characters contain this text entirely (the forget set of a secret)" };
        var input = new Option<string>("--input") { Description = "key of the token array: the model's input name", DefaultValueFactory = _ => "tokens" };
        var unknown = new Option<string?>("--unknown") { Description = "vocabulary token for characters it lacks (default: \"<unk>\" when the vocabulary has it; otherwise they are an error)" };
        var json = Cli.JsonFlag();
        var c = new Command("text2npz", "Cut a text into next-token training samples: sliding windows of T tokens and their next-token labels, optionally only those containing a secret.");
        c.Arguments.Add(text);
        foreach (Option o in new Option[] { vocab, window, stride, output, match, input, unknown, json }) c.Options.Add(o);
        c.SetAction(r => Cli.Guard(() =>
        {
            var v = Vocabulary.Load(r.GetValue(vocab)!, r.GetValue(unknown));
            string path = r.GetValue(text)!, inputName = r.GetValue(input)!;
            if (inputName == "label") throw new UserError("--input cannot be 'label': that key holds the next-token labels");
            var w = Windows.Slide(Windows.ReadText(path), v, r.GetValue(window), r.GetValue(stride), r.GetValue(match), $"text file '{path}'");
            Npz.Write(r.GetValue(output)!, w.ToArrays(inputName));
            int t = r.GetValue(window);
            if (r.GetValue(json))
            {
                Cli.WriteJson(new
                {
                    text = path, @out = r.GetValue(output), input = inputName, window = t, stride = r.GetValue(stride), windows = w.Count,
                    match = r.GetValue(match), occurrences = r.GetValue(match) is null ? (int?)null : w.Occurrences.Length,
                });
                return Cli.Ok;
            }
            Console.WriteLine($"{w.Count} windows of {t} tokens (stride {r.GetValue(stride)}) written to {r.GetValue(output)}: '{inputName}' int64 [{w.Count}, {t}], 'label' int64 [{w.Count}, {t}]"
                + (r.GetValue(match) is not null ? $"; each contains the --match text ({w.Occurrences.Length} occurrence(s) in the text)" : ""));
            return Cli.Ok;
        }));
        return c;
    }
}
