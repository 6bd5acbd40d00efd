using SharpVM.Devices;
using SharpVM.Devices.Bus;
using SharpVM.Hypervisor;
using SharpVM.Memory;

namespace SharpVM.Cpu;

/// <summary>
/// SharpVM's own x86-64 CPU as a backend (name "emu"): runs guests anywhere, no /dev/kvm needed.
/// It provides CPUs only: interrupt controllers and the PIT are SharpVM.Devices objects that the VMM
/// creates and connects with <see cref="EmulatorVirtualMachine.ConnectInterruptLines"/> and
/// <see cref="EmulatorVcpu.AttachInterruptSource"/>.
/// </summary>
public sealed class EmulatorHypervisor : IHypervisor
{
    private readonly Func<int, IInterruptLine>? _interruptLines;

    /// <param name="interruptLines">Optional: maps a GSI to the platform interrupt controller's input.
    /// Can also be supplied later per VM with <see cref="EmulatorVirtualMachine.ConnectInterruptLines"/>.</param>
    public EmulatorHypervisor(Func<int, IInterruptLine>? interruptLines = null) => _interruptLines = interruptLines;

    public string Name => "emu";

    public IVirtualMachine CreateVm(GuestMemory memory, PioBus pio, MmioBus mmio, VmPlatformOptions options)
    {
        var vm = new EmulatorVirtualMachine(memory, options);
        if (_interruptLines is not null) vm.ConnectInterruptLines(_interruptLines);
        else if (options.InterruptController) vm.CreateInterruptPlatform(pio, mmio);
        return vm;
    }

    public IReadOnlyList<CpuidEntry> GetSupportedCpuid() => SupportedCpuid.Table();

    public void Dispose() { }
}

/// <summary>A VM on the emulated CPU.</summary>
public sealed partial class EmulatorVirtualMachine : IVirtualMachine
{
    private readonly Dictionary<int, DeferredInterruptLine> _lines = [];
    private readonly List<EmulatorVcpu> _vcpus = [];
    private Func<int, IInterruptLine>? _lineFactory;

    public GuestMemory Memory { get; }
    public VmPlatformOptions Options { get; }

    /// <summary>The vCPUs created so far, by creation order.</summary>
    public IReadOnlyList<EmulatorVcpu> Vcpus
    {
        get { lock (_vcpus) return [.. _vcpus]; }
    }

    public EmulatorVirtualMachine(GuestMemory memory, VmPlatformOptions? options = null)
    {
        Memory = memory;
        Options = options ?? new VmPlatformOptions();
    }

    public IVcpu CreateVcpu(int id) => CreateEmulatorVcpu(id);

    /// <summary>Like <see cref="CreateVcpu"/>, typed (for <see cref="EmulatorVcpu.AttachInterruptSource"/>).</summary>
    public EmulatorVcpu CreateEmulatorVcpu(int id)
    {
        var v = new EmulatorVcpu(this, id);
        if (InterruptPlatform is { } p && id < p.LocalApics.Count) v.AttachLocalApic(p.LocalApics[id], waitForStartup: id != 0);
        lock (_vcpus) _vcpus.Add(v);
        return v;
    }

    /// <summary>
    /// Interrupt input <paramref name="gsi"/>. Until <see cref="ConnectInterruptLines"/> is called the
    /// line only records its level; once connected, it forwards to the real controller input (and
    /// replays a line that is currently asserted).
    /// </summary>
    public IInterruptLine GetInterruptLine(int gsi)
    {
        lock (_lines)
        {
            if (!_lines.TryGetValue(gsi, out var line))
            {
                line = new DeferredInterruptLine(gsi);
                if (_lineFactory is not null) line.Connect(_lineFactory(gsi));
                _lines.Add(gsi, line);
            }
            return line;
        }
    }

    /// <summary>Wires every GSI (those handed out already and future ones) to the platform's interrupt controller.</summary>
    public void ConnectInterruptLines(Func<int, IInterruptLine> factory)
    {
        lock (_lines)
        {
            _lineFactory = factory;
            foreach (var (gsi, line) in _lines) line.Connect(factory(gsi));
        }
    }

    public void EnableDirtyLogging() => Memory.EnableSoftwareDirtyLog();

    public IReadOnlyList<DirtyBitmap> TakeDirtyLog()
    {
        var log = Memory.SoftwareDirtyLog ?? throw new InvalidOperationException("dirty logging is not enabled");
        var result = new List<DirtyBitmap>();
        foreach (var region in Memory.Regions)
        {
            var bm = new DirtyBitmap(region.Start, region.Size);
            ulong first = region.Start.Value / MemoryLayout.PageSize;
            for (ulong p = 0; p < bm.PageCount; p++)
                if (log.IsDirty(first + p)) bm.MarkPage(p);
            result.Add(bm);
        }
        log.Clear();
        return result;
    }

    public void Dispose()
    {
        lock (_vcpus)
        {
            foreach (var v in _vcpus) v.Dispose();
            _vcpus.Clear();
        }
        InterruptPlatform?.Dispose();
    }
}

/// <summary>An interrupt line that records its level until it is connected to a controller input.</summary>
public sealed class DeferredInterruptLine(int gsi) : IInterruptLine
{
    private readonly object _lock = new();
    private IInterruptLine? _target;
    private bool _level;

    public int Gsi { get; } = gsi;

    /// <summary>The last level driven onto the line.</summary>
    public bool Level { get { lock (_lock) return _level; } }

    public void SetLevel(bool asserted)
    {
        IInterruptLine? t;
        lock (_lock)
        {
            _level = asserted;
            t = _target;
        }
        t?.SetLevel(asserted);
    }

    internal void Connect(IInterruptLine target)
    {
        bool level;
        lock (_lock)
        {
            _target = target;
            level = _level;
        }
        if (level) target.SetLevel(true);
    }
}
