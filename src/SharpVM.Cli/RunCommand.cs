using System.CommandLine;
using System.Runtime.InteropServices;
using SharpVM.Cli.Serial;
using SharpVM.Vmm;
using SharpVM.Vmm.Boot;
using SharpVM.Vmm.Exits;
using SharpVM.Vmm.Host;
using SharpVM.Vmm.Linux;

namespace SharpVM.Cli;

/// <summary>`sharpvm run`: boot a Linux guest (the default one if no kernel is given) on a serial console.</summary>
public static class RunCommand
{
    public static Command Create()
    {
        var kernel = new Option<FileInfo?>("--kernel") { Description = "Kernel to boot: a bzImage or an ELF vmlinux. Default: the default guest's (built on first use)." };
        var initrd = new Option<FileInfo?>("--initrd") { Description = "Initial ramdisk. Default: the default guest's initramfs when --kernel is not given." };
        var cmdline = new Option<string>("--cmdline") { Description = "Kernel command line.", DefaultValueFactory = _ => LinuxBoot.DefaultCommandLine };
        var memory = new Option<string>("--memory", "-m") { Description = "Guest RAM: a number of MiB, or with K/M/G suffix (e.g. 512M, 2G).", DefaultValueFactory = _ => "512M" };
        var cpus = new Option<int>("--cpus") { Description = "Number of vCPUs.", DefaultValueFactory = _ => 1 };
        var accel = new Option<Accelerator>("--accel") { Description = "Backend: auto (KVM where it has VMX/SVM, else emu), kvm, or emu (SharpVM's own CPU).", DefaultValueFactory = _ => Accelerator.Auto };
        var serial = new Option<string>("--serial") { Description = "COM1: stdio (terminal in raw mode; Ctrl-A x quits), file:PATH (output only), unix:PATH or tcp:[HOST]:PORT (SharpVM listens; one client at a time gets the output and types to the guest; an empty HOST listens on every address, as QEMU does, so anyone who can reach the port gets the console; tcp:127.0.0.1:PORT keeps it local), or none.", DefaultValueFactory = _ => "stdio" };
        var stats = new Option<bool>("--stats") { Description = "Print VM exits by reason, port and MMIO range (and, on the emulated CPU, instructions retired) when the VM ends." };
        var reboot = new Option<bool>("--reboot") { Description = "Restart the guest when it reboots (default: end with exit status 2)." };
        var guestDecompress = new Option<bool>("--guest-decompress") { Description = "Let the kernel decompress itself instead of SharpVM decompressing it on the host." };
        var hugePages = new Option<bool>("--huge-pages") { Description = "Back guest RAM with transparent huge pages (MADV_HUGEPAGE): fewer TLB misses on KVM." };
        var ksm = new Option<bool>("--ksm") { Description = "Let KSM merge identical guest pages across VMs (MADV_MERGEABLE; needs /sys/kernel/mm/ksm/run = 1)." };
        var timeout = new Option<double?>("--timeout") { Description = "Stop the VM after this many seconds (exit status 124)." };
        var guestCommand = new Argument<string[]>("command") { Description = "A command for the default guest's init to run (after --), then power off.", Arity = ArgumentArity.ZeroOrMore };
        var command = new Command("run", """
            Boot a Linux guest on a serial console.

            Exit status: 0 the guest powered off, 2 it rebooted, 3 it halted for good, 4 triple fault,
            5 SharpVM's backend failed, 124 --timeout expired, 130/143 SIGINT/SIGTERM, 1 bad arguments.

            Examples:
              sharpvm run                                   boot the default guest to a shell
              sharpvm run -- uname -a                       run one command in the default guest
              sharpvm run --cpus 2 --memory 1G --accel emu -- cat /proc/cpuinfo
              sharpvm run --kernel bzImage --initrd initrd.img --cmdline "console=ttyS0"
              sharpvm run --serial unix:/tmp/vm.sock        console on a Unix socket: socat -,rawer UNIX-CONNECT:/tmp/vm.sock
              sharpvm run --serial tcp:127.0.0.1:4444       console on 127.0.0.1:4444 (tcp::4444: every address, as in QEMU)
              sharpvm run --serial file:boot.log -- dmesg   guest output to a file
            """);
        foreach (var o in new Option[] { kernel, initrd, cmdline, memory, cpus, accel, serial, stats, reboot, guestDecompress, hugePages, ksm, timeout }) command.Options.Add(o);
        command.Arguments.Add(guestCommand);
        command.Validators.Add(result =>
        {
            // A guest command must come after "--": otherwise a mistyped option would silently become one.
            // System.CommandLine drops the "--" token itself, so look for it in the process's arguments.
            var raw = Environment.GetCommandLineArgs();
            int separator = Array.IndexOf(raw, "--");
            foreach (var token in result.GetResult(guestCommand)?.Tokens ?? [])
                if (separator < 0 || Array.IndexOf(raw, token.Value) < separator)
                {
                    result.AddError(token.Value.StartsWith('-')
                        ? $"unknown option {token.Value} (see sharpvm run --help)"
                        : $"unexpected argument '{token.Value}': a command for the guest goes after --, as in: sharpvm run -- {token.Value}");
                    return;
                }
        });
        command.SetAction(parse => Run(new RunOptions(
            parse.GetValue(kernel)?.FullName, parse.GetValue(initrd)?.FullName, parse.GetValue(cmdline)!, parse.GetValue(memory)!,
            parse.GetValue(cpus), parse.GetValue(accel), parse.GetValue(serial)!, parse.GetValue(stats), parse.GetValue(reboot),
            parse.GetValue(guestDecompress), parse.GetValue(hugePages), parse.GetValue(ksm), parse.GetValue(timeout), parse.GetValue(guestCommand) ?? [])));
        return command;
    }

    private sealed record RunOptions(string? Kernel, string? Initrd, string CommandLine, string Memory, int Cpus, Accelerator Accel,
        string Serial, bool Stats, bool Reboot, bool GuestDecompress, bool HugePages, bool Ksm, double? Timeout, string[] GuestCommand);

    private static int Run(RunOptions o)
    {
        if (!SizeParser.TryParseMemory(o.Memory, out ulong memoryBytes, out string? sizeError))
            throw new UserFacingException($"--memory {o.Memory}: {sizeError}");
        string? kernel = o.Kernel, initrd = o.Initrd;
        if (kernel is null)
        {
            try { (kernel, string defaultInitrd) = DefaultGuest.Ensure(Console.Error); initrd ??= defaultInitrd; }
            catch (Exception e) when (e is FileNotFoundException or InvalidOperationException) { throw new UserFacingException(e.Message); }
        }
        else if (!File.Exists(kernel)) throw new UserFacingException($"--kernel {kernel}: no such file");
        if (initrd is not null && !File.Exists(initrd)) throw new UserFacingException($"--initrd {initrd}: no such file");
        string commandLine = o.GuestCommand.Length > 0 ? $"{o.CommandLine} -- {string.Join(' ', o.GuestCommand)}" : o.CommandLine;

        var machine = new VmConfig { MemoryBytes = memoryBytes, Cpus = o.Cpus, Accelerator = o.Accel, TimeExits = o.Stats,
            HugePages = o.HugePages, MergeablePages = o.Ksm, LoggerFactory = CliLogging.Factory };
        try { machine.Validate(); }
        catch (ArgumentException e) { throw new UserFacingException(e.Message); }
        var config = new LinuxVmConfig
        {
            Machine = machine, KernelPath = kernel, InitrdPath = initrd, CommandLine = commandLine,
            LoadMode = o.GuestDecompress ? KernelLoadMode.GuestDecompress : KernelLoadMode.Auto,
        };

        using var console = SerialConsole.Open(o.Serial, interactive: o.GuestCommand.Length == 0, Console.Error);
        // SIGINT/SIGTERM stop the VM the ordinary way, so the console is closed and a socket file removed.
        // (On a raw-mode terminal Ctrl-C is a key for the guest, not a signal.)
        var stopSignal = new StopSignal();
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, stopSignal.Handle);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, stopSignal.Handle);
        while (true)
        {
            var report = BootOnce(config, console, stopSignal, o);
            if (report.Kind == VmStopKind.Reset && o.Reboot && stopSignal.Received is null) continue;
            console.Flush(TimeSpan.FromSeconds(2));
            if (report.Kind is not (VmStopKind.PowerOff or VmStopKind.Requested))
                Console.Error.WriteLine($"\r\nsharpvm: {report.Describe().ReplaceLineEndings("\r\n")}");
            if (stopSignal.Received is PosixSignal signal) return signal == PosixSignal.SIGINT ? 130 : 143;
            return report.Kind == VmStopKind.Requested && report.Message.StartsWith("stopped after", StringComparison.Ordinal) ? 124 : report.ExitCode;
        }
    }

    /// <summary>SIGINT/SIGTERM turned into a stop request for whichever VM is running.</summary>
    private sealed class StopSignal
    {
        private readonly Lock _lock = new();
        private VirtualMachine? _vm;
        public PosixSignal? Received { get; private set; }

        public void Attach(VirtualMachine? vm)
        {
            lock (_lock)
            {
                _vm = vm;
                if (vm is not null && Received is PosixSignal s) vm.RequestStop(new VmStopReport(VmStopKind.Requested, $"stopped by {s}"));
            }
        }

        public void Handle(PosixSignalContext context)
        {
            context.Cancel = true; // we end the process ourselves, after cleaning up
            lock (_lock)
            {
                Received ??= context.Signal;
                _vm?.RequestStop(new VmStopReport(VmStopKind.Requested, $"stopped by {context.Signal}"));
            }
        }
    }

    private static VmStopReport BootOnce(LinuxVmConfig config, SerialConsole console, StopSignal stopSignal, RunOptions o)
    {
        LinuxVm linux;
        try { linux = LinuxVm.Create(config, console.Write); }
        catch (Exception e) when (e is InvalidKernelException or BootLayoutException or ArgumentException or NotSupportedException)
        {
            throw new UserFacingException(e.Message);
        }
        using (linux)
        {
            var vm = linux.Vm;
            Action quit = () => vm.RequestStop(new VmStopReport(VmStopKind.Requested, "quit with Ctrl-A x"));
            console.QuitRequested += quit;
            console.ConnectInput(linux.Platform.Com1);
            stopSignal.Attach(vm);
            try
            {
                vm.Start();
                var report = vm.WaitForStop(o.Timeout is double t ? TimeSpan.FromSeconds(t) : Timeout.InfiniteTimeSpan);
                if (o.Stats)
                {
                    console.Flush(TimeSpan.FromSeconds(2));
                    StatsTable.Write(vm, Spectre.Console.AnsiConsole.Console);
                }
                return report;
            }
            finally
            {
                stopSignal.Attach(null);
                console.QuitRequested -= quit;
            }
        }
    }
}
