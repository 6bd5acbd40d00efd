using SharpVM.Interop.Libc;

namespace SharpVM.Interop.Kvm;

/// <summary>A VM fd: memory slots, the in-kernel irqchip and PIT, interrupts, eventfds, dirty log, vCPUs.</summary>
public sealed unsafe class KvmVm : IDisposable
{
    public const uint MemLogDirtyPages = 1;
    public const uint IoeventfdDatamatch = 1, IoeventfdPio = 2;
    public const uint IrqfdDeassign = 1;

    private readonly FileDescriptor _fd;
    private readonly int _runMmapSize;

    public KvmSystem System { get; }

    internal KvmVm(KvmSystem system, FileDescriptor fd)
    {
        System = system;
        _fd = fd;
        _runMmapSize = system.GetVcpuMmapSize();
    }

    private int Ioctl(nuint request, nint arg, string name) => (int)Errno.Check(Native.ioctl(_fd.Number, request, arg), name);

    /// <summary>KVM_SET_TSS_ADDR: three pages Intel VT needs for real-mode emulation, outside RAM.</summary>
    public void SetTssAddr(ulong address) => Ioctl(KvmIoctls.SetTssAddr, (nint)address, "KVM_SET_TSS_ADDR");

    /// <summary>KVM_SET_IDENTITY_MAP_ADDR: one page for the identity map EPT needs in real mode.</summary>
    public void SetIdentityMapAddr(ulong address) => Ioctl(KvmIoctls.SetIdentityMapAddr, (nint)(&address), "KVM_SET_IDENTITY_MAP_ADDR");

    /// <summary>KVM_SET_USER_MEMORY_REGION: maps <paramref name="memory"/> at guest-physical <paramref name="guestPhysical"/>.</summary>
    public void SetUserMemoryRegion(uint slot, ulong guestPhysical, MappedMemory memory, bool logDirtyPages)
    {
        var region = new KvmUserspaceMemoryRegion
        {
            Slot = slot,
            Flags = logDirtyPages ? MemLogDirtyPages : 0,
            GuestPhysAddr = guestPhysical,
            MemorySize = memory.Length,
            UserspaceAddr = (ulong)memory.Pointer,
        };
        Errno.Check(Native.ioctl(_fd.Number, KvmIoctls.SetUserMemoryRegion, (nint)(&region)), "KVM_SET_USER_MEMORY_REGION", "slot ", slot);
    }

    /// <summary>KVM_CREATE_IRQCHIP: in-kernel PIC, IOAPIC and a local APIC per vCPU.</summary>
    public void CreateIrqchip() => Ioctl(KvmIoctls.CreateIrqchip, 0, "KVM_CREATE_IRQCHIP");

    /// <summary>
    /// KVM_CREATE_PIT2: the in-kernel 8254, with KVM_PIT_SPEAKER_DUMMY so that port 0x61 (speaker
    /// gate and channel 2 output, which Linux's PIT/TSC calibration polls) is answered in the kernel
    /// too: channel 2's output lives there, and no user-space device owns the port on KVM.
    /// </summary>
    public void CreatePit2()
    {
        var config = new KvmPitConfig { Flags = KvmPitConfig.SpeakerDummy };
        Ioctl(KvmIoctls.CreatePit2, (nint)(&config), "KVM_CREATE_PIT2");
    }

    /// <summary>KVM_IRQ_LINE: drives GSI <paramref name="gsi"/> to <paramref name="level"/>.</summary>
    public void IrqLine(uint gsi, bool level)
    {
        var irq = new KvmIrqLevel { Irq = gsi, Level = level ? 1u : 0u };
        Ioctl(KvmIoctls.IrqLine, (nint)(&irq), "KVM_IRQ_LINE");
    }

    /// <summary>KVM_IRQFD: signalling <paramref name="eventFd"/> injects GSI <paramref name="gsi"/> with no exit to user space.</summary>
    public void Irqfd(EventFd eventFd, uint gsi, bool deassign = false)
    {
        var irqfd = new KvmIrqfd { Fd = (uint)eventFd.Descriptor.Number, Gsi = gsi, Flags = deassign ? IrqfdDeassign : 0 };
        Ioctl(KvmIoctls.Irqfd, (nint)(&irqfd), "KVM_IRQFD");
    }

    /// <summary>
    /// KVM_IOEVENTFD: a guest write of <paramref name="length"/> bytes to <paramref name="address"/>
    /// (a port if <paramref name="pio"/>) signals <paramref name="eventFd"/> in the kernel, with no exit to us.
    /// </summary>
    public void Ioeventfd(EventFd eventFd, ulong address, uint length, bool pio, ulong? dataMatch = null)
    {
        var ev = new KvmIoeventfd
        {
            Addr = address,
            Len = length,
            Fd = eventFd.Descriptor.Number,
            Flags = (pio ? IoeventfdPio : 0) | (dataMatch.HasValue ? IoeventfdDatamatch : 0),
            Datamatch = dataMatch ?? 0,
        };
        Ioctl(KvmIoctls.Ioeventfd, (nint)(&ev), "KVM_IOEVENTFD");
    }

    /// <summary>KVM_SET_GSI_ROUTING: replaces the whole GSI routing table.</summary>
    public void SetGsiRouting(ReadOnlySpan<KvmIrqRoutingEntry> entries)
    {
        int bytes = sizeof(KvmIrqRouting) + entries.Length * sizeof(KvmIrqRoutingEntry);
        byte[] buffer = new byte[bytes];
        fixed (byte* p = buffer)
        {
            ((KvmIrqRouting*)p)->Nr = (uint)entries.Length;
            entries.CopyTo(new Span<KvmIrqRoutingEntry>(p + sizeof(KvmIrqRouting), entries.Length));
            Ioctl(KvmIoctls.SetGsiRouting, (nint)p, "KVM_SET_GSI_ROUTING");
        }
    }

    /// <summary>KVM_GET_DIRTY_LOG: fills <paramref name="bitmap"/> (one bit per page of the slot) and resets the log.</summary>
    public void GetDirtyLog(uint slot, Span<ulong> bitmap)
    {
        fixed (ulong* p = bitmap)
        {
            var log = new KvmDirtyLog { Slot = slot, DirtyBitmap = (ulong)p };
            Ioctl(KvmIoctls.GetDirtyLog, (nint)(&log), "KVM_GET_DIRTY_LOG");
        }
    }

    /// <summary>KVM_GET_TSC_KHZ: the guest TSC frequency (0 if unsupported).</summary>
    public long GetTscKhz()
    {
        long r = Native.ioctl(_fd.Number, KvmIoctls.GetTscKhz, 0);
        return r < 0 ? 0 : r;
    }

    /// <summary>KVM_CREATE_VCPU, and maps its kvm_run page.</summary>
    public KvmVcpu CreateVcpu(int id)
    {
        int fd = (int)Errno.Check(Native.ioctl(_fd.Number, KvmIoctls.CreateVcpu, id), "KVM_CREATE_VCPU", "", id);
        var descriptor = new FileDescriptor(fd);
        try
        {
            var run = MappedMemory.OfFile(descriptor, (ulong)_runMmapSize, MemoryProtection.Read | MemoryProtection.Write);
            return new KvmVcpu(id, descriptor, run);
        }
        catch
        {
            descriptor.Dispose();
            throw;
        }
    }

    public void Dispose() => _fd.Dispose();
}
