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

    /// <summary>
    /// What vCPU <paramref name="vcpuId"/> of <paramref name="vcpuCount"/> sees: the supported leaves
    /// with its APIC IDs and topology, and the hypervisor bit. Returns an array.
    /// </summary>
    public static IReadOnlyList<CpuidEntry> ForVcpu(IReadOnlyList<CpuidEntry> supported, int vcpuId, int vcpuCount)
    {
        // Arrays indexed directly rather than a List<CpuidEntry> or a foreach over the interface:
        // those are CoreLib generics over our struct that ReadyToRun cannot precompile, so they
        // would be JIT-compiled on the first VM's setup path (bench/README.md). Backends return arrays.
        var source = supported as CpuidEntry[] ?? CopyToArray(supported);
        var result = new CpuidEntry[source.Length];
        for (int i = 0; i < source.Length; i++) result[i] = ForVcpu(source[i], vcpuId, vcpuCount);
        return result;
    }

    private static CpuidEntry[] CopyToArray(IReadOnlyList<CpuidEntry> entries)
    {
        var copy = new CpuidEntry[entries.Count];
        for (int i = 0; i < copy.Length; i++) copy[i] = entries[i];
        return copy;
    }

    private static CpuidEntry ForVcpu(CpuidEntry e, int vcpuId, int vcpuCount)
    {
        switch (e.Function)
        {
            case 1:
                // EBX[31:24] initial APIC ID, EBX[23:16] logical processors per package; ECX[31] hypervisor.
                uint ebx = (e.Ebx & 0x0000_FFFF) | ((uint)vcpuId << 24) | ((uint)Math.Min(vcpuCount, 255) << 16);
                uint edx = vcpuCount > 1 ? e.Edx | (1u << 28) : e.Edx; // HTT: more than one logical CPU
                return e with { Ebx = ebx, Ecx = e.Ecx | HypervisorPresent, Edx = edx };
            case 0xB:
            case 0x1F:
                // Extended topology: EDX is the x2APIC ID of this logical processor.
                var entry = e with { Edx = (uint)vcpuId };
                if (e.Index == 0) entry = entry with { Ebx = 1 };                  // SMT level: 1 thread per core
                else if (e.Index == 1) entry = entry with { Ebx = (uint)vcpuCount }; // core level: all vCPUs
                return entry;
            default:
                return e;
        }
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
