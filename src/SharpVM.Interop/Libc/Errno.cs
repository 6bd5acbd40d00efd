using System.Runtime.InteropServices;

namespace SharpVM.Interop.Libc;

/// <summary>A failed system call: which call, and the errno it returned.</summary>
public class SystemCallException(string call, int errno)
    : Exception($"{call} failed: {SharpVM.Interop.Libc.Errno.Describe(errno)}")
{
    public string Call { get; } = call;
    public int ErrorNumber { get; } = errno;
}

/// <summary>errno values SharpVM reacts to, and their names.</summary>
public static class Errno
{
    public const int EPERM = 1, ENOENT = 2, EINTR = 4, EIO = 5, EBADF = 9, EAGAIN = 11, ENOMEM = 12,
        EACCES = 13, EFAULT = 14, EBUSY = 16, EEXIST = 17, ENODEV = 19, EINVAL = 22, ENOTTY = 25,
        ENOSPC = 28, E2BIG = 7, ENXIO = 6, EOPNOTSUPP = 95;

    public static string Describe(int errno)
    {
        string name = errno switch
        {
            EPERM => "EPERM", ENOENT => "ENOENT", EINTR => "EINTR", EIO => "EIO", EBADF => "EBADF",
            EAGAIN => "EAGAIN", ENOMEM => "ENOMEM", EACCES => "EACCES", EFAULT => "EFAULT", EBUSY => "EBUSY",
            EEXIST => "EEXIST", ENODEV => "ENODEV", EINVAL => "EINVAL", ENOTTY => "ENOTTY", ENOSPC => "ENOSPC",
            E2BIG => "E2BIG", ENXIO => "ENXIO", EOPNOTSUPP => "EOPNOTSUPP", _ => $"errno {errno}",
        };
        return $"{name} ({Marshal.GetPInvokeErrorMessage(errno)})";
    }

    /// <summary>Throws <see cref="SystemCallException"/> naming <paramref name="call"/> if <paramref name="result"/> is negative.</summary>
    public static long Check(long result, string call)
    {
        if (result < 0) throw new SystemCallException(call, Marshal.GetLastPInvokeError());
        return result;
    }

    /// <summary>
    /// Like <see cref="Check(long, string)"/> for a call named with its argument,
    /// "CALL(<paramref name="argumentLabel"/><paramref name="argument"/>)". The name is built only on
    /// failure: formatting it on every call puts string building (the first use of which costs the
    /// runtime about a millisecond) on paths such as VM setup (bench/README.md).
    /// </summary>
    public static long Check(long result, string call, string argumentLabel, long argument)
    {
        if (result < 0) throw new SystemCallException($"{call}({argumentLabel}{argument})", Marshal.GetLastPInvokeError());
        return result;
    }
}
