namespace SharpVM.Interop.Libc;

/// <summary>An epoll instance: the device event loop waits here on many eventfds at once.</summary>
public sealed unsafe class Epoll : IDisposable
{
    private const int EpollCloexec = 0x80000, CtlAdd = 1, CtlDel = 2;
    public const uint In = 0x001;

    public FileDescriptor Descriptor { get; }

    public Epoll() => Descriptor = new FileDescriptor((int)Errno.Check(Native.epoll_create1(EpollCloexec), "epoll_create1"));

    /// <summary>Watches <paramref name="fd"/> for readability; <paramref name="token"/> comes back from <see cref="Wait"/>.</summary>
    public void Add(FileDescriptor fd, ulong token)
    {
        var ev = new EpollEvent { Events = In, Data = token };
        Errno.Check(Native.epoll_ctl(Descriptor.Number, CtlAdd, fd.Number, &ev), "epoll_ctl(ADD)");
    }

    public void Remove(FileDescriptor fd)
    {
        var ev = default(EpollEvent);
        Errno.Check(Native.epoll_ctl(Descriptor.Number, CtlDel, fd.Number, &ev), "epoll_ctl(DEL)");
    }

    /// <summary>Waits up to <paramref name="timeoutMs"/> (-1 forever); fills <paramref name="tokens"/>, returns how many fired.</summary>
    public int Wait(Span<ulong> tokens, int timeoutMs)
    {
        int max = Math.Min(tokens.Length, 64);
        EpollEvent* events = stackalloc EpollEvent[max];
        int n = Native.epoll_wait(Descriptor.Number, events, max, timeoutMs);
        if (n < 0)
        {
            int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            if (errno == Errno.EINTR) return 0;
            throw new SystemCallException("epoll_wait", errno);
        }
        for (int i = 0; i < n; i++) tokens[i] = events[i].Data;
        return n;
    }

    public void Dispose() => Descriptor.Dispose();
}
