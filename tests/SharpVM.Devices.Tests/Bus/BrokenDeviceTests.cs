using Microsoft.Extensions.Logging;
using SharpVM.Devices.Bus;

namespace SharpVM.Devices.Tests.Bus;

/// <summary>A device that throws is taken off the bus with the reason logged; the bus (and the VM) goes on.</summary>
public class BrokenDeviceTests
{
    private sealed class FailsOnSecondWrite : IBusDevice
    {
        public int Calls;
        public void Read(ulong offset, Span<byte> data) { Calls++; data.Fill(0x42); }
        public void Write(ulong offset, ReadOnlySpan<byte> data)
        {
            if (++Calls == 2) throw new InvalidOperationException("descriptor index 9999 is past the ring");
        }
    }

    private sealed class RecordingLogger : ILogger
    {
        public List<(LogLevel Level, string Message, Exception? Exception)> Entries { get; } = [];
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Entries.Add((logLevel, formatter(state, exception), exception));
    }

    [Fact]
    public void ThrowingDeviceIsMarkedBrokenLoggedOnceAndReadsAllOnesAfterwards()
    {
        var log = new RecordingLogger();
        var bus = new MmioBus { Logger = log };
        var device = new FailsOnSecondWrite();
        var first = bus.Register(0xD000_0000, 0x1000, device, "virtio-blk");
        var second = bus.Register(0xD000_2000, 0x1000, device, "virtio-blk notify");
        var healthy = bus.Register(0xD000_4000, 0x1000, new FailsOnSecondWrite(), "other");

        bus.Write(0xD000_0010, [1]);
        Assert.Null(first.Failure);
        var range = bus.Write(0xD000_0010, [2]); // throws inside: must not escape
        Assert.Same(first, range);
        Assert.Contains("descriptor index 9999", first.Failure);
        Assert.Equal(first.Failure, second.Failure); // every range of that device goes
        Assert.Null(healthy.Failure);

        var data = new byte[4];
        bus.Read(0xD000_2000, data);
        Assert.Equal([0xFF, 0xFF, 0xFF, 0xFF], data);
        bus.Write(0xD000_0000, [3]);
        Assert.Equal(2, device.Calls); // the broken device is not called again

        bus.Read(0xD000_4000, data);
        Assert.Equal([0x42, 0x42, 0x42, 0x42], data);

        var error = Assert.Single(log.Entries, e => e.Level == LogLevel.Error);
        Assert.Contains("virtio-blk is broken", error.Message);
        Assert.Contains("write of 1 byte(s) at 0xd0000010", error.Message);
        Assert.IsType<InvalidOperationException>(error.Exception);
    }

    [Fact]
    public void UnclaimedAccessesAreLoggedOncePerAddressAtDebugLevel()
    {
        var log = new RecordingLogger();
        var bus = new PioBus { Logger = log };
        var data = new byte[1];
        bus.Read(0x278, data);
        bus.Read(0x278, data);
        bus.Write(0x279, [0]);
        Assert.Equal(2, log.Entries.Count);
        Assert.All(log.Entries, e => Assert.Equal(LogLevel.Debug, e.Level));
        Assert.Contains("0x278: no device there", log.Entries[0].Message);
        Assert.Equal(2, bus.UnclaimedReads);
    }
}
