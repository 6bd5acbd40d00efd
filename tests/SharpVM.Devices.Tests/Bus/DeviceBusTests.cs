using SharpVM.Devices.Bus;

namespace SharpVM.Devices.Tests.Bus;

public class DeviceBusTests
{
    private sealed class EchoDevice : IBusDevice
    {
        public List<(ulong Offset, byte[] Data)> Writes { get; } = [];
        public void Read(ulong offset, Span<byte> data) => data.Fill((byte)offset);
        public void Write(ulong offset, ReadOnlySpan<byte> data) => Writes.Add((offset, data.ToArray()));
    }

    [Fact]
    public void AccessesReachTheDeviceWithRangeRelativeOffsets()
    {
        var bus = new PioBus();
        var device = new EchoDevice();
        bus.Register(0x3F8, 8, device, "serial");
        var data = new byte[1];
        Assert.NotNull(bus.Read(0x3FD, data));
        Assert.Equal(5, data[0]);
        bus.Write(0x3F8, [0x41]);
        Assert.Equal(0UL, device.Writes[0].Offset);
        Assert.Equal([0x41], device.Writes[0].Data);
    }

    [Theory]
    [InlineData(0x3F0UL, 0x10UL)]
    [InlineData(0x3FFUL, 1UL)]
    [InlineData(0x3F0UL, 9UL)]
    public void OverlappingRegistrationsAreRefused(ulong start, ulong length)
    {
        var bus = new PioBus();
        bus.Register(0x3F8, 8, new EchoDevice(), "serial");
        var e = Assert.Throws<InvalidOperationException>(() => bus.Register(start, length, new EchoDevice(), "other"));
        Assert.Contains("overlaps serial", e.Message);
    }

    [Fact]
    public void AdjacentRangesAreFine()
    {
        var bus = new MmioBus();
        bus.Register(0x1000, 0x1000, new EchoDevice(), "a");
        bus.Register(0x2000, 0x1000, new EchoDevice(), "b");
        bus.Register(0x0, 0x1000, new EchoDevice(), "c");
        Assert.Equal("b", bus.Find(0x2FFF)!.Name);
        Assert.Equal("c", bus.Find(0x0)!.Name);
        Assert.Null(bus.Find(0x3000));
    }

    [Fact]
    public void RangesRegisteredInAnyOrderAreAllFound()
    {
        var bus = new MmioBus();
        // 64 ranges of 0x100 with gaps of 0x100, registered in a scrambled order (37 is coprime to 64).
        for (int i = 0; i < 64; i++)
        {
            int slot = i * 37 % 64;
            var range = bus.Register((ulong)slot * 0x200, 0x100, new EchoDevice(), $"d{slot}");
            Assert.Equal(i, range.Index);
        }
        for (int slot = 0; slot < 64; slot++)
        {
            ulong start = (ulong)slot * 0x200;
            Assert.Equal($"d{slot}", bus.Find(start)!.Name);
            Assert.Equal($"d{slot}", bus.Find(start + 0xFF)!.Name);
            Assert.Null(bus.Find(start + 0x100));
        }
        Assert.Equal(64, bus.Ranges.Count);
    }

    [Fact]
    public void UnclaimedReadsAreAllOnesAndCounted()
    {
        var bus = new MmioBus();
        var data = new byte[4];
        Assert.Null(bus.Read(0xFEE0_0000, data));
        Assert.All(data, b => Assert.Equal(0xFF, b));
        bus.Write(0x1234, [1]);
        Assert.Equal(1, bus.UnclaimedReads);
        Assert.Equal(1, bus.UnclaimedWrites);
    }

    [Fact]
    public void EmptyAndWrappingRangesAreRefused()
    {
        var bus = new MmioBus();
        Assert.Throws<ArgumentException>(() => bus.Register(0, 0, new EchoDevice(), "empty"));
        Assert.Throws<ArgumentException>(() => bus.Register(ulong.MaxValue, 2, new EchoDevice(), "wrap"));
    }
}
