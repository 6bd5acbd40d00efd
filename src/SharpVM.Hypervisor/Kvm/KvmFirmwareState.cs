using SharpVM.Interop.Kvm;

namespace SharpVM.Hypervisor.Kvm;

/// <summary>
/// The vCPU state a PC BIOS leaves behind and a kernel entered directly (no firmware) relies on, which
/// a freshly created KVM vCPU lacks: LINT0 as ExtINT (the 8259 reaches the CPU through it until the
/// IOAPIC takes over) and LINT1 as NMI, as the MADT's Local APIC NMI entry says; MTRRs enabled with
/// write-back default (KVM resets MTRRdefType to 0, "MTRRs off, all uncached", and Linux then maps
/// RAM uncached or skips PAT); fast strings on in IA32_MISC_ENABLE (Linux clears ERMS without it);
/// and the x87/SSE control words at their reset values. Firecracker sets the same on every vCPU.
/// </summary>
public static class KvmFirmwareState
{
    public const int LapicLvtLint0 = 0x350, LapicLvtLint1 = 0x360;
    public const uint DeliveryModeNmi = 4, DeliveryModeExtInt = 7;
    private const uint DeliveryModeMask = 7u << 8;

    public const uint MsrMiscEnable = 0x1A0, MsrMtrrDefType = 0x2FF;
    public const ulong MiscEnableFastStrings = 1;
    public const ulong MtrrDefTypeEnabled = 1UL << 11, MemoryTypeWriteBack = 6;

    public const ushort FpuControlWord = 0x37F; // all x87 exceptions masked, 64-bit precision (FNINIT)
    public const uint MxcsrDefault = 0x1F80;    // all SSE exceptions masked, round to nearest

    /// <summary>An LVT entry with its delivery mode (bits 10:8) replaced; the mask bit is kept, as KVM set it.</summary>
    public static uint WithDeliveryMode(uint lvt, uint mode) => (lvt & ~DeliveryModeMask) | (mode << 8);

    /// <summary>LINT0 = ExtINT, LINT1 = NMI in a KVM_GET_LAPIC image.</summary>
    public static unsafe void SetLocalInterruptPins(ref KvmLapicState lapic)
    {
        // SAFETY: Regs is the fixed 1024-byte register page; both offsets are 16-byte aligned and below 0x400 - 4.
        fixed (byte* regs = lapic.Regs)
        {
            uint* lint0 = (uint*)(regs + LapicLvtLint0), lint1 = (uint*)(regs + LapicLvtLint1);
            *lint0 = WithDeliveryMode(*lint0, DeliveryModeExtInt);
            *lint1 = WithDeliveryMode(*lint1, DeliveryModeNmi);
        }
    }

    public static unsafe uint ReadRegister(in KvmLapicState lapic, int offset)
    {
        if ((uint)offset > 1024 - sizeof(uint)) throw new ArgumentOutOfRangeException(nameof(offset), $"0x{offset:x} is outside the 1 KiB LAPIC page");
        // SAFETY: offset was checked to leave 4 bytes inside the fixed 1024-byte register page.
        fixed (byte* regs = lapic.Regs) return *(uint*)(regs + offset);
    }

    /// <summary>Applies all of it to <paramref name="vcpu"/>; the LAPIC only where the VM has an in-kernel irqchip.</summary>
    public static void Apply(KvmVcpu vcpu, bool hasLapic)
    {
        if (hasLapic)
        {
            var lapic = vcpu.GetLapic();
            SetLocalInterruptPins(ref lapic);
            vcpu.SetLapic(lapic);
        }

        Span<KvmMsrEntry> misc = [new KvmMsrEntry { Index = MsrMiscEnable }];
        ulong miscEnable = vcpu.GetMsrs(misc) == 1 ? misc[0].Data : 0;
        SetMsr(vcpu, MsrMiscEnable, miscEnable | MiscEnableFastStrings);
        SetMsr(vcpu, MsrMtrrDefType, MtrrDefTypeEnabled | MemoryTypeWriteBack);

        var fpu = vcpu.GetFpu();
        fpu.Fcw = FpuControlWord;
        fpu.Mxcsr = MxcsrDefault;
        vcpu.SetFpu(fpu);
    }

    private static void SetMsr(KvmVcpu vcpu, uint index, ulong value)
    {
        if (vcpu.SetMsrs([new KvmMsrEntry { Index = index, Data = value }]) != 1)
            throw new InvalidOperationException($"KVM refused MSR 0x{index:x} = 0x{value:x} on vCPU {vcpu.Id} (is the CPUID set first?)");
    }
}
