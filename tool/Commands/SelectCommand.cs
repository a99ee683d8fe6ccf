using System.CommandLine;
using OnnxUnlearn.Data;
using OnnxUnlearn.Selection;
using Spectre.Console;

namespace OnnxUnlearn.Cli.Commands;

public static class SelectCommand
{
    public static Command Create()
    {
        var scores = new Option<string>("--scores") { Description = ".npz of per-element scores keyed by parameter name (from sharpness; its 'stderr/' arrays are skipped)", Required = true };
        var output = new Option<string>("--out") { Description = ".npz of 0/1 uint8 masks keyed by parameter name", Required = true };
        var fraction = new Option<double?>("--fraction") { Description = "share of elements to select (default 0.05)" };
        var count = new Option<long?>("--count") { Description = "number of elements to select" };
        var perTensor = new Option<bool>("--per-tensor") { Description = "top share of each tensor instead of a global top-k" };
        var order = new Option<string>("--order") { Description = "largest (the seed paper: sharpest) or smallest", DefaultValueFactory = _ => "largest" };
        var mask = new Option<string>("--mask") { Description = "score (top-k of --scores), all, or random", DefaultValueFactory = _ => "score" };
        var seed = new Option<int>("--seed") { Description = "seed for --mask random", DefaultValueFactory = _ => 0 };
        var json = Cli.JsonFlag();
        var c = new Command("select", "Turn per-element scores into a selection mask: top-k globally or per tensor, largest or smallest; or all/random.");
        foreach (Option o in new Option[] { scores, output, fraction, count, perTensor, order, mask, seed, json }) c.Options.Add(o);
        c.SetAction(r => Cli.Guard(() =>
        {
            var arrays = Npz.Read(r.GetValue(scores)!).Where(kv => !kv.Key.StartsWith("stderr/")).ToDictionary();
            // The scores file defines the layout: one tensor per key, in file order.
            var layout = new Onnx.ParameterLayout(arrays.Select(kv => new Onnx.Parameter(kv.Key, Onnx.ParameterStorage.Initializer, Onnx.DataTypes.Float, kv.Value.Shape, false, true, null)).ToList());
            var values = layout.Join(arrays, r.GetValue(scores)!);
            int k = Masks.Count(r.GetValue(fraction), r.GetValue(count), layout.Size);
            bool smallest = r.GetValue(order) switch { "largest" => false, "smallest" => true, var x => throw new UserError($"--order must be largest or smallest, got '{x}'") };
            var chosen = r.GetValue(mask) switch
            {
                "score" => Masks.ByScore(values, k, layout, r.GetValue(perTensor), !smallest),
                "all" => Masks.All(layout),
                "random" => Masks.Random(layout, k, r.GetValue(seed)),
                var x => throw new UserError($"--mask must be score, all or random, got '{x}'"),
            };
            var dense = Masks.Dense(chosen, layout.Size);
            Npz.Write(r.GetValue(output)!, layout.Split(dense).ToDictionary(kv => kv.Key, kv => NdArray.FromUInt8(kv.Value.ToFloat().Select(f => (byte)f).ToArray(), kv.Value.Shape)));
            var tensors = Masks.PerTensor(layout, chosen).Select(kv =>
            {
                long total = layout.Parameters[layout.IndexOf(kv.Key)].Elements;
                return new { name = kv.Key, elements = total, selected = kv.Value, share = kv.Value / (double)Math.Max(1, total) };
            }).ToList();
            if (r.GetValue(json))
            {
                Cli.WriteJson(new { scores = r.GetValue(scores), @out = r.GetValue(output), mask = r.GetValue(mask), order = r.GetValue(order), perTensor = r.GetValue(perTensor), elements = layout.Size, selected = chosen.Length, tensors });
                return Cli.Ok;
            }
            var t = Cli.Table("tensor", "elements", "selected", "share");
            foreach (var x in tensors) t.AddRow(Markup.Escape(x.name), x.elements.ToString("N0"), x.selected.ToString("N0"), x.share.ToString("P1"));
            AnsiConsole.Write(t);
            AnsiConsole.MarkupLine($"selected {chosen.Length:N0} of {layout.Size:N0} elements");
            return Cli.Ok;
        }));
        return c;
    }
}
