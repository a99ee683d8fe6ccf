using System.CommandLine;
using OnnxUnlearn.Cli;
using OnnxUnlearn.Cli.Commands;

Signals.CleanUpTempFilesOnExit();
var root = new RootCommand("onnx-unlearn: machine unlearning on ONNX models — gradients, Hessian diagonals, sharp-parameter selection and surgical weight write-back.");
foreach (var command in new[] { InspectCommand.Create(), ArtifactsCommand.Create(), GradCommand.Create(), EvalCommand.Create(), PredictCommand.Create(), UnlearnCommand.Create(), SharpnessCommand.Create(), SelectCommand.Create(), TextToNpzCommand.Create(), ExposureCommand.Create() })
    root.Subcommands.Add(command);
return Cli.Run(root, args);
