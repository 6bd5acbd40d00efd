using System.Runtime.InteropServices;

namespace SharpVM.Interop.Libc;

/// <summary>What kind of file system node a path names (the parts of lstat(2) that .NET does not expose).</summary>
public static unsafe class FileNode
{
    // x86-64 struct stat is 144 bytes with st_mode (a 32-bit field) at offset 24, after st_dev,
    // st_ino and st_nlink (8 bytes each); only st_mode is read here.
    private const int StatSize = 144, ModeOffset = 24;
    private const uint TypeMask = 0xF000, SocketType = 0xC000;

    /// <summary>True if <paramref name="path"/> is a Unix domain socket (not following a final symlink); false if it is anything else or does not exist.</summary>
    public static bool IsSocket(string path)
    {
        byte* buffer = stackalloc byte[StatSize];
        if (Native.lstat(path, buffer) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno is Errno.ENOENT or 20 /* ENOTDIR */) return false;
            throw new SystemCallException($"lstat({path})", errno);
        }
        uint mode = *(uint*)(buffer + ModeOffset);
        return (mode & TypeMask) == SocketType;
    }
}
