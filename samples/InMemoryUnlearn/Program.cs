// An application that unlearns through the library, without the CLI and without touching the file system in between:
// the model and the data come in as streams (a registry's blob store, an HTTP body), the corrected samples are built
// as arrays in memory, and the new model and the report go out as streams.
//
//   dotnet run --project samples/InMemoryUnlearn -- testdata/mlp/model.onnx testdata/mlp/data.npz \
//       testdata/mlp/forget.npz testdata/mlp/corrected.npz /tmp/new.onnx /tmp/report.json
using System.Text.Json;
using System.Text.Json.Serialization;
using OnnxUnlearn;
using OnnxUnlearn.Data;
using OnnxUnlearn.Onnx;
using OnnxUnlearn.Runtime;
using OnnxUnlearn.Unlearning;

namespace InMemoryUnlearn;

public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Length != 6)
        {
            Console.Error.WriteLine("usage: InMemoryUnlearn MODEL.onnx TRAIN.npz FORGET.npz CORRECTED.npz NEW.onnx REPORT.json");
            return 2;
        }
        try
        {
            using Stream model = File.OpenRead(args[0]), train = File.OpenRead(args[1]), forget = File.OpenRead(args[2]), corrected = File.OpenRead(args[3]);
            using Stream newModel = File.Create(args[4]), report = File.Create(args[5]);
            var r = Unlearn(model, train, forget, corrected, newModel, report);
            Console.WriteLine($"{r.Outcome}: {r.SelectedElements} of {r.TrainableElements} elements selected, {r.Written?.BytesChanged ?? 0} bytes changed; " +
                $"forget-set accuracy {r.Before["corrected"].Accuracy:P1} -> {r.After?["corrected"].Accuracy:P1} on the corrected labels");
            return r.Outcome == UnlearnOutcome.NoChange ? 4 : 0;
        }
        catch (UserError e)
        {
            Console.Error.WriteLine("error: " + e.Message);
            return 2;
        }
    }

    /// <summary>
    /// Relabels the forget set's samples as the corrected set says, updating the sharpest 5 % of the weights, and writes
    /// the new model's bytes and the JSON report.
    /// </summary>
    public static Report Unlearn(Stream modelIn, Stream trainNpz, Stream forgetNpz, Stream correctedNpz, Stream modelOut, Stream reportOut)
    {
        var bytes = ReadAll(modelIn);
        var file = ModelFile.FromBytes(bytes, "model.onnx");
        using var train = Dataset.Load(trainNpz, "train.npz");
        using var forget = Dataset.Load(forgetNpz, "forget.npz");
        // The corrected samples as arrays in memory: the forget set's inputs with the corrected labels.
        var labels = Npz.Read(correctedNpz, "corrected.npz")["label"];
        using var corrected = new Dataset(forget.Arrays.Where(kv => kv.Key != "label").Append(new("label", labels)).ToDictionary(), "corrected labels");

        using var evaluator = Evaluator.Open(file, new LossSettings(), train);
        var writer = new MemoryModelWriter(bytes, file.Path);
        var report = UnlearnJob.Run(evaluator, train, forget, corrected, test: null, new UnlearnOptions { Seed = 0 }, writer: writer);
        report = report with { InputSha256 = Report.Sha256(bytes), OutputSha256 = writer.Result is { } written ? Report.Sha256(written) : null };
        if (writer.Result is { } model) modelOut.Write(model);
        JsonSerializer.Serialize(reportOut, report, Json);
        return report;
    }

    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower) },
    };

    static byte[] ReadAll(Stream s)
    {
        using var m = new MemoryStream();
        s.CopyTo(m);
        return m.ToArray();
    }
}
