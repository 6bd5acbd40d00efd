using SharpVM.Cli;

return CliRunner.Invoke(SharpVmCommand.Create(), args);
