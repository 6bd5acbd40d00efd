using SharpVM.Devices.Bus;
using SharpVM.Devices.Legacy;

namespace SharpVM.Devices.Tests.Legacy;

public class MiscPortsTests
{
    [Fact]
    public void Ignored_ports_are_claimed_and_port_80_keeps_the_post_code()
    {
        var bus = new PioBus();
        var ports = new IgnoredPorts();
        ports.AttachDefaults(bus);
        bus.Write(0x80, [0x42]);
        bus.Write(0xED, [0x00]);
        bus.Write(0x87, [0x00]);
        Span<byte> b = stackalloc byte[1];
        bus.Read(0x80, b);
        Assert.Equal(0x42, b[0]);
        bus.Read(0xED, b);
        Assert.Equal(0xFF, b[0]);
        Assert.Equal(0, bus.UnclaimedWrites);
        Assert.Equal(0, bus.UnclaimedReads);
        Assert.Equal(0x42, ports.LastPostCode);
        var other = new IgnoredPorts();
        other.RestoreState(ports.SaveState());
        Assert.Equal(0x42, other.LastPostCode);
    }

    [Fact]
    public void Port_92_fast_reset_raises_reset_and_a20_reads_on()
    {
        var events = new List<PlatformEvent>();
        var bus = new PioBus();
        new SystemControlPortA(events.Add).Attach(bus);
        Span<byte> b = stackalloc byte[1];
        bus.Read(0x92, b);
        Assert.Equal(SystemControlPortA.A20, b[0] & SystemControlPortA.A20);
        bus.Write(0x92, [0x02]);
        Assert.Empty(events);
        bus.Write(0x92, [0x03]);
        Assert.Equal([PlatformEvent.Reset], events);
    }

    [Fact]
    public void Port_92_state_round_trips_without_the_reset_bit()
    {
        var port = new SystemControlPortA(_ => { });
        port.Write(0, [0x03]);
        var s = port.SaveState();
        Assert.Equal(SystemControlPortA.A20, s.Value);
        var other = new SystemControlPortA(_ => throw new InvalidOperationException("restoring must not reset"));
        other.RestoreState(s);
        Assert.Equal(s, other.SaveState());
    }

    [Fact]
    public void All_legacy_devices_coexist_on_one_bus_at_their_standard_ports()
    {
        var bus = new PioBus();
        var pm = new AcpiPmDevice(new RecordingLine(), _ => { });
        new Serial16550(new RecordingLine(), _ => { }).Attach(bus);
        new I8042(_ => { }).Attach(bus);
        new Cmos(256UL << 20, 256UL << 20).Attach(bus);
        new PciHostBridge(new PciBus(), pm.ResetControl).Attach(bus);
        pm.Attach(bus);
        new SystemControlPortA(_ => { }).Attach(bus);
        new IgnoredPorts().AttachDefaults(bus);
        Assert.Null(bus.Find(0x61)); // the PIT/speaker port belongs to another device
        Assert.NotNull(bus.Find(0x3FF));
        Assert.NotNull(bus.Find(0x60B));
        Assert.NotNull(bus.Find(0xCFF));
    }
}

public class LegacyPlatformTests
{
    [Fact]
    public void Create_claims_every_standard_port_and_state_round_trips()
    {
        var bus = new PioBus();
        var lines = new Dictionary<int, RecordingLine>();
        var events = new List<PlatformEvent>();
        var output = new List<byte>();
        var p = LegacyPlatform.Create(bus, n => lines.TryGetValue(n, out var l) ? l : lines[n] = new RecordingLine(),
            events.Add, d => output.AddRange(d.ToArray()), 512UL << 20, 512UL << 20);
        Assert.Equal([1, 4, 9, 12], lines.Keys.Order());
        foreach (ulong port in new ulong[] { 0x3F8, 0x60, 0x64, 0x70, 0x71, 0x80, 0x87, 0x92, 0xED, 0x600, 0x608, 0xCF8, 0xCFC })
            Assert.NotNull(bus.Find(port));
        bus.Write(0x3F8, "A"u8);
        Assert.Equal("A"u8.ToArray(), output.ToArray());
        bus.Write(0xCF9, [0x06]);
        bus.Write(0x604, [0x01, 0x34]); // SLP_TYP 5 | SLP_EN
        Assert.Equal([PlatformEvent.Reset, PlatformEvent.PowerOff], events);
        var state = p.SaveState();
        var q = LegacyPlatform.Create(new PioBus(), _ => new RecordingLine(), _ => { }, _ => { }, 512UL << 20, 512UL << 20);
        q.RestoreState(state);
        Assert.Equal(state.AcpiPm, q.SaveState().AcpiPm);
        Assert.Equal(state.Cmos.Nvram, q.SaveState().Cmos.Nvram);
    }
}
