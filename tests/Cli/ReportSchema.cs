
using Json.Schema;

namespace OnnxUnlearn.Tests.Cli;

/// <summary>docs/report.schema.json, the published shape of the unlearning report, checked against real reports.</summary>
public static class ReportSchema
{
    static readonly JsonSchema Schema = JsonSchema.FromFile(Path.Combine(Fixtures.Root, "..", "docs", "report.schema.json"));

    public static void AssertValid(string reportJson)
    {
        var result = Schema.Evaluate(System.Text.Json.JsonDocument.Parse(reportJson).RootElement, new EvaluationOptions { OutputFormat = OutputFormat.List, RequireFormatValidation = true });
        var errors = (result.Details ?? []).Where(d => d.Errors is { Count: > 0 }).SelectMany(d => d.Errors!.Select(e => $"{d.InstanceLocation}: {e.Value}")).ToList();
        Assert.True(result.IsValid, "the report does not match docs/report.schema.json:\n" + string.Join("\n", errors));
    }
}

public class ReportSchemaTests
{
    [Fact]
    public void TheSchemaRejectsWhatAReportMustNotBe()
    {
        using var dir = new TempDir();
        var (code, _, err) = CliRunner.Run("unlearn", Fixtures.File("mlp", "model.onnx"), "--train", Fixtures.File("mlp", "data.npz"),
            "--forget", Fixtures.File("mlp", "forget.npz"), "--steps", "1", "--report", dir.File("r.json"));
        Assert.True(code == 0, err);
        var json = File.ReadAllText(dir.File("r.json"));
        ReportSchema.AssertValid(json);
        foreach (var (change, bad) in new (string, Func<System.Text.Json.Nodes.JsonObject, System.Text.Json.Nodes.JsonObject>)[]
        {
            ("a secret in the settings", r => { r["settings"]!["secret"] = "4929"; return r; }),
            ("no outcome", r => { r.Remove("outcome"); return r; }),
            ("an unknown outcome", r => { r["outcome"] = "updated-ish"; return r; }),
            ("a null", r => { r["tau"] = null; return r; }),
            ("no-change with a model written", r => { r["outcome"] = "no-change"; r["noChange"] = "nothing-moved"; r["outputModel"] = "/x.onnx"; return r; }),
        })
        {
            var node = bad(System.Text.Json.Nodes.JsonNode.Parse(json)!.AsObject());
            Assert.Throws<Xunit.Sdk.TrueException>(() => ReportSchema.AssertValid(node.ToJsonString()));
        }
    }
}
