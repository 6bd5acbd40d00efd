using System.Text;
using SharpVM.Integration.Tests.Infrastructure;
using SharpVM.Vmm;
using SharpVM.Vmm.Boot;
using SharpVM.Vmm.Exits;
using SharpVM.Vmm.Host;
using SharpVM.Vmm.Linux;
using Xunit.Abstractions;

namespace SharpVM.Integration.Tests;

/// <summary>
/// The default guest on the KVM backend. Where KVM has hardware virtualization (kvm_intel/kvm_amd)
/// the kernel must boot, see that it is on KVM, run the command and power off. Under kvm_pvm (our
/// development and CI machines) booting Linux on KVM is not applicable — PVM's own instruction
/// emulator cannot run the stock kernel (see HOST-FACTS) — and this test asserts instead that
/// SharpVM ends such a VM with a clear report: the emulation failure, the registers and the
/// instruction PVM failed on, disassembled.
/// </summary>
public class LinuxBootOnKvmTests(ITestOutputHelper output)
{
    [Fact]
    public void DefaultGuestBootsOnHardwareKvmOrPvmFailureIsReportedClearly()
    {
        LinuxGuestBoot.RequireDefaultGuest();
        var host = HostProbe.Probe();
        using var kvm = Kvm.Open();
        var config = new LinuxVmConfig
        {
            Machine = new VmConfig { MemoryBytes = 512UL << 20, Cpus = 1, Accelerator = Accelerator.Kvm },
            KernelPath = DefaultGuest.KernelPath,
            InitrdPath = DefaultGuest.InitrdPath,
            CommandLine = $"{LinuxBoot.DefaultCommandLine} -- echo ON-KVM-$((20+22))",
        };
        var console = new StringBuilder();
        using var linux = LinuxVm.Create(config, bytes => { lock (console) console.Append(Encoding.ASCII.GetString(bytes)); }, kvm);
        linux.Vm.Start();
        var report = linux.Vm.WaitForStop(TimeSpan.FromSeconds(host.HardwareKvm ? 120 : 300));
        string text;
        lock (console) text = console.ToString();

        if (host.HardwareKvm)
        {
            Assert.True(report.Kind == VmStopKind.PowerOff, $"{report.Describe()}\n{text}");
            Assert.Contains("Booting paravirtualized kernel on KVM", text);
            Assert.Contains(LinuxGuestBoot.Marker, text);
            Assert.Contains("ON-KVM-42", text);
            return;
        }
        Assert.Equal(KvmProvider.KvmPvm, host.Provider);
        output.WriteLine($"Linux on the KVM backend: not applicable on {AcceleratorPolicy.Describe(host.Provider)} (no VMX/SVM); SharpVM reported:\n{report.Describe()}");
        Assert.True(report.Kind == VmStopKind.Error, $"expected PVM's emulation failure, got: {report.Describe()}\n{text}");
        Assert.Contains("emulation failure", report.Message);
        Assert.NotNull(report.Registers);
        Assert.Contains("64-bit", report.Instruction);
        // The kernel itself did start (the boot setup is right): it failed in its own text, on its own page tables.
        Assert.True(report.Registers!.Value.Rip >= 0xFFFF_FFFF_8000_0000, report.Describe());
        Assert.NotEqual(linux.Boot.Cr3.Value, report.SpecialRegisters!.Value.Cr3);
    }
}
