using System.Runtime.CompilerServices;

namespace SharpVM.Storage.Qcow2;

/// <summary>
/// Guest data I/O outside the image lock. A read of plain data clusters, or a write into clusters this image owns
/// exclusively (COPIED, not compressed, not zero), changes no metadata: once the host ranges are known it is one
/// pread/pwrite per host-contiguous run, and several requests can run at once (qemu runs such requests in parallel on its thread pool).
/// The host range is looked up under <c>_sync</c>; the I/O then runs unlocked while <c>_unlockedIo</c> counts it.
/// Every operation that could change what a guest cluster maps to, or free a cluster (allocating writes, COW,
/// zero/discard, snapshots, resize, check, amend, flush, dispose), first waits under the lock until no unlocked I/O
/// is in flight, so no pwrite can land on a cluster after it has been freed or shared. While such an operation
/// waits, new requests take the locked path, so it cannot be starved.
/// </summary>
public sealed partial class Qcow2Image
{
    private int _unlockedIo;        // guarded by _sync
    private int _exclusiveWaiters;  // guarded by _sync

    /// <summary>Test hook: runs on the I/O thread once an unlocked request is counted, just before its pread/pwrite.</summary>
    internal Action? BeforeUnlockedIo { get; set; }

    /// <summary>Under _sync: waits until no unlocked data I/O is in flight (the lock is released while waiting).</summary>
    private void AwaitUnlockedIo()
    {
        if (_unlockedIo == 0) return;
        _exclusiveWaiters++;
        try { while (_unlockedIo > 0) Monitor.Wait(_sync); }
        finally { _exclusiveWaiters--; }
    }

    private void EndUnlockedIo()
    {
        lock (_sync)
        {
            if (--_unlockedIo == 0 && _exclusiveWaiters > 0) Monitor.PulseAll(_sync);
        }
    }

    /// <summary>A piece of a request: <c>Length</c> bytes at request offset <c>At</c> lie at host offset <c>Host</c>.</summary>
    private readonly record struct HostRun(int At, long Host, int Length);

    /// <summary>More runs than this take the locked path; 64 runs of 24 bytes keep the per-request stack buffer at 1.5 KiB.</summary>
    private const int MaxUnlockedRuns = 64;

    /// <summary>
    /// Under _sync: where [offset, offset+length) lies in the file, as host-contiguous runs written into
    /// <paramref name="runs"/> (a caller's stack buffer, so a request allocates nothing), when every cluster of it may
    /// be read (plain data) or written in place (plain data owned exclusively, outside the metadata). Returns how many
    /// runs it wrote, or 0 when the request must take the locked path (it never maps to zero runs otherwise).
    /// </summary>
    private int MapUnlockedRuns(long offset, int length, bool forWrite, Span<HostRun> runs)
    {
        if (Extended || _crypto != null || _exclusiveWaiters > 0 || length == 0) return 0;
        int count = 0;
        int done = 0;
        while (done < length)
        {
            long g = offset + done;
            int n = (int)Math.Min(length - done, ClusterSize - (g & (ClusterSize - 1)));
            var (e, _) = GetEntry(g >> ClusterBits);
            long host = (long)(e & OffsetMask);
            if (host == 0 || (e & (CompressedFlag | ZeroFlag)) != 0) return 0;
            if (forWrite && ((e & Copied) == 0 || IsProtectedMetadata(host))) return 0;
            host += g & (ClusterSize - 1);
            // A mapping far past the end of the file is corrupt metadata: the locked path reports it.
            if (forWrite && host + n > File.Length + ClusterSize * 1024L) return 0;
            if (count > 0 && runs[count - 1] is var last && last.Host + last.Length == host) runs[count - 1] = last with { Length = last.Length + n };
            else if (count == runs.Length) return 0;
            else runs[count++] = new HostRun(done, host, n);
            done += n;
        }
        return count;
    }

    /// <summary>Reads without holding the lock when the range is one run of plain data; false when it is not.</summary>
    [SkipLocalsInit] // the runs buffer is only read where MapUnlockedRuns wrote it: no need to zero 1.5 KiB per request
    private bool TryReadUnlocked(long offset, Span<byte> buffer)
    {
        Span<HostRun> runs = stackalloc HostRun[MaxUnlockedRuns];
        lock (_sync)
        {
            CheckRange(offset, buffer.Length);
            runs = runs[..MapUnlockedRuns(offset, buffer.Length, forWrite: false, runs)];
            if (runs.IsEmpty) return false;
            _unlockedIo++;
        }
        try
        {
            BeforeUnlockedIo?.Invoke();
            foreach (var r in runs) File.Read(r.Host, buffer.Slice(r.At, r.Length));
        }
        finally { EndUnlockedIo(); }
        return true;
    }

    /// <summary>Writes in place without holding the lock when the range is one run of clusters we own; false when it is not.</summary>
    [SkipLocalsInit]
    private bool TryWriteUnlocked(long offset, ReadOnlySpan<byte> data)
    {
        Span<HostRun> runs = stackalloc HostRun[MaxUnlockedRuns];
        lock (_sync)
        {
            CheckRange(offset, data.Length);
            runs = runs[..MapUnlockedRuns(offset, data.Length, forWrite: true, runs)];
            if (runs.IsEmpty) return false;
            PrepareWrite(); // (not BeginWrite: that would wait for the other unlocked writes)
            _unlockedIo++;
        }
        try
        {
            BeforeUnlockedIo?.Invoke();
            foreach (var r in runs) File.Write(r.Host, data.Slice(r.At, r.Length));
        }
        finally { EndUnlockedIo(); }
        return true;
    }
}
