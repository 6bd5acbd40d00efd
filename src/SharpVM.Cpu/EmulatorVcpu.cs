using System.Diagnostics;
using System.Runtime.CompilerServices;
using SharpVM.Devices.Interrupts;
using SharpVM.Hypervisor;
using SharpVM.Memory;

namespace SharpVM.Cpu;

/// <summary>
/// One vCPU of SharpVM's own x86-64 CPU: an interpreter over Iced-decoded instructions, cached per
/// basic block and verified against guest memory on every entry (so self-modifying code and DMA into
/// code pages are always seen). All methods but <see cref="RequestExit"/> run on the vCPU thread.
/// </summary>
public sealed unsafe partial class EmulatorVcpu : IVcpu
{
    // Segment register numbers (Iced's order).
    internal const int ES = 0, CS = 1, SS = 2, DS = 3, FS = 4, GS = 5;

    private readonly EmulatorVirtualMachine _vm;
    private readonly GuestMemory _mem;

    internal readonly ulong[] Gpr = new ulong[16];
    internal ulong Rip;
    /// <summary>RFLAGS. The arithmetic flags of the last ADD/SUB/CMP/logic operation are computed lazily.</summary>
    internal ulong Rflags
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            if (_lazyOp != LazyNone) MaterializeFlags();
            return _flags;
        }
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        set
        {
            _flags = value;
            _lazyOp = LazyNone;
        }
    }

    private ulong _flags = 2;

    /// <summary>
    /// RFLAGS for its system and control bits (IF, DF, TF, IOPL, NT, VM, AC...), without materializing a pending lazy
    /// state: those bits are never lazy, only the arithmetic ones may be stale here. The interrupt check and string
    /// instructions read them constantly.
    /// </summary>
    internal ulong SystemFlags => _flags;
    internal readonly Seg[] Sregs = new Seg[6];
    internal Seg Ldtr, Tr;
    internal ulong GdtBase, IdtBase;
    internal ushort GdtLimit, IdtLimit = 0x3FF;
    internal ulong Cr0 = 0x60000010, Cr2, Cr3, Cr4, Cr8, Efer;
    internal readonly ulong[] Dr = new ulong[8];

    // MSRs.
    internal ulong ApicBase, Star, Lstar, Cstar, Sfmask, KernelGsBase, Pat = 0x0007040600070406UL, MiscEnable = 1,
        TscDeadline, SysenterCs, SysenterEsp, SysenterEip, TscAux, SpecCtrl;
    private long _tscOffset;

    // SSE / x87 state.
    internal readonly ulong[] Xmm = new ulong[32];
    internal uint Mxcsr = 0x1F80;
    internal ushort Fcw = 0x37F, Fsw;
    /// <summary>The abridged tag byte (FXSAVE's): bit k set when physical register k holds a value.</summary>
    internal byte Ftw;
    /// <summary>x87 physical registers R0-R7 (MMX registers MM0-MM7 alias their significands).</summary>
    internal readonly ulong[] FpuSignificand = new ulong[8];
    internal readonly ushort[] FpuSignExponent = new ushort[8];

    // Mode, cached from the above by UpdateMode().
    internal int Cpl;
    internal int Bitness = 16;
    internal bool LongMode;    // EFER.LMA
    internal bool Protected;   // CR0.PE
    internal int StackSize = 2;

    private readonly CpuFault _fault = new();
    private IVcpuIoHandler? _io;
    private IVcpuInterruptSource? _intSource;
    private volatile int _exitRequested;
    private volatile bool _irqHint;
    private readonly SemaphoreSlim _wake = new(0, int.MaxValue);
    private bool _interruptShadow;
    private bool _nmiBlocked;
    private bool _halted;
    // INIT/SIPI: an application processor waits for a startup IPI after INIT (and from creation).
    private bool _waitForSipi;
    private volatile int _initPending;
    private volatile int _sipiVector = -1;
    private List<CpuidEntry>? _cpuidOverride;

    /// <summary>Instructions retired so far (for benchmarks and statistics).</summary>
    public long InstructionsRetired { get => _instructionsRetired; private set => _instructionsRetired = value; }

    /// <summary>The field behind <see cref="InstructionsRetired"/>: translated code adjusts it with its own IL (see TranslatedFields).</summary>
    internal long _instructionsRetired;

    /// <summary>Exceptions raised by guest instructions (page faults included) and delivered so far.</summary>
    public long ExceptionsDelivered { get; private set; }

    /// <summary>External interrupts and NMIs delivered so far.</summary>
    public long InterruptsDelivered { get; private set; }

    public int Id { get; }

    internal EmulatorVcpu(EmulatorVirtualMachine vm, int id)
    {
        _vm = vm;
        _mem = vm.Memory;
        _codePages = _mem.EnableCodePageTracking();
        Id = id;
        ApicBase = 0xFEE00000UL | 0x800 | (id == 0 ? 0x100UL : 0);
        InitTlb();
        Reset();
        UpdateRunTranslated();
        _waitForSipi = id != 0;
    }

    /// <summary>
    /// From any thread (the local APIC, for an INIT IPI): the vCPU goes to its INIT state (real mode,
    /// registers reset, TLB flushed) and then waits for <see cref="Startup"/>. Memory-type and MSR state
    /// that INIT keeps (EFER cleared, APIC base kept) follow the SDM.
    /// </summary>
    public void Init()
    {
        _initPending = 1;
        Wake();
    }

    /// <summary>From any thread (a startup IPI): a vCPU waiting after INIT starts in real mode at vector * 0x1000.</summary>
    public void Startup(byte vector)
    {
        _sipiVector = vector;
        Wake();
    }

    /// <summary>True while the vCPU waits for a startup IPI (application processors until started).</summary>
    public bool WaitingForStartup => _waitForSipi;

    /// <summary>Handles pending INIT/SIPI; returns true if the vCPU may run guest code.</summary>
    private bool HandleInitSipi()
    {
        if (_initPending != 0)
        {
            _initPending = 0;
            Array.Clear(Gpr);
            Cr0 = 0x60000010; Cr2 = 0; Cr3 = 0; Cr4 = 0; Efer = 0;
            GdtBase = 0; GdtLimit = 0xFFFF; IdtBase = 0; IdtLimit = 0x3FF;
            _halted = false;
            _nmiBlocked = false;
            Reset();
            FlushTlb(true);
            _waitForSipi = true;
        }
        if (_waitForSipi)
        {
            int v = _sipiVector;
            if (v < 0) return false;
            _sipiVector = -1;
            _waitForSipi = false;
            Sregs[CS] = new Seg { Base = (ulong)v << 12, Limit = 0xFFFF, Sel = (ushort)(v << 8), Attr = 0x9B };
            Rip = 0;
            UpdateMode();
        }
        return true;
    }

    /// <summary>Power-on state: real mode at F000:FFF0.</summary>
    private void Reset()
    {
        for (int i = 0; i < 6; i++) Sregs[i] = new Seg { Base = 0, Limit = 0xFFFF, Sel = 0, Attr = 0x93 };
        Sregs[CS] = new Seg { Base = 0xFFFF0000, Limit = 0xFFFF, Sel = 0xF000, Attr = 0x9B };
        Ldtr = new Seg { Limit = 0xFFFF, Attr = 0x82 };
        Tr = new Seg { Limit = 0xFFFF, Attr = 0x8B };
        Rip = 0xFFF0;
        Rflags = 2;
        Gpr[2] = 0x600; // EDX: family/model stepping at reset
        UpdateMode();
    }

    /// <summary>Lets the VMM's local APIC feed this vCPU interrupts; HLT then waits for them instead of exiting.</summary>
    public void AttachInterruptSource(IVcpuInterruptSource source)
    {
        _intSource = source;
        source.WakeUp = Wake;
    }

    private void Wake()
    {
        _irqHint = true;
        if (_wake.CurrentCount == 0) _wake.Release();
    }

    public void RequestExit()
    {
        _exitRequested = 1;
        if (_wake.CurrentCount == 0) _wake.Release();
    }

    public void AttachToCurrentThread()
    {
        _apic?.BindCurrentThread();
        StartProfilerIfRequested();
    }

    public Registers GetRegisters()
    {
        var g = Gpr;
        return new Registers
        {
            Rax = g[0], Rcx = g[1], Rdx = g[2], Rbx = g[3], Rsp = g[4], Rbp = g[5], Rsi = g[6], Rdi = g[7],
            R8 = g[8], R9 = g[9], R10 = g[10], R11 = g[11], R12 = g[12], R13 = g[13], R14 = g[14], R15 = g[15],
            Rip = Rip, Rflags = Rflags,
        };
    }

    public void SetRegisters(in Registers r)
    {
        var g = Gpr;
        g[0] = r.Rax; g[1] = r.Rcx; g[2] = r.Rdx; g[3] = r.Rbx; g[4] = r.Rsp; g[5] = r.Rbp; g[6] = r.Rsi; g[7] = r.Rdi;
        g[8] = r.R8; g[9] = r.R9; g[10] = r.R10; g[11] = r.R11; g[12] = r.R12; g[13] = r.R13; g[14] = r.R14; g[15] = r.R15;
        Rip = r.Rip;
        Rflags = (r.Rflags & 0x3F7FD7) | 2;
        _waitForSipi = false; // the VMM set this vCPU up itself
        _irqHint = true;
    }

    private static Segment ToPublic(in Seg s) => new()
    {
        Base = s.Base, Limit = s.Limit, Selector = s.Sel, Type = (byte)(s.Attr & 0xF), S = (s.Attr & 0x10) != 0,
        Dpl = (byte)((s.Attr >> 5) & 3), Present = (s.Attr & 0x80) != 0, Avl = (s.Attr & 0x1000) != 0,
        L = (s.Attr & 0x2000) != 0, Db = (s.Attr & 0x4000) != 0, G = (s.Attr & 0x8000) != 0, Unusable = (s.Attr & 0x10000) != 0,
    };

    private static Seg FromPublic(in Segment s) => new()
    {
        Base = s.Base, Limit = s.Limit, Sel = s.Selector,
        Attr = (uint)(s.Type & 0xF) | (s.S ? 0x10u : 0) | ((uint)(s.Dpl & 3) << 5) | (s.Present ? 0x80u : 0) |
               (s.Avl ? 0x1000u : 0) | (s.L ? 0x2000u : 0) | (s.Db ? 0x4000u : 0) | (s.G ? 0x8000u : 0) | (s.Unusable ? 0x10000u : 0),
    };

    public SpecialRegisters GetSpecialRegisters() => new()
    {
        Cs = ToPublic(Sregs[CS]), Ds = ToPublic(Sregs[DS]), Es = ToPublic(Sregs[ES]), Fs = ToPublic(Sregs[FS]),
        Gs = ToPublic(Sregs[GS]), Ss = ToPublic(Sregs[SS]), Tr = ToPublic(Tr), Ldt = ToPublic(Ldtr),
        Gdt = new DescriptorTable { Base = GdtBase, Limit = GdtLimit },
        Idt = new DescriptorTable { Base = IdtBase, Limit = IdtLimit },
        Cr0 = Cr0, Cr2 = Cr2, Cr3 = Cr3, Cr4 = Cr4, Cr8 = Cr8, Efer = Efer, ApicBase = ApicBase,
    };

    public void SetSpecialRegisters(in SpecialRegisters s)
    {
        Sregs[CS] = FromPublic(s.Cs); Sregs[DS] = FromPublic(s.Ds); Sregs[ES] = FromPublic(s.Es);
        Sregs[FS] = FromPublic(s.Fs); Sregs[GS] = FromPublic(s.Gs); Sregs[SS] = FromPublic(s.Ss);
        Tr = FromPublic(s.Tr); Ldtr = FromPublic(s.Ldt);
        GdtBase = s.Gdt.Base; GdtLimit = s.Gdt.Limit; IdtBase = s.Idt.Base; IdtLimit = s.Idt.Limit;
        Cr0 = s.Cr0 | 0x10; Cr2 = s.Cr2; Cr3 = s.Cr3; Cr4 = s.Cr4; Cr8 = s.Cr8;
        Efer = s.Efer;
        // KVM semantics: LMA follows LME when paging is on.
        if ((Efer & EferLme) != 0 && (Cr0 & Cr0Pg) != 0) Efer |= EferLma; else Efer &= ~EferLma;
        if (s.ApicBase != 0) ApicBase = s.ApicBase;
        FlushTlb(true);
        UpdateMode();
    }

    public ulong? GetMsr(uint index) => TryReadMsr(index, out ulong v) ? v : null;

    public void SetMsr(uint index, ulong value)
    {
        if (!TryWriteMsr(index, value)) throw new ArgumentException($"MSR 0x{index:x} is not implemented by the emulated CPU", nameof(index));
    }

    public void SetCpuid(IReadOnlyList<CpuidEntry> entries) => _cpuidOverride = [.. entries];

    public ulong? Translate(ulong linearAddress)
    {
        if (!TryWalk(linearAddress, write: false, user: false, fetch: false, setBits: false, out ulong phys, out _, out _)) return null;
        return phys;
    }

    // The semaphore is not disposed: other threads (interrupt sources, RequestExit) may still signal it,
    // and a SemaphoreSlim without a wait handle holds no OS resources.
    public void Dispose() => _intSource = null;

    internal const ulong Cr0Pe = 1, Cr0Mp = 2, Cr0Em = 4, Cr0Ts = 8, Cr0Wp = 1UL << 16, Cr0Pg = 1UL << 31;
    internal const ulong Cr4Pse = 0x10, Cr4Pae = 0x20, Cr4Pge = 0x80, Cr4Osfxsr = 0x200;
    internal const ulong EferSce = 1, EferLme = 0x100, EferLma = 0x400, EferNxe = 0x800;

    /// <summary>Recomputes cached mode facts after CR0/EFER/CS/SS changes.</summary>
    internal void UpdateMode()
    {
        Protected = (Cr0 & Cr0Pe) != 0;
        LongMode = (Efer & EferLma) != 0;
        ref var cs = ref Sregs[CS];
        if (LongMode && cs.Long) Bitness = 64;
        else Bitness = Protected && cs.Big ? 32 : 16;
        if ((SystemFlags & Flags.VM) != 0) Bitness = 16;
        Cpl = !Protected ? 0 : (SystemFlags & Flags.VM) != 0 ? 3 : cs.Sel & 3;
        StackSize = Bitness == 64 ? 8 : Sregs[SS].Big ? 4 : 2;
        UpdateTlbPermissions();
    }

    /// <summary>Guest TSC: host monotonic time at <see cref="EmulatorCpuid.TscHz"/>, plus the guest's offset.</summary>
    internal ulong ReadTsc()
    {
        long t = Stopwatch.GetTimestamp();
        ulong ns = Stopwatch.Frequency == 1_000_000_000 ? (ulong)t : (ulong)(t * (1_000_000_000.0 / Stopwatch.Frequency));
        return ns + (ulong)_tscOffset;
    }

    internal void WriteTsc(ulong value) => _tscOffset = (long)(value - ReadTsc() + (ulong)_tscOffset);

    [MethodImpl(MethodImplOptions.NoInlining)]
    internal CpuFault Fault(int vector, uint error = 0, bool hasError = false)
    {
        _fault.Vector = vector;
        _fault.ErrorCode = error;
        _fault.HasErrorCode = hasError;
        return _fault;
    }

    internal CpuFault GP(uint err = 0) => Fault(13, err, true);
    internal CpuFault UD() => Fault(6);
}
