using Microsoft.Win32.SafeHandles;

namespace SharpVM.Interop.Libc;

/// <summary>An owned Linux file descriptor, closed exactly once.</summary>
public sealed class FileDescriptor : SafeHandleZeroOrMinusOneIsInvalid
{
    public FileDescriptor() : base(ownsHandle: true) { }

    public FileDescriptor(int fd) : base(ownsHandle: true) => SetHandle(fd);

    /// <summary>0 is a valid descriptor on Linux; only negative values are invalid.</summary>
    public override bool IsInvalid => handle.ToInt64() < 0;

    /// <summary>The raw number, for ioctl arguments that carry an fd (irqfd, ioeventfd).</summary>
    public int Number => (int)handle.ToInt64();

    protected override bool ReleaseHandle() => Native.close((int)handle.ToInt64()) == 0;
}
