using System.Runtime.InteropServices;

namespace SharpVM.Interop.Kvm;

// Blittable mirrors of the structs in <linux/kvm.h> (x86). Field names are the C names in PascalCase;
// SharpVM.Interop.Tests compiles a C program against the real header and checks every size and offset.
#pragma warning disable CS0649, CA1815 // fields are written by the kernel; value equality is not needed

[StructLayout(LayoutKind.Sequential)]
public struct KvmUserspaceMemoryRegion
{
    public uint Slot;
    public uint Flags;
    public ulong GuestPhysAddr;
    public ulong MemorySize;
    public ulong UserspaceAddr;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmRegs
{
    public ulong Rax, Rbx, Rcx, Rdx, Rsi, Rdi, Rsp, Rbp;
    public ulong R8, R9, R10, R11, R12, R13, R14, R15;
    public ulong Rip, Rflags;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmSegment
{
    public ulong Base;
    public uint Limit;
    public ushort Selector;
    public byte Type, Present, Dpl, Db, S, L, G, Avl, Unusable, Padding;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmDtable
{
    public ulong Base;
    public ushort Limit;
    public ushort Padding0, Padding1, Padding2;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct KvmSregs
{
    public KvmSegment Cs, Ds, Es, Fs, Gs, Ss, Tr, Ldt;
    public KvmDtable Gdt, Idt;
    public ulong Cr0, Cr2, Cr3, Cr4, Cr8, Efer, ApicBase;
    public fixed ulong InterruptBitmap[4];
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct KvmFpu
{
    public fixed byte Fpr[128];
    public ushort Fcw;
    public ushort Fsw;
    public byte Ftwx;
    public byte Pad1;
    public ushort LastOpcode;
    public ulong LastIp;
    public ulong LastDp;
    public fixed byte Xmm[256];
    public uint Mxcsr;
    public uint Pad2;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmMsrEntry
{
    public uint Index;
    public uint Reserved;
    public ulong Data;
}

/// <summary>Header of kvm_msrs; the entries follow it in memory.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct KvmMsrs
{
    public uint Nmsrs;
    public uint Pad;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct KvmCpuidEntry2
{
    public uint Function;
    public uint Index;
    public uint Flags;
    public uint Eax, Ebx, Ecx, Edx;
    public fixed uint Padding[3];
}

/// <summary>Header of kvm_cpuid2; the entries follow it in memory.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct KvmCpuid2
{
    public uint Nent;
    public uint Padding;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct KvmLapicState
{
    public fixed byte Regs[1024];
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct KvmVcpuEvents
{
    // exception
    public byte ExceptionInjected, ExceptionNr, ExceptionHasErrorCode, ExceptionPending;
    public uint ExceptionErrorCode;
    // interrupt
    public byte InterruptInjected, InterruptNr, InterruptSoft, InterruptShadow;
    // nmi
    public byte NmiInjected, NmiPending, NmiMasked, NmiPad;
    public uint SipiVector;
    public uint Flags;
    // smi
    public byte SmiSmm, SmiPending, SmiSmmInsideNmi, SmiLatchedInit;
    public byte TripleFaultPending;
    public fixed byte Reserved[26];
    public byte ExceptionHasPayload;
    public ulong ExceptionPayload;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmMpState
{
    public uint MpState;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmXcr
{
    public uint Xcr;
    public uint Reserved;
    public ulong Value;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct KvmXcrs
{
    public uint NrXcrs;
    public uint Flags;
    public KvmXcr Xcrs0, Xcrs1, Xcrs2, Xcrs3, Xcrs4, Xcrs5, Xcrs6, Xcrs7,
        Xcrs8, Xcrs9, Xcrs10, Xcrs11, Xcrs12, Xcrs13, Xcrs14, Xcrs15;
    public fixed ulong Padding[16];
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct KvmTranslation
{
    public ulong LinearAddress;
    public ulong PhysicalAddress;
    public byte Valid, Writeable, Usermode;
    public fixed byte Pad[5];
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmIrqLevel
{
    public uint Irq;
    public uint Level;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct KvmIrqfd
{
    public uint Fd;
    public uint Gsi;
    public uint Flags;
    public uint Resamplefd;
    public fixed byte Pad[16];
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct KvmIoeventfd
{
    public ulong Datamatch;
    public ulong Addr;
    public uint Len;
    public int Fd;
    public uint Flags;
    public fixed byte Pad[36];
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct KvmPitConfig
{
    /// <summary>KVM_PIT_SPEAKER_DUMMY: the kernel also emulates port 0x61.</summary>
    public const uint SpeakerDummy = 1;
    public uint Flags;
    public fixed uint Pad[15];
}

/// <summary>Header of kvm_irq_routing; the entries follow it in memory.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct KvmIrqRouting
{
    public uint Nr;
    public uint Flags;
}

/// <summary>One GSI route: to an irqchip pin or an MSI message (the union is flattened).</summary>
[StructLayout(LayoutKind.Explicit, Size = 48)]
public struct KvmIrqRoutingEntry
{
    public const uint TypeIrqchip = 1, TypeMsi = 2;
    /// <summary>The irqchip numbers of a KVM_IRQ_ROUTING_IRQCHIP route.</summary>
    public const uint IrqchipPicMaster = 0, IrqchipPicSlave = 1, IrqchipIoapic = 2;
    [FieldOffset(0)] public uint Gsi;
    [FieldOffset(4)] public uint Type;
    [FieldOffset(8)] public uint Flags;
    [FieldOffset(12)] public uint Pad;
    [FieldOffset(16)] public uint IrqchipOrAddressLo;
    [FieldOffset(20)] public uint PinOrAddressHi;
    [FieldOffset(24)] public uint MsiData;
    [FieldOffset(28)] public uint MsiDevid;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmDirtyLog
{
    public uint Slot;
    public uint Padding1;
    public ulong DirtyBitmap;
}

/// <summary>Header of kvm_signal_mask; the sigset bytes follow it.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct KvmSignalMask
{
    public uint Len;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmRunIo
{
    public const byte DirectionIn = 0, DirectionOut = 1;
    public byte Direction;
    public byte Size;
    public ushort Port;
    public uint Count;
    public ulong DataOffset;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct KvmRunMmio
{
    public ulong PhysAddr;
    public fixed byte Data[8];
    public uint Len;
    public byte IsWrite;
}

[StructLayout(LayoutKind.Sequential)]
public struct KvmRunFailEntry
{
    public ulong HardwareEntryFailureReason;
    public uint Cpu;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct KvmRunInternal
{
    public uint Suberror;
    public uint Ndata;
    public fixed ulong Data[16];
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct KvmRunSystemEvent
{
    public const uint Shutdown = 1, Reset = 2, Crash = 3;
    public uint Type;
    public uint Ndata;
    public fixed ulong Data[16];
}

/// <summary>The shared kvm_run page: the head fields, the exit-reason union at offset 32, and the sync-regs area after it.</summary>
[StructLayout(LayoutKind.Explicit, Size = 2352)]
public struct KvmRun
{
    [FieldOffset(0)] public byte RequestInterruptWindow;
    [FieldOffset(1)] public byte ImmediateExit;
    [FieldOffset(8)] public uint ExitReason;
    [FieldOffset(12)] public byte ReadyForInterruptInjection;
    [FieldOffset(13)] public byte IfFlag;
    [FieldOffset(14)] public ushort Flags;
    [FieldOffset(16)] public ulong Cr8;
    [FieldOffset(24)] public ulong ApicBase;
    [FieldOffset(32)] public KvmRunIo Io;
    [FieldOffset(32)] public KvmRunMmio Mmio;
    [FieldOffset(32)] public KvmRunFailEntry FailEntry;
    [FieldOffset(32)] public KvmRunInternal Internal;
    [FieldOffset(32)] public KvmRunSystemEvent SystemEvent;
}
