using SharpVM.Devices.Bus;
using SharpVM.Devices.Interrupts;
using SharpVM.Devices.Legacy;
using SharpVM.Devices.Timers;

namespace SharpVM.Devices.Tests;

/// <summary>
/// A hostile guest: random reads and writes of every width, at random offsets of every device the Linux platform
/// registers (legacy ports, PIC, PIT, IOAPIC, LAPIC/MSI window), with time passing in between. No device may throw
/// (the bus would take it off and log it: a device bug the guest could trigger), and none may stall.
/// </summary>
public class DeviceFuzzTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void RandomAccessesToEveryPlatformDeviceNeverBreakOne(int seed)
    {
        var clock = new ManualDeviceClock();
        using var interrupts = new EmulatedInterruptPlatform(2, clock);
        var pio = new PioBus();
        var mmio = new MmioBus();
        interrupts.RegisterDevices(pio, mmio, includeSystemControlPort: false);
        var events = new List<PlatformEvent>();
        long serialBytes = 0;
        LegacyPlatform.Create(pio, interrupts.GetInterruptLine, e => events.Add(e), bytes => serialBytes += bytes.Length,
            ramBytes: 512UL << 20, lowRamEnd: 512UL << 20);

        var rnd = new Random(seed);
        var buses = new DeviceBus[] { pio, mmio };
        var data = new byte[8];
        for (int i = 0; i < 200_000; i++)
        {
            var bus = buses[rnd.Next(buses.Length)];
            var ranges = bus.Ranges;
            var range = ranges[rnd.Next(ranges.Count)];
            // Mostly inside a device (where the state machines are), sometimes just past its end.
            ulong offset = (ulong)rnd.NextInt64(0, (long)Math.Min(range.Length + 4, 0x1000));
            int width = bus is MmioBus ? 1 << rnd.Next(4) : 1 << rnd.Next(3);
            var span = data.AsSpan(0, width);
            if (rnd.Next(2) == 0)
            {
                // Interesting values more often than uniform noise: zero, all ones, small numbers, single bits.
                ulong value = rnd.Next(4) switch { 0 => 0, 1 => ulong.MaxValue, 2 => (ulong)rnd.Next(0, 256), _ => 1UL << rnd.Next(64) };
                BitConverter.TryWriteBytes(data, value);
                bus.Write(range.Start + offset, span);
            }
            else bus.Read(range.Start + offset, span);
            if (i % 64 == 0) clock.Advance(rnd.NextInt64(0, 5_000_000)); // timers (PIT, LAPIC) fire as time passes
        }

        var broken = buses.SelectMany(b => b.Ranges).Where(r => r.Failure is not null).Select(r => $"{r}: {r.Failure}").ToList();
        Assert.True(broken.Count == 0, "devices broken by guest accesses:\n" + string.Join("\n", broken));
        Assert.True(serialBytes > 0, "no write reached COM1's transmitter: the accesses did not reach the devices");
    }
}
