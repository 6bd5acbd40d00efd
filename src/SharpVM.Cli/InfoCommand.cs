using System.CommandLine;

namespace SharpVM.Cli;

/// <summary>`sharpvm info`: what the host offers for virtualization.</summary>
public static class InfoCommand
{
    public static Command Create()
    {
        var command = new Command("info", "Report what this host offers SharpVM: CPU, /dev/kvm, capabilities.");
        command.SetAction(_ => { Console.WriteLine("todo"); return 0; });
        return command;
    }
}
