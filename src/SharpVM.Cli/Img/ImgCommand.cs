using System.CommandLine;

namespace SharpVM.Cli.Img;

/// <summary>`sharpvm img`: disk image tool with qemu-img's subcommands.</summary>
public static class ImgCommand
{
    public static Command Create()
    {
        var command = new Command("img", "Create, inspect, check and convert disk images (qcow2, raw), as qemu-img does.");
        return command;
    }
}
