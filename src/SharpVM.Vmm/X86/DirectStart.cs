using SharpVM.Hypervisor;

namespace SharpVM.Vmm.X86;

/// <summary>The CPU mode a bare guest (no firmware, no kernel) starts in.</summary>
public enum StartMode { Real, Protected, Long }

/// <summary>
/// Starts every vCPU of a VM directly in <see cref="StartMode"/> at the given registers, with the
/// flat segments and page tables of <see cref="GuestCpuSetup"/> (written once, shared by all vCPUs);
/// application processors are made runnable instead of waiting for INIT/SIPI. For micro-guests and
/// test guests; Linux is started by <c>LinuxVm</c>.
/// </summary>
public static class DirectStart
{
    /// <param name="registers">The general registers of each vCPU (by its id).</param>
    /// <param name="realModeCode">For <see cref="StartMode.Real"/>: where CS points (below 1 MiB).</param>
    public static void Configure(VirtualMachine vm, StartMode mode, Func<IVcpu, Registers> registers, ulong realModeCode = 0)
    {
        var memory = vm.Memory;
        var gate = new object();
        SpecialRegisters? template = null;
        vm.VcpuSetup = vcpu =>
        {
            SpecialRegisters sregs;
            lock (gate)
            {
                var current = vcpu.GetSpecialRegisters();
                template ??= mode switch
                {
                    StartMode.Real => GuestCpuSetup.RealMode(current, realModeCode),
                    StartMode.Protected => GuestCpuSetup.ProtectedMode(memory, current),
                    _ => GuestCpuSetup.LongMode(memory, current),
                };
                sregs = template.Value;
                sregs.ApicBase = current.ApicBase; // per-vCPU: only the BSP has the BSP flag
            }
            vcpu.SetSpecialRegisters(sregs);
            vcpu.SetRegisters(registers(vcpu));
            if (vcpu.Id != 0) vcpu.MakeRunnable();
        };
    }
}
