using SharpVM.Hypervisor;
using SharpVM.Vmm.Exits;
using System.Diagnostics;
using System.Globalization;

namespace SharpVM.Vmm.Vcpus;

/// <summary>
/// One named OS thread that runs one vCPU, with an explicit Running/Paused/Stopped state machine.
/// Other threads ask for a state; the vCPU is kicked out of the guest (immediate_exit plus a
/// real-time signal on KVM, a flag on the emulator) and acknowledges at its next loop turn.
/// </summary>
public sealed class VcpuThread
{
    private readonly IVcpu _vcpu;
    private readonly VcpuIoDispatcher _io;
    private readonly Func<VcpuThread, VcpuExit, VmStopReport?> _onExit;
    private readonly Action<IVcpu>? _setup;
    private Thread? _thread;
    private readonly object _lock = new();
    private VcpuState _state = VcpuState.Created;
    private VcpuState _requested = VcpuState.Running;

    public int Id => _vcpu.Id;
    public IVcpu Vcpu => _vcpu;
    public ExitStatistics Statistics => _io.Statistics;

    /// <summary>Why this vCPU's thread ended the VM, if it did.</summary>
    public VmStopReport? StopReport { get; private set; }

    /// <summary>Raised on the vCPU thread when it stops, with the report if the guest caused it.</summary>
    public event Action<VcpuThread, VmStopReport?>? Stopped;

    /// <param name="setup">Runs first on the vCPU thread (registers must be set by the thread that runs the vCPU).</param>
    /// <param name="onExit">Decides what an exit means: null to keep running, a report to stop the VM.</param>
    public VcpuThread(IVcpu vcpu, VcpuIoDispatcher io, Func<VcpuThread, VcpuExit, VmStopReport?> onExit, Action<IVcpu>? setup = null)
    {
        _vcpu = vcpu;
        _io = io;
        _onExit = onExit;
        _setup = setup;
    }

    public VcpuState State
    {
        get { lock (_lock) return _state; }
    }

    private volatile bool _threadStarted;

    /// <summary>Creates and starts the OS thread (once).</summary>
    public void Start()
    {
        // The Thread object is made here, not in the constructor: VM setup (VmBuilder.Build) then
        // does not pay for the threading types' first use (bench/README.md). Concatenation, not
        // $"vcpu{id}": an interpolated int goes through a pooled buffer whose first use JIT-compiles
        // a thread-static helper.
        var thread = new Thread(Loop) { Name = "vcpu" + _vcpu.Id.ToString(CultureInfo.InvariantCulture), IsBackground = true };
        if (Interlocked.CompareExchange(ref _thread, thread, null) is not null)
            throw new InvalidOperationException($"vCPU {Id}'s thread is already started");
        _threadStarted = true;
        thread.Start();
    }

    /// <summary>Asks the vCPU to pause and waits until it has (or has stopped). Safe while the guest spins.</summary>
    public bool Pause(TimeSpan timeout) => RequestAndWait(VcpuState.Paused, timeout);

    /// <summary>Resumes a paused vCPU.</summary>
    public void Resume()
    {
        lock (_lock)
        {
            if (_requested == VcpuState.Stopped) return;
            _requested = VcpuState.Running;
            Monitor.PulseAll(_lock);
        }
    }

    /// <summary>Asks the vCPU to stop for good and waits for its thread to end.</summary>
    public bool Stop(TimeSpan timeout)
    {
        RequestAndWait(VcpuState.Stopped, timeout);
        return Join(timeout);
    }

    /// <summary>Asks for a stop without waiting (safe to call from the vCPU's own thread).</summary>
    public void RequestStop()
    {
        lock (_lock)
        {
            _requested = VcpuState.Stopped;
            Monitor.PulseAll(_lock);
        }
        // On the vCPU's own thread (a device ending the VM mid-exit) this arms immediate_exit, so
        // the next Run returns at once instead of re-entering the guest.
        _vcpu.RequestExit();
    }

    /// <summary>Waits for the thread to end.</summary>
    public bool Join(TimeSpan timeout) => !_threadStarted || _thread!.Join(timeout);

    private bool RequestAndWait(VcpuState wanted, TimeSpan timeout)
    {
        var deadline = Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        lock (_lock)
        {
            if (_state == VcpuState.Stopped) return wanted == VcpuState.Stopped;
            if (_requested != VcpuState.Stopped) _requested = wanted;
            Monitor.PulseAll(_lock);
        }
        while (true)
        {
            // Kick every time round: a kick that lands between two KVM_RUNs is consumed harmlessly.
            _vcpu.RequestExit();
            lock (_lock)
            {
                if (_state == wanted || _state == VcpuState.Stopped) return true;
                long left = deadline - Stopwatch.GetTimestamp();
                if (left <= 0) return false;
                Monitor.Wait(_lock, TimeSpan.FromMilliseconds(Math.Min(10, left * 1000.0 / Stopwatch.Frequency)));
            }
        }
    }

    private void Loop()
    {
        VmStopReport? report = null;
        try
        {
            _vcpu.AttachToCurrentThread();
            _setup?.Invoke(_vcpu);
            while (true)
            {
                lock (_lock)
                {
                    while (_requested == VcpuState.Paused)
                    {
                        _state = VcpuState.Paused;
                        Monitor.PulseAll(_lock);
                        Monitor.Wait(_lock);
                    }
                    if (_requested == VcpuState.Stopped) break;
                    _state = VcpuState.Running;
                }
                var exit = _vcpu.Run(_io);
                if (exit.Reason == VcpuExitReason.Interrupted)
                {
                    _io.Statistics.Record(ExitKind.Interrupted, 0);
                    continue;
                }
                long handling = Stopwatch.GetTimestamp();
                report = _onExit(this, exit);
                _io.Statistics.Record(KindOf(exit.Reason), Stopwatch.GetTimestamp() - handling);
                if (report is not null) break;
            }
        }
        catch (Exception e)
        {
            report = new VmStopReport(VmStopKind.Error, $"vCPU thread failed: {e.Message}", Id);
        }
        finally
        {
            StopReport = report;
            lock (_lock)
            {
                _state = VcpuState.Stopped;
                _requested = VcpuState.Stopped;
                Monitor.PulseAll(_lock);
            }
            Stopped?.Invoke(this, report);
        }
    }

    private static ExitKind KindOf(VcpuExitReason reason) => reason switch
    {
        VcpuExitReason.Halt => ExitKind.Halt,
        VcpuExitReason.Shutdown => ExitKind.Shutdown,
        VcpuExitReason.SystemEvent => ExitKind.SystemEvent,
        VcpuExitReason.FailEntry => ExitKind.FailEntry,
        VcpuExitReason.InternalError => ExitKind.InternalError,
        VcpuExitReason.Interrupted => ExitKind.Interrupted,
        VcpuExitReason.Debug => ExitKind.Debug,
        _ => ExitKind.Unknown,
    };
}
