using System.Diagnostics;
using SharpVM.Devices.Bus;

namespace SharpVM.Devices.Legacy;

/// <summary>Snapshot state of an <see cref="AcpiPmDevice"/>.</summary>
public sealed record AcpiPmDeviceState(ushort Pm1Status, ushort Pm1Enable, ushort Pm1Control, byte ResetControl);

/// <summary>Counters for an <see cref="AcpiPmDevice"/>.</summary>
public sealed class AcpiPmDeviceMetrics
{
    public long PowerOffRequests;
    public long ResetRequests;
    public long SciRaised;
}

/// <summary>
/// The ACPI fixed hardware of a PC (not hardware-reduced): the PM1a event block (PM1_STS, PM1_EN),
/// the PM1a control block (SCI_EN, SLP_TYP, SLP_EN) and the 24/32-bit PM timer at 3.579545 MHz, at
/// ports base+0..3, base+4..5 and base+8..11 (base 0x600 by default, as the FADT says). Writing
/// SLP_EN with SLP_TYP = 5 (the DSDT's \_S5_) raises <see cref="PlatformEvent.PowerOff"/>. The reset
/// control register (port 0xCF9, reached through <see cref="ResetControl"/>) raises
/// <see cref="PlatformEvent.Reset"/> when bit 2 (RST_CPU) is written as 1. The power button sets
/// PWRBTN_STS and raises the SCI (IRQ 9, level) while enabled.
/// </summary>
public sealed class AcpiPmDevice : IBusDevice
{
    public const ushort DefaultBasePort = 0x600;
    public const ushort DefaultSciIrq = 9;
    public const int PortCount = 12;
    public const byte EventBlockOffset = 0, EventBlockLength = 4, ControlBlockOffset = 4, ControlBlockLength = 2,
        TimerOffset = 8, TimerLength = 4;
    public const ushort ResetControlPort = 0xCF9;
    public const byte ResetControlValue = 0x06; // SYS_RST | RST_CPU, what the FADT reset register asks for
    public const byte SleepTypeS5 = 5;
    public const long TimerFrequency = 3_579_545;

    // PM1_STS / PM1_EN bits.
    public const ushort TmrStatus = 1 << 0, PwrBtnStatus = 1 << 8, WakeStatus = 1 << 15;
    // PM1_CNT bits.
    public const ushort SciEnable = 1 << 0, SlpTypShift = 10, SlpTypMask = 7 << SlpTypShift, SlpEnable = 1 << 13;

    private readonly object _lock = new();
    private readonly IInterruptLine _sci;
    private readonly Action<PlatformEvent> _platformEvent;
    private readonly long _timerEpoch = Stopwatch.GetTimestamp();
    private ushort _status, _enable, _control = SciEnable;
    private byte _resetControl;
    private bool _sciLevel;

    public AcpiPmDeviceMetrics Metrics { get; } = new();

    /// <summary>The reset control register (byte port 0xCF9): pass it to <see cref="PciHostBridge"/>.</summary>
    public IBusDevice ResetControl { get; }

    public AcpiPmDevice(IInterruptLine sci, Action<PlatformEvent> platformEvent)
    {
        _sci = sci;
        _platformEvent = platformEvent;
        ResetControl = new ResetControlRegister(this);
    }

    public BusRange Attach(PioBus bus, ushort basePort = DefaultBasePort) => bus.Register(basePort, PortCount, this, "acpi-pm");

    /// <summary>The PM timer now: 32 bits wide (the FADT sets TMR_VAL_EXT), 3.579545 MHz.</summary>
    public uint TimerValue => (uint)((Stopwatch.GetTimestamp() - _timerEpoch) * (double)TimerFrequency / Stopwatch.Frequency);

    /// <summary>Presses the power button: the guest's ACPI driver sees a fixed power-button event (graceful shutdown).</summary>
    public void PressPowerButton()
    {
        lock (_lock)
        {
            _status |= PwrBtnStatus;
            UpdateSci();
        }
    }

    public void Read(ulong offset, Span<byte> data)
    {
        lock (_lock)
            for (int i = 0; i < data.Length; i++) data[i] = ReadByte((int)offset + i);
    }

    private byte ReadByte(int offset) => offset switch
    {
        0 => (byte)_status,
        1 => (byte)(_status >> 8),
        2 => (byte)_enable,
        3 => (byte)(_enable >> 8),
        4 => (byte)_control,
        5 => (byte)(_control >> 8),
        >= 8 and < 12 => (byte)(TimerValue >> (8 * (offset - 8))),
        _ => 0xFF,
    };

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        bool powerOff = false;
        lock (_lock)
        {
            int o = (int)offset;
            switch (o)
            {
                case 0 or 1:
                    {
                        // PM1_STS: write 1 to clear.
                        ushort mask = Compose(o - 0, data);
                        _status &= (ushort)~mask;
                        break;
                    }
                case 2 or 3:
                    _enable = Merge(_enable, o - 2, data);
                    break;
                case 4 or 5:
                    {
                        ushort value = Merge(_control, o - 4, data);
                        if ((value & SlpEnable) != 0)
                        {
                            int slpTyp = (value & SlpTypMask) >> SlpTypShift;
                            if (slpTyp == SleepTypeS5) powerOff = true;
                        }
                        _control = (ushort)((value & ~SlpEnable) | SciEnable); // SLP_EN is write-only; ACPI mode is fixed on
                        break;
                    }
                default: break; // the timer is read-only
            }
            UpdateSci();
        }
        if (powerOff)
        {
            Interlocked.Increment(ref Metrics.PowerOffRequests);
            _platformEvent(PlatformEvent.PowerOff);
        }
    }

    private static ushort Compose(int byteIndex, ReadOnlySpan<byte> data)
    {
        ushort v = 0;
        for (int i = 0; i < data.Length && byteIndex + i < 2; i++) v |= (ushort)(data[i] << (8 * (byteIndex + i)));
        return v;
    }

    private static ushort Merge(ushort old, int byteIndex, ReadOnlySpan<byte> data)
    {
        ushort v = old;
        for (int i = 0; i < data.Length && byteIndex + i < 2; i++)
        {
            int shift = 8 * (byteIndex + i);
            v = (ushort)((v & ~(0xFF << shift)) | (data[i] << shift));
        }
        return v;
    }

    private void UpdateSci()
    {
        bool level = (_status & _enable & (TmrStatus | PwrBtnStatus)) != 0 && (_control & SciEnable) != 0;
        if (level == _sciLevel) return;
        _sciLevel = level;
        if (level) Metrics.SciRaised++;
        _sci.SetLevel(level);
    }

    private void WriteResetControl(byte value)
    {
        bool reset;
        lock (_lock)
        {
            reset = (value & 0x04) != 0;
            _resetControl = (byte)(value & 0x0A);
        }
        if (reset)
        {
            Interlocked.Increment(ref Metrics.ResetRequests);
            _platformEvent(PlatformEvent.Reset);
        }
    }

    public AcpiPmDeviceState SaveState()
    {
        lock (_lock) return new AcpiPmDeviceState(_status, _enable, _control, _resetControl);
    }

    public void RestoreState(AcpiPmDeviceState s)
    {
        lock (_lock)
        {
            (_status, _enable, _control, _resetControl) = (s.Pm1Status, s.Pm1Enable, (ushort)(s.Pm1Control | SciEnable), s.ResetControl);
            _sciLevel = false;
            UpdateSci();
        }
    }

    private sealed class ResetControlRegister(AcpiPmDevice owner) : IBusDevice
    {
        public void Read(ulong offset, Span<byte> data)
        {
            lock (owner._lock) data.Fill(owner._resetControl);
        }

        public void Write(ulong offset, ReadOnlySpan<byte> data)
        {
            if (!data.IsEmpty) owner.WriteResetControl(data[0]);
        }
    }
}
