using SharpVM.Devices;
using SharpVM.Interop.Kvm;
using SharpVM.Interop.Libc;
using SharpVM.Memory;

namespace SharpVM.Hypervisor.Kvm;

/// <summary>
/// A VM on KVM: RAM regions become memory slots; the irqchip and PIT live in the kernel, with the
/// PC's GSI routing (<see cref="PcIrqRouting"/>).
/// </summary>
public sealed class KvmMachine : IVirtualMachine
{
    // Intel VT needs three pages for a real-mode TSS and one for an identity map, outside RAM and
    // below 4 GiB; the top of the MMIO hole just under the BIOS area is where QEMU and others put them.
    private const ulong TssAddress = 0xFFFB_D000;
    private const ulong IdentityMapAddress = 0xFFFB_C000;

    private readonly KvmVm _vm;
    private readonly Dictionary<int, IInterruptLine> _lines = [];
    private readonly bool _hasIrqchip;
    private bool _dirtyLogging;

    public GuestMemory Memory { get; }

    /// <summary>The raw VM fd wrapper, for KVM-only features (irqfd, ioeventfd, GSI routing).</summary>
    public KvmVm Vm => _vm;

    internal KvmMachine(KvmSystem system, GuestMemory memory, VmPlatformOptions options)
    {
        Memory = memory;
        _vm = system.CreateVm();
        try
        {
            // SET_TSS_ADDR matters only on Intel VT; other implementations (AMD, PVM) accept or ignore it.
            TryOptional(() => _vm.SetTssAddr(TssAddress));
            TryOptional(() => _vm.SetIdentityMapAddr(IdentityMapAddress));
            MapMemory(logDirty: false);
            if (options.InterruptController)
            {
                _vm.CreateIrqchip();
                _vm.SetGsiRouting(PcIrqRouting.Entries());
                _hasIrqchip = true;
            }
            if (options.Pit) _vm.CreatePit2();
        }
        catch
        {
            _vm.Dispose();
            throw;
        }
    }

    private static void TryOptional(Action ioctl)
    {
        try { ioctl(); }
        catch (SystemCallException e) when (e.ErrorNumber is Errno.EINVAL or Errno.ENOTTY) { }
    }

    private void MapMemory(bool logDirty)
    {
        for (int slot = 0; slot < Memory.Regions.Count; slot++)
        {
            var region = Memory.Regions[slot];
            _vm.SetUserMemoryRegion((uint)slot, region.Start.Value, region.Backing, logDirty);
        }
    }

    public IVcpu CreateVcpu(int id) => new KvmVirtualCpu(_vm.CreateVcpu(id), _hasIrqchip);

    public IInterruptLine GetInterruptLine(int gsi)
    {
        lock (_lines)
        {
            if (!_lines.TryGetValue(gsi, out var line)) _lines[gsi] = line = new KvmIrqLine(_vm, (uint)gsi);
            return line;
        }
    }

    /// <summary>
    /// An interrupt line driven through an irqfd: signalling it injects the GSI inside the kernel,
    /// with no ioctl on the signalling thread's path (what virtio devices use).
    /// </summary>
    public IrqfdLine CreateIrqfdLine(int gsi)
    {
        var eventFd = new EventFd();
        _vm.Irqfd(eventFd, (uint)gsi);
        return new IrqfdLine(eventFd);
    }

    public void EnableDirtyLogging()
    {
        MapMemory(logDirty: true);
        _dirtyLogging = true;
    }

    public IReadOnlyList<DirtyBitmap> TakeDirtyLog()
    {
        if (!_dirtyLogging) throw new InvalidOperationException("dirty logging is not enabled: call EnableDirtyLogging first");
        var logs = new List<DirtyBitmap>();
        for (int slot = 0; slot < Memory.Regions.Count; slot++)
        {
            var region = Memory.Regions[slot];
            var bitmap = new DirtyBitmap(region.Start, region.Size);
            _vm.GetDirtyLog((uint)slot, bitmap.Words);
            logs.Add(bitmap);
        }
        return logs;
    }

    public void Dispose() => _vm.Dispose();

    private sealed class KvmIrqLine(KvmVm vm, uint gsi) : IInterruptLine
    {
        public void SetLevel(bool asserted) => vm.IrqLine(gsi, asserted);
    }
}

/// <summary>An edge-triggered interrupt line backed by a KVM irqfd.</summary>
public sealed class IrqfdLine(EventFd eventFd) : IInterruptLine, IDisposable
{
    public EventFd EventFd { get; } = eventFd;

    /// <summary>An irqfd delivers edges: asserting signals it, deasserting does nothing.</summary>
    public void SetLevel(bool asserted)
    {
        if (asserted) EventFd.Signal();
    }

    public void Dispose() => EventFd.Dispose();
}
