using System.Diagnostics;

namespace SharpVM.Devices.Timers;

/// <summary>
/// The time base of the emulated platform devices (APIC timer, PIT): a monotonic nanosecond clock and
/// one-shot timers on it. <see cref="SystemDeviceClock"/> is real time (Stopwatch, one timer thread);
/// <see cref="ManualDeviceClock"/> is advanced by hand, for deterministic tests.
/// </summary>
/// <remarks>
/// Callbacks run on the clock's thread (or, for the manual clock, on the thread that advances it) and
/// never while the clock holds its own lock, so a callback may take a device lock and re-arm timers.
/// A callback may run after the timer was re-armed or cancelled (a race the caller cannot close):
/// devices check their own state against <see cref="NowNanoseconds"/> when called back.
/// </remarks>
public abstract class DeviceClock
{
    private readonly object _lock = new();
    private readonly PriorityQueue<(DeviceTimer Timer, long Generation), long> _queue = new();
    private int _liveTimers;

    /// <summary>Monotonic time in nanoseconds since the clock was created.</summary>
    public abstract long NowNanoseconds { get; }

    /// <summary>Callbacks that threw (a device bug; the timer thread survives it).</summary>
    public long CallbackFailures => Interlocked.Read(ref _callbackFailures);
    private long _callbackFailures;

    /// <summary>Creates a disarmed timer that calls <paramref name="callback"/> when it expires.</summary>
    public DeviceTimer CreateTimer(Action callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        return new DeviceTimer(this, callback);
    }

    /// <summary>Called (outside the lock) when the earliest deadline may have moved earlier.</summary>
    protected virtual void OnEarlierDeadline() { }

    /// <summary>Lock object shared with subclasses for their wait loop.</summary>
    protected object SyncRoot => _lock;

    internal void Arm(DeviceTimer timer, long deadline)
    {
        bool earlier;
        lock (_lock)
        {
            if (timer.Deadline == long.MaxValue) _liveTimers++;
            timer.Generation++;
            timer.Deadline = deadline;
            earlier = !_queue.TryPeek(out _, out long head) || deadline < head;
            _queue.Enqueue((timer, timer.Generation), deadline);
            CompactIfBloated();
        }
        if (earlier) OnEarlierDeadline();
    }

    internal void Cancel(DeviceTimer timer)
    {
        lock (_lock)
        {
            if (timer.Deadline != long.MaxValue) _liveTimers--;
            timer.Generation++;
            timer.Deadline = long.MaxValue;
        }
    }

    // Stale entries (re-armed or cancelled timers) are dropped lazily; a guest that re-arms without ever
    // letting a timer expire would grow the queue, so rebuild it when it is mostly stale.
    private void CompactIfBloated()
    {
        if (_queue.Count < 64 || _queue.Count < 4 * _liveTimers) return;
        var live = new List<((DeviceTimer, long), long)>();
        foreach (var (element, priority) in _queue.UnorderedItems)
            if (element.Timer.Generation == element.Generation) live.Add((element, priority));
        _queue.Clear();
        _queue.EnqueueRange(live);
    }

    /// <summary>Under the lock: the earliest live deadline, or long.MaxValue.</summary>
    protected long PeekDeadlineLocked()
    {
        while (_queue.TryPeek(out var e, out long d))
        {
            if (e.Timer.Generation == e.Generation) return d;
            _queue.Dequeue();
        }
        return long.MaxValue;
    }

    /// <summary>
    /// Under the lock: removes the earliest live timer if its deadline is at or before <paramref name="now"/>
    /// (disarming it) and returns it with its deadline.
    /// </summary>
    protected DeviceTimer? TakeDueLocked(long now, out long deadline)
    {
        deadline = PeekDeadlineLocked();
        if (deadline > now) return null;
        var (timer, _) = _queue.Dequeue();
        timer.Generation++;
        timer.Deadline = long.MaxValue;
        _liveTimers--;
        return timer;
    }

    /// <summary>Runs a callback outside the lock; a throwing device never takes the timer thread down.</summary>
    protected void Invoke(DeviceTimer timer)
    {
        try
        {
            timer.Callback();
        }
        catch (Exception)
        {
            Interlocked.Increment(ref _callbackFailures);
        }
    }
}

/// <summary>A one-shot timer on a <see cref="DeviceClock"/>. Arm again to re-arm; thread-safe.</summary>
public sealed class DeviceTimer
{
    private readonly DeviceClock _clock;
    internal readonly Action Callback;
    internal long Generation;             // guarded by the clock's lock
    internal long Deadline = long.MaxValue; // guarded by the clock's lock

    internal DeviceTimer(DeviceClock clock, Action callback)
    {
        _clock = clock;
        Callback = callback;
    }

    public DeviceClock Clock => _clock;

    /// <summary>Arms (or re-arms) the timer to fire at <paramref name="deadlineNanoseconds"/> on the clock.</summary>
    public void Arm(long deadlineNanoseconds) => _clock.Arm(this, deadlineNanoseconds);

    /// <summary>Disarms the timer. A callback already being delivered may still run.</summary>
    public void Cancel() => _clock.Cancel(this);
}

/// <summary>
/// Real time: <see cref="Stopwatch"/> for the time, one background thread ("sharpvm-timers") that sleeps
/// until the earliest deadline and runs the callbacks. Sleeps have millisecond granularity, so a timer
/// may fire up to about a millisecond late; periodic devices schedule from absolute deadlines, so
/// lateness never accumulates into drift. With a non-zero <c>spinBeforeDeadline</c> the thread sleeps
/// until that long before a deadline and then yields in a loop, trading CPU time for sub-millisecond
/// precision (worth it only with a spare core).
/// </summary>
public sealed class SystemDeviceClock : DeviceClock, IDisposable
{
    private readonly long _origin = Stopwatch.GetTimestamp();
    private readonly Thread _thread;
    private readonly long _spinNs;
    private bool _stopping;

    public SystemDeviceClock(TimeSpan spinBeforeDeadline = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(spinBeforeDeadline, TimeSpan.Zero);
        _spinNs = (long)spinBeforeDeadline.TotalNanoseconds;
        _thread = new Thread(Loop) { IsBackground = true, Name = "sharpvm-timers" };
        _thread.Start();
    }

    public override long NowNanoseconds
    {
        get
        {
            long ticks = Stopwatch.GetTimestamp() - _origin;
            return (long)((Int128)ticks * 1_000_000_000 / Stopwatch.Frequency);
        }
    }

    protected override void OnEarlierDeadline()
    {
        lock (SyncRoot) Monitor.Pulse(SyncRoot);
    }

    private void Loop()
    {
        while (true)
        {
            DeviceTimer? due;
            lock (SyncRoot)
            {
                while (true)
                {
                    if (_stopping) return;
                    long now = NowNanoseconds;
                    due = TakeDueLocked(now, out long deadline);
                    if (due is not null) break;
                    if (deadline == long.MaxValue)
                    {
                        Monitor.Wait(SyncRoot);
                    }
                    else
                    {
                        long waitNs = deadline - now;
                        if (_spinNs == 0)
                        {
                            int ms = (int)Math.Min(int.MaxValue, (waitNs + 999_999) / 1_000_000);
                            Monitor.Wait(SyncRoot, Math.Max(ms, 1));
                        }
                        else if (waitNs - _spinNs >= 1_000_000)
                        {
                            Monitor.Wait(SyncRoot, (int)Math.Min(int.MaxValue, (waitNs - _spinNs) / 1_000_000));
                        }
                        else
                        {
                            Monitor.Wait(SyncRoot, 0); // release the lock, let others in, come straight back
                        }
                    }
                }
            }
            Invoke(due);
        }
    }

    public void Dispose()
    {
        lock (SyncRoot)
        {
            _stopping = true;
            Monitor.PulseAll(SyncRoot);
        }
        if (Thread.CurrentThread != _thread) _thread.Join();
    }
}

/// <summary>
/// A clock that only moves when told to: <see cref="Advance"/> runs every timer that falls due, in
/// deadline order, with <see cref="NowNanoseconds"/> equal to that timer's deadline while it runs.
/// For deterministic tests of the timer devices.
/// </summary>
public sealed class ManualDeviceClock : DeviceClock
{
    private long _now;

    public override long NowNanoseconds => Volatile.Read(ref _now);

    /// <summary>Moves time forward by <paramref name="nanoseconds"/>, firing due timers on this thread.</summary>
    public void Advance(long nanoseconds)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(nanoseconds);
        AdvanceTo(NowNanoseconds + nanoseconds);
    }

    /// <summary>Moves time forward to <paramref name="target"/> (never backwards), firing due timers.</summary>
    public void AdvanceTo(long target)
    {
        while (true)
        {
            DeviceTimer? due;
            lock (SyncRoot)
            {
                due = TakeDueLocked(target, out long deadline);
                if (due is null)
                {
                    if (target > _now) Volatile.Write(ref _now, target);
                    return;
                }
                if (deadline > _now) Volatile.Write(ref _now, deadline);
            }
            Invoke(due);
        }
    }
}
