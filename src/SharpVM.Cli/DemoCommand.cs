using System.CommandLine;
using Spectre.Console;
using SharpVM.Vmm;
using SharpVM.Vmm.Demo;
using SharpVM.Vmm.Host;

namespace SharpVM.Cli;

/// <summary>`sharpvm demo`: boots the built-in micro-guest on KVM and shows what it printed.</summary>
public static class DemoCommand
{
    public static Command Create()
    {
        var cpus = new Option<int>("--cpus") { Description = "Number of vCPUs (1-255).", DefaultValueFactory = _ => 2 };
        var stats = new Option<bool>("--stats") { Description = "Print VM exits by reason, port and MMIO range when the VM ends." };
        var accel = new Option<Accelerator>("--accel") { Description = "Backend: kvm (default: the micro-guest runs fine on any KVM, PVM included) or emu (SharpVM's own CPU).", DefaultValueFactory = _ => Accelerator.Kvm };
        var command = new Command("demo", "Boot the built-in micro-guest (assembled at run time, no kernel needed) on /dev/kvm: each vCPU prints a line on the debug console.\n\nExamples:\n  sharpvm demo\n  sharpvm demo --cpus 4 --stats\n  sharpvm demo --accel emu");
        command.Options.Add(cpus);
        command.Options.Add(stats);
        command.Options.Add(accel);
        command.SetAction(parse => Run(parse.GetValue(cpus), parse.GetValue(stats), parse.GetValue(accel)));
        return command;
    }

    private static int Run(int cpus, bool stats, Accelerator accelerator)
    {
        var config = new VmConfig { MemoryBytes = 16UL << 20, Cpus = cpus, Accelerator = accelerator == Accelerator.Auto ? Accelerator.Kvm : accelerator, InterruptController = true, Pit = false, TimeExits = stats, LoggerFactory = CliLogging.Factory };
        try { config.Validate(); }
        catch (ArgumentException e) { throw new UserFacingException(e.Message); }
        using var vm = VmBuilder.Build(config);
        var stdout = Console.OpenStandardOutput();
        HelloGuest.Install(vm, b => { stdout.WriteByte(b); if (b == '\n') stdout.Flush(); });
        vm.Start();
        var report = vm.WaitForStop(TimeSpan.FromSeconds(60));
        stdout.Flush();
        AnsiConsole.MarkupLine($"[grey]VM ended: {Markup.Escape(report.Describe())}[/]");
        if (stats) StatsTable.Write(vm, AnsiConsole.Console);
        return report.ExitCode;
    }
}
