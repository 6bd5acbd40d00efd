using SharpVM.Devices.Timers;

namespace SharpVM.Devices.Tests.Interrupts;

public class DeviceClockTests
{
    [Fact]
    public void ManualClock_FiresInDeadlineOrderAtTheDeadline()
    {
        var clock = new ManualDeviceClock();
        var log = new List<(string, long)>();
        var a = clock.CreateTimer(() => log.Add(("a", clock.NowNanoseconds)));
        var b = clock.CreateTimer(() => log.Add(("b", clock.NowNanoseconds)));
        var c = clock.CreateTimer(() => log.Add(("c", clock.NowNanoseconds)));
        a.Arm(300);
        b.Arm(100);
        c.Arm(200);
        c.Cancel();
        a.Arm(250); // re-arm replaces the earlier deadline
        clock.Advance(1000);
        Assert.Equal([("b", 100L), ("a", 250L)], log);
        Assert.Equal(1000, clock.NowNanoseconds);
    }

    [Fact]
    public void ManualClock_CallbackMayRearmItself()
    {
        var clock = new ManualDeviceClock();
        int fired = 0;
        DeviceTimer? t = null;
        t = clock.CreateTimer(() =>
        {
            fired++;
            t!.Arm(clock.NowNanoseconds + 10);
        });
        t.Arm(10);
        clock.Advance(100);
        Assert.Equal(10, fired);
    }

    [Fact]
    public void ThrowingCallback_DoesNotStopTheClock()
    {
        using var clock = new SystemDeviceClock();
        using var done = new ManualResetEventSlim();
        clock.CreateTimer(() => throw new InvalidOperationException("device bug")).Arm(clock.NowNanoseconds);
        clock.CreateTimer(done.Set).Arm(clock.NowNanoseconds + 2_000_000);
        Assert.True(done.Wait(TimeSpan.FromSeconds(5)));
        Assert.Equal(1, clock.CallbackFailures);
    }

    [Fact]
    public void ManyRearms_DoNotGrowTheQueueWithoutBound()
    {
        var clock = new ManualDeviceClock();
        int fired = 0;
        var t = clock.CreateTimer(() => fired++);
        for (int i = 0; i < 100_000; i++) t.Arm(1_000_000_000 + i);
        clock.Advance(2_000_000_000);
        Assert.Equal(1, fired);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    public void SystemClock_NeverFiresEarly(int spinMs)
    {
        using var clock = new SystemDeviceClock(TimeSpan.FromMilliseconds(spinMs));
        var fired = new long[5];
        using var done = new CountdownEvent(fired.Length);
        long start = clock.NowNanoseconds;
        for (int i = 0; i < fired.Length; i++)
        {
            int index = i;
            clock.CreateTimer(() =>
            {
                fired[index] = clock.NowNanoseconds;
                done.Signal();
            }).Arm(start + 300_000L * (i + 1));
        }
        Assert.True(done.Wait(TimeSpan.FromSeconds(5)));
        for (int i = 0; i < fired.Length; i++) Assert.True(fired[i] >= start + 300_000L * (i + 1));
    }
}
