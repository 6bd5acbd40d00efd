using SharpVM.Devices.Bus;

namespace SharpVM.Devices.Legacy;

/// <summary>Snapshot state of a <see cref="Cmos"/>: the 128 bytes, the index, and the guest's clock offset from host UTC.</summary>
public sealed record CmosState(byte[] Nvram, byte Index, bool NmiDisabled, long ClockOffsetTicks);

/// <summary>Counters for a <see cref="Cmos"/>.</summary>
public sealed class CmosMetrics
{
    public long Reads;
    public long Writes;
    public long ClockSets;
}

/// <summary>
/// The MC146818 RTC and CMOS NVRAM at ports 0x70 (index; bit 7 masks NMI) and 0x71 (data).
/// The clock reads the host's current UTC time (plus whatever offset the guest set), in BCD or binary
/// and 24- or 12-hour form per status register B; update-in-progress always reads 0 since the time is
/// computed on each read. NVRAM holds the BIOS memory-size fields (0x15-0x18, 0x30-0x31, 0x34-0x35,
/// 0x5B-0x5D) and the century (0x32). No RTC interrupts (IRQ 8) are generated.
/// </summary>
public sealed class Cmos : IBusDevice
{
    public const ushort BasePort = 0x70;
    public const int PortCount = 2;
    public const int Size = 128;

    public const byte Seconds = 0x00, SecondsAlarm = 0x01, Minutes = 0x02, MinutesAlarm = 0x03, Hours = 0x04, HoursAlarm = 0x05,
        DayOfWeek = 0x06, DayOfMonth = 0x07, Month = 0x08, Year = 0x09, StatusA = 0x0A, StatusB = 0x0B, StatusC = 0x0C,
        StatusD = 0x0D, CenturyIndex = 0x32;
    public const byte StatusAUpdateInProgress = 0x80, StatusBSet = 0x80, StatusBBinary = 0x04, StatusB24Hour = 0x02,
        StatusDValid = 0x80;

    private readonly object _lock = new();
    private readonly Func<DateTime> _utcNow;
    private readonly byte[] _nvram = new byte[Size];
    private byte _index;
    private bool _nmiDisabled;
    private TimeSpan _offset;

    public CmosMetrics Metrics { get; } = new();

    /// <summary>True while the guest has set bit 7 of the index port (NMI masked).</summary>
    public bool NmiDisabled { get { lock (_lock) return _nmiDisabled; } }

    /// <param name="ramBytes">Guest RAM size, for the BIOS memory-size fields.</param>
    /// <param name="lowRamEnd">End of RAM below 4 GiB (e.g. 3 GiB when RAM continues above 4 GiB).</param>
    /// <param name="utcNow">Clock source (for tests); the host's UTC clock by default.</param>
    public Cmos(ulong ramBytes, ulong lowRamEnd, Func<DateTime>? utcNow = null)
    {
        _utcNow = utcNow ?? (() => DateTime.UtcNow);
        _nvram[StatusA] = 0x26;                  // 32.768 kHz time base, 1.024 kHz periodic rate
        _nvram[StatusB] = StatusB24Hour;         // BCD, 24-hour
        _nvram[StatusD] = StatusDValid;
        SetMemorySize(ramBytes, lowRamEnd);
    }

    public BusRange Attach(PioBus bus) => bus.Register(BasePort, PortCount, this, "cmos");

    private void SetMemorySize(ulong ramBytes, ulong lowRamEnd)
    {
        const ulong Mib = 1 << 20;
        Set16(0x15, 640);                                            // base memory, KiB
        ulong extKib = Math.Min(lowRamEnd > Mib ? (lowRamEnd - Mib) / 1024 : 0, 0xFFFF); // 1 MiB..(64 MiB), KiB
        Set16(0x17, (ushort)extKib);
        Set16(0x30, (ushort)extKib);
        ulong above16 = lowRamEnd > 16 * Mib ? Math.Min((lowRamEnd - 16 * Mib) / (64 * 1024), 0xFFFF) : 0; // 64 KiB units
        Set16(0x34, (ushort)above16);
        ulong above4g = ramBytes > lowRamEnd ? (ramBytes - lowRamEnd) / (64 * 1024) : 0;
        _nvram[0x5B] = (byte)above4g;
        _nvram[0x5C] = (byte)(above4g >> 8);
        _nvram[0x5D] = (byte)(above4g >> 16);
    }

    private void Set16(int index, ushort value)
    {
        _nvram[index] = (byte)value;
        _nvram[index + 1] = (byte)(value >> 8);
    }

    public void Read(ulong offset, Span<byte> data)
    {
        if (data.IsEmpty) return;
        data.Fill(0xFF);
        lock (_lock)
        {
            if (offset == 0) data[0] = 0xFF; // the index port is write-only
            else { data[0] = ReadRegister(_index); Metrics.Reads++; }
        }
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty) return;
        lock (_lock)
        {
            if (offset == 0)
            {
                _index = (byte)(data[0] & 0x7F);
                _nmiDisabled = (data[0] & 0x80) != 0;
            }
            else { WriteRegister(_index, data[0]); Metrics.Writes++; }
        }
    }

    private DateTime GuestNow => _utcNow() + _offset;
    private bool Binary => (_nvram[StatusB] & StatusBBinary) != 0;
    private bool Hour24 => (_nvram[StatusB] & StatusB24Hour) != 0;

    private byte Encode(int value) => Binary ? (byte)value : (byte)(((value / 10) << 4) | (value % 10));
    private int Decode(byte value) => Binary ? value : ((value >> 4) * 10) + (value & 0x0F);

    private byte ReadRegister(byte index)
    {
        switch (index)
        {
            case <= Year or CenturyIndex when index is not (SecondsAlarm or MinutesAlarm or HoursAlarm):
                {
                    var t = GuestNow;
                    return index switch
                    {
                        Seconds => Encode(t.Second),
                        Minutes => Encode(t.Minute),
                        Hours => EncodeHour(t.Hour),
                        DayOfWeek => Encode((int)t.DayOfWeek + 1),
                        DayOfMonth => Encode(t.Day),
                        Month => Encode(t.Month),
                        Year => Encode(t.Year % 100),
                        _ => Encode(t.Year / 100),
                    };
                }
            case StatusA: return (byte)(_nvram[StatusA] & ~StatusAUpdateInProgress);
            case StatusC:
                {
                    byte c = _nvram[StatusC];
                    _nvram[StatusC] = 0; // reading C acknowledges RTC interrupts
                    return c;
                }
            case StatusD: return StatusDValid;
            default: return _nvram[index];
        }
    }

    private byte EncodeHour(int hour)
    {
        if (Hour24) return Encode(hour);
        int h12 = hour % 12 == 0 ? 12 : hour % 12;
        return (byte)(Encode(h12) | (hour >= 12 ? 0x80 : 0));
    }

    private int DecodeHour(byte value)
    {
        if (Hour24) return Decode(value);
        int h = Decode((byte)(value & 0x7F)) % 12;
        return (value & 0x80) != 0 ? h + 12 : h;
    }

    private void WriteRegister(byte index, byte value)
    {
        switch (index)
        {
            case Seconds or Minutes or Hours or DayOfWeek or DayOfMonth or Month or Year or CenturyIndex:
                SetClockField(index, value);
                break;
            case StatusA: _nvram[StatusA] = (byte)(value & 0x7F); break; // UIP is read-only
            case StatusB: _nvram[StatusB] = value; break;
            case StatusC or StatusD: break; // read-only
            default: _nvram[index] = value; break;
        }
    }

    /// <summary>The guest sets one field of the clock: keep the others, move the offset.</summary>
    private void SetClockField(byte index, byte value)
    {
        var hostNow = _utcNow();
        var now = hostNow + _offset;
        int year = now.Year, month = now.Month, day = now.Day, hour = now.Hour, minute = now.Minute, second = now.Second;
        switch (index)
        {
            case Seconds: second = Decode(value); break;
            case Minutes: minute = Decode(value); break;
            case Hours: hour = DecodeHour(value); break;
            case DayOfWeek: return; // derived from the date
            case DayOfMonth: day = Decode(value); break;
            case Month: month = Decode(value); break;
            case Year: year = year / 100 * 100 + Decode(value); break;
            case CenturyIndex: year = Decode(value) * 100 + year % 100; break;
        }
        try
        {
            day = Math.Min(day, DateTime.DaysInMonth(year, Math.Clamp(month, 1, 12)));
            var target = new DateTime(year, month, day, hour, minute, second, DateTimeKind.Utc);
            _offset = target.AddTicks(now.Ticks % TimeSpan.TicksPerSecond) - hostNow; // keep the sub-second phase
            Metrics.ClockSets++;
        }
        catch (ArgumentOutOfRangeException)
        {
            // A half-written or nonsensical date: ignore it, as a real RTC would show garbage until fixed.
        }
    }

    public CmosState SaveState()
    {
        lock (_lock) return new CmosState((byte[])_nvram.Clone(), _index, _nmiDisabled, _offset.Ticks);
    }

    public void RestoreState(CmosState s)
    {
        lock (_lock)
        {
            s.Nvram.AsSpan(0, Math.Min(Size, s.Nvram.Length)).CopyTo(_nvram);
            _index = (byte)(s.Index & 0x7F);
            _nmiDisabled = s.NmiDisabled;
            _offset = TimeSpan.FromTicks(s.ClockOffsetTicks);
        }
    }
}
