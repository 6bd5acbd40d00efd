using SharpVM.Devices.Bus;
using SharpVM.Devices.Legacy;

namespace SharpVM.Devices.Tests.Legacy;

public class AcpiPmDeviceTests
{
    private readonly List<PlatformEvent> _events = [];
    private readonly RecordingLine _sci = new();
    private readonly PioBus _bus = new();
    private readonly AcpiPmDevice _pm;

    public AcpiPmDeviceTests()
    {
        _pm = new AcpiPmDevice(_sci, _events.Add);
        _pm.Attach(_bus);
        new PciHostBridge(new PciBus(), _pm.ResetControl).Attach(_bus);
    }

    private ushort In16(ushort port)
    {
        Span<byte> b = stackalloc byte[2];
        _bus.Read(port, b);
        return (ushort)(b[0] | b[1] << 8);
    }

    private uint In32(ushort port)
    {
        Span<byte> b = stackalloc byte[4];
        _bus.Read(port, b);
        return BitConverter.ToUInt32(b);
    }

    private void Out16(ushort port, ushort v) => _bus.Write(port, [(byte)v, (byte)(v >> 8)]);

    [Fact]
    public void Slp_en_with_s5_sleep_type_powers_off()
    {
        // What ACPICA's acpi_hw_legacy_sleep does: read PM1_CNT, set SLP_TYP, write, then set SLP_EN.
        ushort cnt = In16(0x604);
        Assert.Equal(AcpiPmDevice.SciEnable, cnt & AcpiPmDevice.SciEnable);
        cnt = (ushort)((cnt & ~AcpiPmDevice.SlpTypMask) | (5 << AcpiPmDevice.SlpTypShift));
        Out16(0x604, cnt);
        Assert.Empty(_events);
        Out16(0x604, (ushort)(cnt | AcpiPmDevice.SlpEnable));
        Assert.Equal([PlatformEvent.PowerOff], _events);
        Assert.Equal(0, In16(0x604) & AcpiPmDevice.SlpEnable); // SLP_EN reads as 0
    }

    [Fact]
    public void Other_sleep_types_do_not_power_off()
    {
        Out16(0x604, (ushort)(AcpiPmDevice.SciEnable | 1 << AcpiPmDevice.SlpTypShift | AcpiPmDevice.SlpEnable));
        Assert.Empty(_events);
    }

    [Fact]
    public void Reset_register_0xCF9_through_the_pci_host_bridge_resets()
    {
        _bus.Write(0xCF9, [0x02]);
        Assert.Empty(_events);
        _bus.Write(0xCF9, [AcpiPmDevice.ResetControlValue]);
        Assert.Equal([PlatformEvent.Reset], _events);
    }

    [Fact]
    public void Power_button_sets_status_and_raises_sci_while_enabled_until_cleared()
    {
        _pm.PressPowerButton();
        Assert.False(_sci.Level); // not enabled yet
        Assert.Equal(AcpiPmDevice.PwrBtnStatus, In16(0x600) & AcpiPmDevice.PwrBtnStatus);
        Out16(0x602, AcpiPmDevice.PwrBtnStatus); // PM1_EN
        Assert.True(_sci.Level);
        Out16(0x600, AcpiPmDevice.PwrBtnStatus); // write 1 to clear
        Assert.False(_sci.Level);
        Assert.Equal(0, In16(0x600));
    }

    [Fact]
    public void Pm_timer_counts_at_3_58_MHz()
    {
        uint a = In32(0x608);
        Thread.Sleep(50);
        uint b = In32(0x608);
        double ms = (b - a) / 3579.545;
        Assert.InRange(ms, 40, 2000);
    }

    [Fact]
    public void State_round_trips()
    {
        Out16(0x602, 0x0100);
        _pm.PressPowerButton();
        var s = _pm.SaveState();
        var other = new AcpiPmDevice(new RecordingLine(), _ => { });
        other.RestoreState(s);
        Assert.Equal(s, other.SaveState());
    }
}
