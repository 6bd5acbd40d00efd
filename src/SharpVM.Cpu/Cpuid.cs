using SharpVM.Hypervisor;

namespace SharpVM.Cpu;

/// <summary>What the emulated CPU advertises. Only implemented features are set.</summary>
public static class EmulatorCpuid
{
    /// <summary>TSC frequency the guest sees (the TSC counts host monotonic nanoseconds).</summary>
    public const ulong TscHz = 1_000_000_000;

    /// <summary>The crystal/core/bus clock advertised in leaves 0x15, 0x16 and 0x40000010 (Hz): the LAPIC timer should count at this rate.</summary>
    public const ulong BusHz = 1_000_000_000;

    // Leaf 1 EDX: FPU, PSE, TSC, MSR, PAE, CX8, APIC, PGE, CMOV, PAT, CLFSH, MMX, FXSR, SSE, SSE2. The x87 (FPU, with
    // FCMOVcc/FCOMI under CMOV) is X87.cs on exact 80-bit software arithmetic (Float80.cs); MMX is Mmx.cs.
    public const uint Leaf1Edx = (1u << 0) | (1u << 3) | (1u << 4) | (1u << 5) | (1u << 6) | (1u << 8) | (1u << 9) |
                                 (1u << 13) | (1u << 15) | (1u << 16) | (1u << 19) | (1u << 23) | (1u << 24) | (1u << 25) | (1u << 26);
    // Leaf 1 ECX: CX16, MOVBE, POPCNT, hypervisor.
    public const uint Leaf1Ecx = (1u << 13) | (1u << 22) | (1u << 23) | (1u << 31);
    // 0x80000001 EDX: SYSCALL, NX, 1 GiB pages, RDTSCP, LM. ECX: LAHF/SAHF in 64-bit mode, ABM (LZCNT).
    public const uint Ext1Edx = (1u << 11) | (1u << 20) | (1u << 26) | (1u << 27) | (1u << 29);
    public const uint Ext1Ecx = (1u << 0) | (1u << 5);
    // Leaf 7 EBX: TSC_ADJUST (with an invariant TSC it lets Linux skip the clocksource watchdog), ERMS.
    public const uint Leaf7Ebx = (1u << 1) | (1u << 9);
    // Leaf 7 EDX: IBRS/IBPB (the IA32_SPEC_CTRL and IA32_PRED_CMD MSRs), IA32_ARCH_CAPABILITIES MSR (an emulator does
    // not speculate: see ArchCapabilities).
    public const uint Leaf7Edx = (1u << 26) | (1u << 29);
    // Leaf 7 subleaf 2 EDX: BHI_CTRL (IA32_SPEC_CTRL.BHI_DIS_S). Linux treats every virtualized Intel CPU as exposed to
    // branch history injection whatever IA32_ARCH_CAPABILITIES says; with this control it sets one MSR bit at boot
    // instead of running a branch-history clearing loop on every system call.
    public const uint Leaf7Sub2Edx = 1u << 4;

    /// <summary>
    /// IA32_ARCH_CAPABILITIES: not vulnerable to Meltdown, SSB, MDS, TAA, MMIO stale data, BHI, PBRSB, GDS, RFDS and ITS,
    /// with enhanced IBRS (IBRS_ALL): all true of a CPU that does not speculate. It spares the guest KPTI's CR3 switches,
    /// and (enhanced IBRS, ITS_NO) the retpolines on indirect calls and the return thunk on every RET that Linux otherwise
    /// patches in for this family and model: a RET becomes a JMP to another page and a second block to run.
    /// </summary>
    public const ulong ArchCapabilities = (1UL << 0) | (1UL << 1) | (1UL << 4) | (1UL << 5) | (1UL << 6) | (1UL << 8) |
                                          (1UL << 13) | (1UL << 14) | (1UL << 15) | (1UL << 20) | (1UL << 24) | (1UL << 26) |
                                          (1UL << 27) | (1UL << 62);

    /// <summary>IA32_SPEC_CTRL bits this CPU has: IBRS and BHI_DIS_S (kept; without speculation there is nothing for them to restrict).</summary>
    public const ulong SpecCtrlBits = (1UL << 0) | (1UL << 10);

    private static uint Str(string s, int at) => (uint)(s[at] | (s[at + 1] << 8) | (s[at + 2] << 16) | (s[at + 3] << 24));

    internal static void Default(uint leaf, uint sub, int apicId, out uint a, out uint b, out uint c, out uint d)
    {
        a = b = c = d = 0;
        const string Vendor = "GenuineIntel";
        const string Hv = "SharpVMSharp";
        switch (leaf)
        {
            case 0:
                a = 0x16; b = Str(Vendor, 0); d = Str(Vendor, 4); c = Str(Vendor, 8);
                break;
            case 1:
                a = 0x000506E3; // family 6, model 0x5E (Skylake client), stepping 3
                b = ((uint)apicId << 24) | (1u << 16) | (8u << 8);
                c = Leaf1Ecx; d = Leaf1Edx;
                break;
            case 7:
                if (sub == 0) { a = 2; b = Leaf7Ebx; d = Leaf7Edx; } // EAX: the last subleaf
                else if (sub == 2) d = Leaf7Sub2Edx;
                break;
            case 0x15:
                a = 1; b = (uint)(TscHz / BusHz); c = (uint)BusHz;
                break;
            case 0x16:
                a = (uint)(TscHz / 1_000_000); b = a; c = (uint)(BusHz / 1_000_000);
                break;
            case 0x40000000:
                a = 0x40000010; b = Str(Hv, 0); c = Str(Hv, 4); d = Str(Hv, 8);
                break;
            case 0x40000010:
                a = (uint)(TscHz / 1000); b = (uint)(BusHz / 1000);
                break;
            case 0x80000000:
                a = 0x80000008;
                break;
            case 0x80000001:
                c = Ext1Ecx; d = Ext1Edx;
                break;
            case 0x80000002: case 0x80000003: case 0x80000004:
            {
                const string Brand = "SharpVM emulated x86-64 CPU                     ";
                int o = (int)(leaf - 0x80000002) * 16;
                a = Str(Brand, o); b = Str(Brand, o + 4); c = Str(Brand, o + 8); d = Str(Brand, o + 12);
                break;
            }
            case 0x80000007:
                d = 1u << 8; // invariant TSC: constant rate, never stops
                break;
            case 0x80000008:
                a = 0x3028; // 40 physical, 48 linear address bits
                break;
        }
    }
}

public sealed unsafe partial class EmulatorVcpu
{
    internal void Cpuid(uint leaf, uint sub, out uint a, out uint b, out uint c, out uint d)
    {
        EmulatorCpuid.Default(leaf, sub, Id, out a, out b, out c, out d);
        var o = _cpuidOverride;
        if (o is null) return;
        foreach (var e in o)
        {
            if (e.Function != leaf || (e.Indexed && e.Index != sub)) continue;
            // The VMM may narrow what we advertise or add leaves we do not define, never widen features.
            switch (leaf)
            {
                case 1:
                    a = e.Eax; b = e.Ebx; c &= e.Ecx | (1u << 31); d &= e.Edx;
                    break;
                case 7:
                    b &= e.Ebx; c &= e.Ecx; d &= e.Edx;
                    break;
                case 0x80000001:
                    c &= e.Ecx; d &= e.Edx;
                    break;
                case 0 or 0xD or 0x80000000 or 0x40000000 or 0x40000010 or 0x15 or 0x16:
                    break;
                default:
                    a = e.Eax; b = e.Ebx; c = e.Ecx; d = e.Edx;
                    break;
            }
            return;
        }
    }

    internal bool TryReadMsr(uint index, out ulong v)
    {
        if (TryReadApicMsr(index, out v, out bool apicOk)) return apicOk;
        v = 0;
        switch (index)
        {
            case 0x10: v = ReadTsc(); return true;
            case 0x10A: v = EmulatorCpuid.ArchCapabilities; return true;
            case 0x48: v = SpecCtrl; return true;
            case 0x1B: v = ApicBase; return true;
            case 0x3A: v = 1; return true; // FEATURE_CONTROL: locked, no VMX
            case 0x8B: v = 0; return true; // microcode revision
            case 0xFE: v = 0; return true; // MTRRcap
            case 0x174: v = SysenterCs; return true;
            case 0x175: v = SysenterEsp; return true;
            case 0x176: v = SysenterEip; return true;
            case 0x179: case 0x17A: v = 0; return true; // MCG_CAP, MCG_STATUS
            case 0x1A0: v = MiscEnable; return true;
            case 0x1D9: v = 0; return true; // DEBUGCTL
            case 0x277: v = Pat; return true;
            case 0x2FF: v = 0; return true; // MTRR default type
            case 0x6E0: v = TscDeadline; return true;
            case 0xC0000080: v = Efer; return true;
            case 0xC0000081: v = Star; return true;
            case 0xC0000082: v = Lstar; return true;
            case 0xC0000083: v = Cstar; return true;
            case 0xC0000084: v = Sfmask; return true;
            case 0xC0000100: v = Sregs[FS].Base; return true;
            case 0xC0000101: v = Sregs[GS].Base; return true;
            case 0xC0000102: v = KernelGsBase; return true;
            case 0xC0000103: v = TscAux; return true;
            default: return false;
        }
    }

    private static bool Canonical(ulong v) => (ulong)(((long)v << 16) >> 16) == v;

    internal bool TryWriteMsr(uint index, ulong v)
    {
        if (TryWriteApicMsr(index, v, out bool apicOk)) return apicOk;
        switch (index)
        {
            case 0x10: WriteTsc(v); return true;
            case 0x1B: ApicBase = (v & ~0x100UL) | (ApicBase & 0x100); return true;
            case 0x48: if ((v & ~EmulatorCpuid.SpecCtrlBits) != 0) return false; SpecCtrl = v; return true;
            case 0x49: return (v & ~1UL) == 0; // PRED_CMD: IBPB (a barrier with no predictor state to drop); write-only
            case 0x3A: case 0x8B: case 0x179: case 0x17A: case 0x1D9: case 0x2FF: return true;
            case 0x174: SysenterCs = v; return true;
            case 0x175: SysenterEsp = v; return true;
            case 0x176: SysenterEip = v; return true;
            case 0x1A0: MiscEnable = v; return true;
            case 0x277: Pat = v; return true;
            case 0x6E0: TscDeadline = v; return true;
            case 0xC0000080:
            {
                if ((v & ~(EferSce | EferLme | EferLma | EferNxe)) != 0) return false;
                ulong nv = (v & ~EferLma) | (Efer & EferLma);
                if ((nv & EferLme) != (Efer & EferLme) && (Cr0 & Cr0Pg) != 0) return false;
                Efer = nv;
                FlushTlb(true);
                UpdateMode();
                return true;
            }
            case 0xC0000081: Star = v; return true;
            case 0xC0000082: if (!Canonical(v)) return false; Lstar = v; return true;
            case 0xC0000083: if (!Canonical(v)) return false; Cstar = v; return true;
            case 0xC0000084: Sfmask = v & 0xFFFFFFFF; return true;
            case 0xC0000100: if (!Canonical(v)) return false; Sregs[FS].Base = v; return true;
            case 0xC0000101: if (!Canonical(v)) return false; Sregs[GS].Base = v; return true;
            case 0xC0000102: if (!Canonical(v)) return false; KernelGsBase = v; return true;
            case 0xC0000103: TscAux = v & 0xFFFFFFFF; return true;
            default: return false;
        }
    }
}
