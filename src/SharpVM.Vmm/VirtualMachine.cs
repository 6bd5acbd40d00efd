using Microsoft.Extensions.Logging;
using SharpVM.Devices.Bus;
using SharpVM.Hypervisor;
using SharpVM.Memory;
using SharpVM.Vmm.Exits;
using SharpVM.Vmm.Vcpus;

namespace SharpVM.Vmm;

/// <summary>
/// A live VM: guest memory, the two buses, the backend's VM and one thread per vCPU. The first
/// vCPU (or device) that ends the VM records why; the others are then stopped.
/// </summary>
public sealed class VirtualMachine : IDisposable
{
    private readonly IHypervisor _hypervisor;
    private readonly bool _ownsHypervisor;
    private readonly List<VcpuThread> _vcpus = [];
    // Made on first use (a stop, or someone waiting for one), not by VmBuilder.Build: VM setup then
    // does not pay for the task types' first use (bench/README.md).
    private TaskCompletionSource<VmStopReport>? _stopped;
    private int _started;
    private readonly ILogger _log;

    public VmConfig Config { get; }
    public GuestMemory Memory { get; }
    public PioBus Pio { get; }
    public MmioBus Mmio { get; }
    public IVirtualMachine Machine { get; }
    public string Backend => _hypervisor.Name;
    public IReadOnlyList<VcpuThread> Vcpus => _vcpus;

    /// <summary>The registers each vCPU starts with; set before <see cref="Start"/>. Applied on the vCPU's own thread.</summary>
    public Action<IVcpu>? VcpuSetup { get; set; }

    internal VirtualMachine(VmConfig config, IHypervisor hypervisor, bool ownsHypervisor, GuestMemory memory, PioBus pio, MmioBus mmio, IVirtualMachine machine)
    {
        Config = config;
        _hypervisor = hypervisor;
        _ownsHypervisor = ownsHypervisor;
        Memory = memory;
        Pio = pio;
        Mmio = mmio;
        Machine = machine;
        _log = config.LoggerFactory.CreateLogger("SharpVM.Vmm.VirtualMachine"); // not CreateLogger<T>: no generic instantiation to JIT at setup
    }

    internal void AddVcpu(IVcpu vcpu)
    {
        var thread = new VcpuThread(vcpu, new VcpuIoDispatcher(Pio, Mmio, new ExitStatistics(vcpu.Id), Config.TimeExits), HandleExit, v => VcpuSetup?.Invoke(v));
        thread.Stopped += (t, report) => { if (report is not null) RequestStop(report); };
        _vcpus.Add(thread);
    }

    /// <summary>Starts every vCPU thread.</summary>
    public void Start()
    {
        if (Interlocked.Exchange(ref _started, 1) != 0) throw new InvalidOperationException("the VM is already started");
        if (_log.IsEnabled(LogLevel.Information))
            _log.LogInformation("starting the VM on {Backend}: {Cpus} vCPU(s), {MemoryMiB} MiB", Backend, _vcpus.Count, Memory.Size >> 20);
        foreach (var v in _vcpus) v.Start();
    }

    /// <summary>Pauses every vCPU; true if all acknowledged within <paramref name="timeout"/>.</summary>
    public bool Pause(TimeSpan timeout) => _vcpus.All(v => v.Pause(timeout));

    public void Resume()
    {
        foreach (var v in _vcpus) v.Resume();
    }

    /// <summary>
    /// Ends the VM with <paramref name="report"/> (the first report wins). Callable from any thread,
    /// devices and vCPU threads included: it never waits.
    /// </summary>
    public void RequestStop(VmStopReport report)
    {
        if (!StopSource.TrySetResult(report)) return;
        if (_log.IsEnabled(LogLevel.Information))
            _log.Log(report.Kind == VmStopKind.Error ? LogLevel.Error : LogLevel.Information, "the VM ends: {Report}", report.Describe());
        foreach (var v in _vcpus) v.RequestStop();
    }

    /// <summary>Completes when the VM has ended, with why.</summary>
    public Task<VmStopReport> Stopped => StopSource.Task;

    private TaskCompletionSource<VmStopReport> StopSource
    {
        get
        {
            var source = Volatile.Read(ref _stopped);
            if (source is not null) return source;
            var fresh = new TaskCompletionSource<VmStopReport>(TaskCreationOptions.RunContinuationsAsynchronously);
            return Interlocked.CompareExchange(ref _stopped, fresh, null) ?? fresh;
        }
    }

    /// <summary>Waits for the VM to end; stops it with <see cref="VmStopKind.Requested"/> on timeout.</summary>
    public VmStopReport WaitForStop(TimeSpan timeout)
    {
        if (!StopSource.Task.Wait(timeout))
            RequestStop(new VmStopReport(VmStopKind.Requested, $"stopped after the {timeout.TotalSeconds:0.#} s time limit"));
        foreach (var v in _vcpus) v.Join(TimeSpan.FromSeconds(10));
        return StopSource.Task.Result;
    }

    private VmStopReport? HandleExit(VcpuThread thread, VcpuExit exit)
    {
        var vcpu = thread.Vcpu;
        return exit.Reason switch
        {
            VcpuExitReason.SystemEvent => exit.SystemEvent switch
            {
                SystemEventKind.PowerOff => new VmStopReport(VmStopKind.PowerOff, "the guest powered off", vcpu.Id, exit),
                SystemEventKind.Reset => new VmStopReport(VmStopKind.Reset, "the guest asked for a reset", vcpu.Id, exit),
                _ => WithState(VmStopKind.Error, $"the guest reported a crash ({exit.Detail})", vcpu, exit),
            },
            VcpuExitReason.Halt => WithState(VmStopKind.Halted, "the guest halted with no interrupt that could wake it", vcpu, exit),
            VcpuExitReason.Shutdown => WithState(VmStopKind.TripleFault, "triple fault: the guest reset itself by faulting while handling a fault", vcpu, exit),
            VcpuExitReason.FailEntry => WithState(VmStopKind.Error, $"entering the guest failed: {exit.Detail}", vcpu, exit),
            VcpuExitReason.InternalError => WithState(VmStopKind.Error, exit.Detail ?? "internal error", vcpu, exit),
            VcpuExitReason.Debug => WithState(VmStopKind.Error, "unexpected debug exit", vcpu, exit),
            _ => WithState(VmStopKind.Error, exit.Detail ?? $"unknown exit {exit.RawReason}", vcpu, exit),
        };
    }

    private VmStopReport WithState(VmStopKind kind, string message, IVcpu vcpu, VcpuExit exit)
    {
        try
        {
            var regs = vcpu.GetRegisters();
            var sregs = vcpu.GetSpecialRegisters();
            string instruction = FaultingInstruction.Describe(vcpu, Memory, regs, sregs);
            return new VmStopReport(kind, message, vcpu.Id, exit, regs, sregs, instruction);
        }
        catch (Exception e)
        {
            return new VmStopReport(kind, $"{message} (registers unavailable: {e.Message})", vcpu.Id, exit);
        }
    }

    public void Dispose()
    {
        RequestStop(new VmStopReport(VmStopKind.Requested, "the VM was disposed"));
        foreach (var v in _vcpus) v.Join(TimeSpan.FromSeconds(10));
        foreach (var v in _vcpus) v.Vcpu.Dispose();
        Machine.Dispose();
        Memory.Dispose();
        if (_ownsHypervisor) _hypervisor.Dispose();
    }
}
