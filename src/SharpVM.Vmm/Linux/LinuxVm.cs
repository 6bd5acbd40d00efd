using SharpVM.Devices.Legacy;
using SharpVM.Hypervisor;
using SharpVM.Memory;
using SharpVM.Vmm.Boot;
using SharpVM.Vmm.Exits;

namespace SharpVM.Vmm.Linux;

/// <summary>
/// A VM set up to boot Linux: the legacy PC platform (COM1, i8042, CMOS, PCI host bridge, ACPI PM)
/// on its buses, ACPI tables, the kernel and initrd in memory, and the BSP at the kernel's 64-bit
/// entry. The application processors are left for the guest to start with INIT/SIPI.
/// </summary>
public sealed class LinuxVm : IDisposable
{
    public VirtualMachine Vm { get; }
    public LegacyPlatform Platform { get; }
    public LinuxBootSetup Boot { get; }

    private LinuxVm(VirtualMachine vm, LegacyPlatform platform, LinuxBootSetup boot)
    {
        Vm = vm;
        Platform = platform;
        Boot = boot;
    }

    /// <summary>Builds the VM; <paramref name="serialOutput"/> receives COM1's bytes on a vCPU thread.</summary>
    public static LinuxVm Create(LinuxVmConfig config, Action<ReadOnlySpan<byte>> serialOutput, IHypervisor? hypervisor = null)
    {
        var vm = VmBuilder.Build(config.Machine, hypervisor);
        try
        {
            ulong lowRamEnd = vm.Memory.Regions[0].End.Value;
            var platform = LegacyPlatform.Create(vm.Pio, gsi => vm.Machine.GetInterruptLine(gsi),
                e => vm.RequestStop(e == PlatformEvent.PowerOff
                    ? new VmStopReport(VmStopKind.PowerOff, "the guest powered off")
                    : new VmStopReport(VmStopKind.Reset, "the guest asked for a reset")),
                serialOutput, vm.Memory.Size, lowRamEnd);
            var boot = LinuxGuest.Prepare(vm.Memory, config.Machine.Cpus, config.KernelPath, config.InitrdPath, config.CommandLine, config.LoadMode);
            vm.VcpuSetup = vcpu =>
            {
                // Every vCPU: what firmware would have set (LINT0/LINT1, MTRRs, fast strings, FPU).
                vcpu.ApplyFirmwareState();
                if (vcpu.Id != 0) return; // APs wait for the guest's INIT/SIPI (MP_STATE uninitialized)
                var sregs = boot.SpecialRegisters;
                sregs.ApicBase = vcpu.GetSpecialRegisters().ApicBase;
                vcpu.SetSpecialRegisters(sregs);
                vcpu.SetRegisters(boot.Registers);
            };
            return new LinuxVm(vm, platform, boot);
        }
        catch
        {
            vm.Dispose();
            throw;
        }
    }

    public void Dispose() => Vm.Dispose();
}
