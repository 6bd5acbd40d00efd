using SharpVM.Devices.Bus;
using SharpVM.Memory;

namespace SharpVM.Hypervisor;

/// <summary>
/// A backend that can run guest code: KVM (<c>KvmHypervisor</c>) or SharpVM's own x86-64 CPU
/// (<c>SharpVM.Cpu.EmulatorHypervisor</c>). The VMM picks one and never asks which it got.
/// </summary>
public interface IHypervisor : IDisposable
{
    /// <summary>Short name for reports: "kvm" or "emu".</summary>
    string Name { get; }

    /// <summary>
    /// Creates a VM over <paramref name="memory"/>. The backend registers the platform pieces it
    /// provides itself (interrupt controllers, PIT) on <paramref name="pio"/>/<paramref name="mmio"/>
    /// or, on KVM, in the kernel.
    /// </summary>
    IVirtualMachine CreateVm(GuestMemory memory, PioBus pio, MmioBus mmio, VmPlatformOptions options);

    /// <summary>The CPUID leaves this backend can present to a guest (before the VMM's policy is applied).</summary>
    IReadOnlyList<CpuidEntry> GetSupportedCpuid();
}

/// <summary>What the backend should provide besides the CPUs.</summary>
/// <param name="InterruptController">Local APICs, IOAPIC and 8259 PICs (KVM_CREATE_IRQCHIP on KVM).</param>
/// <param name="Pit">The 8254 timer (KVM_CREATE_PIT2 on KVM).</param>
/// <param name="VcpuCount">How many vCPUs will be created (the emulator sizes its local APICs by it).</param>
public sealed record VmPlatformOptions(bool InterruptController = true, bool Pit = true, int VcpuCount = 1);
