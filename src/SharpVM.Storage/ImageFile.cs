using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace SharpVM.Storage;

/// <summary>Positional I/O on the host file. Reads past end-of-file return zeros, as a sparse tail would.</summary>
internal sealed class ImageFile : IDisposable
{
    private readonly SafeFileHandle _handle;
    public string Path { get; }
    public bool ReadOnly { get; }
    /// <summary>
    /// qemu's cache=unsafe: fsync is skipped. Writes still reach the file in the order the format code issues them,
    /// so a killed process leaves a consistent image; only a host crash or power loss can lose or tear data.
    /// </summary>
    public bool IgnoreFlushes { get; set; }

    public ImageFile(string path, bool readOnly, bool create = false)
    {
        Path = path;
        ReadOnly = readOnly;
        try
        {
            _handle = File.OpenHandle(path, create ? FileMode.CreateNew : FileMode.Open,
                readOnly ? FileAccess.Read : FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DiskImageException($"cannot open '{path}': {e.Message}", e);
        }
    }

    public long Length => RandomAccess.GetLength(_handle);

    public void Read(long offset, Span<byte> buffer)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n = RandomAccess.Read(_handle, buffer[done..], offset + done);
            if (n <= 0) { buffer[done..].Clear(); return; }
            done += n;
        }
    }

    public void Write(long offset, ReadOnlySpan<byte> data)
    {
        if (ReadOnly) throw new ImageReadOnlyException($"'{Path}' is open read-only");
        RandomAccess.Write(_handle, data, offset);
        AfterWrite?.Invoke(offset, data.Length);
    }

    /// <summary>Test hook: sees every write (offset, length) once it is done, to check the order of metadata updates.</summary>
    internal Action<long, int>? AfterWrite { get; set; }

    /// <summary>
    /// errno of the first fdatasync that failed, or 0. A failed fdatasync is permanent for this handle: Linux marks
    /// the dirty pages clean (and reports the error once) even though they never reached the disk, so the next
    /// fdatasync would succeed while writes made before the failure are lost. Acknowledging that flush would break
    /// "data written before an acknowledged flush is never lost"; qemu's file-posix fails every later flush too
    /// (page_cache_inconsistent).
    /// </summary>
    private volatile int _syncFailedErrno;

    /// <summary>Test hook: stands in for fdatasync(2) and returns 0 or an errno (the kernel's failures cannot be provoked on demand).</summary>
    internal Func<int>? DataSyncOverride { get; set; }

    public void Flush()
    {
        if (ReadOnly || IgnoreFlushes) return;
        if (_syncFailedErrno != 0)
            throw new IOException($"an earlier fdatasync of '{Path}' failed (errno {_syncFailedErrno}): writes made before it may be lost, so no later flush can be acknowledged; check the host storage and the image");
        int errno = DataSyncOverride?.Invoke() ?? DataSync();
        if (errno == 0) return;
        _syncFailedErrno = errno;
        throw new IOException($"fdatasync of '{Path}' failed (errno {errno}); the image's last writes may not be durable, and every later flush of it fails too");
    }

    /// <summary>
    /// fdatasync, as qemu uses: the data and the metadata needed to read it back (size, extents) become durable,
    /// which is all crash ordering needs; fsync would also commit timestamps, a journal write per call.
    /// Returns 0 or the errno.
    /// </summary>
    private int DataSync()
    {
        const int EINTR = 4;
        while (true)
        {
            if (fdatasync((int)_handle.DangerousGetHandle()) == 0) return 0;
            int errno = Marshal.GetLastPInvokeError();
            if (errno != EINTR) return errno;
        }
    }

    public void SetLength(long length) => RandomAccess.SetLength(_handle, length);

    /// <summary>Deallocates a byte range so it reads as zeros; falls back to writing zeros.</summary>
    public void PunchHole(long offset, long length)
    {
        const int FALLOC_FL_KEEP_SIZE = 1, FALLOC_FL_PUNCH_HOLE = 2;
        bool ok = false;
        try { ok = fallocate((int)_handle.DangerousGetHandle(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0; }
        catch (EntryPointNotFoundException) { }
        catch (DllNotFoundException) { }
        if (ok) return;
        var zeros = new byte[Math.Min(length, 1 << 20)];
        for (long done = 0; done < length; done += zeros.Length)
            Write(offset + done, zeros.AsSpan(0, (int)Math.Min(zeros.Length, length - done)));
    }

    /// <summary>Bytes allocated on the host file system (st_blocks * 512).</summary>
    public long AllocatedBytes
    {
        get
        {
            // struct stat on x86_64/aarch64 glibc: st_blocks lives at byte 64 (x86_64) / 64 (aarch64 generic layout).
            var buf = new byte[256];
            try
            {
                if (stat(Path, buf) != 0) return Length;
            }
            catch (EntryPointNotFoundException) { return Length; }
            return BitConverter.ToInt64(buf, 64) * 512;
        }
    }

    /// <summary>Next data (SEEK_DATA) or hole (SEEK_HOLE) at or after <paramref name="offset"/>; -1 when none / unsupported.</summary>
    public long Seek(long offset, bool data)
    {
        try { return lseek((int)_handle.DangerousGetHandle(), offset, data ? 3 : 4); }
        catch (EntryPointNotFoundException) { return data ? offset : Length; }
    }

    [DllImport("libc", SetLastError = true)]
    private static extern long lseek(int fd, long offset, int whence);

    [DllImport("libc", SetLastError = true)]
    private static extern int stat([MarshalAs(UnmanagedType.LPStr)] string path, byte[] buf);

    [DllImport("libc", SetLastError = true)]
    private static extern int fdatasync(int fd);

    [DllImport("libc", SetLastError = true)]
    private static extern int fallocate(int fd, int mode, long offset, long len);

    public void Dispose() => _handle.Dispose();
}
