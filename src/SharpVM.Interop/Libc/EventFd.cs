namespace SharpVM.Interop.Libc;

/// <summary>
/// A Linux eventfd: a counter the kernel can signal (ioeventfd) or wait on (irqfd) without a VM exit
/// reaching user space.
/// </summary>
public sealed unsafe class EventFd : IDisposable
{
    private const int EfdCloexec = 0x80000, EfdNonblock = 0x800;

    public FileDescriptor Descriptor { get; }

    public EventFd(bool nonBlocking = false)
    {
        int fd = (int)Errno.Check(Native.eventfd(0, EfdCloexec | (nonBlocking ? EfdNonblock : 0)), "eventfd");
        Descriptor = new FileDescriptor(fd);
    }

    /// <summary>Adds <paramref name="value"/> to the counter, waking waiters.</summary>
    public void Signal(ulong value = 1)
    {
        Errno.Check(Native.write(Descriptor.Number, &value, 8), "write(eventfd)");
    }

    /// <summary>Reads and resets the counter; returns 0 if non-blocking and nothing was signalled.</summary>
    public ulong Consume()
    {
        ulong value;
        nint n = Native.read(Descriptor.Number, &value, 8);
        if (n < 0)
        {
            int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            if (errno == Errno.EAGAIN) return 0;
            throw new SystemCallException("read(eventfd)", errno);
        }
        return value;
    }

    public void Dispose() => Descriptor.Dispose();
}
