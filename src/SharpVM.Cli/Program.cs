using System.CommandLine;
using SharpVM.Cli;
using SharpVM.Cli.Img;

var root = new RootCommand("SharpVM: a virtual machine monitor for Linux KVM, written in C#.");
root.Options.Add(CliLogging.LevelOption);
root.Subcommands.Add(InfoCommand.Create());
root.Subcommands.Add(RunCommand.Create());
root.Subcommands.Add(DemoCommand.Create());
root.Subcommands.Add(ImgCommand.Create());
return CliRunner.Invoke(root, args);
