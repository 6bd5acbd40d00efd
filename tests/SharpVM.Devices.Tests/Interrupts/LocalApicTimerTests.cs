using System.Diagnostics;
using SharpVM.Devices.Interrupts;
using SharpVM.Devices.Timers;

namespace SharpVM.Devices.Tests.Interrupts;

public class LocalApicTimerTests
{
    [Fact]
    public void OneShot_FiresExactlyAtInitialCountTimesDivisor()
    {
        var rig = new ApicRig(1);
        var apic = rig.Apics[0];
        apic.WriteRegister(Reg.LvtTimer, 0x31);      // one-shot, vector 0x31
        apic.WriteRegister(Reg.DivideConfig, 0x3);    // divide by 16
        apic.WriteRegister(Reg.InitialCount, 1000);   // 16 us at 1 GHz
        Assert.Equal(1000u, apic.ReadRegister(Reg.CurrentCount));
        rig.Clock.Advance(15_999);
        Assert.False(apic.IsRequested(0x31));
        Assert.Equal(1u, apic.ReadRegister(Reg.CurrentCount));
        rig.Clock.Advance(1);
        Assert.True(apic.IsRequested(0x31));
        Assert.Equal(0u, apic.ReadRegister(Reg.CurrentCount));
        Assert.Equal(1, rig.Wakes[0]);
        rig.Clock.Advance(1_000_000);
        Assert.Equal(1, apic.TimerExpirations);
    }

    [Theory]
    [InlineData(0x0u, 2)]
    [InlineData(0x1u, 4)]
    [InlineData(0x2u, 8)]
    [InlineData(0x3u, 16)]
    [InlineData(0x8u, 32)]
    [InlineData(0x9u, 64)]
    [InlineData(0xAu, 128)]
    [InlineData(0xBu, 1)]
    public void DivideConfiguration_SetsThePeriod(uint config, int divisor)
    {
        var rig = new ApicRig(1);
        var apic = rig.Apics[0];
        apic.WriteRegister(Reg.LvtTimer, 0x31);
        apic.WriteRegister(Reg.DivideConfig, config);
        apic.WriteRegister(Reg.InitialCount, 100);
        long period = 100L * divisor * (1_000_000_000 / LocalApic.BusFrequencyHz);
        rig.Clock.Advance(period - 1);
        Assert.Equal(0, apic.TimerExpirations);
        rig.Clock.Advance(1);
        Assert.Equal(1, apic.TimerExpirations);
    }

    [Fact]
    public void Periodic_FiresEveryPeriodAndReloads()
    {
        var rig = new ApicRig(1);
        var apic = rig.Apics[0];
        apic.WriteRegister(Reg.LvtTimer, 0x2_0040);   // periodic, vector 0x40
        apic.WriteRegister(Reg.DivideConfig, 0xB);     // divide by 1
        apic.WriteRegister(Reg.InitialCount, 100_000); // 100 us
        for (int i = 0; i < 100; i++) rig.Clock.Advance(10_000);
        Assert.Equal(10, apic.TimerExpirations);
        rig.Clock.Advance(25_000);
        Assert.Equal(75_000u, apic.ReadRegister(Reg.CurrentCount));
        Assert.True(apic.IsRequested(0x40));

        // Acknowledge/EOI in between: each period produces an interrupt.
        int delivered = 0;
        for (int i = 0; i < 20; i++)
        {
            rig.Clock.Advance(100_000);
            if (apic.HasPendingInterrupt)
            {
                Assert.Equal(0x40, apic.AcknowledgeInterrupt());
                apic.WriteRegister(Reg.Eoi, 0);
                delivered++;
            }
        }
        Assert.Equal(20, delivered);
        Assert.Equal(30, apic.TimerExpirations);
    }

    [Fact]
    public void Periodic_LateTimerCountsEveryElapsedPeriod()
    {
        var rig = new ApicRig(1);
        var apic = rig.Apics[0];
        apic.WriteRegister(Reg.LvtTimer, 0x2_0040);
        apic.WriteRegister(Reg.DivideConfig, 0xB);
        apic.WriteRegister(Reg.InitialCount, 100_000);
        rig.Clock.AdvanceTo(rig.Clock.NowNanoseconds); // nothing due
        // Jump a whole millisecond at once (as if the timer thread was descheduled).
        rig.Clock.Advance(1_000_000);
        Assert.Equal(10, apic.TimerExpirations);
    }

    [Fact]
    public void InitialCountZero_StopsTheTimer_AndModeChangeDisarms()
    {
        var rig = new ApicRig(1);
        var apic = rig.Apics[0];
        apic.WriteRegister(Reg.LvtTimer, 0x2_0040);
        apic.WriteRegister(Reg.DivideConfig, 0xB);
        apic.WriteRegister(Reg.InitialCount, 100_000);
        rig.Clock.Advance(250_000);
        Assert.Equal(2, apic.TimerExpirations);
        apic.WriteRegister(Reg.InitialCount, 0);
        rig.Clock.Advance(1_000_000);
        Assert.Equal(2, apic.TimerExpirations);

        apic.WriteRegister(Reg.InitialCount, 100_000);
        rig.Clock.Advance(50_000);
        apic.WriteRegister(Reg.LvtTimer, 0x0_0040); // periodic -> one-shot: disarmed
        Assert.Equal(0u, apic.ReadRegister(Reg.InitialCount));
        rig.Clock.Advance(1_000_000);
        Assert.Equal(2, apic.TimerExpirations);
    }

    [Fact]
    public void MaskedTimer_ExpiresWithoutInterrupt()
    {
        var rig = new ApicRig(1);
        var apic = rig.Apics[0];
        apic.WriteRegister(Reg.LvtTimer, 0x1_0031);
        apic.WriteRegister(Reg.DivideConfig, 0xB);
        apic.WriteRegister(Reg.InitialCount, 500);
        rig.Clock.Advance(1000);
        Assert.Equal(1, apic.TimerExpirations);
        Assert.False(apic.IsRequested(0x31));
    }

    [Fact]
    public void DivideChangeMidCount_KeepsTheCountContinuous()
    {
        var rig = new ApicRig(1);
        var apic = rig.Apics[0];
        apic.WriteRegister(Reg.LvtTimer, 0x31);
        apic.WriteRegister(Reg.DivideConfig, 0xB);    // /1
        apic.WriteRegister(Reg.InitialCount, 1000);
        rig.Clock.Advance(400);
        Assert.Equal(600u, apic.ReadRegister(Reg.CurrentCount));
        apic.WriteRegister(Reg.DivideConfig, 0x0);    // /2: 600 ticks left = 1200 ns
        Assert.Equal(600u, apic.ReadRegister(Reg.CurrentCount));
        rig.Clock.Advance(1199);
        Assert.Equal(0, apic.TimerExpirations);
        rig.Clock.Advance(1);
        Assert.Equal(1, apic.TimerExpirations);
    }

    [Fact]
    public void TscDeadline_FiresWhenTheTscPassesTheDeadline()
    {
        var rig = new ApicRig(1);
        var apic = rig.Apics[0];
        // A 3 GHz TSC derived from the test clock.
        apic.SetTscSource(() => (ulong)rig.Clock.NowNanoseconds * 3, 3_000_000_000);

        // Not in TSC-deadline mode: the MSR ignores writes and reads 0.
        Assert.True(apic.TryWriteMsr(LocalApic.MsrTscDeadline, 12345));
        Assert.True(apic.TryReadMsr(LocalApic.MsrTscDeadline, out ulong v));
        Assert.Equal(0UL, v);

        apic.WriteRegister(Reg.LvtTimer, 0x4_0050);    // TSC-deadline, vector 0x50
        apic.WriteRegister(Reg.InitialCount, 1000);    // ignored in this mode
        Assert.Equal(0u, apic.ReadRegister(Reg.InitialCount));

        ulong deadline = (ulong)rig.Clock.NowNanoseconds * 3 + 3_000_000; // 1 ms ahead
        Assert.True(apic.TryWriteMsr(LocalApic.MsrTscDeadline, deadline));
        Assert.True(apic.TryReadMsr(LocalApic.MsrTscDeadline, out v));
        Assert.Equal(deadline, v);
        rig.Clock.Advance(999_999);
        Assert.False(apic.IsRequested(0x50));
        rig.Clock.Advance(1);
        Assert.True(apic.IsRequested(0x50));
        Assert.True(apic.TryReadMsr(LocalApic.MsrTscDeadline, out v));
        Assert.Equal(0UL, v);                           // disarmed after firing
        Assert.Equal(1, apic.TimerExpirations);

        // A deadline in the past fires at once; writing 0 disarms.
        apic.AcknowledgeInterrupt();
        apic.WriteRegister(Reg.Eoi, 0);
        apic.TryWriteMsr(LocalApic.MsrTscDeadline, 1);
        Assert.True(apic.IsRequested(0x50));
        apic.TryWriteMsr(LocalApic.MsrTscDeadline, (ulong)rig.Clock.NowNanoseconds * 3 + 3000);
        apic.TryWriteMsr(LocalApic.MsrTscDeadline, 0);
        rig.Clock.Advance(10_000);
        Assert.Equal(2, apic.TimerExpirations);
    }

    [Fact]
    public void RealTime_PeriodicTimerFireCountWithinTolerance()
    {
        using var clock = new SystemDeviceClock();
        var bus = new ApicBus();
        var apic = new LocalApic(bus, clock, 0, 0, true);
        apic.WriteRegister(Reg.Svr, 0x1FF);
        apic.WriteRegister(Reg.LvtTimer, 0x2_0040);
        apic.WriteRegister(Reg.DivideConfig, 0xB);
        var sw = Stopwatch.StartNew();
        apic.WriteRegister(Reg.InitialCount, 2_000_000); // 2 ms
        // Wait for 50 periods. Periods are counted from absolute deadlines, so 50 can never be reached
        // before 100 ms, and a late timer thread (a loaded host) only delays the count, never loses periods.
        while (apic.TimerExpirations < 50 && sw.ElapsedMilliseconds < 5000) Thread.Sleep(2);
        long fired = apic.TimerExpirations;
        double elapsedMs = sw.Elapsed.TotalMilliseconds;
        apic.WriteRegister(Reg.InitialCount, 0);
        Assert.InRange(fired, 50, (long)(elapsedMs / 2.0) + 1);
        Assert.InRange(elapsedMs, 100.0, 5000.0);
        Assert.True(apic.IsRequested(0x40));
    }

    [Fact]
    public void RealTime_OneShotWakesTheCpuAfterItsDelay()
    {
        using var clock = new SystemDeviceClock();
        var bus = new ApicBus();
        var apic = new LocalApic(bus, clock, 0, 0, true);
        using var woken = new ManualResetEventSlim();
        apic.WakeUp = woken.Set;
        apic.WriteRegister(Reg.Svr, 0x1FF);
        apic.WriteRegister(Reg.LvtTimer, 0x31);
        apic.WriteRegister(Reg.DivideConfig, 0x0);      // /2
        var sw = Stopwatch.StartNew();
        apic.WriteRegister(Reg.InitialCount, 10_000_000); // 20 ms
        Assert.True(woken.Wait(TimeSpan.FromSeconds(5)));
        double ms = sw.Elapsed.TotalMilliseconds;
        Assert.InRange(ms, 19.9, 5000);
        Assert.True(apic.HasPendingInterrupt);
        Assert.Equal(0x31, apic.AcknowledgeInterrupt());
    }
}
