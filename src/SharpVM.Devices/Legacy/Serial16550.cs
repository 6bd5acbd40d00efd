using SharpVM.Devices.Bus;

namespace SharpVM.Devices.Legacy;

/// <summary>Snapshot state of a <see cref="Serial16550"/>: registers, FIFO contents, pending host input.</summary>
public sealed record Serial16550State(
    byte Ier, byte Lcr, byte Mcr, byte Lsr, byte Msr, byte Scr, byte Fcr, ushort Divisor,
    bool ThrInterruptPending, byte[] RxFifo, byte[] PendingInput);

/// <summary>Counters for a <see cref="Serial16550"/>.</summary>
public sealed class Serial16550Metrics
{
    public long BytesTransmitted;
    public long BytesReceived;
    public long InputDropped;
    public long Overruns;
    public long InterruptsRaised;
}

/// <summary>
/// An NS16550A UART (COM1 by default: ports 0x3F8-0x3FF, IRQ 4), as Linux's 8250 driver expects to
/// find it: IER with 4 writable bits, IIR with FIFO bits 0xC0 when FIFOs are on, FCR, LCR with DLAB
/// and the divisor latch, MCR with loopback (MSR mirrors MCR), LSR, MSR, scratch. The transmitter is
/// infinitely fast: a byte written to THR goes to the output at once (or, in loopback, to the receive
/// FIFO), so THRE and TEMT are always set and the THRE interrupt re-asserts immediately.
/// The receive FIFO holds 16 bytes; host input beyond that waits in a bounded backlog and flows in
/// as the guest reads, so pasted text is not lost.
/// Thread-safe: vCPU threads access the registers, a host thread calls <see cref="EnqueueInput"/>.
/// </summary>
public sealed class Serial16550 : IBusDevice
{
    public const ushort Com1Port = 0x3F8, Com2Port = 0x2F8;
    public const int Com1Irq = 4, Com2Irq = 3;
    public const int PortCount = 8;
    public const int FifoSize = 16;
    public const int MaxPendingInput = 64 * 1024;

    // Register offsets.
    public const int Rbr = 0, Thr = 0, Dll = 0, Ier = 1, Dlm = 1, Iir = 2, Fcr = 2, Lcr = 3, Mcr = 4, Lsr = 5, Msr = 6, Scr = 7;

    // IER bits.
    public const byte IerRxData = 0x01, IerThre = 0x02, IerLineStatus = 0x04, IerModemStatus = 0x08;
    // IIR values.
    public const byte IirNoInterrupt = 0x01, IirModemStatus = 0x00, IirThre = 0x02, IirRxData = 0x04, IirLineStatus = 0x06,
        IirRxTimeout = 0x0C, IirFifoEnabled = 0xC0;
    // FCR bits.
    public const byte FcrEnable = 0x01, FcrClearRx = 0x02, FcrClearTx = 0x04;
    // LCR bits.
    public const byte LcrDlab = 0x80;
    // MCR bits.
    public const byte McrDtr = 0x01, McrRts = 0x02, McrOut1 = 0x04, McrOut2 = 0x08, McrLoop = 0x10;
    // LSR bits.
    public const byte LsrDataReady = 0x01, LsrOverrun = 0x02, LsrParity = 0x04, LsrFraming = 0x08, LsrBreak = 0x10,
        LsrThre = 0x20, LsrTemt = 0x40, LsrFifoError = 0x80;
    // MSR bits.
    public const byte MsrCts = 0x10, MsrDsr = 0x20, MsrRi = 0x40, MsrDcd = 0x80;

    private static readonly int[] TriggerLevels = [1, 4, 8, 14];

    private readonly object _lock = new();
    private readonly IInterruptLine _irq;
    private readonly Action<ReadOnlySpan<byte>> _output;
    private readonly Queue<byte> _rx = new();
    private readonly Queue<byte> _pending = new();

    private byte _ier, _lcr, _mcr, _lsr = LsrThre | LsrTemt, _msr = MsrDcd | MsrDsr | MsrCts, _scr, _fcr;
    private ushort _divisor = 12; // 9600 baud
    private bool _thrPending;
    private bool _irqLevel;

    public Serial16550Metrics Metrics { get; } = new();

    /// <param name="irq">The UART's interrupt line (IRQ 4 for COM1).</param>
    /// <param name="output">Receives every transmitted byte, on the vCPU thread that wrote it.</param>
    public Serial16550(IInterruptLine irq, Action<ReadOnlySpan<byte>> output)
    {
        _irq = irq;
        _output = output;
    }

    /// <summary>A UART whose output goes to <paramref name="output"/> (flushed per write).</summary>
    public Serial16550(IInterruptLine irq, Stream output)
        : this(irq, data => { output.Write(data); output.Flush(); }) { }

    /// <summary>Claims ports [<paramref name="basePort"/>, +8) on <paramref name="bus"/>.</summary>
    public BusRange Attach(PioBus bus, ushort basePort = Com1Port, string name = "serial") =>
        bus.Register(basePort, PortCount, this, name);

    /// <summary>Queues bytes typed on the host for the guest to read; raises the RX interrupt if enabled. Returns how many were accepted.</summary>
    public int EnqueueInput(ReadOnlySpan<byte> data)
    {
        lock (_lock)
        {
            int accepted = 0;
            foreach (var b in data)
            {
                if (_pending.Count >= MaxPendingInput) { Metrics.InputDropped += data.Length - accepted; break; }
                _pending.Enqueue(b);
                accepted++;
            }
            RefillRx();
            UpdateInterrupt();
            return accepted;
        }
    }

    public void Read(ulong offset, Span<byte> data)
    {
        lock (_lock)
        {
            for (int i = 0; i < data.Length; i++) data[i] = ReadRegister((int)(offset + (ulong)i) & 7);
            UpdateInterrupt();
        }
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        lock (_lock)
        {
            for (int i = 0; i < data.Length; i++) WriteRegister((int)(offset + (ulong)i) & 7, data[i]);
            UpdateInterrupt();
        }
    }

    private bool FifoEnabled => (_fcr & FcrEnable) != 0;
    private int FifoCapacity => FifoEnabled ? FifoSize : 1;
    private bool Dlab => (_lcr & LcrDlab) != 0;
    private bool Loopback => (_mcr & McrLoop) != 0;

    private byte ReadRegister(int reg)
    {
        switch (reg)
        {
            case Rbr when Dlab: return (byte)_divisor;
            case Rbr:
                {
                    byte b = _rx.Count > 0 ? _rx.Dequeue() : (byte)0;
                    if (_rx.Count == 0) _lsr &= unchecked((byte)~LsrDataReady);
                    RefillRx();
                    return b;
                }
            case Ier when Dlab: return (byte)(_divisor >> 8);
            case Ier: return _ier;
            case Iir:
                {
                    byte iir = ComputeIir();
                    if (iir == IirThre) _thrPending = false; // reading IIR that reports THRE clears it
                    return (byte)(iir | (FifoEnabled ? IirFifoEnabled : 0));
                }
            case Lcr: return _lcr;
            case Mcr: return _mcr;
            case Lsr:
                {
                    byte lsr = _lsr;
                    _lsr &= unchecked((byte)~(LsrOverrun | LsrParity | LsrFraming | LsrBreak | LsrFifoError));
                    return lsr;
                }
            case Msr:
                {
                    byte msr = CurrentMsr();
                    _msr &= 0xF0; // reading clears the delta bits
                    return msr;
                }
            default: return _scr;
        }
    }

    private void WriteRegister(int reg, byte value)
    {
        switch (reg)
        {
            case Thr when Dlab: _divisor = (ushort)((_divisor & 0xFF00) | value); break;
            case Thr:
                Transmit(value);
                break;
            case Ier when Dlab: _divisor = (ushort)((_divisor & 0x00FF) | (value << 8)); break;
            case Ier:
                {
                    byte old = _ier;
                    _ier = (byte)(value & 0x0F);
                    // Enabling THRE while the transmitter is empty raises it (the 8250 driver's THRE test relies on this).
                    if ((_ier & IerThre) != 0 && (old & IerThre) == 0) _thrPending = true;
                    break;
                }
            case Fcr:
                {
                    bool wasEnabled = FifoEnabled;
                    if (((value & FcrEnable) != 0) != wasEnabled) _rx.Clear(); // toggling FIFO mode clears the FIFOs
                    _fcr = (byte)(value & 0xC9);
                    if ((value & FcrClearRx) != 0) _rx.Clear();
                    if (_rx.Count == 0) _lsr &= unchecked((byte)~LsrDataReady);
                    RefillRx();
                    break;
                }
            case Lcr: _lcr = value; break;
            case Mcr:
                {
                    byte oldMsr = CurrentMsr();
                    _mcr = (byte)(value & 0x1F);
                    byte newMsr = CurrentMsr();
                    // Deltas: CTS, DSR, DCD change; RI trailing edge.
                    byte delta = 0;
                    if (((oldMsr ^ newMsr) & MsrCts) != 0) delta |= 0x01;
                    if (((oldMsr ^ newMsr) & MsrDsr) != 0) delta |= 0x02;
                    if ((oldMsr & MsrRi) != 0 && (newMsr & MsrRi) == 0) delta |= 0x04;
                    if (((oldMsr ^ newMsr) & MsrDcd) != 0) delta |= 0x08;
                    _msr |= delta;
                    if (!Loopback) RefillRx();
                    break;
                }
            case Lsr: break; // factory test register: writes ignored
            case Msr: break;
            default: _scr = value; break;
        }
    }

    private void Transmit(byte value)
    {
        _thrPending = false;
        if (Loopback)
        {
            if (_rx.Count >= FifoCapacity) { _lsr |= LsrOverrun; Metrics.Overruns++; }
            else { _rx.Enqueue(value); _lsr |= LsrDataReady; }
        }
        else
        {
            Metrics.BytesTransmitted++;
            _output([value]);
        }
        // The byte left at once: THR and the shift register are empty again.
        _lsr |= LsrThre | LsrTemt;
        _thrPending = true;
    }

    /// <summary>Moves host input into the receive FIFO (not in loopback, where the FIFO is fed by THR).</summary>
    private void RefillRx()
    {
        if (Loopback) return;
        while (_pending.Count > 0 && _rx.Count < FifoCapacity)
        {
            _rx.Enqueue(_pending.Dequeue());
            Metrics.BytesReceived++;
        }
        if (_rx.Count > 0) _lsr |= LsrDataReady;
    }

    private byte CurrentMsr()
    {
        if (!Loopback) return _msr;
        byte status = 0;
        if ((_mcr & McrRts) != 0) status |= MsrCts;
        if ((_mcr & McrDtr) != 0) status |= MsrDsr;
        if ((_mcr & McrOut1) != 0) status |= MsrRi;
        if ((_mcr & McrOut2) != 0) status |= MsrDcd;
        return (byte)(status | (_msr & 0x0F));
    }

    private byte ComputeIir()
    {
        if ((_ier & IerLineStatus) != 0 && (_lsr & (LsrOverrun | LsrParity | LsrFraming | LsrBreak)) != 0) return IirLineStatus;
        if ((_ier & IerRxData) != 0 && _rx.Count > 0)
        {
            // No character timer: data below the trigger level reports as a timeout at once.
            int trigger = FifoEnabled ? TriggerLevels[_fcr >> 6] : 1;
            return _rx.Count >= trigger ? IirRxData : IirRxTimeout;
        }
        if ((_ier & IerThre) != 0 && _thrPending) return IirThre;
        if ((_ier & IerModemStatus) != 0 && (_msr & 0x0F) != 0) return IirModemStatus;
        return IirNoInterrupt;
    }

    private void UpdateInterrupt()
    {
        // OUT2 gates the IRQ on PC serial ports, but Linux's 8250 probes with OUT2 set, and some
        // guests never set it; like QEMU, the line follows the pending state alone.
        bool level = ComputeIir() != IirNoInterrupt;
        if (level == _irqLevel) return;
        _irqLevel = level;
        if (level) Metrics.InterruptsRaised++;
        _irq.SetLevel(level);
    }

    public Serial16550State SaveState()
    {
        lock (_lock)
            return new Serial16550State(_ier, _lcr, _mcr, _lsr, _msr, _scr, _fcr, _divisor, _thrPending, _rx.ToArray(), _pending.ToArray());
    }

    public void RestoreState(Serial16550State s)
    {
        lock (_lock)
        {
            (_ier, _lcr, _mcr, _lsr, _msr, _scr, _fcr, _divisor, _thrPending) =
                ((byte)(s.Ier & 0x0F), s.Lcr, (byte)(s.Mcr & 0x1F), s.Lsr, s.Msr, s.Scr, s.Fcr, s.Divisor, s.ThrInterruptPending);
            _rx.Clear();
            foreach (var b in s.RxFifo.Take(FifoSize)) _rx.Enqueue(b);
            _pending.Clear();
            foreach (var b in s.PendingInput.Take(MaxPendingInput)) _pending.Enqueue(b);
            _irqLevel = false;
            UpdateInterrupt();
        }
    }
}
