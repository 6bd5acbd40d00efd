using System.Buffers.Binary;
using SharpVM.Storage.Qcow2;

namespace SharpVM.Storage.Tests;

/// <summary>
/// Power-loss ordering of metadata, checked on the host file's log of writes and fdatasyncs:
/// a refcount may only drop once the L1/L2 update that removed the reference is on disk, and an L2 entry may only
/// point at a cluster whose refcount is already on disk. Otherwise a power loss can leave a mapping to a cluster
/// with refcount 0 (qemu-img check: a corruption), which the next allocation hands to another guest region.
/// </summary>
public class WriteOrderTests
{
    private const int Cs = 65536;

    /// <summary>Watches one image's file: which writes hit refcount blocks or mapping tables, and what is durable.</summary>
    private sealed class OrderRecorder
    {
        private readonly Qcow2Image _img;
        private readonly long[] _blocks; // refcount table (block offsets, 0 = none)
        private readonly long _l1Start, _l1End;
        private HashSet<long> _durablyAllocated;
        public readonly List<string> Violations = [];
        public int RefcountWrites, MappingWrites;

        public OrderRecorder(Qcow2Image img)
        {
            _img = img;
            _blocks = img.Refcounts.Table.Select(b => (long)b).ToArray();
            _l1Start = (long)img.Header.L1TableOffset;
            _l1End = _l1Start + img.Header.L1Size * 8L;
            _durablyAllocated = Allocated();
            img.File.AfterWrite = OnWrite;
            img.File.DataSyncOverride = () => { _unsyncedDropped.Clear(); _durablyAllocated = Allocated(); return 0; };
        }

        public void Stop() { _img.File.AfterWrite = null; _img.File.DataSyncOverride = null; }

        private byte[] ReadFile(long off, int len)
        {
            var b = new byte[len];
            _img.File.Read(off, b);
            return b;
        }

        /// <summary>Clusters whose refcount in the file is nonzero (16-bit refcounts).</summary>
        private HashSet<long> Allocated()
        {
            var set = new HashSet<long>();
            for (int bi = 0; bi < _blocks.Length; bi++)
            {
                if (_blocks[bi] == 0) continue;
                var b = ReadFile(_blocks[bi], Cs);
                for (int i = 0; i < Cs / 2; i++)
                    if (BinaryPrimitives.ReadUInt16BigEndian(b.AsSpan(i * 2)) != 0) set.Add((long)bi * (Cs / 2) + i);
            }
            return set;
        }

        private bool IsL2Table(long cluster) =>
            _img.L1.Any(e => (long)(e & Qcow2Image.OffsetMask) == cluster);

        /// <summary>Content of the refcount blocks and mapping tables as last written (missing: as in the file at the start).</summary>
        private readonly Dictionary<long, byte[]> _shadow = [];
        /// <summary>Clusters a mapping write stopped referencing since the last fdatasync.</summary>
        private readonly HashSet<long> _unsyncedDropped = [];

        private byte[] Shadow(long cluster, bool fresh) =>
            _shadow.TryGetValue(cluster, out var b) ? b : _shadow[cluster] = fresh ? new byte[Cs] : ReadFile(cluster, Cs);

        private void OnWrite(long off, int len)
        {
            long cluster = off / Cs * Cs;
            var written = ReadFile(off, len);
            if (_blocks.Contains(cluster))
            {
                RefcountWrites++;
                var old = Shadow(cluster, fresh: false);
                int bi = Array.IndexOf(_blocks, cluster);
                for (int i = (int)(off - cluster) & ~1; i + 2 <= off - cluster + len; i += 2)
                {
                    int was = BinaryPrimitives.ReadUInt16BigEndian(old.AsSpan(i));
                    int now = BinaryPrimitives.ReadUInt16BigEndian(ReadFile(cluster + i, 2));
                    long c = (long)bi * (Cs / 2) + i / 2;
                    if (now < was && _unsyncedDropped.Contains(c))
                        Violations.Add($"refcount of cluster {c} dropped before the mapping change that released it was synced");
                }
                written.CopyTo(old, (int)(off - cluster));
                return;
            }
            bool l1 = off < _l1End && off + len > _l1Start;
            if (!l1 && !IsL2Table(cluster)) return;
            MappingWrites++;
            var before = Shadow(cluster, fresh: false);
            for (int i = 0; i + 8 <= len; i += 8)
            {
                ulong e = BinaryPrimitives.ReadUInt64BigEndian(written.AsSpan(i));
                long host = (long)(e & Qcow2Image.OffsetMask);
                if (host != 0 && (e & (1UL << 62)) == 0 && !_durablyAllocated.Contains(host / Cs))
                    Violations.Add($"mapping write at 0x{off + i:x} points at 0x{host:x}, whose refcount is not on disk yet");
                {
                    ulong prev = BinaryPrimitives.ReadUInt64BigEndian(before.AsSpan((int)(off - cluster) + i));
                    long prevHost = (long)(prev & Qcow2Image.OffsetMask);
                    if (prevHost != 0 && prevHost != host && (prev & (1UL << 62)) == 0) _unsyncedDropped.Add(prevHost / Cs);
                }
            }
            written.CopyTo(before, (int)(off - cluster));
        }
    }

    [Theory]
    [InlineData("shrink")]
    [InlineData("make-empty")]
    [InlineData("downgrade")]
    [InlineData("downgrade-with-backing")]
    [InlineData("guest-io")]
    public void MappingsAndRefcountsReachTheDiskInASafeOrder(string op)
    {
        const long Size = 2L << 30; // several L2 tables (one covers 512 MiB)
        using var d = new TempDir();
        string path = d["o.qcow2"];
        var data = new byte[Cs];
        new Random(1).NextBytes(data);
        if (op == "downgrade-with-backing")
        {
            Qcow2Image.Create(d["base.qcow2"], new Qcow2CreateOptions { Size = Size }).Dispose();
            using var top = Qcow2Image.Create(path, new Qcow2CreateOptions { Size = Size, BackingFile = "base.qcow2", BackingFormat = "qcow2" });
            for (long g = 0; g < Size; g += 256L << 20) top.WriteZeroes(g + 3 * Cs, 2 * Cs); // zero flags over the backing file
        }
        else
        {
            using (var img = Qcow2Image.Create(path, new Qcow2CreateOptions { Size = Size }))
                for (long g = 0; g < Size; g += 256L << 20) img.Write(g + 3 * Cs, data);
            // qemu's write -z keeps the clusters allocated (zero flag with a host offset): downgrading frees them.
            if (op == "downgrade")
                for (long g = 0; g < Size; g += 256L << 20) Qemu.Io("-f", "qcow2", "-c", $"write -z {g + 3 * Cs} {Cs}", path);
        }

        using (var img = Qcow2Image.Open(path))
        {
            var rec = new OrderRecorder(img);
            switch (op)
            {
                case "shrink": img.Resize(1 << 20, allowShrink: true); break;
                case "make-empty": img.MakeEmpty(); break;
                case "guest-io": GuestIo(img); break;
                default: img.ChangeCompat("0.10"); break;
            }
            rec.Stop();
            Assert.True(rec.MappingWrites > 0 && rec.RefcountWrites > 0, "the operation changed no mapping or refcount");
            Assert.True(rec.Violations.Count == 0, string.Join("\n", rec.Violations.Take(5)));
        }
        Qemu.AssertClean(path);
    }

    /// <summary>What a guest does: writes (allocating, in place, over compressed clusters), zeroes, discards, flushes.</summary>
    private static void GuestIo(Qcow2Image img)
    {
        var rnd = new Random(7);
        var text = System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("compressible ", Cs / 13 + 1)))[..Cs];
        for (int i = 0; i < 400; i++)
        {
            long off = rnd.NextInt64(0, (1L << 30) - 3 * Cs);
            int len = rnd.Next(1, 3 * Cs);
            switch (rnd.Next(8))
            {
                case < 4: var b = new byte[len]; rnd.NextBytes(b); img.Write(off, b); break;
                case 4: img.WriteZeroes(off, len); break;
                case 5: img.Discard(off / Cs * Cs, Cs); break;
                case 6: img.WriteCompressed(off / Cs, text); break;
                default: img.Flush(); break;
            }
        }
        img.Flush();
    }
}
