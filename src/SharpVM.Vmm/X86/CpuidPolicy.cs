using SharpVM.Hypervisor;

namespace SharpVM.Vmm.X86;

/// <summary>
/// Turns the backend's supported CPUID into what one vCPU of this VM sees: its APIC ID, the
/// hypervisor-present bit, the topology, and the hypervisor leaves (on KVM: "KVMKVMKVM" and the
/// kvm-clock features, so Linux says "Booting paravirtualized kernel on KVM").
/// </summary>
public static class CpuidPolicy
{
    public const uint HypervisorBase = 0x4000_0000;
    private const uint HypervisorPresent = 1u << 31;

    public static IReadOnlyList<CpuidEntry> ForVcpu(IReadOnlyList<CpuidEntry> supported, int vcpuId, int vcpuCount)
    {
        var result = new List<CpuidEntry>(supported.Count);
        foreach (var e in supported)
        {
            var entry = e;
            switch (e.Function)
            {
                case 1:
                    // EBX[31:24] initial APIC ID, EBX[23:16] logical processors per package; ECX[31] hypervisor.
                    uint ebx = (e.Ebx & 0x0000_FFFF) | ((uint)vcpuId << 24) | ((uint)Math.Min(vcpuCount, 255) << 16);
                    uint edx = vcpuCount > 1 ? e.Edx | (1u << 28) : e.Edx; // HTT: more than one logical CPU
                    entry = e with { Ebx = ebx, Ecx = e.Ecx | HypervisorPresent, Edx = edx };
                    break;
                case 0xB:
                case 0x1F:
                    // Extended topology: EDX is the x2APIC ID of this logical processor.
                    entry = e with { Edx = (uint)vcpuId };
                    if (e.Index == 0) entry = entry with { Ebx = 1 };                  // SMT level: 1 thread per core
                    else if (e.Index == 1) entry = entry with { Ebx = (uint)vcpuCount }; // core level: all vCPUs
                    break;
            }
            result.Add(entry);
        }
        return result;
    }

    /// <summary>The 12-byte vendor signature in leaf 0x40000000 (EBX, ECX, EDX), if present.</summary>
    public static string? HypervisorSignature(IReadOnlyList<CpuidEntry> entries)
    {
        foreach (var e in entries)
            if (e.Function == HypervisorBase) return Signature(e.Ebx, e.Ecx, e.Edx);
        return null;
    }

    public static string Signature(uint ebx, uint ecx, uint edx)
    {
        Span<byte> bytes = stackalloc byte[12];
        BitConverter.TryWriteBytes(bytes, ebx);
        BitConverter.TryWriteBytes(bytes[4..], ecx);
        BitConverter.TryWriteBytes(bytes[8..], edx);
        return System.Text.Encoding.ASCII.GetString(bytes).TrimEnd('\0');
    }
}
