using SharpVM.Devices.Bus;
using SharpVM.Devices.Legacy;

namespace SharpVM.Devices.Tests.Legacy;

public class PciHostBridgeTests
{
    private readonly PioBus _bus = new();
    private readonly PciBus _pci = new();
    private readonly PciHostBridge _bridge;

    public PciHostBridgeTests()
    {
        _bridge = new PciHostBridge(_pci);
        _bridge.Attach(_bus);
    }

    private static uint Address(int bus, int slot, int fn, int reg) => 0x8000_0000u | (uint)(bus << 16 | slot << 11 | fn << 8 | reg);

    private void Out32(ushort port, uint v) => _bus.Write(port, BitConverter.GetBytes(v));

    private uint In32(ushort port)
    {
        Span<byte> b = stackalloc byte[4];
        _bus.Read(port, b);
        return BitConverter.ToUInt32(b);
    }

    private uint ConfigRead(int slot, int fn, int reg, int bus = 0)
    {
        Out32(0xCF8, Address(bus, slot, fn, reg & ~3));
        return In32(0xCFC);
    }

    [Fact]
    public void Linux_type1_probe_sees_the_address_register_latch()
    {
        _bus.Write(0xCFB, [0x01]);
        uint saved = In32(0xCF8);
        Out32(0xCF8, 0x8000_0000);
        Assert.Equal(0x8000_0000u, In32(0xCF8));
        Out32(0xCF8, saved);
    }

    [Fact]
    public void Host_bridge_at_00_00_0_and_empty_slots_read_all_ones()
    {
        Assert.Equal(0x0D57_8086u, ConfigRead(0, 0, 0));
        Assert.Equal(0x0600_0000u, ConfigRead(0, 0, 8) & 0xFFFF_FF00);
        for (int slot = 1; slot < 32; slot++) Assert.Equal(0xFFFF_FFFFu, ConfigRead(slot, 0, 0));
        Assert.Equal(0xFFFF_FFFFu, ConfigRead(0, 1, 0));
        Assert.Equal(0xFFFF_FFFFu, ConfigRead(0, 0, 0, bus: 1));
    }

    [Fact]
    public void Disabled_config_address_reads_all_ones()
    {
        Out32(0xCF8, 0x0000_0000);
        Assert.Equal(0xFFFF_FFFFu, In32(0xCFC));
    }

    [Fact]
    public void Byte_and_word_accesses_hit_the_right_register_bytes()
    {
        Out32(0xCF8, Address(0, 0, 0, 0));
        Span<byte> b = stackalloc byte[2];
        _bus.Read(0xCFE, b);
        Assert.Equal(0x0D57, b[0] | b[1] << 8);
        Span<byte> one = stackalloc byte[1];
        _bus.Read(0xCFD, one);
        Assert.Equal(0x80, one[0]);
    }

    private sealed class FakeFunction : IPciFunction
    {
        public readonly byte[] Config = new byte[256];
        public void ReadConfig(int offset, Span<byte> data) => Config.AsSpan(offset, data.Length).CopyTo(data);
        public void WriteConfig(int offset, ReadOnlySpan<byte> data) => data.CopyTo(Config.AsSpan(offset));
    }

    [Fact]
    public void Added_functions_are_reachable_and_writable()
    {
        var f = new FakeFunction();
        BitConverter.GetBytes(0x1041_1AF4u).CopyTo(f.Config, 0); // virtio-net (modern)
        int slot = _pci.FirstFreeSlot();
        Assert.Equal(1, slot);
        _pci.Add(slot, 0, f);
        Assert.Equal(0x1041_1AF4u, ConfigRead(1, 0, 0));
        Out32(0xCF8, Address(0, 1, 0, 0x10));
        Out32(0xCFC, 0xC000_0000);
        Assert.Equal(0xC000_0000u, BitConverter.ToUInt32(f.Config, 0x10));
        Assert.Throws<InvalidOperationException>(() => _pci.Add(1, 0, new FakeFunction()));
        Assert.Equal(2, _pci.FirstFreeSlot());
    }

    [Fact]
    public void Config_address_state_round_trips()
    {
        Out32(0xCF8, Address(0, 3, 1, 0x40));
        var s = _bridge.SaveState();
        var other = new PciHostBridge(new PciBus());
        other.RestoreState(s);
        Assert.Equal(s, other.SaveState());
    }
}
