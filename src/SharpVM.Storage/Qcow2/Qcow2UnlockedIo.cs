namespace SharpVM.Storage.Qcow2;

/// <summary>
/// Guest data I/O outside the image lock. A read of plain data clusters, or a write into clusters this image owns
/// exclusively (COPIED, not compressed, not zero), changes no metadata: once the host range is known it is one
/// pread/pwrite, and several of them can run at once (qemu runs such requests in parallel on its thread pool).
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

    /// <summary>
    /// Under _sync: the host offset of [offset, offset+length) when the whole range is one host-contiguous run that may
    /// be read (plain data) or written in place (plain data owned exclusively, outside the metadata), else -1.
    /// </summary>
    private long MapUnlockedRun(long offset, int length, bool forWrite)
    {
        if (Extended || _crypto != null || _exclusiveWaiters > 0 || length == 0) return -1;
        long first = offset >> ClusterBits, last = (offset + length - 1) >> ClusterBits;
        long start = -1;
        for (long gc = first; gc <= last; gc++)
        {
            var (e, _) = GetEntry(gc);
            long host = (long)(e & OffsetMask);
            if (host == 0 || (e & (CompressedFlag | ZeroFlag)) != 0) return -1;
            if (forWrite && ((e & Copied) == 0 || IsProtectedMetadata(host))) return -1;
            if (gc == first) start = host + (offset & (ClusterSize - 1));
            else if (host != start + ((gc << ClusterBits) - offset)) return -1;
        }
        // A mapping far past the end of the file is corrupt metadata: the locked path reports it.
        if (forWrite && start + length > File.Length + ClusterSize * 1024L) return -1;
        return start;
    }

    /// <summary>Reads without holding the lock when the range is one run of plain data; false when it is not.</summary>
    private bool TryReadUnlocked(long offset, Span<byte> buffer)
    {
        long host;
        lock (_sync)
        {
            CheckRange(offset, buffer.Length);
            host = MapUnlockedRun(offset, buffer.Length, forWrite: false);
            if (host < 0) return false;
            _unlockedIo++;
        }
        try { BeforeUnlockedIo?.Invoke(); File.Read(host, buffer); }
        finally { EndUnlockedIo(); }
        return true;
    }

    /// <summary>Writes in place without holding the lock when the range is one run of clusters we own; false when it is not.</summary>
    private bool TryWriteUnlocked(long offset, ReadOnlySpan<byte> data)
    {
        long host;
        lock (_sync)
        {
            CheckRange(offset, data.Length);
            host = MapUnlockedRun(offset, data.Length, forWrite: true);
            if (host < 0) return false;
            PrepareWrite(); // (not BeginWrite: that would wait for the other unlocked writes)
            _unlockedIo++;
        }
        try { BeforeUnlockedIo?.Invoke(); File.Write(host, data); }
        finally { EndUnlockedIo(); }
        return true;
    }
}
