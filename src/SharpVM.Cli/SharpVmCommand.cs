using System.CommandLine;
using SharpVM.Cli.Img;

namespace SharpVM.Cli;

/// <summary>The `sharpvm` root command with every subcommand: shared by Main and the CLI tests, which parse real command lines.</summary>
public static class SharpVmCommand
{
    public static RootCommand Create()
    {
        var root = new RootCommand("SharpVM: a virtual machine monitor for Linux KVM, written in C#.");
        root.Options.Add(CliLogging.LevelOption);
        root.Subcommands.Add(InfoCommand.Create());
        root.Subcommands.Add(RunCommand.Create());
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(ImgCommand.Create());
        return root;
    }
}
