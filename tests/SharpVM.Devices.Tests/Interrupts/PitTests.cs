using System.Diagnostics;
using SharpVM.Devices.Bus;
using SharpVM.Devices.Timers;

namespace SharpVM.Devices.Tests.Interrupts;

public class PitTests
{
    private readonly ManualDeviceClock _clock = new();
    private readonly RecordingLine _irq0 = new();
    private readonly Pit8254 _pit;
    private readonly PioBus _pio = new();

    public PitTests()
    {
        _pit = new Pit8254(_clock, _irq0);
        _pio.Register(0x40, 4, _pit.CounterPorts, "pit");
        _pio.Register(0x61, 1, _pit.SystemControlPortDevice, "port61");
    }

    private static long Ns(long clocks) => clocks * 1_000_000_000 / Pit8254.InputFrequencyHz;

    private void Program(int channel, int mode, int count)
    {
        _pio.Out8(0x43, (byte)((channel << 6) | 0x30 | (mode << 1)));
        _pio.Out8((ushort)(0x40 + channel), (byte)count);
        _pio.Out8((ushort)(0x40 + channel), (byte)(count >> 8));
    }

    private int ReadLatched(int channel)
    {
        _pio.Out8(0x43, (byte)(channel << 6)); // counter latch command
        int lo = _pio.In8((ushort)(0x40 + channel));
        int hi = _pio.In8((ushort)(0x40 + channel));
        return lo | (hi << 8);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void Channel0_PeriodicModes_PulseIrq0EveryPeriod(int mode)
    {
        Program(0, mode, 1193); // ~1 kHz, as Linux HZ=1000 would
        for (int i = 0; i < 100; i++) _clock.Advance(100_000);
        Assert.Equal(10, _irq0.RisingEdges);
        Assert.Equal(10, _pit.Irq0Pulses);
        Assert.Equal(0, _pit.Irq0Missed);
        _clock.Advance(90_000_000);
        Assert.Equal(100, _pit.Irq0Pulses + _pit.Irq0Missed);
    }

    [Fact]
    public void Mode3_SquareWaveOutput()
    {
        Program(0, 3, 11932); // 10 ms
        _clock.Advance(2_000_000);
        Assert.True(_pit.GetOut(0));
        _clock.Advance(5_000_000);
        Assert.False(_pit.GetOut(0));
        _clock.Advance(4_000_000);
        Assert.True(_pit.GetOut(0));
    }

    [Fact]
    public void Mode2_CountsDownAndReloads()
    {
        Program(0, 2, 1000);
        _clock.AdvanceTo(Ns(250) + 1);
        Assert.Equal(750, ReadLatched(0));
        _clock.AdvanceTo(Ns(1250) + 1);
        Assert.Equal(750, ReadLatched(0));
    }

    [Fact]
    public void Mode0_InterruptOnTerminalCountFiresOnce()
    {
        Program(0, 0, 0x1000);
        Assert.False(_pit.GetOut(0));
        _clock.Advance(Ns(0x1000) - 1000);
        Assert.Equal(0, _irq0.RisingEdges);
        _clock.Advance(2000);
        Assert.Equal(1, _irq0.RisingEdges);
        Assert.True(_pit.GetOut(0));
        _clock.Advance(500_000_000);
        Assert.Equal(1, _irq0.RisingEdges);
    }

    [Fact]
    public void TinyCount_IsRateLimited()
    {
        Program(0, 2, 2);
        _clock.Advance(1_000_000);
        Assert.InRange(_pit.Irq0Pulses, 1, 1_000_000 / Pit8254.MinimumIrqPeriodNanoseconds);
    }

    [Fact]
    public void Channel2_ViaPort61_CountdownSetsOut()
    {
        // Linux pit_calibrate_tsc: gate on, speaker off, channel 2 mode 0, count 11931 (~10 ms).
        _pio.Out8(0x61, (byte)((_pio.In8(0x61) & ~0x02) | 0x01));
        _pio.Out8(0x43, 0xB0);
        _pio.Out8(0x42, 11931 & 0xFF);
        _pio.Out8(0x42, 11931 >> 8);
        Assert.Equal(0, _pio.In8(0x61) & 0x20);
        Assert.Equal(0x01, _pio.In8(0x61) & 0x0F);

        _clock.Advance(5_000_000);
        int mid = ReadLatched(2);
        Assert.InRange(mid, 11931 - 5967, 11931 - 5964);
        Assert.Equal(0, _pio.In8(0x61) & 0x20);

        int polls = 0;
        while ((_pio.In8(0x61) & 0x20) == 0 && polls < 100)
        {
            _clock.Advance(100_000);
            polls++;
        }
        Assert.InRange(polls, 49, 51);
        Assert.Equal(0, _irq0.RisingEdges); // channel 2 does not interrupt
    }

    [Fact]
    public void Channel2_GateLowPausesMode0()
    {
        _pio.Out8(0x61, 0x00);
        Program(2, 0, 1000);
        _clock.Advance(10_000_000);
        Assert.Equal(1000, ReadLatched(2));
        Assert.Equal(0, _pio.In8(0x61) & 0x20);
        _pio.Out8(0x61, 0x01);
        _clock.AdvanceTo(_clock.NowNanoseconds + Ns(400) + 1);
        Assert.Equal(600, ReadLatched(2));
        _clock.Advance(Ns(600) + 1000);
        Assert.NotEqual(0, _pio.In8(0x61) & 0x20);
    }

    [Fact]
    public void LatchedCount_IsFrozenUntilRead_AndLsbMsbAlternate()
    {
        Program(2, 0, 0xFFFF);
        _pio.Out8(0x61, 0x01);
        _pio.Out8(0x43, 0x80); // latch channel 2
        _clock.Advance(1_000_000);
        int lo = _pio.In8(0x42), hi = _pio.In8(0x42);
        Assert.Equal(0xFFFF, lo | (hi << 8));
        // Unlatched reads alternate LSB/MSB of the live count.
        lo = _pio.In8(0x42);
        hi = _pio.In8(0x42);
        Assert.InRange(lo | (hi << 8), 0xFFFF - 1195, 0xFFFF - 1190);
    }

    [Fact]
    public void ReadBack_LatchesStatus()
    {
        Program(2, 0, 100);
        _pio.Out8(0x61, 0x01);
        _pio.Out8(0x43, 0xE8); // read-back: status only, counter 2
        Assert.Equal(0x30, _pio.In8(0x42)); // OUT low, LSB/MSB, mode 0, binary
        _clock.Advance(1_000_000);
        _pio.Out8(0x43, 0xE8);
        Assert.Equal(0xB0, _pio.In8(0x42)); // OUT high now
        _pio.Out8(0x43, 0xD8); // read-back: count only, counter 2
        Assert.Equal(0xFFFF & (100 - 1193 + 0x10000), _pio.In8(0x42) | (_pio.In8(0x42) << 8));
    }

    [Fact]
    public void Port61_RefreshBitToggles()
    {
        int first = _pio.In8(0x61) & 0x10;
        _clock.Advance(15_085);
        Assert.NotEqual(first, _pio.In8(0x61) & 0x10);
    }

    [Fact]
    public void GarbageWrites_NeverThrow()
    {
        var rng = new Random(7);
        for (int i = 0; i < 5000; i++)
        {
            _pio.Out8((ushort)(0x40 + rng.Next(4)), (byte)rng.Next(256));
            _pio.Out8(0x61, (byte)rng.Next(256));
            _pio.In8((ushort)(0x40 + rng.Next(4)));
            _clock.Advance(rng.Next(100_000));
        }
    }

    [Fact]
    public void RealTime_Channel0Mode2_Irq0RateWithinTolerance()
    {
        using var clock = new SystemDeviceClock();
        var line = new RecordingLine();
        var pit = new Pit8254(clock, line);
        var sw = Stopwatch.StartNew();
        pit.CounterPorts.Out8(3, 0x34);
        pit.CounterPorts.Out8(0, 2386 & 0xFF); // ~2 ms
        pit.CounterPorts.Out8(0, 2386 >> 8);
        double periodMs = 2386 * 1000.0 / Pit8254.InputFrequencyHz;
        while (pit.Irq0Pulses + pit.Irq0Missed < 50 && sw.ElapsedMilliseconds < 5000) Thread.Sleep(2);
        long periods = pit.Irq0Pulses + pit.Irq0Missed;
        double elapsedMs = sw.Elapsed.TotalMilliseconds;
        Assert.InRange(periods, 50, (long)(elapsedMs / periodMs) + 1);
        Assert.InRange(elapsedMs, 50 * periodMs, 5000.0);
        pit.CounterPorts.Out8(3, 0x30); // stop: mode 0 with no count
        Thread.Sleep(20);               // let a callback already in flight finish
        Assert.Equal(pit.Irq0Pulses, line.RisingEdges);
    }
}
