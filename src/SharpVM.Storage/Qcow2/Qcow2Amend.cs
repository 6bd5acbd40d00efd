using System.Buffers.Binary;

namespace SharpVM.Storage.Qcow2;

/// <summary>`amend`: change compat level (v2 ↔ v3) and refcount width in place.</summary>
public sealed partial class Qcow2Image
{
    /// <summary>Every cluster's reference count as the metadata implies it (the check walk, without the compare).</summary>
    private Dictionary<long, ulong> ComputeReferences(bool includeRefcountStructures)
    {
        var expected = new Dictionary<long, ulong>();
        var r = new CheckResult();
        void Ref(long off, long len, string what)
        {
            if (len <= 0) return;
            for (long c = off >> ClusterBits; c <= (off + len - 1) >> ClusterBits; c++) expected[c] = expected.GetValueOrDefault(c) + 1;
        }
        Ref(0, ClusterSize, "header");
        Ref((long)Header.L1TableOffset, Header.L1Size * 8L, "L1");
        WalkL1(L1, true, Ref, r);
        if (Header.NbSnapshots > 0) Ref((long)Header.SnapshotsOffset, Snapshot.WriteTable(Snapshots).Length, "snapshots");
        foreach (var s in Snapshots)
        {
            Ref((long)s.L1TableOffset, s.L1Size * 8L, "snapshot L1");
            WalkL1(ReadL1((long)s.L1TableOffset, s.L1Size), false, Ref, r);
        }
        if (includeRefcountStructures)
        {
            Ref(Refcounts.TableOffset, (long)Refcounts.TableClusters << ClusterBits, "reftable");
            foreach (var b in Refcounts.Table) if (b != 0) Ref((long)b, ClusterSize, "refblock");
        }
        if (Header.CryptoHeader is { } ch) Ref((long)ch.Offset, (long)ch.Length, "luks");
        if (BitmapDirectory() is { } dir)
        {
            Ref(dir.Offset, dir.Data.Length, "bitmap dir");
            foreach (var (_, to, ts) in BitmapEntries(dir.Data))
            {
                Ref((long)to, ts * 8L, "bitmap table");
                var t = new byte[ts * 8];
                File.Read((long)to, t);
                for (int i = 0; i < ts; i++)
                {
                    ulong e = BinaryPrimitives.ReadUInt64BigEndian(t.AsSpan(i * 8)) & OffsetMask;
                    if (e != 0) Ref((long)e, ClusterSize, "bitmap data");
                }
            }
        }
        if (r.Corruptions > 0) throw new CorruptImageException("image has corrupt metadata; run check -r all first");
        return expected;
    }

    /// <summary>
    /// Rebuilds the refcount structures with a new width. The new table and blocks are written past the end of the
    /// file and synced before one header write switches to them, so a crash leaves either the old or the new set.
    /// </summary>
    public void ChangeRefcountBits(int bits)
    {
        lock (_sync)
        {
            BeginWrite();
            Quiesce();
            if (bits < 1 || bits > 64 || (bits & (bits - 1)) != 0) throw new DiskImageException($"refcount_bits {bits} must be a power of two from 1 to 64");
            int order = System.Numerics.BitOperations.Log2((uint)bits);
            if (order == Header.RefcountOrder) return;
            if (Header.Version < 3) throw new DiskImageException("refcount_bits other than 16 needs compat=1.1");
            var refs = ComputeReferences(includeRefcountStructures: false);
            ulong max = order == 6 ? ulong.MaxValue : (1UL << bits) - 1;
            if (refs.Values.Any(v => v > max)) throw new DiskImageException($"some cluster has a refcount above {max}; cannot use refcount_bits={bits}");
            int cs = ClusterSize;
            long epb = (long)cs * 8 >> order;
            long start = Math.Max((File.Length + cs - 1) >> ClusterBits, refs.Count == 0 ? 0 : refs.Keys.Max() + 1);
            long blocks = 0, table = 0, n = -1;
            while (true)
            {
                long total = start + table + blocks;
                long nb = (total + epb - 1) / epb;
                long nt = (nb * 8 + cs - 1) / cs;
                if (nb == blocks && nt == table) break;
                blocks = nb; table = nt;
                if (++n > 64) throw new DiskImageException("refcount layout did not converge");
            }
            for (long c = start; c < start + table + blocks; c++) refs[c] = 1;
            var tableRaw = new byte[table * cs];
            var tmp = new RefcountTableWriter(order, cs);
            for (long b = 0; b < blocks; b++)
            {
                var blk = new byte[cs];
                for (long i = 0; i < epb; i++)
                    if (refs.TryGetValue(b * epb + i, out var v) && v != 0) tmp.Write(blk, i, v);
                long off = (start + table + b) * cs;
                File.Write(off, blk);
                BinaryPrimitives.WriteUInt64BigEndian(tableRaw.AsSpan((int)b * 8), (ulong)off);
            }
            File.Write(start * cs, tableRaw);
            File.Flush();
            Header.RefcountOrder = order;
            Header.RefcountTableOffset = (ulong)(start * cs);
            Header.RefcountTableClusters = (uint)table;
            WriteHeader();
            File.Flush();
            Refcounts = new RefcountTable(File, ClusterBits, order, start * cs, (int)table, 64, UpdateRefTableHeaderPublic);
        }
    }

    private void UpdateRefTableHeaderPublic(ulong offset, uint clusters) => UpdateRefTableHeader(offset, clusters);

    /// <summary>compat=0.10 (v2) or 1.1 (v3). Downgrading turns zero-flag clusters into real data or holes.</summary>
    public void ChangeCompat(string compat)
    {
        lock (_sync)
        {
            BeginWrite();
            Quiesce();
            uint v = compat switch { "0.10" => 2u, "1.1" => 3u, _ => throw new DiskImageException($"invalid compat level '{compat}'") };
            if (v == Header.Version) return;
            if (v == 3)
            {
                Header.Version = 3; Header.HeaderLength = 112; Header.RefcountOrder = 4;
                if (!Header.Extensions.Any(e => e.Type == Qcow2Header.ExtFeatureTable)) Header.Extensions.Add(Qcow2Header.StandardFeatureTable());
                WriteHeader(); File.Flush();
                return;
            }
            if (Header.RefcountOrder != 4) throw new DiskImageException("compat=0.10 requires refcount_bits=16 (amend it first)");
            if (Header.ExtendedL2) throw new DiskImageException("compat=0.10 does not support extended L2 entries");
            if (Header.CompressionType != 0) throw new DiskImageException("compat=0.10 supports only zlib compression");
            if (Header.CryptMethod == 2) throw new DiskImageException("compat=0.10 does not support LUKS encryption");
            if (Snapshots.Count > 0 && false) { }
            // Zero clusters do not exist in v2: give them real zeros (or nothing, when no backing file can show through).
            var zeros = new byte[ClusterSize];
            for (long gc = 0; gc < (Size + ClusterSize - 1) >> ClusterBits; gc++)
            {
                var (e, _) = GetEntry(gc);
                if ((e & ZeroFlag) == 0 || (e & CompressedFlag) != 0) continue;
                long l2 = GetL2ForWrite(gc);
                // Same power-loss order as guest writes: the new cluster's refcount is synced before an L2 entry
                // points at it (the allocation pool), and the old one is released only after the new entry is synced.
                if (_backing == null) { SetEntry(l2, gc, 0, 0); ReleaseLater(e); }
                else
                {
                    long host = AllocateData(1);
                    File.Write(host, zeros);
                    SetEntry(l2, gc, (ulong)host | Copied, 0);
                    ReleaseLater(e);
                }
            }
            ApplyPendingFrees();
            ReleasePool();
            File.Flush();
            Header.Version = 2; Header.HeaderLength = 72;
            Header.IncompatibleFeatures = 0; Header.CompatibleFeatures = 0; Header.AutoclearFeatures = 0;
            Header.Extensions.RemoveAll(e => e.Type is Qcow2Header.ExtFeatureTable or Qcow2Header.ExtBitmaps);
            WriteHeader();
            File.Flush();
        }
    }

    public void SetLazyRefcounts(bool on)
    {
        lock (_sync)
        {
            BeginWrite();
            Quiesce();
            if (Header.Version < 3 && on) throw new DiskImageException("lazy_refcounts needs compat=1.1");
            // We always keep refcounts exact, so the bit only records the preference for other implementations.
            Header.CompatibleFeatures = on ? Header.CompatibleFeatures | Qcow2Header.CompatLazyRefcounts : Header.CompatibleFeatures & ~Qcow2Header.CompatLazyRefcounts;
            WriteHeader(); File.Flush();
        }
    }

    /// <summary>Packs refcount entries into a block buffer (same bit layout as <see cref="RefcountTable"/>).</summary>
    private sealed class RefcountTableWriter(int order, int cs)
    {
        public void Write(byte[] b, long i, ulong v)
        {
            _ = cs;
            switch (order)
            {
                case < 3:
                    int bits = 1 << order; long bit = i * bits;
                    b[bit >> 3] |= (byte)(v << (int)(bit & 7));
                    break;
                case 3: b[i] = (byte)v; break;
                case 4: BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan((int)i * 2), (ushort)v); break;
                case 5: BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan((int)i * 4), (uint)v); break;
                default: BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan((int)i * 8), v); break;
            }
        }
    }
}
