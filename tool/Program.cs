using System.CommandLine;
using OnnxUnlearn.Cli;
using OnnxUnlearn.Cli.Commands;

Signals.CleanUpTempFilesOnExit();
var root = new RootCommand("onnx-unlearn: machine unlearning on ONNX models — gradients, Hessian diagonals, sharp-parameter selection and surgical weight write-back. Exit codes: 0 done, 2 bad input or usage, 3 (unlearn) a stated target missed, 4 (unlearn) no effective change.");
foreach (var command in new[] { InspectCommand.Create(), ArtifactsCommand.Create(), GradCommand.Create(), EvalCommand.Create(), PredictCommand.Create(), UnlearnCommand.Create(), SharpnessCommand.Create(), SelectCommand.Create(), MergeCommand.Create(), TextToNpzCommand.Create(), ExposureCommand.Create() })
    root.Subcommands.Add(command);
root.Subcommands.Add(ReportCommand.Create());
return Cli.Run(root, args);
