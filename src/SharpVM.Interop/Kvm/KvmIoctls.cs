namespace SharpVM.Interop.Kvm;

/// <summary>
/// KVM ioctl request numbers, computed the way &lt;linux/kvm.h&gt; does with _IO/_IOR/_IOW/_IOWR.
/// A test compares every one with the C header.
/// </summary>
public static class KvmIoctls
{
    private const uint Kvmio = 0xAE;
    private static nuint Io(uint nr) => (Kvmio << 8) | nr;
    private static nuint Ior(uint nr, uint size) => (2u << 30) | (size << 16) | (Kvmio << 8) | nr;
    private static nuint Iow(uint nr, uint size) => (1u << 30) | (size << 16) | (Kvmio << 8) | nr;
    private static nuint Iowr(uint nr, uint size) => (3u << 30) | (size << 16) | (Kvmio << 8) | nr;

    // System ioctls (on /dev/kvm).
    public static readonly nuint GetApiVersion = Io(0x00);
    public static readonly nuint CreateVm = Io(0x01);
    public static readonly nuint CheckExtension = Io(0x03);
    public static readonly nuint GetVcpuMmapSize = Io(0x04);
    public static readonly nuint GetSupportedCpuid = Iowr(0x05, 8);
    public static readonly nuint GetMsrIndexList = Iowr(0x02, 4);

    // VM ioctls.
    public static readonly nuint CreateVcpu = Io(0x41);
    public static readonly nuint GetDirtyLog = Iow(0x42, 16);
    public static readonly nuint SetUserMemoryRegion = Iow(0x46, 32);
    public static readonly nuint SetTssAddr = Io(0x47);
    public static readonly nuint SetIdentityMapAddr = Iow(0x48, 8);
    public static readonly nuint CreateIrqchip = Io(0x60);
    public static readonly nuint IrqLine = Iow(0x61, 8);
    public static readonly nuint SetGsiRouting = Iow(0x6a, 8);
    public static readonly nuint Irqfd = Iow(0x76, 32);
    public static readonly nuint CreatePit2 = Iow(0x77, 64);
    public static readonly nuint Ioeventfd = Iow(0x79, 64);
    public static readonly nuint SetTscKhz = Io(0xa2);
    public static readonly nuint GetTscKhz = Io(0xa3);

    // vCPU ioctls.
    public static readonly nuint Run = Io(0x80);
    public static readonly nuint GetRegs = Ior(0x81, 144);
    public static readonly nuint SetRegs = Iow(0x82, 144);
    public static readonly nuint GetSregs = Ior(0x83, 312);
    public static readonly nuint SetSregs = Iow(0x84, 312);
    public static readonly nuint Translate = Iowr(0x85, 24);
    public static readonly nuint GetMsrs = Iowr(0x88, 8);
    public static readonly nuint SetMsrs = Iow(0x89, 8);
    public static readonly nuint SetSignalMask = Iow(0x8b, 4);
    public static readonly nuint GetFpu = Ior(0x8c, 416);
    public static readonly nuint SetFpu = Iow(0x8d, 416);
    public static readonly nuint GetLapic = Ior(0x8e, 1024);
    public static readonly nuint SetLapic = Iow(0x8f, 1024);
    public static readonly nuint SetCpuid2 = Iow(0x90, 8);
    public static readonly nuint GetCpuid2 = Iowr(0x91, 8);
    public static readonly nuint GetMpState = Ior(0x98, 4);
    public static readonly nuint SetMpState = Iow(0x99, 4);
    public static readonly nuint GetVcpuEvents = Ior(0x9f, 64);
    public static readonly nuint SetVcpuEvents = Iow(0xa0, 64);
    public static readonly nuint GetXcrs = Ior(0xa6, 392);
    public static readonly nuint SetXcrs = Iow(0xa7, 392);
}

/// <summary>KVM_CAP_* numbers SharpVM asks about.</summary>
public enum KvmCapability
{
    Irqchip = 0, Hlt = 1, UserMemory = 3, SetTssAddr = 4, ExtCpuid = 7, ClockSource = 8, NrVcpus = 9,
    NrMemslots = 10, Pit = 11, Nop_IoDelay = 12, SyncMmu = 16, IoMmu = 18, DestroyMemoryRegionWorks = 21,
    UserNmi = 22, SetGuestDebug = 23, ReinjectControl = 24, IrqRouting = 25, MceCap = 31, Irqfd = 32,
    Pit2 = 33, SetBootCpuId = 34, PitState2 = 35, Ioeventfd = 36, SetIdentityMapAddr = 37, AdjustClock = 39,
    VcpuEvents = 41, Xsave = 55, Xcrs = 56, TscControl = 60, GetTscKhz = 61, MaxVcpus = 66, TscDeadlineTimer = 72, ImmediateExit = 136,
    X86TripleFaultEvent = 218,
}

/// <summary>KVM_EXIT_* codes in kvm_run.exit_reason.</summary>
public enum KvmExitReason : uint
{
    Unknown = 0, Exception = 1, Io = 2, Hypercall = 3, Debug = 4, Hlt = 5, Mmio = 6, IrqWindowOpen = 7,
    Shutdown = 8, FailEntry = 9, Intr = 10, SetTpr = 11, TprAccess = 12, S390Sieic = 13, S390Reset = 14,
    Dcr = 15, Nmi = 16, InternalError = 17, Osi = 18, PaprHcall = 19, S390Ucontrol = 20, Watchdog = 21,
    S390Tsch = 22, Epr = 23, SystemEvent = 24, S390Stsi = 25, IoapicEoi = 26, HyperV = 27, ArmNisv = 28,
    X86Rdmsr = 29, X86Wrmsr = 30, DirtyRingFull = 31, ApResetHold = 32, X86BusLock = 33, Xen = 34,
    RiscvSbi = 35, RiscvCsr = 36, Notify = 37, LoongarchIocsr = 38, MemoryFault = 39,
}
