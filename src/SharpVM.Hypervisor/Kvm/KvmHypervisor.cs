using SharpVM.Devices.Bus;
using SharpVM.Interop.Kvm;
using SharpVM.Memory;

namespace SharpVM.Hypervisor.Kvm;

/// <summary>The KVM backend: guest code runs on the host CPU through /dev/kvm.</summary>
public sealed class KvmHypervisor : IHypervisor
{
    private readonly KvmSystem _system;

    public string Name => "kvm";

    /// <summary>The /dev/kvm handle, for capability queries.</summary>
    public KvmSystem System => _system;

    private KvmHypervisor(KvmSystem system) => _system = system;

    /// <summary>Opens /dev/kvm; throws <see cref="KvmUnavailableException"/> with a one-line fix if it cannot.</summary>
    public static KvmHypervisor Open(string devicePath = KvmSystem.DevicePath) => new(KvmSystem.Open(devicePath));

    public IVirtualMachine CreateVm(GuestMemory memory, PioBus pio, MmioBus mmio, VmPlatformOptions options) =>
        new KvmMachine(_system, memory, options);

    public IReadOnlyList<CpuidEntry> GetSupportedCpuid()
    {
        // Plain loops rather than LINQ on the VM-setup path: start-up time is part of boot time.
        var raw = _system.GetSupportedCpuid();
        var entries = new CpuidEntry[raw.Length];
        for (int i = 0; i < raw.Length; i++) entries[i] = KvmConversions.ToCpuidEntry(raw[i]);
        return WithTscDeadlineTimer(entries, _system.CheckExtension(KvmCapability.TscDeadlineTimer) > 0);
    }

    private const uint TscDeadlineTimerBit = 1u << 24; // CPUID.1:ECX[24]

    /// <summary>
    /// Adds the TSC-deadline timer to leaf 1 when the in-kernel LAPIC emulates it: older kernels leave it
    /// out of KVM_GET_SUPPORTED_CPUID and VMMs (QEMU, Firecracker) add it on KVM_CAP_TSC_DEADLINE_TIMER.
    /// Without it Linux calibrates the LAPIC timer against PIT ticks; with it, it skips that.
    /// </summary>
    public static CpuidEntry[] WithTscDeadlineTimer(CpuidEntry[] entries, bool supported)
    {
        if (!supported) return entries;
        for (int i = 0; i < entries.Length; i++)
            if (entries[i].Function == 1) entries[i] = entries[i] with { Ecx = entries[i].Ecx | TscDeadlineTimerBit };
        return entries;
    }

    public void Dispose() => _system.Dispose();
}
