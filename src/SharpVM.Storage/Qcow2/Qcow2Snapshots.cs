using System.Buffers.Binary;

namespace SharpVM.Storage.Qcow2;

/// <summary>
/// Internal snapshots. A snapshot is a copy of the L1 table; sharing is expressed by refcounts: every L2 table and
/// data cluster reachable from an L1 gets one reference per L1 that reaches it, and COPIED is cleared wherever the
/// refcount exceeds 1 so the next guest write copies instead of overwriting shared data.
/// </summary>
public sealed partial class Qcow2Image
{
    /// <summary>
    /// Snapshot operations change a refcount and the matching COPIED flag in two different clusters, so a crash
    /// between them would leave a COPIED mismatch. On v3 images the dirty bit covers that window: it is set (and
    /// synced) first and cleared last; whoever opens a dirty image read-write rebuilds refcounts and flags (QEMU does
    /// the same), so a kill mid-operation costs at most leaked clusters after that repair.
    /// </summary>
    private void WithDirtyBit(Action op)
    {
        bool mark = Header.Version >= 3 && (Header.IncompatibleFeatures & Qcow2Header.IncompatDirty) == 0;
        if (mark)
        {
            Header.IncompatibleFeatures |= Qcow2Header.IncompatDirty;
            WriteIncompat();
        }
        op();
        if (mark)
        {
            File.Flush();
            Header.IncompatibleFeatures &= ~Qcow2Header.IncompatDirty;
            WriteIncompat();
        }
    }

    private void WriteIncompat()
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(b, Header.IncompatibleFeatures);
        File.Write(72, b);
        File.Flush();
    }

    public IReadOnlyList<Snapshot> ListSnapshots() { lock (_sync) return Snapshots.ToList(); }

    public Snapshot CreateSnapshot(string name, ulong vmStateSize = 0, ulong vmClockNsec = 0)
    {
        lock (_sync)
        {
            BeginWrite();
            Quiesce();
            if (string.IsNullOrEmpty(name)) throw new DiskImageException("snapshot name must not be empty");
            if (Snapshots.Any(s => s.Name == name)) throw new DiskImageException($"a snapshot named '{name}' already exists");
            if (Snapshots.Count >= Qcow2Header.MaxSnapshots) throw new DiskImageException("too many snapshots");
            if (Refcounts.MaxRefcount < 2) throw new DiskImageException("refcount_bits=1 cannot count shared clusters; amend the image to wider refcounts before taking snapshots");
            Snapshot? created = null;
            WithDirtyBit(() => created = CreateSnapshotLocked(name, vmStateSize, vmClockNsec));
            return created!;
        }
    }

    private Snapshot CreateSnapshotLocked(string name, ulong vmStateSize, ulong vmClockNsec)
    {
        {
            // References first (a crash now only leaks), then the L1 copy, then the table switch.
            UpdateL1Refcounts(L1, +1, clearCopiedInPlace: true);
            long l1Bytes = L1.Length * 8L;
            long l1Off = 0;
            if (L1.Length > 0)
            {
                int n = (int)((l1Bytes + ClusterSize - 1) >> ClusterBits);
                l1Off = Refcounts.Allocate(n);
                var raw = new byte[(long)n << ClusterBits];
                for (int i = 0; i < L1.Length; i++) BinaryPrimitives.WriteUInt64BigEndian(raw.AsSpan(i * 8), L1[i]);
                File.Write(l1Off, raw);
            }
            var now = DateTimeOffset.UtcNow;
            long nextId = Snapshots.Select(s => long.TryParse(s.Id, out var v) ? v : 0).DefaultIfEmpty(0).Max() + 1;
            var snap = new Snapshot
            {
                L1TableOffset = (ulong)l1Off, L1Size = (uint)L1.Length, Id = nextId.ToString(System.Globalization.CultureInfo.InvariantCulture), Name = name,
                DateSec = (uint)now.ToUnixTimeSeconds(), DateNsec = (uint)(now.ToUnixTimeMilliseconds() % 1000 * 1_000_000),
                VmClockNsec = vmClockNsec, VmStateSize = vmStateSize, DiskSize = Header.Size,
            };
            WriteSnapshotTable([.. Snapshots, snap]);
            return snap;
        }
    }

    public void DeleteSnapshot(string nameOrId)
    {
        lock (_sync)
        {
            BeginWrite();
            Quiesce();
            var s = FindSnapshot(nameOrId);
            WithDirtyBit(() => DeleteSnapshotLocked(s));
        }
    }

    private void DeleteSnapshotLocked(Snapshot s)
    {
        {
            // Unlink from the table first so a crash leaves only leaked clusters.
            WriteSnapshotTable(Snapshots.Where(x => x != s).ToList());
            var l1 = ReadL1((long)s.L1TableOffset, s.L1Size);
            UpdateL1Refcounts(l1, -1, clearCopiedInPlace: false);
            if (s.L1Size > 0) Refcounts.AddRange((long)s.L1TableOffset, s.L1Size * 8L, -1);
            FixCopiedFlags(new CheckResult());
            File.Flush();
        }
    }

    /// <summary>Reverts the active state to the snapshot (qemu-img snapshot -a).</summary>
    public void ApplySnapshot(string nameOrId)
    {
        lock (_sync)
        {
            BeginWrite();
            Quiesce();
            var s = FindSnapshot(nameOrId);
            WithDirtyBit(() => ApplySnapshotLocked(s));
        }
    }

    private void ApplySnapshotLocked(Snapshot s)
    {
        {
            var snapL1 = ReadL1((long)s.L1TableOffset, s.L1Size);
            UpdateL1Refcounts(snapL1, +1, clearCopiedInPlace: false);
            var oldL1 = L1;
            if (snapL1.Length > L1.Length) ReplaceL1Table(snapL1.Length);
            var newL1 = new ulong[L1.Length];
            for (int i = 0; i < snapL1.Length; i++) newL1[i] = snapL1[i] & ~Copied;
            WriteWholeL1(newL1);
            L2Cache.Clear();
            if (s.DiskSize is { } ds && ds != Header.Size)
            {
                Header.Size = ds;
                WriteHeader();
            }
            File.Flush();
            UpdateL1Refcounts(oldL1, -1, clearCopiedInPlace: false);
            FixCopiedFlags(new CheckResult());
            File.Flush();
        }
    }

    private Snapshot FindSnapshot(string nameOrId) =>
        Snapshots.FirstOrDefault(x => x.Id == nameOrId) ?? Snapshots.FirstOrDefault(x => x.Name == nameOrId)
        ?? throw new DiskImageException($"snapshot '{nameOrId}' not found");

    private void WriteWholeL1(ulong[] l1)
    {
        var raw = new byte[l1.Length * 8L];
        for (int i = 0; i < l1.Length; i++) BinaryPrimitives.WriteUInt64BigEndian(raw.AsSpan(i * 8), l1[i]);
        File.Write((long)Header.L1TableOffset, raw);
        L1 = l1;
    }

    /// <summary>Moves the active L1 table to new clusters with room for <paramref name="entries"/> entries.</summary>
    internal void ReplaceL1Table(long entries)
    {
        if (entries * 8 > Qcow2Header.MaxL1Bytes) throw new DiskImageException("L1 table would exceed 32 MiB");
        int n = (int)((entries * 8 + ClusterSize - 1) >> ClusterBits);
        long off = Refcounts.Allocate(n);
        var l1 = new ulong[entries];
        Array.Copy(L1, l1, Math.Min(L1.Length, entries));
        var raw = new byte[(long)n << ClusterBits];
        for (int i = 0; i < l1.Length; i++) BinaryPrimitives.WriteUInt64BigEndian(raw.AsSpan(i * 8), l1[i]);
        File.Write(off, raw);
        File.Flush();
        long oldOff = (long)Header.L1TableOffset; long oldBytes = L1.Length * 8L;
        Header.L1TableOffset = (ulong)off; Header.L1Size = (uint)entries;
        Span<byte> h = stackalloc byte[12];
        BinaryPrimitives.WriteUInt32BigEndian(h, (uint)entries);
        BinaryPrimitives.WriteUInt64BigEndian(h[4..], (ulong)off);
        File.Write(36, h);
        File.Flush();
        L1 = l1;
        if (oldBytes > 0) Refcounts.AddRange(oldOff, oldBytes, -1);
    }

    /// <summary>Adds <paramref name="delta"/> to every L2 table and data cluster reachable from <paramref name="l1"/>.</summary>
    private void UpdateL1Refcounts(ulong[] l1, int delta, bool clearCopiedInPlace)
    {
        for (int i = 0; i < l1.Length; i++)
        {
            long l2 = (long)(l1[i] & OffsetMask);
            if (l2 == 0) continue;
            var t = (byte[])LoadL2(l2).Clone();
            bool changed = false;
            for (long j = 0; j < L2Entries; j++)
            {
                int o = (int)j * L2EntryBytes;
                ulong e = BinaryPrimitives.ReadUInt64BigEndian(t.AsSpan(o));
                if ((e & CompressedFlag) != 0) { var (co, cl) = CompressedRange(e); Refcounts.AddRange(co, cl, delta); continue; }
                if ((e & OffsetMask) == 0) continue;
                Refcounts.Add((long)(e & OffsetMask) >> ClusterBits, delta);
                if (clearCopiedInPlace && (e & Copied) != 0) { BinaryPrimitives.WriteUInt64BigEndian(t.AsSpan(o), e & ~Copied); changed = true; }
            }
            Refcounts.Add(l2 >> ClusterBits, delta);
            if (changed) { File.Write(l2, t); L2Cache.Put(l2, t); }
            if (clearCopiedInPlace && (l1[i] & Copied) != 0) { l1[i] &= ~Copied; if (l1 == L1) WriteL1Entry(i); }
        }
    }

    private void WriteSnapshotTable(List<Snapshot> snaps)
    {
        var raw = Snapshot.WriteTable(snaps);
        long off = 0;
        if (raw.Length > 0)
        {
            int n = (raw.Length + ClusterSize - 1) >> ClusterBits;
            off = Refcounts.Allocate(n);
            var padded = new byte[(long)n << ClusterBits];
            raw.CopyTo(padded, 0);
            File.Write(off, padded);
        }
        File.Flush();
        long oldOff = (long)Header.SnapshotsOffset; int oldLen = Header.NbSnapshots > 0 ? Snapshot.WriteTable(Snapshots).Length : 0;
        Header.NbSnapshots = (uint)snaps.Count; Header.SnapshotsOffset = (ulong)off;
        Span<byte> h = stackalloc byte[12];
        BinaryPrimitives.WriteUInt32BigEndian(h, (uint)snaps.Count);
        BinaryPrimitives.WriteUInt64BigEndian(h[4..], (ulong)off);
        File.Write(60, h);
        File.Flush();
        Snapshots = snaps;
        if (oldLen > 0) Refcounts.AddRange(oldOff, oldLen, -1);
    }

    // ---------------------------------------------------------------- resize

    public void Resize(long newSize, bool allowShrink)
    {
        lock (_sync)
        {
            BeginWrite();
            Quiesce();
            newSize = (newSize + 511) & ~511L;
            if (newSize < Size)
            {
                if (!allowShrink) throw new DiskImageException("use --shrink to shrink an image (data past the new end is lost)");
                if (Snapshots.Count > 0) throw new DiskImageException("cannot shrink an image that has internal snapshots");
                long firstDead = (newSize + ClusterSize - 1) >> ClusterBits;
                for (long gc = firstDead; gc < (Size + ClusterSize - 1) >> ClusterBits; gc++)
                {
                    var (e, bm) = GetEntry(gc);
                    if (e == 0 && bm == 0) continue;
                    long l2 = GetL2ForWrite(gc);
                    SetEntry(l2, gc, 0, 0);
                    ReleaseLater(e);
                }
                // Drop L2 tables that now cover only space past the end.
                for (long i = (firstDead + L2Entries - 1) >> L2Bits; i < L1.Length; i++)
                {
                    long l2 = (long)(L1[i] & OffsetMask);
                    if (l2 == 0) continue;
                    L1[i] = 0; WriteL1Entry(i);
                    L2Cache.Invalidate(l2);
                    _pendingClusters.Add(l2);
                }
                // Refcounts drop only once the cleared entries are on disk (power-loss ordering, as for guest writes).
                ApplyPendingFrees();
            }
            long l2Cover = L2Entries << ClusterBits;
            long needL1 = (newSize + l2Cover - 1) / l2Cover;
            if (needL1 > L1.Length) ReplaceL1Table(needL1);
            Header.Size = (ulong)newSize;
            Span<byte> b = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64BigEndian(b, (ulong)newSize);
            File.Write(24, b);
            File.Flush();
        }
    }

    // ---------------------------------------------------------------- backing file link

    /// <summary>Rewrites the backing file name/format in the header (rebase -u, commit -b).</summary>
    public void SetBackingFile(string? name, string? format)
    {
        lock (_sync)
        {
            BeginWrite();
            Quiesce();
            Header.BackingFile = string.IsNullOrEmpty(name) ? null : name;
            Header.BackingFormat = Header.BackingFile == null ? null : format;
            WriteHeader();
            File.Flush();
        }
    }

    /// <summary>Drops every cluster mapping of the active image (qemu's make_empty after commit).</summary>
    public void MakeEmpty()
    {
        lock (_sync)
        {
            BeginWrite();
            Quiesce();
            for (long gc = 0; gc < (Size + ClusterSize - 1) >> ClusterBits; gc++)
            {
                var (e, bm) = GetEntry(gc);
                if (e == 0 && bm == 0) continue;
                long l2 = GetL2ForWrite(gc);
                SetEntry(l2, gc, 0, 0);
                ReleaseLater(e);
            }
            ApplyPendingFrees(); // fsync, then drop the references: a crash never leaves a mapping to a free cluster
            File.Flush();
        }
    }
}
