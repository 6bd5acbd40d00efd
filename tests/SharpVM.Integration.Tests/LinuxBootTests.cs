using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using SharpVM.Cpu;
using SharpVM.Hypervisor;
using SharpVM.Integration.Tests.Infrastructure;
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

    /// <summary>
    /// Where Linux cannot run on this host's KVM, the KVM variants of the boot tests are reported as not
    /// applicable, by name, with the reason (skipped, never passed). A host without a usable /dev/kvm
    /// still fails them loudly (opening KVM fails with the reason).
    /// </summary>
    public static void RequireLinuxCapable(Accelerator accelerator)
    {
        if (accelerator != Accelerator.Kvm) return;
        var host = HostProbe.Probe();
        Skip.If(host.DevKvmExists && host.KvmError is null && !host.HardwareKvm,
            $"not applicable here: Linux on the KVM backend needs hardware VMX/SVM; this host's /dev/kvm is " +
            $"{AcceleratorPolicy.Describe(host.Provider)} (see LinuxBootOnKvmTests for what SharpVM reports there)");
    }

    /// <summary>Boots the default guest on <paramref name="accelerator"/> with <paramref name="guestCommand"/> after " -- ".</summary>
    public static Result Boot(Accelerator accelerator, string guestCommand, int cpus, TimeSpan timeout)
    {
        RequireDefaultGuest();
        var config = new LinuxVmConfig
        {
            Machine = new VmConfig { MemoryBytes = 512UL << 20, Cpus = cpus, Accelerator = accelerator },
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
        using IHypervisor hypervisor = accelerator == Accelerator.Kvm ? Infrastructure.Kvm.Open() : new EmulatorHypervisor();
        using var linux = LinuxVm.Create(config, Output, hypervisor);
        linux.Vm.Start();
        var report = linux.Vm.WaitForStop(timeout);
        lock (console) return new Result(report, console.ToString(), sw.Elapsed, toMarker, [.. lines]);
    }
}

/// <summary>One boot with two vCPUs shared by the assertions about a normal run that powers off.</summary>
public abstract class LinuxBootFixture
{
    private readonly Lazy<LinuxGuestBoot.Result> _result;

    public const string Command =
        "echo GUEST-CPUS=$(grep -c ^processor /proc/cpuinfo); echo GUEST-DATE=$(date +%s); echo HELLO-$((6*7)); uname -a; " +
        "printf '" + LongDoubles.Bytes + "' | od -t fL";

    /// <summary>
    /// Five 80-bit long doubles (π, 1/3, the smallest denormal negated, the largest finite value, −4096) as
    /// printf octal escapes: busybox <c>od -t fL</c> prints them through glibc's long double printf, which
    /// runs x87 code (FLD/FSTP m80, FUCOMI, FXAM, FNSTSW) in the guest's user space.
    /// </summary>
    public static class LongDoubles
    {
        public const string Bytes =
            @"\065\302\150\041\242\332\017\311\000\100\000\000\000\000\000\000" +
            @"\253\252\252\252\252\252\252\252\375\077\000\000\000\000\000\000" +
            @"\001\000\000\000\000\000\000\000\000\200\000\000\000\000\000\000" +
            @"\377\377\377\377\377\377\377\377\376\177\000\000\000\000\000\000" +
            @"\000\000\000\000\000\000\000\200\013\300\000\000\000\000\000\000";

        /// <summary>What od prints for them: the correctly rounded 16-digit renderings (LDBL_TRUE_MIN, LDBL_MAX ...).</summary>
        public static readonly string[] Printed =
            ["3.141592653589793e+00", "3.333333333333333e-01", "-3.645199531882475e-4951", "1.189731495357232e+4932", "-4.096000000000000e+03"];
    }

    protected LinuxBootFixture(Accelerator accelerator)
    {
        Accelerator = accelerator;
        _result = new Lazy<LinuxGuestBoot.Result>(() => LinuxGuestBoot.Boot(accelerator, Command, cpus: 2, TimeSpan.FromSeconds(200)));
    }

    public Accelerator Accelerator { get; }

    public LinuxGuestBoot.Result Result
    {
        get
        {
            LinuxGuestBoot.RequireLinuxCapable(Accelerator);
            LinuxGuestBoot.RequireDefaultGuest();
            return _result.Value;
        }
    }
}

public sealed class EmuLinuxBootFixture() : LinuxBootFixture(Accelerator.Emu);

public sealed class KvmLinuxBootFixture() : LinuxBootFixture(Accelerator.Kvm);

/// <summary>
/// The Linux-boot acceptance, once per backend: the emulator runs it everywhere; KVM runs it where the
/// host has VMX/SVM and reports it as not applicable under kvm_pvm.
/// </summary>
public abstract class LinuxBootTests<TFixture>(TFixture boot) where TFixture : LinuxBootFixture
{
    [SkippableFact]
    public void ReachesInitAndPrintsTheMarker()
    {
        var r = boot.Result;
        Assert.True(r.Console.Contains(LinuxGuestBoot.Marker, StringComparison.Ordinal), $"no {LinuxGuestBoot.Marker}{Environment.NewLine}{r}");
        Assert.Contains("Linux version 6.1", r.Console);
        if (boot.Accelerator == Accelerator.Kvm) Assert.Contains("Booting paravirtualized kernel on KVM", r.Console);
    }

    /// <summary>The seed SharpVM passes in setup_data (SETUP_RNG_SEED) makes the kernel's RNG ready before its clock starts.</summary>
    [SkippableFact]
    public void TheKernelsRandomNumberGeneratorIsSeededAtBoot()
    {
        var r = boot.Result;
        Assert.True(Regex.IsMatch(r.Console, @"\[\s*0\.000000\] random: crng init done"), $"the RNG was not ready at boot{Environment.NewLine}{r}");
    }

    [SkippableFact]
    public void CommandOutputComesBack()
    {
        var r = boot.Result;
        Assert.True(r.Console.Contains("HELLO-42", StringComparison.Ordinal), $"no command output{Environment.NewLine}{r}");
        Assert.True(Regex.IsMatch(r.Console, @"Linux \S+ 6\.1\.\S+ .*x86_64"), $"no uname line{Environment.NewLine}{r}");
        Assert.True(r.Console.Contains("SHARPVM-EXIT-CODE=0", StringComparison.Ordinal), $"no exit code line{Environment.NewLine}{r}");
    }

    /// <summary>glibc's long double printf (x87 loads, compares and FXAM in the guest) prints what it prints on the host.</summary>
    [SkippableFact]
    public void LongDoublesPrintAsOnHardware()
    {
        var r = boot.Result;
        var printed = r.Lines.Select(l => l.Line).Where(l => Regex.IsMatch(l, @"^0{4}[0-7]{3} +\S")).Select(l => l[7..].Trim()).ToList();
        Assert.True(printed.SequenceEqual(LinuxBootFixture.LongDoubles.Printed), $"od -t fL printed [{string.Join(", ", printed)}]{Environment.NewLine}{r}");
    }

    [SkippableFact]
    public void TwoVcpusShowUpInProcCpuinfo()
    {
        var r = boot.Result;
        var m = Regex.Match(r.Console, @"GUEST-CPUS=(\d+)");
        Assert.True(m.Success, $"no GUEST-CPUS= line{Environment.NewLine}{r}");
        Assert.Equal("2", m.Groups[1].Value);
    }

    [SkippableFact]
    public void PowerOffEndsTheVmWithExitStatus0()
    {
        var r = boot.Result;
        Assert.True(r.Report.Kind == VmStopKind.PowerOff, $"expected a power-off{Environment.NewLine}{r}");
        Assert.Equal(0, r.Report.ExitCode);
    }

    [SkippableFact]
    public void GuestClockFollowsTheHostClock()
    {
        var r = boot.Result;
        var line = r.Lines.FirstOrDefault(l => l.Line.StartsWith("GUEST-DATE=", StringComparison.Ordinal));
        Assert.True(line.Line is not null, $"no GUEST-DATE= line{Environment.NewLine}{r}");
        long guest = long.Parse(line.Line["GUEST-DATE=".Length..].Trim(), System.Globalization.CultureInfo.InvariantCulture);
        long host = line.At.ToUnixTimeSeconds();
        // Both sides are whole seconds, truncated, and the line reaches the host a little after the guest read its clock.
        Assert.True(Math.Abs(host - guest) <= 2, $"guest date {guest} vs host {host} when the line arrived{Environment.NewLine}{r}");
    }

    /// <summary>`reboot -f` in the guest ends `sharpvm run` (the real CLI, as a user runs it) with exit status 2.</summary>
    [SkippableFact]
    public void RebootEndsSharpvmRunWithExitStatus2()
    {
        LinuxGuestBoot.RequireLinuxCapable(boot.Accelerator);
        LinuxGuestBoot.RequireDefaultGuest();
        string console = Path.Combine(Path.GetTempPath(), $"sharpvm-reboot-{Guid.NewGuid():N}.log");
        try
        {
            var run = SharpVmProcess.Run(TimeSpan.FromSeconds(240), "run", "--accel", boot.Accelerator.ToString().ToLowerInvariant(),
                "--cpus", "1", "--serial", "file:" + console, "--timeout", "200", "--", "reboot", "-f");
            string text = File.Exists(console) ? File.ReadAllText(console) : "(no console file)";
            Assert.True(text.Contains(LinuxGuestBoot.Marker, StringComparison.Ordinal), $"no {LinuxGuestBoot.Marker}\n{run}\n--- console ---\n{text}");
            Assert.True(run.ExitCode == 2, $"expected exit status 2 (reboot)\n{run}\n--- console ---\n{text}");
        }
        finally
        {
            File.Delete(console);
        }
    }
}

[Collection("LinuxBoot")]
public sealed class LinuxBootOnEmuTests(EmuLinuxBootFixture boot) : LinuxBootTests<EmuLinuxBootFixture>(boot), IClassFixture<EmuLinuxBootFixture>;

[Collection("LinuxBoot")]
public sealed class LinuxBootOnHardwareKvmTests(KvmLinuxBootFixture boot) : LinuxBootTests<KvmLinuxBootFixture>(boot), IClassFixture<KvmLinuxBootFixture>;

/// <summary>The Linux boots run one after the other: each takes both cores.</summary>
[CollectionDefinition("LinuxBoot", DisableParallelization = true)]
public class LinuxBootCollection;
