using SharpVM.Devices.Bus;
using SharpVM.Devices.Legacy;

namespace SharpVM.Devices.Tests.Legacy;

public class CmosTests
{
    private DateTime _now = new(2026, 11, 21, 23, 59, 58, DateTimeKind.Utc);
    private readonly PioBus _bus = new();
    private readonly Cmos _cmos;

    public CmosTests()
    {
        _cmos = new Cmos(5UL << 30, 3UL << 30, () => _now);
        _cmos.Attach(_bus);
    }

    private byte Reg(byte index)
    {
        _bus.Write(0x70, [index]);
        Span<byte> b = stackalloc byte[1];
        _bus.Read(0x71, b);
        return b[0];
    }

    private void SetReg(byte index, byte value)
    {
        _bus.Write(0x70, [index]);
        _bus.Write(0x71, [value]);
    }

    [Fact]
    public void Time_reads_in_bcd_24_hour_by_default()
    {
        Assert.Equal(0x58, Reg(Cmos.Seconds));
        Assert.Equal(0x59, Reg(Cmos.Minutes));
        Assert.Equal(0x23, Reg(Cmos.Hours));
        Assert.Equal(0x21, Reg(Cmos.DayOfMonth));
        Assert.Equal(0x11, Reg(Cmos.Month));
        Assert.Equal(0x26, Reg(Cmos.Year));
        Assert.Equal(0x20, Reg(Cmos.CenturyIndex));
        Assert.Equal(0x07, Reg(Cmos.DayOfWeek)); // Saturday = 7 (Sunday = 1)
    }

    [Fact]
    public void Binary_and_12_hour_modes_follow_status_b()
    {
        SetReg(Cmos.StatusB, Cmos.StatusBBinary); // binary, 12-hour
        Assert.Equal(58, Reg(Cmos.Seconds));
        Assert.Equal(0x80 | 11, Reg(Cmos.Hours)); // 23:00 = 11 PM
        Assert.Equal(26, Reg(Cmos.Year));
    }

    [Fact]
    public void Host_time_is_current_on_each_read()
    {
        Assert.Equal(0x58, Reg(Cmos.Seconds));
        _now = _now.AddSeconds(3);
        Assert.Equal(0x01, Reg(Cmos.Seconds));
        Assert.Equal(0x00, Reg(Cmos.Minutes));
        Assert.Equal(0x22, Reg(Cmos.DayOfMonth));
    }

    [Fact]
    public void Real_host_clock_is_used_by_default()
    {
        var cmos = new Cmos(256UL << 20, 256UL << 20);
        var bus = new PioBus();
        cmos.Attach(bus);
        bus.Write(0x70, [Cmos.Year]);
        Span<byte> b = stackalloc byte[1];
        bus.Read(0x71, b);
        int year = (b[0] >> 4) * 10 + (b[0] & 0xF);
        Assert.Equal(DateTime.UtcNow.Year % 100, year);
    }

    [Fact]
    public void Status_registers_uip_low_valid_ram_and_c_cleared()
    {
        Assert.Equal(0, Reg(Cmos.StatusA) & Cmos.StatusAUpdateInProgress);
        Assert.Equal(0x26, Reg(Cmos.StatusA));
        Assert.Equal(Cmos.StatusB24Hour, Reg(Cmos.StatusB));
        Assert.Equal(0, Reg(Cmos.StatusC));
        Assert.Equal(Cmos.StatusDValid, Reg(Cmos.StatusD));
    }

    [Fact]
    public void Guest_can_set_the_clock_as_an_offset()
    {
        SetReg(Cmos.Hours, 0x10);
        Assert.Equal(0x10, Reg(Cmos.Hours));
        Assert.Equal(0x59, Reg(Cmos.Minutes));
        _now = _now.AddMinutes(1);
        Assert.Equal(0x11, Reg(Cmos.Hours)); // 10:59:58 + 1 minute
        Assert.Equal(0x00, Reg(Cmos.Minutes));
    }

    [Fact]
    public void Memory_size_fields_describe_ram()
    {
        // 5 GiB guest: 3 GiB below 4 GiB, 2 GiB above.
        Assert.Equal(640, Reg(0x15) | Reg(0x16) << 8);
        Assert.Equal(0xFFFF, Reg(0x17) | Reg(0x18) << 8);
        Assert.Equal(0xFFFF, Reg(0x30) | Reg(0x31) << 8);
        Assert.Equal((3072 - 16) * 16, Reg(0x34) | Reg(0x35) << 8); // 64 KiB units from 16 MiB to 3 GiB
        Assert.Equal((int)((2L << 30) / 65536), Reg(0x5B) | Reg(0x5C) << 8 | Reg(0x5D) << 16);
        var small = new Cmos(128UL << 20, 128UL << 20);
        var s = small.SaveState().Nvram;
        Assert.Equal((128 - 16) * 16, s[0x34] | s[0x35] << 8); // 64 KiB units above 16 MiB
        Assert.Equal(0, s[0x5B] | s[0x5C] | s[0x5D]);
    }

    [Fact]
    public void Nvram_bytes_hold_values_and_nmi_mask_bit_is_tracked()
    {
        SetReg(0x40, 0xAB);
        Assert.Equal(0xAB, Reg(0x40));
        _bus.Write(0x70, [0x80 | 0x40]);
        Assert.True(_cmos.NmiDisabled);
        Span<byte> b = stackalloc byte[1];
        _bus.Read(0x71, b);
        Assert.Equal(0xAB, b[0]);
        _bus.Write(0x70, [0x40]);
        Assert.False(_cmos.NmiDisabled);
    }

    [Fact]
    public void State_round_trips()
    {
        SetReg(0x41, 0x99);
        SetReg(Cmos.Year, 0x30);
        var s = _cmos.SaveState();
        var other = new Cmos(1UL << 20 << 8, 1UL << 20 << 8, () => _now);
        other.RestoreState(s);
        var t = other.SaveState();
        Assert.Equal(s.Nvram, t.Nvram);
        Assert.Equal(s.ClockOffsetTicks, t.ClockOffsetTicks);
        Assert.NotEqual(0, s.ClockOffsetTicks);
    }
}
