using System.Buffers.Binary;

namespace SharpVM.Storage.Qcow2;

public enum CheckRepair { None, Leaks, All }

/// <summary>What `check` found, with qemu-img's JSON field names in mind.</summary>
public sealed class CheckResult
{
    public long Corruptions, Leaks, CheckErrors, CorruptionsFixed, LeaksFixed;
    public long TotalClusters, AllocatedClusters, FragmentedClusters, CompressedClusters;
    public long ImageEndOffset;
    public List<string> Messages { get; } = [];
}

public sealed partial class Qcow2Image
{
    /// <summary>
    /// Recomputes every cluster's refcount from the metadata (header, L1/L2 of the active image and of every
    /// snapshot, refcount structures, snapshot table, LUKS header, bitmaps) and compares with the stored refcounts.
    /// Repair sets stored refcounts to the computed ones (leaks only, or all) and fixes COPIED flags.
    /// </summary>
    public CheckResult Check(CheckRepair repair = CheckRepair.None)
    {
        lock (_sync)
        {
            if (repair != CheckRepair.None && File.ReadOnly) throw new ImageReadOnlyException("repair needs the image opened read-write");
            Quiesce();
            var r = new CheckResult();
            int cs = ClusterSize;
            long fileClusters = (File.Length + cs - 1) >> ClusterBits;
            var expected = new Dictionary<long, ulong>();
            void Ref(long off, long len, string what)
            {
                if (len <= 0) return;
                if (off < 0 || (off >> ClusterBits) > fileClusters + (1L << 30))
                {
                    r.Corruptions++; r.Messages.Add($"ERROR {what} at 0x{off:x} is far outside the image");
                    return;
                }
                for (long c = off >> ClusterBits; c <= (off + len - 1) >> ClusterBits; c++)
                {
                    expected[c] = expected.GetValueOrDefault(c) + 1;
                    r.ImageEndOffset = Math.Max(r.ImageEndOffset, (c + 1) << ClusterBits);
                }
            }
            Ref(0, cs, "header");
            Ref((long)Header.L1TableOffset, Header.L1Size * 8L, "L1 table");
            WalkL1(L1, true, Ref, r);
            if (Header.NbSnapshots > 0)
                Ref((long)Header.SnapshotsOffset, Snapshot.WriteTable(Snapshots).Length, "snapshot table");
            foreach (var s in Snapshots)
            {
                Ref((long)s.L1TableOffset, s.L1Size * 8L, $"snapshot '{s.Name}' L1 table");
                WalkL1(ReadL1((long)s.L1TableOffset, s.L1Size), false, Ref, r);
            }
            Ref(Refcounts.TableOffset, (long)Refcounts.TableClusters << ClusterBits, "refcount table");
            foreach (var b in Refcounts.Table) if (b != 0) Ref((long)b, cs, "refcount block");
            if (Header.CryptoHeader is { } ch) Ref((long)ch.Offset, (long)ch.Length, "LUKS header");
            try
            {
                if (BitmapDirectory() is { } dir)
                {
                    var ext = Header.Extensions.First(x => x.Type == Qcow2Header.ExtBitmaps);
                    Ref(dir.Offset, dir.Data.Length, "bitmap directory");
                    foreach (var (_, to, ts) in BitmapEntries(dir.Data))
                    {
                        if (ts > 1 << 20 || to % (ulong)cs != 0 || to + ts * 8UL > (ulong)File.Length) { r.Corruptions++; r.Messages.Add("ERROR bitmap table outside the image"); continue; }
                        Ref((long)to, ts * 8L, "bitmap table");
                        var t = new byte[ts * 8];
                        File.Read((long)to, t);
                        for (int i = 0; i < ts; i++)
                        {
                            ulong e = BinaryPrimitives.ReadUInt64BigEndian(t.AsSpan(i * 8)) & OffsetMask;
                            if (e != 0) Ref((long)e, cs, "bitmap data");
                        }
                    }
                    _ = ext;
                }
            }
            catch (CorruptImageException e) { r.Corruptions++; r.Messages.Add("ERROR " + e.Message); }

            // Refcounts past EOF count too (allocated but never written clusters are leaks).
            long maxCluster = Math.Max(Math.Max(fileClusters, expected.Count == 0 ? 0 : expected.Keys.Max() + 1), Refcounts.LastAllocatedCluster() + 1);
            long covered = (long)Refcounts.Table.Count * Refcounts.EntriesPerBlock;
            var fixes = new List<(long Cluster, ulong Value)>();
            for (long c = 0; c < Math.Max(maxCluster, 0); c++)
            {
                ulong want = expected.GetValueOrDefault(c);
                ulong have = c < covered ? Refcounts.Get(c) : 0;
                if (want == have) continue;
                if (have < want)
                {
                    r.Corruptions++;
                    r.Messages.Add($"ERROR cluster {c} refcount={have} reference={want}");
                    if (repair == CheckRepair.All) fixes.Add((c, want));
                }
                else
                {
                    r.Leaks++;
                    // qemu's image end offset covers every cluster with a refcount, leaked ones included (until repaired).
                    if (repair == CheckRepair.None) r.ImageEndOffset = Math.Max(r.ImageEndOffset, (c + 1) << ClusterBits);
                    r.Messages.Add($"Leaked cluster {c} refcount={have} reference={want}");
                    if (repair != CheckRepair.None) fixes.Add((c, want));
                }
            }
            if (repair != CheckRepair.None && fixes.Count > 0)
            {
                // New refcount blocks made during repair must not land on clusters the metadata uses.
                Refcounts.InUse = c => expected.GetValueOrDefault(c) != 0;
                try
                {
                    foreach (var (c, v) in fixes)
                    {
                        bool wasLeak = Refcounts.Get(c) > v;
                        Refcounts.Set(c, v);
                        if (wasLeak) { r.LeaksFixed++; r.Leaks--; } else { r.CorruptionsFixed++; r.Corruptions--; }
                    }
                }
                finally { Refcounts.InUse = null; }
                Refcounts.ResetHint();
            }
            if (repair == CheckRepair.All) FixCopiedFlags(r);
            else CountCopiedErrors(r);
            r.TotalClusters = (Size + cs - 1) >> ClusterBits;
            if (repair == CheckRepair.All && r.Corruptions == 0 && (Header.IncompatibleFeatures & Qcow2Header.IncompatCorrupt) != 0)
            {
                Header.IncompatibleFeatures &= ~Qcow2Header.IncompatCorrupt; // repaired: writers may use it again
                WriteHeader();
            }
            if (repair != CheckRepair.None) File.Flush();
            return r;
        }
    }

    private void WalkL1(ulong[] l1, bool active, Action<long, long, string> refFn, CheckResult r)
    {
        int cs = ClusterSize;
        for (int i = 0; i < l1.Length; i++)
        {
            long l2 = (long)(l1[i] & OffsetMask);
            if (l2 == 0) continue;
            if (l2 % cs != 0 || l2 + cs > File.Length)
            {
                r.Corruptions++; r.Messages.Add($"ERROR L2 table offset 0x{l2:x} (L1 index {i}) is misaligned or past the end of the file");
                continue;
            }
            refFn(l2, cs, "L2 table");
            long lastData = -1; // like qemu, fragmentation is counted within each L2 table, not across them
            var t = new byte[cs];
            File.Read(l2, t);
            for (long j = 0; j < L2Entries; j++)
            {
                ulong e = BinaryPrimitives.ReadUInt64BigEndian(t.AsSpan((int)j * L2EntryBytes));
                if ((e & CompressedFlag) != 0)
                {
                    var (co, cl) = CompressedRange(e);
                    refFn(co, cl, "compressed cluster");
                    // Like qemu: compressed clusters count as fragmented by nature (adjacent ones still re-read shared sectors).
                    if (active) { r.AllocatedClusters++; r.CompressedClusters++; r.FragmentedClusters++; }
                    continue;
                }
                long host = (long)(e & OffsetMask);
                if (host == 0) continue;
                if (host % cs != 0)
                {
                    r.Corruptions++; r.Messages.Add($"ERROR data cluster offset 0x{host:x} is not cluster aligned");
                    continue;
                }
                refFn(host, cs, "data cluster");
                if (active)
                {
                    r.AllocatedClusters++;
                    if (lastData >= 0 && host != lastData + cs) r.FragmentedClusters++;
                    lastData = host;
                }
            }
        }
    }

    private void CountCopiedErrors(CheckResult r) => VisitCopied(r, false);
    private void FixCopiedFlags(CheckResult r) => VisitCopied(r, true);

    /// <summary>COPIED must be set exactly when the refcount is 1 (active L1 and its L2 tables).</summary>
    private void VisitCopied(CheckResult r, bool fix)
    {
        int cs = ClusterSize;
        for (int i = 0; i < L1.Length; i++)
        {
            long l2 = (long)(L1[i] & OffsetMask);
            if (l2 == 0 || l2 % cs != 0 || l2 + cs > File.Length) continue;
            bool want = Refcounts.Get(l2 >> ClusterBits) == 1;
            if (((L1[i] & Copied) != 0) != want)
            {
                r.Messages.Add($"ERROR OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={L1[i]:x} refcount={Refcounts.Get(l2 >> ClusterBits)}");
                if (fix) { L1[i] = want ? L1[i] | Copied : L1[i] & ~Copied; WriteL1Entry(i); r.CorruptionsFixed++; }
                else r.Corruptions++;
            }
            var t = new byte[cs];
            File.Read(l2, t);
            bool dirty = false;
            for (long j = 0; j < L2Entries; j++)
            {
                int o = (int)j * L2EntryBytes;
                ulong e = BinaryPrimitives.ReadUInt64BigEndian(t.AsSpan(o));
                if ((e & CompressedFlag) != 0 || (e & OffsetMask) == 0) continue;
                bool w = Refcounts.Get((long)(e & OffsetMask) >> ClusterBits) == 1;
                if (((e & Copied) != 0) == w) continue;
                r.Messages.Add($"ERROR OFLAG_COPIED data cluster: l2_entry={e:x} refcount={Refcounts.Get((long)(e & OffsetMask) >> ClusterBits)}");
                if (fix) { BinaryPrimitives.WriteUInt64BigEndian(t.AsSpan(o), w ? e | Copied : e & ~Copied); dirty = true; r.CorruptionsFixed++; }
                else r.Corruptions++;
            }
            if (dirty) { File.Write(l2, t); L2Cache.Invalidate(l2); }
        }
    }
}
