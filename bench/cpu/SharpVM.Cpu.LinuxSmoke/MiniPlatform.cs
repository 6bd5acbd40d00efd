using System.Diagnostics;
using SharpVM.Devices.Interrupts;
using SharpVM.Hypervisor;

/// <summary>
/// Just enough legacy platform for the smoke test (a stand-in until SharpVM.Devices provides the real
/// ones): an 8259 pair (master only does anything), the 8254 channel 0, and a 16550 on 0x3F8 whose
/// output goes to stdout. The PIC is the vCPU's interrupt source; the PIT is evaluated when polled.
/// </summary>
sealed class MiniPlatform : IVcpuIoHandler, IVcpuInterruptSource
{
    private readonly object _lock = new();
    private readonly Stream _out = Console.OpenStandardOutput();

    // 8259 master
    private byte _irr, _isr, _imr = 0xFF, _base = 0x08;
    private int _icwStep;
    private bool _icw4, _readIsr, _autoEoi;
    private byte _slaveImr = 0xFF;
    private int _slaveIcwStep;

    // 8254 channel 0
    private int _pitMode, _pitAccess = 3;
    private bool _pitLowNext = true;
    private ushort _pitReload;
    private bool _pitArmed, _pitPeriodic;
    private long _pitStart, _pitDeadline, _pitPeriodTicks;
    private ushort _pitLatch;
    private bool _pitLatched, _pitLatchLowNext = true;

    // 16550
    private byte _ier, _lcr, _mcr, _scr, _dll = 1, _dlm, _fcr;
    private bool _thrPending;

    public int SerialBytes, PortAccesses, MmioAccesses, Interrupts;

    /// <summary>Called once the kernel prints its final "reboot: ..." line (power off, halt or restart).</summary>
    public Action? OnGuestStopped;
    private readonly System.Text.StringBuilder _line = new();

    public Action? WakeUp { get; set; }

    private static long Now() => Stopwatch.GetTimestamp();
    private static long PitTicksToTimestamp(long ticks) => ticks * Stopwatch.Frequency / 1193182;

    private void Raise(int irq)
    {
        _irr |= (byte)(1 << irq);
        WakeUp?.Invoke();
    }

    private void PollPit()
    {
        if (!_pitArmed) return;
        long now = Now();
        if (now < _pitDeadline) return;
        Raise(0);
        if (_pitPeriodic)
        {
            long p = PitTicksToTimestamp(_pitPeriodTicks);
            _pitDeadline += p;
            if (_pitDeadline < now) _pitDeadline = now + p;
        }
        else _pitArmed = false;
    }

    private int PendingIrq()
    {
        int pending = _irr & ~_imr;
        if (pending == 0) return -1;
        int irq = System.Numerics.BitOperations.TrailingZeroCount(pending);
        if (_isr != 0 && System.Numerics.BitOperations.TrailingZeroCount(_isr) <= irq) return -1;
        return irq;
    }

    public bool HasPendingInterrupt
    {
        get { lock (_lock) { PollPit(); return PendingIrq() >= 0; } }
    }

    public int AcknowledgeInterrupt()
    {
        lock (_lock)
        {
            int irq = PendingIrq();
            if (irq < 0) return _base + 7; // spurious
            _irr &= (byte)~(1 << irq);
            if (!_autoEoi) _isr |= (byte)(1 << irq);
            Interrupts++;
            return _base + irq;
        }
    }

    public bool TakePendingNmi() => false;

    public void PioRead(ushort port, Span<byte> data)
    {
        lock (_lock)
        {
            PortAccesses++;
            data.Fill(0xFF);
            byte v = 0xFF;
            switch (port)
            {
                case 0x20: v = _readIsr ? _isr : _irr; break;
                case 0x21: v = _imr; break;
                case 0xA0: v = 0; break;
                case 0xA1: v = _slaveImr; break;
                case 0x40: v = ReadPitCount(); break;
                case 0x61: v = (byte)((Now() / 1000) & 1) == 0 ? (byte)0x20 : (byte)0; break;
                case >= 0x3F8 and <= 0x3FF: v = ReadUart(port - 0x3F8); break;
            }
            data[0] = v;
        }
    }

    public void PioWrite(ushort port, ReadOnlySpan<byte> data)
    {
        lock (_lock)
        {
            PortAccesses++;
            byte v = data[0];
            switch (port)
            {
                case 0x20:
                    if ((v & 0x10) != 0) { _icwStep = 1; _icw4 = (v & 1) != 0; _imr = 0; _isr = 0; _irr = 0; _readIsr = false; }
                    else if ((v & 0x18) == 0x08) { if ((v & 3) == 2) _readIsr = false; if ((v & 3) == 3) _readIsr = true; }
                    else if ((v & 0xE0) == 0x20) { if (_isr != 0) _isr &= (byte)(_isr - 1); } // non-specific EOI
                    else if ((v & 0xE0) == 0x60) _isr &= (byte)~(1 << (v & 7));              // specific EOI
                    break;
                case 0x21:
                    if (_icwStep == 1) { _base = (byte)(v & 0xF8); _icwStep = 2; }
                    else if (_icwStep == 2) _icwStep = _icw4 ? 3 : 0;
                    else if (_icwStep == 3) { _autoEoi = (v & 2) != 0; _icwStep = 0; }
                    else _imr = v;
                    break;
                case 0xA0:
                    if ((v & 0x10) != 0) _slaveIcwStep = 1;
                    break;
                case 0xA1:
                    if (_slaveIcwStep is >= 1 and < 3) _slaveIcwStep++;
                    else { _slaveIcwStep = 0; _slaveImr = v; }
                    break;
                case 0x43: WritePitControl(v); break;
                case 0x40: WritePitCount(v); break;
                case >= 0x3F8 and <= 0x3FF: WriteUart(port - 0x3F8, v); break;
            }
        }
        WakeUp?.Invoke();
    }

    private void WritePitControl(byte v)
    {
        if ((v >> 6) != 0) return; // channel 0 only
        int access = (v >> 4) & 3;
        if (access == 0)
        {
            _pitLatch = CurrentCount();
            _pitLatched = true;
            _pitLatchLowNext = true;
            return;
        }
        _pitAccess = access;
        _pitMode = (v >> 1) & 7;
        _pitLowNext = true;
        _pitArmed = false;
    }

    private void WritePitCount(byte v)
    {
        if (_pitAccess == 1) _pitReload = v;
        else if (_pitAccess == 2) _pitReload = (ushort)(v << 8);
        else if (_pitLowNext) { _pitReload = (ushort)((_pitReload & 0xFF00) | v); _pitLowNext = false; return; }
        else { _pitReload = (ushort)((_pitReload & 0x00FF) | (v << 8)); _pitLowNext = true; }
        _pitPeriodTicks = _pitReload == 0 ? 65536 : _pitReload;
        _pitPeriodic = _pitMode is 2 or 3 or 6 or 7;
        _pitStart = Now();
        _pitDeadline = _pitStart + PitTicksToTimestamp(_pitPeriodTicks);
        _pitArmed = true;
    }

    private ushort CurrentCount()
    {
        if (_pitPeriodTicks == 0) return 0;
        long elapsed = (Now() - _pitStart) * 1193182 / Stopwatch.Frequency;
        long left = _pitPeriodic ? _pitPeriodTicks - elapsed % _pitPeriodTicks : Math.Max(0, _pitPeriodTicks - elapsed);
        return (ushort)left;
    }

    private byte ReadPitCount()
    {
        ushort c = _pitLatched ? _pitLatch : CurrentCount();
        byte r;
        if (_pitLatchLowNext) { r = (byte)c; _pitLatchLowNext = false; }
        else { r = (byte)(c >> 8); _pitLatchLowNext = true; _pitLatched = false; }
        return r;
    }

    private byte ReadUart(int reg)
    {
        bool dlab = (_lcr & 0x80) != 0;
        switch (reg)
        {
            case 0: return dlab ? _dll : (byte)0;
            case 1: return dlab ? _dlm : _ier;
            case 2:
            {
                byte fifo = (_fcr & 1) != 0 ? (byte)0xC0 : (byte)0;
                if (_thrPending && (_ier & 2) != 0) { _thrPending = false; return (byte)(fifo | 0x02); }
                return (byte)(fifo | 0x01);
            }
            case 3: return _lcr;
            case 4: return _mcr;
            case 5: return 0x60;
            case 6:
                if ((_mcr & 0x10) != 0)
                    return (byte)(((_mcr & 1) << 5) | ((_mcr & 2) << 3) | ((_mcr & 4) << 4) | ((_mcr & 8) << 4));
                return 0xB0; // DCD, DSR, CTS
            default: return _scr;
        }
    }

    private void WriteUart(int reg, byte v)
    {
        bool dlab = (_lcr & 0x80) != 0;
        switch (reg)
        {
            case 0:
                if (dlab) { _dll = v; return; }
                if ((_mcr & 0x10) == 0)
                {
                    _out.WriteByte(v);
                    _out.Flush();
                    SerialBytes++;
                    if (v == '\n')
                    {
                        if (_line.ToString().Contains("reboot: ", StringComparison.Ordinal)) OnGuestStopped?.Invoke();
                        _line.Clear();
                    }
                    else if (_line.Length < 200) _line.Append((char)v);
                }
                if ((_ier & 2) != 0) { _thrPending = true; Raise(4); }
                return;
            case 1:
                if (dlab) { _dlm = v; return; }
                bool thriOn = (v & 2) != 0 && (_ier & 2) == 0;
                _ier = (byte)(v & 0x0F);
                if (thriOn) { _thrPending = true; Raise(4); }
                return;
            case 2: _fcr = v; return;
            case 3: _lcr = v; return;
            case 4: _mcr = v; return;
            case 7: _scr = v; return;
        }
    }

    public void MmioRead(ulong address, Span<byte> data)
    {
        MmioAccesses++;
        data.Fill(0xFF);
    }

    public void MmioWrite(ulong address, ReadOnlySpan<byte> data) => MmioAccesses++;
}
