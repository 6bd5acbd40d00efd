using System.Runtime.InteropServices;

namespace SharpVM.Interop.Libc;

/// <summary>Raw libc entry points. Blittable arguments only; callers go through the typed wrappers.</summary>
internal static unsafe partial class Native
{
    private const string Lib = "libc.so.6";

    /// <summary>open(2) with a path given as a .NET string.</summary>
    internal static int open(string path, int flags, int mode)
    {
        // Paths are short; a long one is the kernel's to refuse (ENAMETOOLONG), so it still goes through.
        int max = NullTerminatedUtf8.MaxBytes(path);
        Span<byte> buffer = max <= 1024 ? stackalloc byte[max] : new byte[max];
        NullTerminatedUtf8.Encode(path, buffer);
        fixed (byte* p = buffer) return open(p, flags, mode);
    }

    [LibraryImport(Lib, SetLastError = true)]
    private static partial int open(byte* path, int flags, int mode);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int close(int fd);

    // glibc 2.33+ exports lstat itself (before, it was a macro over __lxstat).
    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int lstat(string path, byte* statBuffer);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial nint read(int fd, void* buffer, nuint count);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial nint write(int fd, void* buffer, nuint count);

    // ioctl is variadic in C; on x86-64 SysV a third pointer-sized argument is passed like a normal one.
    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int ioctl(int fd, nuint request, nint arg);

    /// <summary>
    /// ioctl for KVM_RUN, the one call per VM exit. SetLastError marshalling costs two extra native calls on
    /// every call (clear errno before, read it after); the caller reads errno with
    /// <see cref="System.Runtime.InteropServices.Marshal.GetLastSystemError"/> only when the call failed, at the
    /// same point the generated marshalling would (ioctl always sets errno when it fails).
    /// </summary>
    [LibraryImport(Lib, EntryPoint = "ioctl")]
    internal static partial int ioctl_without_errno(int fd, nuint request, nint arg);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial void* mmap(void* addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int munmap(void* addr, nuint length);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int madvise(void* addr, nuint length, int advice);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int eventfd(uint initval, int flags);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int epoll_create1(int flags);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int epoll_ctl(int epfd, int op, int fd, EpollEvent* ev);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int epoll_wait(int epfd, EpollEvent* events, int maxevents, int timeout);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial nuint pthread_self();

    // pthread functions return the error number instead of setting errno.
    [LibraryImport(Lib)]
    internal static partial int pthread_kill(nuint thread, int sig);

    [LibraryImport(Lib)]
    internal static partial int pthread_sigmask(int how, ulong* set, ulong* oldset);

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int sigtimedwait(ulong* set, void* info, Timespec* timeout);

    [LibraryImport(Lib)]
    internal static partial int __libc_current_sigrtmin();

    [LibraryImport(Lib)]
    internal static partial int __libc_current_sigrtmax();

    [LibraryImport(Lib, SetLastError = true)]
    internal static partial int getrusage(int who, Rusage* usage);
}

[StructLayout(LayoutKind.Sequential, Pack = 1)]
internal struct EpollEvent
{
    public uint Events;
    public ulong Data;
}

[StructLayout(LayoutKind.Sequential)]
internal struct Timespec
{
    public long Seconds;
    public long Nanoseconds;
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct Rusage
{
    public Timespec UserTime;   // struct timeval has the same layout as two longs
    public Timespec SystemTime;
    public long MaxRss;         // KiB
    public fixed long Rest[13];
}
