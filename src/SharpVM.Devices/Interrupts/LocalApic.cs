using System.Buffers.Binary;
using System.Numerics;
using SharpVM.Devices.Bus;
using SharpVM.Devices.Timers;

namespace SharpVM.Devices.Interrupts;

/// <summary>
/// One vCPU's local APIC (Intel SDM vol. 3A ch. 10 "APIC"; ch. 11 in newer editions) for the emulated-CPU
/// backend: xAPIC registers (MMIO page at 0xFEE00000) and x2APIC MSRs, IRR/ISR/TMR, TPR/PPR, EOI with
/// IOAPIC EOI broadcast (or directed EOI), LVT, error status, IPIs (fixed, lowest priority, NMI, INIT,
/// SIPI, shorthands, physical/logical destinations) and the timer (one-shot, periodic, TSC-deadline).
/// </summary>
/// <remarks>
/// <para><b>Wiring for a CPU.</b> The vCPU thread calls <see cref="BindCurrentThread"/> once, so that
/// <see cref="LocalApicMmioDevice"/> (registered once on the MMIO bus) serves that thread's own APIC page.
/// Between instructions it checks <see cref="TakePendingInit"/> / <see cref="TryTakeStartupIpi"/>,
/// <see cref="TakePendingNmi"/>, then, when RFLAGS.IF=1 and not in an interrupt shadow,
/// <see cref="HasPendingInterrupt"/> and <see cref="AcknowledgeInterrupt"/>. RDMSR/WRMSR of 0x1B, 0x6E0
/// and 0x800-0x8FF go to <see cref="TryReadMsr"/>/<see cref="TryWriteMsr"/> (false means #GP).
/// A halted CPU sleeps until <see cref="WakeUp"/> is called.</para>
/// <para><b>Timer.</b> The timer counts at <see cref="BusFrequencyHz"/> divided by the divide
/// configuration. TSC-deadline mode compares against the CPU's TSC, supplied with
/// <see cref="SetTscSource"/> (a thread-safe, lock-free function: it is called from the timer thread).</para>
/// <para><b>Threads and locks.</b> All state is under one lock per APIC. The APIC never calls another
/// device while holding it (IPIs and EOI broadcasts are sent after releasing it); the IOAPIC may call
/// <see cref="Accept"/> while holding its own lock (lock order: IOAPIC, then local APIC).</para>
/// <para><b>Guest errors</b> (illegal vectors, reserved registers, bad widths) never throw: they set the
/// error status register as hardware does, or are ignored.</para>
/// </remarks>
public sealed class LocalApic : IVcpuInterruptSource
{
    /// <summary>The APIC timer's input clock (the "bus" or core crystal clock): 1 GHz, one tick per nanosecond
    /// before the divider. Advertise it in CPUID leaf 0x15/0x16 or the hypervisor timing leaf.</summary>
    public const long BusFrequencyHz = 1_000_000_000;

    /// <summary>The architectural default APIC base (physical address of the xAPIC page).</summary>
    public const ulong DefaultBaseAddress = 0xFEE0_0000;

    /// <summary>Size of the xAPIC MMIO page.</summary>
    public const ulong MmioSize = 0x1000;

    public const uint MsrApicBase = 0x1B;
    public const uint MsrTscDeadline = 0x6E0;
    public const uint MsrX2ApicFirst = 0x800;
    public const uint MsrX2ApicLast = 0x8FF;

    /// <summary>Version register: integrated APIC version 0x14, 6 LVT entries (max LVT index 5), and
    /// bit 24 = EOI-broadcast suppression supported (directed EOI through the IOAPIC's EOI register).</summary>
    public const uint VersionRegister = 0x0105_0014;

    /// <summary>Periodic timers fire no faster than this (the count register stays architectural): a
    /// guest programming a 1 ns period must not monopolise the timer thread.</summary>
    public const long MinimumPeriodNanoseconds = 50_000;

    // IA32_APIC_BASE bits.
    private const ulong BaseBsp = 1UL << 8, BaseExtd = 1UL << 10, BaseEnable = 1UL << 11;
    private const ulong BaseAddressMask = 0x000F_FFFF_FFFF_F000UL;

    // ESR bits (SDM "Error Status Register").
    public const uint EsrSendIllegalVector = 1u << 5;
    public const uint EsrReceiveIllegalVector = 1u << 6;
    public const uint EsrIllegalRegisterAddress = 1u << 7;

    // LVT indices into _lvt and the masks of their writable bits.
    private const int LvtTimer = 0, LvtThermal = 1, LvtPerf = 2, LvtLint0 = 3, LvtLint1 = 4, LvtError = 5;
    private static readonly uint[] LvtWritable =
    [
        0x0007_00FF, // timer: vector, mask, mode 18:17
        0x0001_07FF, // thermal: vector, delivery mode, mask
        0x0001_07FF, // perf
        0x0001_A7FF, // LINT0: vector, delivery mode, polarity, trigger, mask
        0x0001_A7FF, // LINT1
        0x0001_00FF, // error: vector, mask
    ];
    private const uint LvtMasked = 1u << 16;
    private const uint SvrEnable = 1u << 8, SvrSuppressEoiBroadcast = 1u << 12;

    [ThreadStatic] private static LocalApic? t_current;

    private readonly object _lock = new();
    private readonly ApicBus _bus;
    private readonly DeviceClock _clock;
    private readonly DeviceTimer _timer;

    // Registers (all guarded by _lock).
    private uint _id;
    private ulong _apicBase;
    private readonly uint[] _irr = new uint[8], _isr = new uint[8], _tmr = new uint[8];
    private uint _tpr, _ldr, _dfr, _svr, _esr, _esrPending, _icrLow, _icrHigh;
    private readonly uint[] _lvt = new uint[6];
    private readonly bool[] _lintLevel = new bool[2];

    // Timer state: counting started at _timerStart (ns) from _timerInitial; _timerFired periods elapsed.
    private uint _timerInitial, _timerDivide;
    private long _timerStart;
    private long _timerFired;
    private bool _timerRunning;
    private ulong _tscDeadline;
    private Func<ulong>? _readTsc;
    private long _tscFrequencyHz = BusFrequencyHz;

    // Pending non-vectored events.
    private bool _nmiPending, _initPending, _sipiPending, _waitingForSipi;
    private volatile bool _ioApicExtInt; // read lock-free by the per-instruction poll
    private byte _sipiVector;

    // Lock-free hints for the per-instruction poll.
    private volatile bool _anyIrr;
    private volatile bool _extIntEnabled;
    private volatile bool _anyEvent;

    private IExtIntSource? _extIntSource;
    private long _timerExpirations, _accepted, _ipisSent;

    /// <summary>Creates the local APIC of vCPU <paramref name="index"/> with APIC ID <paramref name="apicId"/>
    /// and attaches it to <paramref name="bus"/>. Application processors start waiting for a SIPI.</summary>
    public LocalApic(ApicBus bus, DeviceClock clock, int index, uint apicId, bool isBootstrapProcessor)
    {
        ArgumentNullException.ThrowIfNull(bus);
        ArgumentNullException.ThrowIfNull(clock);
        _bus = bus;
        _clock = clock;
        Index = index;
        IsBootstrapProcessor = isBootstrapProcessor;
        _id = apicId;
        _apicBase = DefaultBaseAddress | BaseEnable | (isBootstrapProcessor ? BaseBsp : 0);
        _timer = clock.CreateTimer(OnTimer);
        lock (_lock)
        {
            ResetLocked();
            _waitingForSipi = !isBootstrapProcessor;
        }
        bus.Attach(this);
    }

    /// <summary>The vCPU index this APIC belongs to.</summary>
    public int Index { get; }

    public bool IsBootstrapProcessor { get; }

    /// <summary>Whether the guest may switch to x2APIC mode (advertise CPUID.1:ECX[21] to match).</summary>
    public bool X2ApicSupported { get; init; } = true;

    /// <summary>The APIC ID (8 bits in xAPIC mode, 32 in x2APIC mode).</summary>
    public uint ApicId
    {
        get { lock (_lock) return _id; }
    }

    /// <inheritdoc/>
    public Action? WakeUp { get; set; }

    /// <summary>Timer expirations so far (one-shot, periodic periods elapsed, TSC deadlines reached).</summary>
    public long TimerExpirations => Interlocked.Read(ref _timerExpirations);

    /// <summary>Fixed interrupts accepted into the IRR.</summary>
    public long InterruptsAccepted => Interlocked.Read(ref _accepted);

    /// <summary>IPIs sent through the ICR.</summary>
    public long IpisSent => Interlocked.Read(ref _ipisSent);

    /// <summary>The APIC the calling thread is bound to (see <see cref="BindCurrentThread"/>), or null.</summary>
    public static LocalApic? Current => t_current;

    /// <summary>
    /// Binds the calling thread to this APIC: the shared <see cref="LocalApicMmioDevice"/> serves this
    /// APIC's registers to MMIO accesses made on this thread. A vCPU thread calls it once when it starts.
    /// </summary>
    public void BindCurrentThread() => t_current = this;

    /// <summary>Unbinds the calling thread from any APIC.</summary>
    public static void UnbindCurrentThread() => t_current = null;

    internal ApicBus Bus => _bus;

    /// <summary>Connects the 8259 INTR output (LINT0 in ExtINT / virtual-wire mode). The platform does it for the BSP.</summary>
    public void ConnectExtIntSource(IExtIntSource? source)
    {
        if (_extIntSource is not null) _extIntSource.InterruptRequestRaised -= OnExtIntRaised;
        _extIntSource = source;
        if (source is not null) source.InterruptRequestRaised += OnExtIntRaised;
    }

    private void OnExtIntRaised()
    {
        if (_extIntEnabled || _ioApicExtInt) WakeUp?.Invoke();
    }

    /// <summary>
    /// Supplies the CPU's time-stamp counter for TSC-deadline mode. Defaults to the device clock counted at
    /// <see cref="BusFrequencyHz"/>. <paramref name="readTsc"/> must be thread-safe and must not block.
    /// </summary>
    public void SetTscSource(Func<ulong> readTsc, long frequencyHz)
    {
        ArgumentNullException.ThrowIfNull(readTsc);
        ArgumentOutOfRangeException.ThrowIfLessThan(frequencyHz, 1);
        lock (_lock)
        {
            _readTsc = readTsc;
            _tscFrequencyHz = frequencyHz;
            if (_tscDeadline != 0) ArmTimerLocked();
        }
    }

    /// <summary>Re-evaluates an armed TSC deadline after the CPU changed its TSC (WRMSR 0x10 / TSC_ADJUST).</summary>
    public void OnTscChanged()
    {
        bool wake;
        lock (_lock)
        {
            long before = _accepted;
            if (_tscDeadline != 0) ArmTimerLocked();
            wake = _accepted != before;
        }
        if (wake) WakeUp?.Invoke();
    }

    private ulong ReadTscLocked()
    {
        var f = _readTsc;
        if (f is not null) return f();
        return (ulong)_clock.NowNanoseconds; // BusFrequencyHz == 1 GHz: one tick per nanosecond
    }

    // ---------------------------------------------------------------- IVcpuInterruptSource

    /// <inheritdoc/>
    public bool HasPendingInterrupt
    {
        get
        {
            if (ExtIntRequested()) return true;
            if (!_anyIrr) return false;
            lock (_lock) return HighestDeliverableLocked() >= 0;
        }
    }

    private bool ExtIntRequested()
    {
        var src = _extIntSource;
        return src is not null && (_extIntEnabled || _ioApicExtInt) && src.InterruptRequested;
    }

    /// <inheritdoc/>
    /// <remarks>ExtINT (the PIC) is served first; otherwise the highest IRR vector above the processor
    /// priority moves to the ISR. With nothing deliverable (TPR raised in between) the spurious vector
    /// is returned and no ISR bit is set, as on hardware.</remarks>
    public int AcknowledgeInterrupt()
    {
        var src = _extIntSource;
        if (src is not null && (_extIntEnabled || _ioApicExtInt) && src.InterruptRequested)
        {
            _ioApicExtInt = false;
            return src.AcknowledgeInterrupt();
        }
        lock (_lock)
        {
            int v = HighestDeliverableLocked();
            if (v < 0) return (int)(_svr & 0xFF);
            ClearBit(_irr, v);
            SetBit(_isr, v);
            _anyIrr = AnyBit(_irr);
            return v;
        }
    }

    /// <inheritdoc/>
    public bool TakePendingNmi()
    {
        if (!_anyEvent) return false;
        lock (_lock)
        {
            bool nmi = _nmiPending;
            _nmiPending = false;
            UpdateEventHintLocked();
            return nmi;
        }
    }

    /// <summary>
    /// True once after an INIT was accepted. The APIC has already reset its own registers (ID and base
    /// MSR kept); the CPU resets itself and, unless <see cref="IsBootstrapProcessor"/>, waits for a SIPI
    /// (poll <see cref="TryTakeStartupIpi"/>). The BSP restarts at the reset vector.
    /// </summary>
    public bool TakePendingInit()
    {
        if (!_anyEvent) return false;
        lock (_lock)
        {
            bool init = _initPending;
            _initPending = false;
            UpdateEventHintLocked();
            return init;
        }
    }

    /// <summary>
    /// A start-up IPI received while waiting for one (after INIT, or from power-on for an AP): the CPU
    /// starts in real mode at CS = vector &lt;&lt; 8, IP = 0. Further SIPIs are ignored until the next INIT.
    /// </summary>
    public bool TryTakeStartupIpi(out byte vector)
    {
        vector = 0;
        if (!_anyEvent) return false;
        lock (_lock)
        {
            if (!_sipiPending) return false;
            vector = _sipiVector;
            _sipiPending = false;
            _waitingForSipi = false;
            UpdateEventHintLocked();
            return true;
        }
    }

    /// <summary>
    /// Whether anything should end a HLT: a deliverable interrupt, an NMI, INIT or a SIPI. (A CPU halted
    /// with RFLAGS.IF=0 wakes only for the non-maskable events; it checks those itself.) Lock-free when idle.
    /// </summary>
    public bool HasPendingWakeEvent => _anyEvent || HasPendingInterrupt;

    /// <summary>True while this CPU waits for a start-up IPI (APs from power-on, any AP after INIT).</summary>
    public bool IsWaitingForStartup
    {
        get { lock (_lock) return _waitingForSipi; }
    }

    /// <summary>Raises an NMI on this CPU directly (e.g. a VMM "inject NMI" request).</summary>
    public void InjectNmi()
    {
        lock (_lock)
        {
            _nmiPending = true;
            UpdateEventHintLocked();
        }
        WakeUp?.Invoke();
    }

    private void UpdateEventHintLocked() => _anyEvent = _nmiPending || _initPending || _sipiPending;

    // ---------------------------------------------------------------- Local interrupt pins

    /// <summary>
    /// Drives LINT0 or LINT1 (<paramref name="pin"/> 0 or 1). LVT NMI and Fixed modes act on a rising
    /// edge. ExtINT on LINT0 is taken from the connected <see cref="IExtIntSource"/> instead. With the APIC
    /// hardware-disabled, LINT1 is the processor's NMI pin.
    /// </summary>
    public void SetLocalInterruptPin(int pin, bool level)
    {
        if ((uint)pin > 1) return;
        bool wake = false;
        lock (_lock)
        {
            bool rising = level && !_lintLevel[pin];
            _lintLevel[pin] = level;
            if (!rising) return;
            if (!HardwareEnabledLocked)
            {
                if (pin == 1)
                {
                    _nmiPending = true;
                    UpdateEventHintLocked();
                    wake = true;
                }
            }
            else
            {
                wake = FireLvtLocked(LvtLint0 + pin);
            }
        }
        if (wake) WakeUp?.Invoke();
    }

    // ---------------------------------------------------------------- APIC bus side

    private bool HardwareEnabledLocked => (_apicBase & BaseEnable) != 0;
    private bool SoftwareEnabledLocked => (_svr & SvrEnable) != 0;
    private bool X2ApicModeLocked => (_apicBase & BaseExtd) != 0;

    /// <summary>Whether this APIC is globally enabled and in x2APIC mode.</summary>
    public bool IsX2ApicMode
    {
        get { lock (_lock) return X2ApicModeLocked; }
    }

    internal bool CanAcceptFixed
    {
        get { lock (_lock) return HardwareEnabledLocked && SoftwareEnabledLocked; }
    }

    /// <summary>Arbitration priority for lowest-priority delivery (the processor priority).</summary>
    internal int ArbitrationPriority
    {
        get { lock (_lock) return (int)PprLocked(); }
    }

    /// <summary>Whether a message addressed to <paramref name="destination"/> selects this APIC.</summary>
    public bool MatchesDestination(uint destination, bool logical, bool x2ApicFormat)
    {
        lock (_lock)
        {
            if (!HardwareEnabledLocked) return false;
            if (X2ApicModeLocked)
            {
                uint broadcast = x2ApicFormat ? 0xFFFF_FFFFu : 0xFFu;
                if (destination == broadcast) return true;
                if (!logical) return destination == _id;
                if (!x2ApicFormat) return false;
                return (destination >> 16) == (_ldr >> 16) && (destination & _ldr & 0xFFFF) != 0;
            }
            uint mda = destination & 0xFF;
            if (mda == 0xFF) return true;
            if (!logical) return mda == (_id & 0xFF);
            uint logicalId = _ldr >> 24;
            if ((_dfr >> 28) == 0xF) return (logicalId & mda) != 0; // flat model
            return (mda >> 4) == (logicalId >> 4) && (mda & logicalId & 0xF) != 0; // cluster model
        }
    }

    /// <summary>A message from the APIC bus (IPI, IOAPIC, MSI) addressed to this APIC. Returns whether accepted.</summary>
    public bool Accept(in ApicMessage message)
    {
        bool accepted;
        lock (_lock)
        {
            if (!HardwareEnabledLocked) return false;
            switch (message.Mode)
            {
                case ApicDeliveryMode.Fixed:
                case ApicDeliveryMode.LowestPriority:
                    accepted = message.Assert && AcceptFixedLocked(message.Vector, message.LevelTriggered);
                    break;
                case ApicDeliveryMode.Nmi:
                    _nmiPending = true;
                    UpdateEventHintLocked();
                    accepted = true;
                    break;
                case ApicDeliveryMode.Init:
                    if (!message.Assert) return false; // INIT level de-assert: no effect on modern APICs
                    ResetLocked();
                    _initPending = true;
                    _sipiPending = false;
                    _waitingForSipi = !IsBootstrapProcessor;
                    UpdateEventHintLocked();
                    accepted = true;
                    break;
                case ApicDeliveryMode.StartUp:
                    if (!_waitingForSipi || _sipiPending) return false;
                    _sipiVector = message.Vector;
                    _sipiPending = true;
                    UpdateEventHintLocked();
                    accepted = true;
                    break;
                case ApicDeliveryMode.ExtInt:
                    _ioApicExtInt = true;
                    accepted = true;
                    break;
                default:
                    return false; // SMI and reserved modes: not modelled
            }
        }
        if (accepted) WakeUp?.Invoke();
        return accepted;
    }

    private bool AcceptFixedLocked(int vector, bool level)
    {
        if (vector < 16)
        {
            SignalErrorLocked(EsrReceiveIllegalVector);
            return false;
        }
        if (!SoftwareEnabledLocked) return false;
        SetBit(_irr, vector);
        if (level) SetBit(_tmr, vector); else ClearBit(_tmr, vector);
        _anyIrr = true;
        _accepted++;
        return true;
    }

    private void SignalErrorLocked(uint bits)
    {
        _esrPending |= bits;
        uint lvt = _lvt[LvtError];
        if ((lvt & LvtMasked) != 0 || !SoftwareEnabledLocked) return;
        int vector = (int)(lvt & 0xFF);
        if (vector < 16)
        {
            _esrPending |= EsrReceiveIllegalVector; // no recursion: an illegal error vector is just recorded
            return;
        }
        SetBit(_irr, vector);
        ClearBit(_tmr, vector);
        _anyIrr = true;
        _accepted++;
    }

    /// <summary>Delivers a local (LVT) interrupt; returns whether the CPU should be woken.</summary>
    private bool FireLvtLocked(int index)
    {
        uint lvt = _lvt[index];
        if ((lvt & LvtMasked) != 0) return false;
        var mode = index is LvtTimer or LvtError ? ApicDeliveryMode.Fixed : (ApicDeliveryMode)((lvt >> 8) & 7);
        switch (mode)
        {
            case ApicDeliveryMode.Fixed:
                bool level = index is LvtLint0 or LvtLint1 && (lvt & (1u << 15)) != 0;
                return AcceptFixedLocked((int)(lvt & 0xFF), level);
            case ApicDeliveryMode.Nmi:
                _nmiPending = true;
                UpdateEventHintLocked();
                return true;
            default:
                return false; // ExtINT is polled; SMI/INIT through LVT are not modelled
        }
    }

    // ---------------------------------------------------------------- Priority logic

    private uint PprLocked()
    {
        int isrv = HighestBit(_isr);
        uint isrClass = isrv < 0 ? 0u : (uint)isrv & 0xF0;
        return (_tpr & 0xF0) >= isrClass ? _tpr & 0xFF : isrClass;
    }

    private int HighestDeliverableLocked()
    {
        if (!HardwareEnabledLocked) return -1;
        int irrv = HighestBit(_irr);
        if (irrv < 0) return -1;
        return ((uint)irrv & 0xF0) > (PprLocked() & 0xF0) ? irrv : -1;
    }

    private void EndOfInterrupt()
    {
        int vector;
        bool broadcast;
        lock (_lock)
        {
            vector = HighestBit(_isr);
            if (vector < 0) return;
            ClearBit(_isr, vector);
            broadcast = TestBit(_tmr, vector) && (_svr & SvrSuppressEoiBroadcast) == 0;
        }
        if (broadcast) _bus.BroadcastEoi(vector);
    }

    // ---------------------------------------------------------------- Reset

    private void ResetLocked()
    {
        Array.Clear(_irr);
        Array.Clear(_isr);
        Array.Clear(_tmr);
        _anyIrr = false;
        _tpr = 0;
        _ldr = X2ApicModeLocked ? X2ApicLogicalId(_id) : 0;
        _dfr = 0xFFFF_FFFF;
        _svr = 0xFF;
        _esr = _esrPending = 0;
        _icrLow = _icrHigh = 0;
        for (int i = 0; i < _lvt.Length; i++) _lvt[i] = LvtMasked;
        _timerInitial = 0;
        _timerDivide = 0;
        _timerRunning = false;
        _tscDeadline = 0;
        _timer.Cancel();
        _nmiPending = false;
        _ioApicExtInt = false;
        UpdateEventHintLocked();
        UpdateExtIntLocked();
    }

    private void UpdateExtIntLocked()
    {
        uint lint0 = _lvt[LvtLint0];
        bool virtualWire = (lint0 & LvtMasked) == 0 && ((lint0 >> 8) & 7) == (uint)ApicDeliveryMode.ExtInt;
        _extIntEnabled = !HardwareEnabledLocked || !SoftwareEnabledLocked || virtualWire;
    }

    private static uint X2ApicLogicalId(uint id) => ((id >> 4) << 16) | (1u << (int)(id & 0xF));

    // ---------------------------------------------------------------- Register file

    /// <summary>Reads the 32-bit register at xAPIC offset <paramref name="offset"/> (16-byte aligned).
    /// Returns false for a reserved or write-only register.</summary>
    private bool TryReadRegisterLocked(uint offset, bool x2, out uint value)
    {
        value = 0;
        switch (offset)
        {
            case 0x020: value = x2 ? _id : _id << 24; return true;
            case 0x030: value = VersionRegister; return true;
            case 0x080: value = _tpr; return true;
            case 0x090: value = 0; return true; // APR: arbitration is not modelled
            case 0x0A0: value = PprLocked(); return true;
            case 0x0B0: return !x2; // EOI is write-only (xAPIC reads return 0)
            case 0x0D0: value = _ldr; return true;
            case 0x0E0: value = _dfr; return !x2;
            case 0x0F0: value = _svr; return true;
            case >= 0x100 and <= 0x170: value = _isr[(offset - 0x100) >> 4]; return true;
            case >= 0x180 and <= 0x1F0: value = _tmr[(offset - 0x180) >> 4]; return true;
            case >= 0x200 and <= 0x270: value = _irr[(offset - 0x200) >> 4]; return true;
            case 0x280: value = _esr; return true;
            case 0x300: value = _icrLow; return true;
            case 0x310: value = _icrHigh; return !x2;
            case >= 0x320 and <= 0x370: value = _lvt[(offset - 0x320) >> 4]; return true;
            case 0x380: value = _timerInitial; return true;
            case 0x390: value = CurrentCountLocked(); return true;
            case 0x3E0: value = _timerDivide; return true;
            default: return false;
        }
    }

    /// <summary>Writes a register. Returns false for a reserved or read-only register (x2APIC: #GP).
    /// Actions that reach other devices are returned in <paramref name="ipi"/> / <paramref name="eoi"/>.</summary>
    private bool TryWriteRegisterLocked(uint offset, uint value, bool x2, ref ApicMessage? ipi, ref bool eoi)
    {
        switch (offset)
        {
            case 0x020:
                if (x2) return false;
                _id = value >> 24;
                return true;
            case 0x080:
                _tpr = value & 0xFF;
                return true;
            case 0x0B0:
                eoi = true;
                return true;
            case 0x0D0:
                if (x2) return false;
                _ldr = value & 0xFF00_0000;
                return true;
            case 0x0E0:
                if (x2) return false;
                _dfr = value | 0x0FFF_FFFF;
                return true;
            case 0x0F0:
                _svr = value & (0xFF | SvrEnable | (1u << 9) | SvrSuppressEoiBroadcast);
                if (!SoftwareEnabledLocked)
                    for (int i = 0; i < _lvt.Length; i++) _lvt[i] |= LvtMasked;
                UpdateExtIntLocked();
                return true;
            case 0x280:
                _esr = _esrPending;
                _esrPending = 0;
                return true;
            case 0x300:
                _icrLow = value & ~(1u << 12) & 0x000C_CFFF; // delivery status always idle; reserved bits clear
                ipi = BuildIpiLocked(x2);
                return true;
            case 0x310:
                if (x2) return false;
                _icrHigh = value & 0xFF00_0000;
                return true;
            case >= 0x320 and <= 0x370:
                WriteLvtLocked((int)((offset - 0x320) >> 4), value);
                return true;
            case 0x380:
                if (TimerModeLocked == 2) return true; // TSC-deadline mode ignores the initial count
                _timerInitial = value;
                StartCountLocked();
                return true;
            case 0x3E0:
                SetDivideLocked(value & 0xB);
                return true;
            case 0x3F0:
                if (!x2) return false; // SELF IPI exists only as an x2APIC MSR
                ipi = new ApicMessage(ApicDeliveryMode.Fixed, (byte)value, 0, false, false,
                    Shorthand: ApicShorthand.Self, X2ApicFormat: true);
                return true;
            default:
                // ID/version/PPR/ISR/TMR/IRR/current count and reserved addresses
                return false;
        }
    }

    private ApicMessage? BuildIpiLocked(bool x2)
    {
        var mode = (ApicDeliveryMode)((_icrLow >> 8) & 7);
        byte vector = (byte)_icrLow;
        bool logical = (_icrLow & (1u << 11)) != 0;
        bool assert = (_icrLow & (1u << 14)) != 0;
        bool level = (_icrLow & (1u << 15)) != 0;
        var shorthand = (ApicShorthand)((_icrLow >> 18) & 3);
        uint dest = x2 ? _icrHigh : _icrHigh >> 24;
        if (mode is ApicDeliveryMode.Fixed or ApicDeliveryMode.LowestPriority && vector < 16)
        {
            SignalErrorLocked(EsrSendIllegalVector);
            return null;
        }
        if (mode is ApicDeliveryMode.Reserved3 or ApicDeliveryMode.ExtInt) return null;
        // Edge-triggered IPIs always assert; only INIT uses the level/de-assert encoding.
        if (!level) assert = true;
        _ipisSent++;
        return new ApicMessage(mode, vector, dest, logical, level, assert, shorthand, x2);
    }

    private void WriteLvtLocked(int index, uint value)
    {
        uint old = _lvt[index];
        uint v = value & LvtWritable[index];
        if (index == LvtTimer && ((v >> 17) & 3) == 3) v &= ~(3u << 17); // reserved mode: treat as one-shot
        if (!SoftwareEnabledLocked) v |= LvtMasked;
        // Read-only status bits (delivery status, remote IRR) are never set here.
        _lvt[index] = v;
        if (index == LvtTimer && ((old ^ v) & (3u << 17)) != 0)
        {
            // A mode change disarms the timer (SDM 10.5.4.1).
            _timerInitial = 0;
            _timerRunning = false;
            _tscDeadline = 0;
            _timer.Cancel();
        }
        if (index == LvtLint0) UpdateExtIntLocked();
    }

    // ---------------------------------------------------------------- Timer

    private uint TimerModeLocked => (_lvt[LvtTimer] >> 17) & 3;

    private int DivisorLocked
    {
        get
        {
            uint d = (_timerDivide & 3) | ((_timerDivide & 8) >> 1);
            return d == 7 ? 1 : 2 << (int)d;
        }
    }

    private long NsPerTick => DivisorLocked * (1_000_000_000 / BusFrequencyHz);

    private void StartCountLocked()
    {
        _timerStart = _clock.NowNanoseconds;
        _timerFired = 0;
        _timerRunning = _timerInitial != 0;
        if (_timerRunning) ArmTimerLocked();
        else _timer.Cancel();
    }

    private void SetDivideLocked(uint value)
    {
        if (_timerRunning && TimerModeLocked != 2)
        {
            // Keep the current count continuous across the divider change.
            long now = _clock.NowNanoseconds;
            uint current = CurrentCountLocked();
            long oldFirePeriod = FirePeriodLocked();
            _timerDivide = value;
            long elapsedTicks = (long)_timerInitial - current;
            _timerStart = now - elapsedTicks * NsPerTick;
            if (TimerModeLocked == 1 && oldFirePeriod > 0)
                _timerFired = Math.Max(0, (now - _timerStart) / FirePeriodLocked());
            ArmTimerLocked();
        }
        else
        {
            _timerDivide = value;
        }
    }

    private long PeriodNsLocked() => _timerInitial * NsPerTick;

    private long FirePeriodLocked() => TimerModeLocked == 1
        ? Math.Max(PeriodNsLocked(), MinimumPeriodNanoseconds)
        : PeriodNsLocked();

    private uint CurrentCountLocked()
    {
        if (!_timerRunning || TimerModeLocked == 2 || _timerInitial == 0) return 0;
        long elapsedTicks = (_clock.NowNanoseconds - _timerStart) / NsPerTick;
        if (TimerModeLocked == 1) return (uint)(_timerInitial - elapsedTicks % _timerInitial);
        return elapsedTicks >= _timerInitial ? 0 : (uint)(_timerInitial - elapsedTicks);
    }

    /// <summary>Arms the device timer for the next expiry; fires (and counts) anything already due.</summary>
    private void ArmTimerLocked()
    {
        long now = _clock.NowNanoseconds;
        switch (TimerModeLocked)
        {
            case 0: // one-shot
            {
                if (!_timerRunning) return;
                long expiry = _timerStart + PeriodNsLocked();
                if (now >= expiry)
                {
                    _timerRunning = false;
                    ExpireLocked();
                }
                else
                {
                    _timer.Arm(expiry);
                }
                return;
            }
            case 1: // periodic
            {
                if (!_timerRunning) return;
                long period = FirePeriodLocked();
                long k = (now - _timerStart) / period;
                if (k > _timerFired)
                {
                    // Late (or several periods behind): count every period, deliver one interrupt
                    // (the IRR bit coalesces them anyway).
                    Interlocked.Add(ref _timerExpirations, k - _timerFired - 1);
                    _timerFired = k;
                    ExpireLocked();
                }
                _timer.Arm(_timerStart + (_timerFired + 1) * period);
                return;
            }
            case 2: // TSC deadline
            {
                if (_tscDeadline == 0) return;
                ulong tsc = ReadTscLocked();
                if (tsc >= _tscDeadline)
                {
                    _tscDeadline = 0;
                    ExpireLocked();
                    return;
                }
                UInt128 ns = (UInt128)(_tscDeadline - tsc) * 1_000_000_000 / (ulong)_tscFrequencyHz;
                long delta = ns > (UInt128)(long.MaxValue / 4) ? long.MaxValue / 4 : (long)ns;
                _timer.Arm(now + Math.Max(delta, 1));
                return;
            }
        }
    }

    private void ExpireLocked()
    {
        Interlocked.Increment(ref _timerExpirations);
        FireLvtLocked(LvtTimer);
    }

    private void OnTimer()
    {
        long before;
        bool wake;
        lock (_lock)
        {
            before = _accepted;
            ArmTimerLocked();
            wake = _accepted != before;
        }
        if (wake) WakeUp?.Invoke();
    }

    // ---------------------------------------------------------------- MSRs

    /// <summary>RDMSR: IA32_APIC_BASE, IA32_TSC_DEADLINE and the x2APIC range. False means #GP.</summary>
    public bool TryReadMsr(uint msr, out ulong value)
    {
        value = 0;
        lock (_lock)
        {
            if (msr == MsrApicBase)
            {
                value = _apicBase;
                return true;
            }
            if (msr == MsrTscDeadline)
            {
                value = HardwareEnabledLocked && TimerModeLocked == 2 ? _tscDeadline : 0;
                return true;
            }
            if (msr is < MsrX2ApicFirst or > MsrX2ApicLast || !X2ApicModeLocked) return false;
            uint offset = (msr - MsrX2ApicFirst) << 4;
            if (offset == 0x300)
            {
                value = ((ulong)_icrHigh << 32) | _icrLow;
                return true;
            }
            if (!TryReadRegisterLocked(offset, x2: true, out uint v)) return false;
            value = v;
            return true;
        }
    }

    /// <summary>WRMSR: IA32_APIC_BASE, IA32_TSC_DEADLINE and the x2APIC range. False means #GP.</summary>
    public bool TryWriteMsr(uint msr, ulong value)
    {
        ApicMessage? ipi = null;
        bool eoi = false, wake = false;
        lock (_lock)
        {
            long acceptedBefore = _accepted;
            if (msr == MsrApicBase)
            {
                if (!WriteApicBaseLocked(value)) return false;
            }
            else if (msr == MsrTscDeadline)
            {
                if (HardwareEnabledLocked && TimerModeLocked == 2)
                {
                    _tscDeadline = value;
                    if (value == 0) _timer.Cancel();
                    else ArmTimerLocked();
                }
            }
            else
            {
                if (msr is < MsrX2ApicFirst or > MsrX2ApicLast || !X2ApicModeLocked) return false;
                uint offset = (msr - MsrX2ApicFirst) << 4;
                if (offset == 0x300)
                {
                    // x2APIC ICR: one 64-bit write, destination in bits 63:32.
                    if ((value & 0xFFF3_2000UL & 0xFFFF_FFFFUL) != 0) return false;
                    _icrHigh = (uint)(value >> 32);
                    _icrLow = (uint)value & 0x000C_CFFF;
                    ipi = BuildIpiLocked(x2: true);
                }
                else
                {
                    if ((value >> 32) != 0) return false;
                    if (offset == 0x0B0 && value != 0) return false;
                    if (offset == 0x280 && value != 0) return false;
                    if (!TryWriteRegisterLocked(offset, (uint)value, x2: true, ref ipi, ref eoi)) return false;
                }
            }
            wake |= _accepted != acceptedBefore;
        }
        Complete(ipi, eoi, wake);
        return true;
    }

    private bool WriteApicBaseLocked(ulong value)
    {
        const ulong reserved = ~(BaseBsp | BaseExtd | BaseEnable | BaseAddressMask);
        if ((value & reserved) != 0) return false;
        bool enable = (value & BaseEnable) != 0, extd = (value & BaseExtd) != 0;
        if (extd && !enable) return false;                       // invalid state
        if (extd && !X2ApicSupported) return false;
        bool wasEnabled = HardwareEnabledLocked, wasX2 = X2ApicModeLocked;
        if (wasX2 && enable && !extd) return false;              // x2APIC -> xAPIC must go through disabled
        if (!wasEnabled && extd) return false;                   // disabled -> x2APIC must go through xAPIC
        _apicBase = (value & ~BaseBsp) | (IsBootstrapProcessor ? BaseBsp : 0);
        if (wasEnabled && !enable)
        {
            // Hardware disable: the APIC returns to its power-on state.
            ResetLocked();
        }
        else if (!wasX2 && extd)
        {
            _ldr = X2ApicLogicalId(_id);
        }
        UpdateExtIntLocked();
        return true;
    }

    // ---------------------------------------------------------------- MMIO

    /// <summary>A read of the xAPIC page at <paramref name="offset"/> (0..0xFFF) by this APIC's CPU.</summary>
    public void ReadMmio(ulong offset, Span<byte> data)
    {
        data.Clear();
        if (offset >= MmioSize) return;
        uint reg = (uint)offset & ~0xFu;
        int within = (int)(offset & 0xF);
        uint value;
        lock (_lock)
        {
            if (X2ApicModeLocked || !HardwareEnabledLocked)
            {
                data.Fill(0xFF); // the page is not decoded: reads float
                return;
            }
            if (!TryReadRegisterLocked(reg, x2: false, out value))
            {
                SignalErrorLocked(EsrIllegalRegisterAddress);
                value = 0;
            }
        }
        // Registers are 32 bits at the start of each 16-byte slot; bytes 4..15 read as zero.
        for (int i = 0; i < data.Length && within + i < 4; i++)
            data[i] = (byte)(value >> (8 * (within + i)));
    }

    /// <summary>A write to the xAPIC page by this APIC's CPU. Only aligned 32-bit writes take effect
    /// (the SDM requires them); other widths are ignored.</summary>
    public void WriteMmio(ulong offset, ReadOnlySpan<byte> data)
    {
        if (offset >= MmioSize || data.Length != 4 || (offset & 0xF) != 0) return;
        uint value = BinaryPrimitives.ReadUInt32LittleEndian(data);
        ApicMessage? ipi = null;
        bool eoi = false, wake = false;
        lock (_lock)
        {
            if (X2ApicModeLocked || !HardwareEnabledLocked) return;
            long acceptedBefore = _accepted;
            if (!TryWriteRegisterLocked((uint)offset, value, x2: false, ref ipi, ref eoi))
                SignalErrorLocked(EsrIllegalRegisterAddress);
            wake |= _accepted != acceptedBefore;
        }
        Complete(ipi, eoi, wake);
    }

    /// <summary>Reads a register by xAPIC offset regardless of mode (for tests and debugging).</summary>
    public uint ReadRegister(uint offset)
    {
        lock (_lock) return TryReadRegisterLocked(offset & 0xFF0, X2ApicModeLocked, out uint v) ? v : 0;
    }

    /// <summary>Writes a register by xAPIC offset as an aligned 32-bit MMIO write would.</summary>
    public void WriteRegister(uint offset, uint value)
    {
        Span<byte> bytes = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(bytes, value);
        WriteMmio(offset, bytes);
    }

    private void Complete(ApicMessage? ipi, bool eoi, bool wake)
    {
        if (eoi) EndOfInterrupt();
        if (ipi is { } message)
        {
            // Delivered after releasing our lock: the target may be this APIC, or may be sending to us.
            _bus.Deliver(message, this);
        }
        if (wake) WakeUp?.Invoke();
    }

    // ---------------------------------------------------------------- Snapshot

    /// <summary>Captures the APIC's state (timer positions relative to the device clock's now).</summary>
    public LocalApicState SaveState()
    {
        lock (_lock)
        {
            long now = _clock.NowNanoseconds;
            return new LocalApicState(
                _id, _apicBase, [.. _irr], [.. _isr], [.. _tmr], _tpr, _ldr, _dfr, _svr, _esr, _esrPending,
                _icrLow, _icrHigh, [.. _lvt], [.. _lintLevel], _timerInitial, _timerDivide,
                _timerRunning ? now - _timerStart : -1, _timerFired, _tscDeadline,
                _nmiPending, _initPending, _sipiPending, _waitingForSipi, _sipiVector, _ioApicExtInt);
        }
    }

    /// <summary>Restores a state from <see cref="SaveState"/> (possibly taken on another clock) and re-arms the timer.
    /// Malformed state (wrong array lengths) throws <see cref="ArgumentException"/> without changing anything.</summary>
    public void RestoreState(LocalApicState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        if (state.Irr.Length != 8 || state.Isr.Length != 8 || state.Tmr.Length != 8 ||
            state.Lvt.Length != _lvt.Length || state.LintLevels.Length != 2)
            throw new ArgumentException("local APIC state has malformed register arrays", nameof(state));
        lock (_lock)
        {
            long now = _clock.NowNanoseconds;
            _id = state.ApicId;
            _apicBase = (state.ApicBase & ~BaseBsp) | (IsBootstrapProcessor ? BaseBsp : 0);
            state.Irr.CopyTo(_irr, 0);
            state.Isr.CopyTo(_isr, 0);
            state.Tmr.CopyTo(_tmr, 0);
            _tpr = state.Tpr & 0xFF;
            _ldr = state.Ldr;
            _dfr = state.Dfr;
            _svr = state.Svr;
            _esr = state.Esr;
            _esrPending = state.EsrPending;
            _icrLow = state.IcrLow;
            _icrHigh = state.IcrHigh;
            for (int i = 0; i < _lvt.Length; i++) _lvt[i] = state.Lvt[i] & LvtWritable[i];
            state.LintLevels.CopyTo(_lintLevel, 0);
            _timerInitial = state.TimerInitialCount;
            _timerDivide = state.TimerDivideConfig & 0xB;
            _timerRunning = state.TimerElapsedNanoseconds >= 0 && _timerInitial != 0;
            _timerStart = _timerRunning ? now - state.TimerElapsedNanoseconds : now;
            _timerFired = state.TimerPeriodsFired;
            _tscDeadline = state.TscDeadline;
            _nmiPending = state.NmiPending;
            _initPending = state.InitPending;
            _sipiPending = state.SipiPending;
            _waitingForSipi = state.WaitingForSipi;
            _sipiVector = state.SipiVector;
            _ioApicExtInt = state.IoApicExtIntPending;
            _anyIrr = AnyBit(_irr);
            UpdateEventHintLocked();
            UpdateExtIntLocked();
            _timer.Cancel();
            ArmTimerLocked();
        }
    }

    // ---------------------------------------------------------------- 256-bit register helpers

    private static void SetBit(uint[] r, int v) => r[v >> 5] |= 1u << (v & 31);
    private static void ClearBit(uint[] r, int v) => r[v >> 5] &= ~(1u << (v & 31));
    private static bool TestBit(uint[] r, int v) => (r[v >> 5] & (1u << (v & 31))) != 0;

    private static bool AnyBit(uint[] r)
    {
        foreach (uint w in r) if (w != 0) return true;
        return false;
    }

    private static int HighestBit(uint[] r)
    {
        for (int i = r.Length - 1; i >= 0; i--)
            if (r[i] != 0) return (i << 5) + 31 - BitOperations.LeadingZeroCount(r[i]);
        return -1;
    }

    /// <summary>Whether <paramref name="vector"/> is set in the IRR (for tests and debugging).</summary>
    public bool IsRequested(int vector)
    {
        if ((uint)vector > 255) return false;
        lock (_lock) return TestBit(_irr, vector);
    }

    /// <summary>Whether <paramref name="vector"/> is set in the ISR (for tests and debugging).</summary>
    public bool IsInService(int vector)
    {
        if ((uint)vector > 255) return false;
        lock (_lock) return TestBit(_isr, vector);
    }
}

/// <summary>
/// The interrupt address range 0xFEE00000-0xFEEFFFFF on the MMIO bus (register at
/// <see cref="LocalApic.DefaultBaseAddress"/>, length <see cref="RangeSize"/>). Its first page is the xAPIC
/// register page. Real hardware has one page per CPU at the same address; the bus call carries no CPU
/// identity, so this device serves the APIC bound to the calling thread
/// (<see cref="LocalApic.BindCurrentThread"/>). A 32-bit write from an unbound thread (a device model
/// doing DMA into 0xFEExxxxx) is an MSI; unbound reads, and CPU accesses beyond the page, read all ones.
/// </summary>
public sealed class LocalApicMmioDevice(ApicBus bus) : IBusDevice
{
    /// <summary>The whole MSI address window (1 MiB): destination IDs live in address bits 19:12.</summary>
    public const ulong RangeSize = 0x10_0000;

    public void Read(ulong offset, Span<byte> data)
    {
        var apic = LocalApic.Current;
        if (apic is null || !ReferenceEquals(apic.Bus, bus) || offset >= LocalApic.MmioSize)
        {
            data.Fill(0xFF);
            return;
        }
        apic.ReadMmio(offset, data);
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        var apic = LocalApic.Current;
        if (apic is not null && ReferenceEquals(apic.Bus, bus) && offset >= LocalApic.MmioSize) return;
        if (apic is null || !ReferenceEquals(apic.Bus, bus))
        {
            if (data.Length == 4 && ApicMessage.TryDecodeMsi(LocalApic.DefaultBaseAddress + offset,
                    BinaryPrimitives.ReadUInt32LittleEndian(data), out var msi))
                bus.Deliver(msi);
            return;
        }
        apic.WriteMmio(offset, data);
    }
}

/// <summary>A local APIC's state for snapshots: plain values, no handles. Timer positions are relative
/// (<see cref="TimerElapsedNanoseconds"/> is -1 when the count-down timer is not running).</summary>
public sealed record LocalApicState(
    uint ApicId, ulong ApicBase, uint[] Irr, uint[] Isr, uint[] Tmr, uint Tpr, uint Ldr, uint Dfr, uint Svr,
    uint Esr, uint EsrPending, uint IcrLow, uint IcrHigh, uint[] Lvt, bool[] LintLevels,
    uint TimerInitialCount, uint TimerDivideConfig, long TimerElapsedNanoseconds, long TimerPeriodsFired,
    ulong TscDeadline, bool NmiPending, bool InitPending, bool SipiPending, bool WaitingForSipi, byte SipiVector,
    bool IoApicExtIntPending);
