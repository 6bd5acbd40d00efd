using System.CommandLine;

namespace SharpVM.Cli.Img;

/// <summary>`sharpvm img`: disk image tool with qemu-img's subcommands.</summary>
public static class ImgCommand
{
    public static Command Create()
    {
        var command = new Command("img", "Create, inspect, check and convert disk images (qcow2, raw), as qemu-img does.");
        command.Subcommands.Add(ImgBasic.CreateCmd());
        command.Subcommands.Add(ImgInfo.Create());
        command.Subcommands.Add(ImgBasic.CheckCmd());
        command.Subcommands.Add(ImgConvert.Create());
        command.Subcommands.Add(ImgBasic.SnapshotCmd());
        command.Subcommands.Add(ImgBasic.ResizeCmd());
        command.Subcommands.Add(ImgChain.CommitCmd());
        command.Subcommands.Add(ImgChain.RebaseCmd());
        command.Subcommands.Add(ImgInfo.MapCmd());
        command.Subcommands.Add(ImgConvert.CompareCmd());
        command.Subcommands.Add(ImgConvert.MeasureCmd());
        command.Subcommands.Add(ImgBasic.AmendCmd());
        command.Subcommands.Add(ImgBench.Create());
        return command;
    }
}
