using System.Buffers.Binary;

namespace SharpVM.Storage.Qcow2;

/// <summary>
/// Two-level refcounts: the refcount table (kept whole in memory, bounded by QEMU's 8 MiB limit) points at refcount
/// blocks holding 2^refcount_order-bit counters (sub-byte widths packed LSB first, wider ones big-endian).
/// Also the cluster allocator: first fit from a moving hint, new refcount blocks placed inside the range they cover,
/// and the table grown by copying into fresh clusters before the header is switched over.
/// </summary>
internal sealed class RefcountTable
{
    private readonly ImageFile _file;
    private readonly int _clusterBits;
    private readonly int _order;
    private readonly MetadataCache _blocks;
    private readonly Action<ulong, uint> _headerUpdate;
    private ulong[] _table;
    private long _freeHint;

    public long TableOffset { get; private set; }
    public int TableClusters { get; private set; }
    public int ClusterSize => 1 << _clusterBits;
    public long EntriesPerBlock => (long)ClusterSize * 8 >> _order;
    public ulong MaxRefcount => _order == 6 ? ulong.MaxValue : (1UL << (1 << _order)) - 1;
    public IReadOnlyList<ulong> Table => _table;

    public RefcountTable(ImageFile file, int clusterBits, int order, long tableOffset, int tableClusters, int cacheBlocks, Action<ulong, uint> headerUpdate)
    {
        _file = file; _clusterBits = clusterBits; _order = order; _headerUpdate = headerUpdate;
        _blocks = new MetadataCache(cacheBlocks);
        TableOffset = tableOffset; TableClusters = tableClusters;
        var raw = new byte[(long)tableClusters << clusterBits];
        file.Read(tableOffset, raw);
        _table = new ulong[raw.Length / 8];
        for (int i = 0; i < _table.Length; i++)
        {
            ulong e = BinaryPrimitives.ReadUInt64BigEndian(raw.AsSpan(i * 8));
            ulong off = e & ~511UL;
            // Refcount blocks are metadata we will write into: refuse misaligned or past-EOF pointers up front.
            if (off != 0 && (off % (ulong)ClusterSize != 0 || off >= (ulong)file.Length))
                throw new CorruptImageException($"refcount table entry {i} points at 0x{off:x}, which is misaligned or past the end of the file");
            _table[i] = off;
        }
    }

    private byte[] LoadBlock(long offset)
    {
        var b = new byte[ClusterSize];
        _file.Read(offset, b);
        return b;
    }

    public ulong Get(long cluster)
    {
        long bi = cluster / EntriesPerBlock;
        if (bi >= _table.Length || _table[bi] == 0) return 0;
        var block = _blocks.Get((long)_table[bi], LoadBlock);
        return ReadEntry(block, cluster % EntriesPerBlock);
    }

    private ulong ReadEntry(byte[] b, long i)
    {
        switch (_order)
        {
            case < 3:
                int bits = 1 << _order;
                long bit = i * bits;
                return (ulong)(b[bit >> 3] >> (int)(bit & 7)) & ((1UL << bits) - 1);
            case 3: return b[i];
            case 4: return BinaryPrimitives.ReadUInt16BigEndian(b.AsSpan((int)i * 2));
            case 5: return BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan((int)i * 4));
            default: return BinaryPrimitives.ReadUInt64BigEndian(b.AsSpan((int)i * 8));
        }
    }

    /// <summary>Stores an entry in the cached block and returns the byte range that changed.</summary>
    private (int Off, int Len) WriteEntry(byte[] b, long i, ulong v)
    {
        switch (_order)
        {
            case < 3:
                int bits = 1 << _order;
                long bit = i * bits;
                int mask = ((1 << bits) - 1) << (int)(bit & 7);
                b[bit >> 3] = (byte)((b[bit >> 3] & ~mask) | ((int)v << (int)(bit & 7) & mask));
                return ((int)(bit >> 3), 1);
            case 3: b[i] = (byte)v; return ((int)i, 1);
            case 4: BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan((int)i * 2), (ushort)v); return ((int)i * 2, 2);
            case 5: BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan((int)i * 4), (uint)v); return ((int)i * 4, 4);
            default: BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan((int)i * 8), v); return ((int)i * 8, 8);
        }
    }

    public void Set(long cluster, ulong value)
    {
        if (value > MaxRefcount) throw new DiskImageException($"refcount of cluster {cluster} would exceed {MaxRefcount} (refcount_bits {1 << _order})");
        long bi = cluster / EntriesPerBlock;
        EnsureBlock(bi);
        long boff = (long)_table[bi];
        var block = _blocks.Get(boff, LoadBlock);
        var (o, l) = WriteEntry(block, cluster % EntriesPerBlock, value);
        _file.Write(boff + o, block.AsSpan(o, l));
        if (value == 0 && cluster < _freeHint) _freeHint = cluster;
    }

    /// <summary>Sets a run of refcounts, one pwrite per refcount block touched (allocation of long runs).</summary>
    public void SetRun(long first, long n, ulong value)
    {
        if (value > MaxRefcount) throw new DiskImageException($"refcount would exceed {MaxRefcount}");
        long c = first;
        while (c < first + n)
        {
            long bi = c / EntriesPerBlock;
            EnsureBlock(bi);
            long boff = (long)_table[bi];
            var block = _blocks.Get(boff, LoadBlock);
            long end = Math.Min(first + n, (bi + 1) * EntriesPerBlock);
            int lo = int.MaxValue, hi = 0;
            for (long x = c; x < end; x++)
            {
                var (o, l) = WriteEntry(block, x % EntriesPerBlock, value);
                lo = Math.Min(lo, o); hi = Math.Max(hi, o + l);
            }
            _file.Write(boff + lo, block.AsSpan(lo, hi - lo));
            c = end;
        }
        if (value == 0 && first < _freeHint) _freeHint = first;
    }

    public void Add(long cluster, long delta)
    {
        ulong cur = Get(cluster);
        if (delta < 0 && cur < (ulong)-delta)
            throw new CorruptImageException($"refcount of cluster {cluster} (offset 0x{cluster << _clusterBits:x}) would drop below zero: metadata references it more often than its refcount says");
        Set(cluster, (ulong)((long)cur + delta));
    }

    /// <summary>Adjusts refcounts of every cluster touched by the host byte range.</summary>
    public void AddRange(long offset, long length, long delta)
    {
        if (length <= 0) return;
        for (long c = offset >> _clusterBits; c <= (offset + length - 1) >> _clusterBits; c++) Add(c, delta);
    }

    private void EnsureBlock(long bi)
    {
        if (bi < _table.Length && _table[bi] != 0) return;
        if (bi >= _table.Length) GrowTable(bi);
        if (_table[bi] != 0) return;
        // No block means every cluster it would cover is free, so the block can describe itself from its first slot.
        long blockCluster = bi * EntriesPerBlock;
        var block = new byte[ClusterSize];
        if (InUse != null && InUse(blockCluster))
        {
            // Repair of a corrupt image: that slot is really in use, so put the block in a free cluster elsewhere.
            long c = 1;
            while (Get(c) != 0 || InUse(c) || (c / EntriesPerBlock) == bi || (c / EntriesPerBlock) >= _table.Length || _table[c / EntriesPerBlock] == 0)
                if (++c >= (long)_table.Length * EntriesPerBlock) throw new CorruptImageException("repair found no free cluster for a missing refcount block");
            block = new byte[ClusterSize];
            _file.Write(c << _clusterBits, block);
            _blocks.Put(c << _clusterBits, block);
            Set(c, 1);
            _table[bi] = (ulong)(c << _clusterBits);
            Span<byte> te = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64BigEndian(te, _table[bi]);
            _file.Write(TableOffset + bi * 8, te);
            return;
        }
        WriteEntry(block, 0, 1);
        _file.Write(blockCluster << _clusterBits, block);
        _blocks.Put(blockCluster << _clusterBits, block);
        _table[bi] = (ulong)(blockCluster << _clusterBits);
        Span<byte> e = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(e, _table[bi]);
        _file.Write(TableOffset + bi * 8, e);
    }

    /// <summary>
    /// Moves the refcount table to a bigger place at the end of the file. The new table and any refcount blocks
    /// it needs for itself are written and synced before the header points at them; the old table is freed last.
    /// </summary>
    private void GrowTable(long neededIndex)
    {
        long end = Math.Max(_file.Length + ClusterSize - 1 >> _clusterBits, HighestCoveredAllocated() + 1);
        long entries = Math.Max(neededIndex + 1, _table.Length * 2L);
        long k, m = 0;
        List<long> newBlocks;
        while (true)
        {
            k = (entries * 8 + ClusterSize - 1) >> _clusterBits;
            newBlocks = [];
            for (int iter = 0; iter < 8; iter++)
            {
                newBlocks = [];
                for (long bi = end / EntriesPerBlock; bi <= (end + k + m - 1) / EntriesPerBlock; bi++)
                    if (bi >= _table.Length || _table[bi] == 0) newBlocks.Add(bi);
                if (newBlocks.Count == m) break;
                m = newBlocks.Count;
            }
            long maxBi = newBlocks.Count > 0 ? newBlocks.Max() : 0;
            if (maxBi < entries && neededIndex < entries) break;
            entries = Math.Max(entries, maxBi + 1) * 2;
        }
        if (k * ClusterSize > Qcow2Header.MaxRefTableBytes) throw new DiskImageException("refcount table would exceed 8 MiB; image too large for this cluster size/refcount width");
        entries = k * ClusterSize / 8;
        var newTable = new ulong[entries];
        Array.Copy(_table, newTable, _table.Length);
        var fresh = new Dictionary<long, byte[]>();
        for (int i = 0; i < newBlocks.Count; i++)
        {
            long bOff = (end + k + i) << _clusterBits;
            newTable[newBlocks[i]] = (ulong)bOff;
            fresh[newBlocks[i]] = new byte[ClusterSize];
        }
        // Account the table clusters and the new blocks: in fresh blocks in memory, in existing blocks on disk.
        for (long c = end; c < end + k + newBlocks.Count; c++)
        {
            long bi = c / EntriesPerBlock;
            if (fresh.TryGetValue(bi, out var fb)) WriteEntry(fb, c % EntriesPerBlock, 1);
            else Set(c, 1);
        }
        foreach (var (bi, fb) in fresh) { _file.Write((long)newTable[bi], fb); _blocks.Put((long)newTable[bi], fb); }
        var raw = new byte[k * ClusterSize];
        for (int i = 0; i < newTable.Length; i++) BinaryPrimitives.WriteUInt64BigEndian(raw.AsSpan(i * 8), newTable[i]);
        _file.Write(end << _clusterBits, raw);
        _file.Flush();
        long oldOffset = TableOffset; int oldClusters = TableClusters;
        _table = newTable; TableOffset = end << _clusterBits; TableClusters = (int)k;
        _headerUpdate((ulong)TableOffset, (uint)k);
        _file.Flush();
        for (long c = 0; c < oldClusters; c++) Add((oldOffset >> _clusterBits) + c, -1);
    }

    private long HighestCoveredAllocated()
    {
        for (long bi = _table.Length - 1; bi >= 0; bi--)
        {
            if (_table[bi] == 0) continue;
            for (long c = (bi + 1) * EntriesPerBlock - 1; c >= bi * EntriesPerBlock; c--)
                if (Get(c) != 0) return c;
        }
        return 0;
    }

    /// <summary>Allocates <paramref name="n"/> contiguous clusters (refcount 1) and returns the host offset of the first.</summary>
    public long Allocate(int n)
    {
        if (n > EntriesPerBlock / 2) return AllocateAtEnd(n);
        long start = _freeHint;
        while (true)
        {
            // First fit: skip whole blockless ranges quickly (they are free), else test cluster by cluster.
            long run = 0, c = start;
            while (run < n)
            {
                // The first cluster of a range without a refcount block is where that block will go (EnsureBlock),
                // so it is not free for data; otherwise a long run could chase ever-new blocks forever.
                long bi = c / EntriesPerBlock;
                bool blockSlot = c % EntriesPerBlock == 0 && (bi >= _table.Length || _table[bi] == 0);
                if (!blockSlot && Get(c) == 0) { run++; c++; }
                else { run = 0; c++; start = c; }
            }
            for (long i = 0; i < n; i++) EnsureBlock((start + i) / EntriesPerBlock);
            bool stillFree = true;
            for (long i = 0; i < n; i++) if (Get(start + i) != 0) { stillFree = false; break; }
            if (!stillFree) continue; // a new refcount block landed in the run; look again
            SetRun(start, n, 1);
            _freeHint = start + n;
            return start << _clusterBits;
        }
    }

    /// <summary>During repair: clusters the metadata references whatever their stored refcount says.</summary>
    public Func<long, bool>? InUse { get; set; }

    /// <summary>
    /// Allocates a long run past everything in use, with the refcount blocks it needs placed just before it
    /// (a run longer than half a block cannot be found between the self-describing block slots).
    /// </summary>
    private long AllocateAtEnd(int n)
    {
        while (true)
        {
            long p = Math.Max((_file.Length + ClusterSize - 1) >> _clusterBits, HighestCoveredAllocated() + 1);
            long m = 0;
            List<long> fresh = [];
            for (int iter = 0; iter < 16; iter++)
            {
                fresh = [];
                for (long bi = p / EntriesPerBlock; bi <= (p + m + n - 1) / EntriesPerBlock; bi++)
                    if (bi >= _table.Length || _table[bi] == 0) fresh.Add(bi);
                if (fresh.Count == m) break;
                m = fresh.Count;
            }
            long maxBi = (p + m + n - 1) / EntriesPerBlock;
            if (maxBi >= _table.Length) { GrowTable(maxBi); continue; } // the table moved to the end: start over
            var blocks = new Dictionary<long, byte[]>();
            for (int i = 0; i < fresh.Count; i++) blocks[fresh[i]] = new byte[ClusterSize];
            for (long c = p; c < p + m + n; c++)
            {
                long bi = c / EntriesPerBlock;
                if (blocks.TryGetValue(bi, out var b)) WriteEntry(b, c % EntriesPerBlock, 1);
            }
            for (long c = p; c < p + m + n; c++)
                if (!blocks.ContainsKey(c / EntriesPerBlock)) Set(c, 1);
            Span<byte> e = stackalloc byte[8];
            for (int i = 0; i < fresh.Count; i++)
            {
                long off = (p + i) << _clusterBits;
                _file.Write(off, blocks[fresh[i]]);
                _blocks.Put(off, blocks[fresh[i]]);
                _table[fresh[i]] = (ulong)off;
                BinaryPrimitives.WriteUInt64BigEndian(e, (ulong)off);
                _file.Write(TableOffset + fresh[i] * 8, e);
            }
            // Make the file cover the run so "end of everything" stays past it for the next caller.
            long endByte = (p + m + n) << _clusterBits;
            if (_file.Length < endByte) _file.SetLength(endByte);
            return (p + m) << _clusterBits;
        }
    }

    public void ResetHint() => _freeHint = 0;

    /// <summary>Drops cached blocks (after a repair rewrote them behind our back).</summary>
    public void InvalidateCache() => _blocks.Clear();

    /// <summary>Highest cluster index with a nonzero refcount, or -1.</summary>
    public long LastAllocatedCluster() => _table.Length == 0 ? -1 : HighestCoveredAllocated();
}
