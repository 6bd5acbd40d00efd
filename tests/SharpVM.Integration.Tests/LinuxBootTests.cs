using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using SharpVM.Cpu;
using SharpVM.Vmm;
using SharpVM.Vmm.Boot;
using SharpVM.Vmm.Exits;
using SharpVM.Vmm.Host;
using SharpVM.Vmm.Linux;

namespace SharpVM.Integration.Tests;

/// <summary>
/// Boots the default guest (Debian's stock 6.1 kernel + the busybox initramfs that
/// guest/build-default-guest.sh builds) on SharpVM's own CPU, the way <c>sharpvm run --accel emu</c>
/// does, and checks what the guest prints and how it ends.
/// </summary>
public static class LinuxGuestBoot
{
    public const string Marker = "SHARPVM-GUEST-READY";

    /// <summary>What a boot printed on COM1 and how it ended.</summary>
    public sealed record Result(VmStopReport Report, string Console, TimeSpan Wall, TimeSpan? ToMarker,
        IReadOnlyList<(string Line, DateTimeOffset At)> Lines)
    {
        public override string ToString() =>
            $"stop: {Report.Describe()}{Environment.NewLine}wall {Wall.TotalSeconds:0.0} s, marker at {ToMarker?.TotalSeconds:0.0} s{Environment.NewLine}--- console ---{Environment.NewLine}{Console}";
    }

    /// <summary>Fails with how to build it when the default guest is missing.</summary>
    public static void RequireDefaultGuest()
    {
        if (!DefaultGuest.IsBuilt)
            Assert.Fail($"the default guest is not built ({DefaultGuest.KernelPath} or {DefaultGuest.InitrdPath} is missing): " +
                        $"run {DefaultGuest.ScriptRelativePath} (or test.sh) first");
    }

    /// <summary>Boots the default guest on the emulated CPU with <paramref name="guestCommand"/> after " -- ".</summary>
    public static Result Boot(string guestCommand, int cpus, TimeSpan timeout)
    {
        RequireDefaultGuest();
        var config = new LinuxVmConfig
        {
            Machine = new VmConfig { MemoryBytes = 512UL << 20, Cpus = cpus, Accelerator = Accelerator.Emu },
            KernelPath = DefaultGuest.KernelPath,
            InitrdPath = DefaultGuest.InitrdPath,
            CommandLine = $"{LinuxBoot.DefaultCommandLine} -- {guestCommand}",
        };
        var console = new StringBuilder();
        var lines = new List<(string, DateTimeOffset)>();
        var current = new StringBuilder();
        var sw = Stopwatch.StartNew();
        TimeSpan? toMarker = null;
        void Output(ReadOnlySpan<byte> bytes)
        {
            lock (console)
            {
                foreach (byte b in bytes)
                {
                    char c = (char)b;
                    console.Append(c);
                    if (c == '\n')
                    {
                        string line = current.ToString().TrimEnd('\r');
                        lines.Add((line, DateTimeOffset.UtcNow));
                        if (toMarker is null && line.Contains(Marker, StringComparison.Ordinal)) toMarker = sw.Elapsed;
                        current.Clear();
                    }
                    else current.Append(c);
                }
            }
        }
        using var hypervisor = new EmulatorHypervisor();
        using var linux = LinuxVm.Create(config, Output, hypervisor);
        linux.Vm.Start();
        var report = linux.Vm.WaitForStop(timeout);
        lock (console) return new Result(report, console.ToString(), sw.Elapsed, toMarker, [.. lines]);
    }
}

/// <summary>One boot with two vCPUs shared by the assertions about a normal run that powers off.</summary>
public sealed class LinuxBootFixture
{
    private readonly Lazy<LinuxGuestBoot.Result> _result;

    public const string Command =
        "echo GUEST-CPUS=$(grep -c ^processor /proc/cpuinfo); echo GUEST-DATE=$(date +%s); echo HELLO-$((6*7)); uname -a";

    public LinuxBootFixture() =>
        _result = new Lazy<LinuxGuestBoot.Result>(() => LinuxGuestBoot.Boot(Command, cpus: 2, TimeSpan.FromSeconds(200)));

    public LinuxGuestBoot.Result Result
    {
        get
        {
            LinuxGuestBoot.RequireDefaultGuest();
            return _result.Value;
        }
    }
}

[Collection("LinuxBoot")]
public class LinuxBootTests(LinuxBootFixture boot) : IClassFixture<LinuxBootFixture>
{
    [Fact]
    public void ReachesInitAndPrintsTheMarker()
    {
        var r = boot.Result;
        Assert.True(r.Console.Contains(LinuxGuestBoot.Marker, StringComparison.Ordinal), $"no {LinuxGuestBoot.Marker}{Environment.NewLine}{r}");
        Assert.Contains("Linux version 6.1", r.Console);
    }

    [Fact]
    public void CommandOutputComesBack()
    {
        var r = boot.Result;
        Assert.True(r.Console.Contains("HELLO-42", StringComparison.Ordinal), $"no command output{Environment.NewLine}{r}");
        Assert.True(Regex.IsMatch(r.Console, @"Linux \S+ 6\.1\.\S+ .*x86_64"), $"no uname line{Environment.NewLine}{r}");
        Assert.True(r.Console.Contains("SHARPVM-EXIT-CODE=0", StringComparison.Ordinal), $"no exit code line{Environment.NewLine}{r}");
    }

    [Fact]
    public void TwoVcpusShowUpInProcCpuinfo()
    {
        var r = boot.Result;
        var m = Regex.Match(r.Console, @"GUEST-CPUS=(\d+)");
        Assert.True(m.Success, $"no GUEST-CPUS= line{Environment.NewLine}{r}");
        Assert.Equal("2", m.Groups[1].Value);
    }

    [Fact]
    public void PowerOffEndsTheVmWithExitStatus0()
    {
        var r = boot.Result;
        Assert.True(r.Report.Kind == VmStopKind.PowerOff, $"expected a power-off{Environment.NewLine}{r}");
        Assert.Equal(0, r.Report.ExitCode);
    }

    [Fact]
    public void GuestClockFollowsTheHostClock()
    {
        var r = boot.Result;
        var line = r.Lines.FirstOrDefault(l => l.Line.StartsWith("GUEST-DATE=", StringComparison.Ordinal));
        Assert.True(line.Line is not null, $"no GUEST-DATE= line{Environment.NewLine}{r}");
        long guest = long.Parse(line.Line["GUEST-DATE=".Length..].Trim(), System.Globalization.CultureInfo.InvariantCulture);
        long host = line.At.ToUnixTimeSeconds();
        Assert.True(Math.Abs(host - guest) <= 2, $"guest date {guest} vs host {host} when the line arrived{Environment.NewLine}{r}");
    }
}

[Collection("LinuxBoot")]
public class LinuxRebootTests
{
    [Fact]
    public void RebootEndsTheVmWithAResetStop()
    {
        var r = LinuxGuestBoot.Boot("reboot -f", cpus: 1, TimeSpan.FromSeconds(200));
        Assert.True(r.Console.Contains(LinuxGuestBoot.Marker, StringComparison.Ordinal), $"no {LinuxGuestBoot.Marker}{Environment.NewLine}{r}");
        Assert.True(r.Report.Kind == VmStopKind.Reset, $"expected a reset{Environment.NewLine}{r}");
        Assert.Equal(2, r.Report.ExitCode);
    }
}

/// <summary>The Linux boots run one after the other: each takes both cores.</summary>
[CollectionDefinition("LinuxBoot", DisableParallelization = true)]
public class LinuxBootCollection;
