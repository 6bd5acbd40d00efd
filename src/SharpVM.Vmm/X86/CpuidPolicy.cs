using SharpVM.Hypervisor;

namespace SharpVM.Vmm.X86;

/// <summary>
/// Turns the backend's supported CPUID into what one vCPU of this VM sees: its APIC ID, the
/// hypervisor-present bit, a topology of one package with one single-threaded core per vCPU (leaves
/// 1, 4, 0xB, 0x1F and AMD's 0x80000008/0x8000001E agree with each other and with the MADT), and the
/// hypervisor leaves passed through (on KVM: "KVMKVMKVM" at 0x40000000 and the kvm-clock features at
/// 0x40000001, so Linux says "Booting paravirtualized kernel on KVM" and takes its TSC rate from kvmclock).
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
        bool amd = false;
        for (int i = 0; i < source.Length; i++)
            if (source[i].Function == 0) amd = IsAmdLike(source[i]);
        var result = new CpuidEntry[source.Length];
        for (int i = 0; i < source.Length; i++) result[i] = ForVcpu(source[i], vcpuId, vcpuCount, amd);
        return result;
    }

    private static CpuidEntry[] CopyToArray(IReadOnlyList<CpuidEntry> entries)
    {
        var copy = new CpuidEntry[entries.Count];
        for (int i = 0; i < copy.Length; i++) copy[i] = entries[i];
        return copy;
    }

    // "AuthenticAMD" and "HygonGenuine" in EBX: their topology leaves are 0x80000008/0x8000001E.
    private static bool IsAmdLike(CpuidEntry leaf0) => leaf0.Ebx is 0x6874_7541 or 0x6F67_7948;

    /// <summary>
    /// Bits of the APIC ID that number the vCPUs: SharpVM's topology is one package of
    /// <c>vcpuCount</c> cores with one thread each, APIC ID = vCPU id (as KVM gives each LAPIC and the
    /// MADT lists), so the core field is as wide as the largest id needs and the thread field is empty.
    /// </summary>
    public static uint CoreIdBits(int vcpuCount) => vcpuCount <= 1 ? 0 : (uint)(32 - System.Numerics.BitOperations.LeadingZeroCount((uint)(vcpuCount - 1)));

    private static CpuidEntry ForVcpu(CpuidEntry e, int vcpuId, int vcpuCount, bool amd)
    {
        uint count = (uint)vcpuCount, id = (uint)vcpuId;
        switch (e.Function)
        {
            case 1:
                // EBX[31:24] initial APIC ID, EBX[23:16] logical processors per package; ECX[31] hypervisor.
                uint ebx = (e.Ebx & 0x0000_FFFF) | (id << 24) | (Math.Min(count, 255) << 16);
                uint edx = vcpuCount > 1 ? e.Edx | (1u << 28) : e.Edx; // HTT: more than one logical CPU
                return e with { Ebx = ebx, Ecx = e.Ecx | HypervisorPresent, Edx = edx };
            case 4:
                // Deterministic cache parameters, one sub-leaf per cache; type 0 ends the list. The host's
                // counts (say 64 cores, 2 threads sharing L1) would contradict leaf 0xB: L1/L2 belong to
                // one vCPU (one thread per core), L3 to the whole package. EAX[25:14] threads sharing - 1,
                // EAX[31:26] cores per package - 1.
                if ((e.Eax & 0x1F) == 0) return e;
                uint level = (e.Eax >> 5) & 7;
                uint sharing = level >= 3 ? Math.Min(count, 4096) - 1 : 0;
                uint cores = Math.Min(count, 64) - 1;
                return e with { Eax = (e.Eax & 0x3FFF) | (sharing << 14) | (cores << 26) };
            case 0xB:
            case 0x1F:
                // Extended topology: per level, EAX[4:0] = bits of the x2APIC ID below the next level,
                // EBX = logical processors at this level, ECX = level number | type << 8 (1 SMT, 2 core,
                // 0 invalid: the end), EDX = this vCPU's x2APIC ID. The host's values describe the host's
                // threads and cores (EAX=1 at the SMT level would make odd APIC IDs hyperthreads), and a
                // host's 0x1F may list module/die levels: levels past the core are made invalid.
                return e.Index switch
                {
                    0 => e with { Eax = 0, Ebx = 1, Ecx = 0 | (1u << 8), Edx = id },
                    1 => e with { Eax = CoreIdBits(vcpuCount), Ebx = count, Ecx = 1 | (2u << 8), Edx = id },
                    _ => e with { Eax = 0, Ebx = 0, Ecx = e.Index & 0xFF, Edx = id },
                };
            case 0x8000_0008 when amd:
                // AMD: ECX[7:0] cores in the package - 1, ECX[15:12] bits of the APIC ID that number them.
                return e with { Ecx = (e.Ecx & ~0xF0FFu) | (CoreIdBits(vcpuCount) << 12) | (Math.Min(count, 256) - 1) };
            case 0x8000_001E when amd:
                // AMD topology extensions (KVM returns zeros): EAX extended APIC ID, EBX[7:0] core
                // (compute unit) id with EBX[15:8] = threads per core - 1 = 0, ECX node 0 of 1.
                return e with { Eax = id, Ebx = id & 0xFF, Ecx = 0, Edx = 0 };
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
