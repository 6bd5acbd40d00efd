using System.Buffers.Binary;
using SharpVM.Storage.Crypto;

namespace SharpVM.Storage.Qcow2;

/// <summary>
/// A qcow2 image (v2 or v3). All guest I/O is split into per-cluster chunks; metadata goes through bounded
/// write-through caches. Crash ordering for a new cluster: refcount +1, data, L2 entry, then release of the old
/// cluster, so an interrupted write can only leak clusters. One monitor lock serialises requests.
/// </summary>
public sealed partial class Qcow2Image : IDiskImage
{
    internal const ulong OffsetMask = 0x00fffffffffffe00UL;
    internal const ulong Copied = 1UL << 63;
    internal const ulong CompressedFlag = 1UL << 62;
    internal const ulong ZeroFlag = 1UL;

    private readonly object _sync = new();
    internal readonly ImageFile File;
    public Qcow2Header Header { get; internal set; }
    internal ulong[] L1;
    internal RefcountTable Refcounts = null!;
    internal readonly MetadataCache L2Cache;
    internal List<Snapshot> Snapshots = [];
    private readonly LuksCrypto? _crypto;
    private readonly IDiskImage? _backing;
    private long _compCursor, _compCursorEnd;
    private long _cachedComprCluster = -1;
    private byte[]? _cachedComprData;
    private bool _bitmapsMarked;
    private bool _disposed;
    private bool _locked;

    public string Format => "qcow2";
    public string Path => File.Path;
    public long Size => (long)Header.Size;
    public bool ReadOnly => File.ReadOnly;
    public int ClusterSize => Header.ClusterSize;
    public IDiskImage? Backing => _backing;
    public long ActualSize => File.AllocatedBytes;
    public bool IsEncrypted => _crypto != null;
    internal int ClusterBits => Header.ClusterBits;
    internal bool Extended => Header.ExtendedL2;
    internal int L2EntryBytes => Extended ? 16 : 8;
    internal int L2Bits => ClusterBits - (Extended ? 4 : 3);
    internal long L2Entries => 1L << L2Bits;
    private int SubBits => Extended ? ClusterBits - 5 : ClusterBits;
    internal int CsizeShift => 62 - (ClusterBits - 8);
    internal IReadOnlyList<Snapshot> SnapshotList => Snapshots;
    internal LuksCrypto? Crypto => _crypto;

    private Qcow2Image(ImageFile file, Qcow2Header header, IDiskImage? backing, OpenOptions opts)
    {
        File = file;
        Header = header;
        _backing = backing;
        int cacheTables = Math.Max(4, (int)(opts.L2CacheBytes / header.ClusterSize));
        L2Cache = new MetadataCache(cacheTables);
        L1 = ReadL1((long)header.L1TableOffset, header.L1Size);
        Refcounts = new RefcountTable(file, header.ClusterBits, header.RefcountOrder, (long)header.RefcountTableOffset,
            (int)header.RefcountTableClusters, Math.Max(4, cacheTables / 4), UpdateRefTableHeader);
        CheckOverlaps();
        if (header.NbSnapshots > 0)
        {
            // Each entry is at most 40 + 1024 + 2 * 65535 bytes; read only what the count can need, bounded by the file.
            long max = Math.Min(file.Length - (long)header.SnapshotsOffset, (long)header.NbSnapshots * (40 + 1024 + 2 * 65536L));
            max = Math.Min(max, 64L << 20);
            var buf = new byte[max];
            file.Read((long)header.SnapshotsOffset, buf);
            Snapshots = Snapshot.ReadTable(buf, header.NbSnapshots, header.ClusterSize, file.Length, Qcow2Header.MaxL1Bytes / 8);
        }
        if (header.CryptMethod == 2)
        {
            var ch = header.CryptoHeader ?? throw new CorruptImageException("LUKS-encrypted image has no full disk encryption header extension");
            if (ch.Offset % (ulong)header.ClusterSize != 0 || ch.Offset >= (ulong)file.Length || ch.Length > (ulong)file.Length - ch.Offset || ch.Length > 64 << 20)
                throw new CorruptImageException("LUKS header extension points outside the file");
            if (opts.Secret == null && opts.AllowLocked) { _locked = true; return; }
            if (opts.Secret == null) throw new ImageKeyException($"'{file.Path}' is encrypted: a secret is needed (--object secret,id=sec0,data=... --image-opts encrypt.key-secret=sec0, or --password)");
            var hb = new byte[ch.Length];
            file.Read((long)ch.Offset, hb);
            _crypto = LuksCrypto.Unlock(hb, opts.Secret);
        }
    }

    private ulong[] ReadL1(long offset, uint size)
    {
        var raw = new byte[size * 8L];
        File.Read(offset, raw);
        var l1 = new ulong[size];
        for (int i = 0; i < l1.Length; i++) l1[i] = BinaryPrimitives.ReadUInt64BigEndian(raw.AsSpan(i * 8));
        return l1;
    }

    /// <summary>Header, L1 table and refcount table must not share clusters: a write to one would corrupt another.</summary>
    private void CheckOverlaps()
    {
        long cs = ClusterSize;
        var ranges = new List<(string, long, long)>
        {
            ("header", 0, cs),
            ("L1 table", (long)Header.L1TableOffset, Math.Max(1, Header.L1Size * 8L)),
            ("refcount table", (long)Header.RefcountTableOffset, (long)Header.RefcountTableClusters * cs),
        };
        if (Header.L1Size == 0) ranges.RemoveAt(1);
        for (int i = 0; i < ranges.Count; i++)
            for (int j = i + 1; j < ranges.Count; j++)
            {
                var (an, a0, al) = ranges[i]; var (bn, b0, bl) = ranges[j];
                if (a0 < b0 + bl && b0 < a0 + al) throw new CorruptImageException($"overlapping metadata: {an} and {bn} share clusters");
            }
    }

    internal bool IsProtectedMetadata(long hostOffset)
    {
        long c = hostOffset >> ClusterBits;
        if (c == 0) return true;
        long l1c = (long)Header.L1TableOffset >> ClusterBits, l1n = (Header.L1Size * 8L + ClusterSize - 1) >> ClusterBits;
        if (c >= l1c && c < l1c + l1n) return true;
        long rc = Refcounts.TableOffset >> ClusterBits;
        return c >= rc && c < rc + Refcounts.TableClusters;
    }

    private void UpdateRefTableHeader(ulong offset, uint clusters)
    {
        Header.RefcountTableOffset = offset; Header.RefcountTableClusters = clusters;
        Span<byte> b = stackalloc byte[12];
        BinaryPrimitives.WriteUInt64BigEndian(b, offset);
        BinaryPrimitives.WriteUInt32BigEndian(b[8..], clusters);
        File.Write(48, b);
    }

    internal void WriteHeader()
    {
        var b = Header.Serialize();
        File.Write(0, b.AsSpan(0, Header.UsedBytes));
    }

    // ---------------------------------------------------------------- opening

    public sealed class OpenOptions
    {
        public bool ReadOnly { get; init; }
        public string? Secret { get; init; }
        /// <summary>Bytes of L2 tables to cache (QEMU's l2-cache-size); refcount blocks get a quarter.</summary>
        public long L2CacheBytes { get; init; } = 4 << 20;
        /// <summary>Do not open the backing file (qemu-img's -u for rebase, info without chain).</summary>
        public bool NoBacking { get; init; }
        /// <summary>Open an encrypted image without its secret for metadata only (info, snapshot -l); guest I/O then fails.</summary>
        public bool AllowLocked { get; init; }
        /// <summary>Open read-write even with the corrupt bit set, for `check -r all` (which clears it when done).</summary>
        public bool ForRepair { get; init; }
        /// <summary>Skip the automatic refcount repair of dirty images (check wants to see them as they are).</summary>
        public bool NoRepairOnOpen { get; init; }
        /// <summary>
        /// qemu's cache=unsafe (qemu-img convert's default for its target): flushes are skipped. Metadata writes keep
        /// their crash-safe order, so a killed process still leaves an image that check accepts; a host crash may not.
        /// </summary>
        public bool UnsafeCache { get; init; }
        internal int Depth { get; init; }
    }

    public static Qcow2Image Open(string path, OpenOptions? opts = null)
    {
        opts ??= new OpenOptions();
        var file = new ImageFile(path, opts.ReadOnly) { IgnoreFlushes = opts.UnsafeCache };
        try
        {
            long len = file.Length;
            var first = new byte[Math.Min(len, 2 << 20)];
            file.Read(0, first);
            var h = Qcow2Header.Parse(first, len);
            if ((h.IncompatibleFeatures & Qcow2Header.IncompatCorrupt) != 0 && !opts.ReadOnly && !opts.ForRepair)
                throw new ImageReadOnlyException($"'{path}' is marked corrupt (corrupt bit set): it may only be opened read-only; run 'sharpvm img check -r all' to repair it");
            IDiskImage? backing = null;
            if (h.BackingFile != null && !opts.NoBacking)
                backing = DiskImage.OpenBacking(path, h.BackingFile, h.BackingFormat, opts);
            try
            {
                var img = new Qcow2Image(file, h, backing, opts);
                if (!opts.ReadOnly && !opts.NoRepairOnOpen && (h.IncompatibleFeatures & Qcow2Header.IncompatDirty) != 0)
                {
                    // A dirty image (lazy refcounts, not closed cleanly) has untrustworthy refcounts: rebuild them first.
                    img.Check(CheckRepair.All);
                    img.Header.IncompatibleFeatures &= ~Qcow2Header.IncompatDirty;
                    img.WriteHeader();
                    img.File.Flush();
                }
                if (!opts.ReadOnly && (h.AutoclearFeatures & ~Qcow2Header.AutoclearBitmaps) != 0)
                {
                    // Autoclear bits we do not understand must be cleared by a writer (qcow2.rst, autoclear_features).
                    img.Header.AutoclearFeatures &= Qcow2Header.AutoclearBitmaps;
                    img.WriteHeader();
                }
                return img;
            }
            catch { backing?.Dispose(); throw; }
        }
        catch { file.Dispose(); throw; }
    }

    // ---------------------------------------------------------------- L2 access

    internal byte[] LoadL2(long l2Offset)
    {
        // Every guest request looks its clusters up here: a hit must not allocate (a loader lambda capturing `this`
        // would cost a delegate per lookup).
        if (L2Cache.TryGet(l2Offset, out var cached)) return cached;
        if (l2Offset % ClusterSize != 0 || l2Offset + ClusterSize > File.Length)
            throw new CorruptImageException($"L2 table at 0x{l2Offset:x} is misaligned or past the end of the file");
        if (IsProtectedMetadata(l2Offset)) throw new CorruptImageException($"L2 table at 0x{l2Offset:x} overlaps the header, L1 or refcount table");
        var table = new byte[ClusterSize];
        File.Read(l2Offset, table);
        L2Cache.Put(l2Offset, table);
        return table;
    }

    /// <summary>The L2 entry (and extended-L2 bitmap) for a guest cluster; (0,0) when no L2 table exists.</summary>
    internal (ulong Entry, ulong Bitmap) GetEntry(long guestCluster)
    {
        long l1i = guestCluster >> L2Bits;
        if (l1i >= L1.Length) return (0, 0);
        long l2off = (long)(L1[l1i] & OffsetMask);
        if (l2off == 0) return (0, 0);
        var t = LoadL2(l2off);
        int i = (int)(guestCluster & (L2Entries - 1)) * L2EntryBytes;
        ulong e = BinaryPrimitives.ReadUInt64BigEndian(t.AsSpan(i));
        ulong bm = Extended ? BinaryPrimitives.ReadUInt64BigEndian(t.AsSpan(i + 8)) : 0;
        return (e, bm);
    }

    private void SetEntry(long l2Offset, long guestCluster, ulong e, ulong bm)
    {
        var t = LoadL2(l2Offset);
        int i = (int)(guestCluster & (L2Entries - 1)) * L2EntryBytes;
        BinaryPrimitives.WriteUInt64BigEndian(t.AsSpan(i), e);
        if (Extended) BinaryPrimitives.WriteUInt64BigEndian(t.AsSpan(i + 8), bm);
        File.Write(l2Offset + i, t.AsSpan(i, L2EntryBytes));
    }

    internal void WriteL1Entry(long index)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(b, L1[index]);
        File.Write((long)Header.L1TableOffset + index * 8, b);
    }

    /// <summary>Returns an L2 table that only the active L1 references (allocating or copying it as needed).</summary>
    private long GetL2ForWrite(long guestCluster)
    {
        long l1i = guestCluster >> L2Bits;
        if (l1i >= L1.Length) throw new DiskImageException("write beyond the L1 table");
        ulong l1e = L1[l1i];
        long old = (long)(l1e & OffsetMask);
        if (old != 0 && (l1e & Copied) != 0) return old;
        long fresh = AllocateData(1);
        var table = new byte[ClusterSize];
        if (old != 0) LoadL2(old).CopyTo(table, 0);
        File.Write(fresh, table);
        L2Cache.Put(fresh, table);
        // The table must be on disk before L1 points at it: the cluster may hold stale metadata from an earlier life.
        File.Flush();
        L1[l1i] = (ulong)fresh | Copied;
        WriteL1Entry(l1i);
        if (old != 0) _pendingClusters.Add(old);
        return fresh;
    }

    // ---------------------------------------------------------------- reading

    private void CheckRange(long offset, long length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_locked) throw new ImageKeyException($"'{Path}' is encrypted and was opened without its secret");
        if (offset < 0 || length < 0 || offset > Size || length > Size - offset)
            throw new ArgumentOutOfRangeException(nameof(offset), $"range {offset}+{length} is outside the {Size}-byte disk");
    }

    public void Read(long offset, Span<byte> buffer)
    {
        if (TryReadUnlocked(offset, buffer)) return;
        lock (_sync)
        {
            CheckRange(offset, buffer.Length);
            int done = 0;
            while (done < buffer.Length)
            {
                long g = offset + done;
                int n = (int)Math.Min(buffer.Length - done, ClusterSize - (g & (ClusterSize - 1)));
                if (!Extended && _crypto == null)
                {
                    // Fast path: a run of plain data clusters that are contiguous on the host is one pread.
                    var (e, _) = GetEntry(g >> ClusterBits);
                    long host = (long)(e & OffsetMask);
                    if (host != 0 && (e & (CompressedFlag | ZeroFlag)) == 0)
                    {
                        long runHost = host + (g & (ClusterSize - 1));
                        int run = n;
                        while (done + run < buffer.Length)
                        {
                            var (e2, _) = GetEntry((g + run) >> ClusterBits);
                            if ((e2 & (CompressedFlag | ZeroFlag)) != 0 || (long)(e2 & OffsetMask) != runHost + run) break;
                            run += (int)Math.Min(ClusterSize, buffer.Length - done - run);
                        }
                        File.Read(runHost, buffer.Slice(done, run));
                        done += run;
                        continue;
                    }
                }
                if (n == ClusterSize && buffer.Length - done >= 2 * ClusterSize)
                {
                    int got = ReadCompressedRun(g, buffer[done..]);
                    if (got > 0) { done += got; continue; }
                }
                ReadChunk(g, buffer.Slice(done, n));
                done += n;
            }
        }
    }

    /// <summary>
    /// Reads a run of whole compressed clusters, decompressing them in parallel (the codec dominates the cost
    /// of reading compressed images). Returns the bytes produced, 0 if the cluster at <paramref name="g"/> is not compressed.
    /// </summary>
    private int ReadCompressedRun(long g, Span<byte> dst)
    {
        int max = Math.Min(dst.Length >> ClusterBits, 64);
        var entries = new List<ulong>();
        for (int i = 0; i < max; i++)
        {
            var (e, _) = GetEntry((g >> ClusterBits) + i);
            if ((e & CompressedFlag) == 0) break;
            entries.Add(e);
        }
        if (entries.Count < 2) return 0;
        var srcs = new byte[entries.Count][];
        for (int i = 0; i < entries.Count; i++)
        {
            var (coff, clen) = CompressedRange(entries[i]);
            if (coff >= File.Length) throw new CorruptImageException($"compressed cluster for guest cluster {(g >> ClusterBits) + i} starts past the end of the file");
            srcs[i] = new byte[Math.Min(clen, File.Length - coff)];
            File.Read(coff, srcs[i]);
        }
        var outs = new byte[entries.Count][];
        bool zstd = Header.CompressionType == 1;
        int cs = ClusterSize;
        try
        {
            Parallel.For(0, entries.Count, i =>
            {
                outs[i] = new byte[cs];
                if (zstd) NativeCompression.ZstdDecompress(srcs[i], outs[i]);
                else NativeCompression.Inflate(srcs[i], outs[i]);
            });
        }
        catch (AggregateException ae) when (ae.InnerException is DiskImageException die)
        {
            throw die; // keep the typed error (corrupt compressed data) for callers
        }
        for (int i = 0; i < outs.Length; i++) outs[i].CopyTo(dst[(i * cs)..]);
        return outs.Length * cs;
    }

    /// <summary>Reads a range inside one guest cluster.</summary>
    private void ReadChunk(long g, Span<byte> dst)
    {
        long gc = g >> ClusterBits;
        int inC = (int)(g & (ClusterSize - 1));
        var (e, bm) = GetEntry(gc);
        if ((e & CompressedFlag) != 0)
        {
            DecompressCluster(gc, e).AsSpan(inC, dst.Length).CopyTo(dst);
            return;
        }
        long host = (long)(e & OffsetMask);
        if (!Extended)
        {
            if ((e & ZeroFlag) != 0 && Header.Version >= 3) dst.Clear();
            else if (host == 0) ReadBacking(g, dst);
            else ReadHost(host, inC, dst);
            return;
        }
        // Extended L2: each of the 32 subclusters is allocated, zero, or falls through to the backing file.
        int sub = 1 << SubBits;
        int pos = 0;
        while (pos < dst.Length)
        {
            int s = (inC + pos) >> SubBits;
            int n = Math.Min(dst.Length - pos, ((s + 1) * sub) - (inC + pos));
            var part = dst.Slice(pos, n);
            if ((bm >> s & 1) != 0)
            {
                if (host == 0) throw new CorruptImageException($"guest cluster {gc}: subcluster allocated but the cluster has no host offset");
                ReadHost(host, inC + pos, part);
            }
            else if ((bm >> (32 + s) & 1) != 0) part.Clear();
            else ReadBacking(g + pos, part);
            pos += n;
        }
    }

    private void ReadHost(long host, int inC, Span<byte> dst)
    {
        if (_crypto == null) { File.Read(host + inC, dst); return; }
        int a0 = inC & ~511, a1 = (inC + dst.Length + 511) & ~511;
        var tmp = new byte[a1 - a0];
        File.Read(host + a0, tmp);
        _crypto.Decrypt(tmp, (host + a0) / 512);
        tmp.AsSpan(inC - a0, dst.Length).CopyTo(dst);
    }

    private void ReadBacking(long g, Span<byte> dst)
    {
        if (_backing == null) { dst.Clear(); return; }
        long bsize = _backing.Size;
        int n = (int)Math.Clamp(bsize - g, 0, dst.Length);
        if (n > 0) _backing.Read(g, dst[..n]);
        dst[n..].Clear();
    }

    internal (long Offset, int Length) CompressedRange(ulong e)
    {
        ulong coff = e & ((1UL << CsizeShift) - 1);
        ulong nsec = ((e >> CsizeShift) & ((1UL << (ClusterBits - 8)) - 1)) + 1;
        long len = (long)(nsec * 512 - (coff & 511));
        return ((long)coff, (int)len);
    }

    private byte[] DecompressCluster(long gc, ulong e)
    {
        if (_cachedComprCluster == gc && _cachedComprData != null) return _cachedComprData;
        var (coff, clen) = CompressedRange(e);
        if (coff >= File.Length) throw new CorruptImageException($"compressed cluster for guest cluster {gc} starts past the end of the file");
        var src = new byte[Math.Min(clen, File.Length - coff)];
        File.Read(coff, src);
        var dst = new byte[ClusterSize];
        if (Header.CompressionType == 1) NativeCompression.ZstdDecompress(src, dst);
        else NativeCompression.Inflate(src, dst);
        _cachedComprCluster = gc; _cachedComprData = dst;
        return dst;
    }

    // ---------------------------------------------------------------- writing

    /// <summary>Start of every metadata-changing operation: drains unlocked data I/O first (see Qcow2UnlockedIo.cs).</summary>
    private void BeginWrite()
    {
        AwaitUnlockedIo();
        PrepareWrite();
    }

    private void PrepareWrite()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (File.ReadOnly) throw new ImageReadOnlyException($"'{Path}' is open read-only");
        _cachedComprCluster = -1;
        if (!_bitmapsMarked) { _bitmapsMarked = true; MarkBitmapsInUse(); }
    }

    public void Write(long offset, ReadOnlySpan<byte> data)
    {
        if (TryWriteUnlocked(offset, data)) return;
        lock (_sync)
        {
            AwaitUnlockedIo(); // first: waiting releases the lock, so nothing may be read before it
            CheckRange(offset, data.Length);
            BeginWrite();
            try { WriteLocked(offset, data); }
            catch (CorruptImageException) { MarkCorrupt(); throw; }
        }
    }

    /// <summary>
    /// Metadata found inconsistent while writing: set the corrupt bit (as QEMU does) so no writer touches the image
    /// again until `check -r all` has repaired it. Best effort: the header write itself may fail.
    /// </summary>
    private void MarkCorrupt()
    {
        if (File.ReadOnly || Header.Version < 3) return;
        try
        {
            Header.IncompatibleFeatures |= Qcow2Header.IncompatCorrupt;
            Span<byte> b = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64BigEndian(b, Header.IncompatibleFeatures);
            File.Write(72, b);
            File.Flush();
        }
        catch (IOException) { }
    }

    private void WriteLocked(long offset, ReadOnlySpan<byte> data)
    {
        {
            int done = 0;
            while (done < data.Length)
            {
                long g = offset + done;
                int n = (int)Math.Min(data.Length - done, ClusterSize - (g & (ClusterSize - 1)));
                if (!Extended && _crypto == null)
                {
                    // In-place fast path: clusters we own exclusively and that are contiguous on the host take one pwrite.
                    var (e, _) = GetEntry(g >> ClusterBits);
                    long host = (long)(e & OffsetMask);
                    if (host != 0 && (e & Copied) != 0 && (e & (CompressedFlag | ZeroFlag)) == 0 && n < data.Length - done)
                    {
                        long runHost = host + (g & (ClusterSize - 1));
                        int run = n;
                        while (done + run < data.Length)
                        {
                            var (e2, _) = GetEntry((g + run) >> ClusterBits);
                            if ((e2 & Copied) == 0 || (e2 & (CompressedFlag | ZeroFlag)) != 0 || (long)(e2 & OffsetMask) != runHost + run) break;
                            run += (int)Math.Min(ClusterSize, data.Length - done - run);
                        }
                        if (run > n)
                        {
                            if (IsProtectedMetadata(host)) throw new CorruptImageException($"guest offset {g} maps to 0x{host:x}, which is image metadata; refusing to write");
                            if (runHost + run > File.Length + ClusterSize * 1024L) throw new CorruptImageException($"guest offset {g} maps far past the end of the file");
                            for (long c = (runHost >> ClusterBits) + 1; c <= (runHost + run - 1) >> ClusterBits; c++)
                                if (IsProtectedMetadata(c << ClusterBits)) throw new CorruptImageException($"guest range at {g} maps onto image metadata; refusing to write");
                            File.Write(runHost, data.Slice(done, run));
                            done += run;
                            continue;
                        }
                    }
                }
                if (n == ClusterSize && !Extended && _crypto == null)
                {
                    int run = CountFreshClusters(g >> ClusterBits, (data.Length - done) >> ClusterBits);
                    if (run > 1)
                    {
                        WriteFreshRun(g >> ClusterBits, data.Slice(done, run << ClusterBits));
                        done += run << ClusterBits;
                        continue;
                    }
                }
                WriteChunk(g, data.Slice(done, n));
                done += n;
            }
        }
    }

    /// <summary>Writes a range inside one guest cluster, allocating or copying the cluster when it is not exclusively ours.</summary>
    private void WriteChunk(long g, ReadOnlySpan<byte> src)
    {
        long gc = g >> ClusterBits;
        int inC = (int)(g & (ClusterSize - 1));
        var (e, bm) = GetEntry(gc);
        long host = (long)(e & OffsetMask);
        bool compressed = (e & CompressedFlag) != 0;
        bool inPlace = !compressed && host != 0 && (e & Copied) != 0 && (Extended || (e & ZeroFlag) == 0);
        if (inPlace && host + ClusterSize > File.Length + ClusterSize * 1024L)
            throw new CorruptImageException($"guest cluster {gc} maps to 0x{host:x}, far past the end of the file");
        if (inPlace && IsProtectedMetadata(host))
            throw new CorruptImageException($"guest cluster {gc} maps to 0x{host:x}, which is image metadata; refusing to write");

        int s0 = inC >> SubBits, s1 = (inC + src.Length - 1) >> SubBits;
        int a0 = s0 << SubBits, a1 = (s1 + 1) << SubBits;
        bool copyWhole = !inPlace && (compressed || host != 0);
        if (copyWhole) { a0 = 0; a1 = ClusterSize; }
        bool covered = inC == a0 && inC + src.Length == a1;
        // Fast path: our own cluster, whole (sub)clusters already allocated, no encryption: plain pwrite.
        bool subsAllocated = !Extended || SubRangeBits(s0, s1) == (bm & SubRangeBits(s0, s1));
        if (inPlace && _crypto == null && subsAllocated)
        {
            File.Write(host + inC, src);
            return;
        }
        byte[] buf = new byte[a1 - a0];
        if (!covered) ReadChunk((gc << ClusterBits) + a0, buf);
        src.CopyTo(buf.AsSpan(inC - a0));
        long target = inPlace ? host : AllocateData(1);
        if (target != host && IsProtectedMetadata(target)) throw new CorruptImageException("allocator returned a metadata cluster; refcounts are corrupt");
        _crypto?.Encrypt(buf, (target + a0) / 512);
        File.Write(target + a0, buf);
        ulong ne = (ulong)target | Copied;
        ulong nbm = 0;
        if (Extended)
        {
            ulong bits = copyWhole ? 0xffffffffUL : SubRangeBits(s0, s1);
            nbm = copyWhole ? bits : ((bm | bits) & ~(bits << 32));
            if (!copyWhole && !inPlace) nbm &= 0xffffffff00000000UL | bits; // old alloc bits meaningless without a host cluster
        }
        if (ne != e || nbm != bm)
        {
            long l2 = GetL2ForWrite(gc);
            SetEntry(l2, gc, ne, nbm);
        }
        if (!inPlace) ReleaseLater(e);
    }

    /// <summary>How many whole clusters from <paramref name="gc"/> hold no data of their own (so need no copy-on-write).</summary>
    private int CountFreshClusters(long gc, int max)
    {
        int n = 0;
        max = Math.Min(max, 4096);
        while (n < max)
        {
            var (e, _) = GetEntry(gc + n);
            if ((e & (OffsetMask | CompressedFlag)) != 0) break;
            n++;
        }
        return n;
    }

    /// <summary>
    /// Writes whole clusters that are unallocated: one contiguous allocation, one data pwrite, then the L2 entries
    /// (same crash ordering as the single-cluster path: refcounts, data, L2).
    /// </summary>
    private void WriteFreshRun(long gc, ReadOnlySpan<byte> data)
    {
        int n = data.Length >> ClusterBits;
        long host = AllocateData(n);
        for (int i = 0; i < n; i++)
            if (IsProtectedMetadata(host + ((long)i << ClusterBits))) throw new CorruptImageException("allocator returned a metadata cluster; refcounts are corrupt");
        File.Write(host, data);
        // L2 entries: one pwrite per L2 table touched.
        int k = 0;
        while (k < n)
        {
            long l2 = GetL2ForWrite(gc + k);
            var t = LoadL2(l2);
            int first = (int)((gc + k) & (L2Entries - 1));
            int count = (int)Math.Min(n - k, L2Entries - first);
            for (int i = 0; i < count; i++)
                BinaryPrimitives.WriteUInt64BigEndian(t.AsSpan((first + i) * 8), (ulong)(host + ((long)(k + i) << ClusterBits)) | Copied);
            File.Write(l2 + first * 8L, t.AsSpan(first * 8, count * 8));
            k += count;
        }
    }

    private static ulong SubRangeBits(int s0, int s1) => (s1 - s0 + 1 >= 64 ? ulong.MaxValue : ((1UL << (s1 - s0 + 1)) - 1)) << s0;

    /// <summary>Drops the reference an L2 entry held on its host cluster(s).</summary>
    internal void ReleaseEntry(ulong e)
    {
        ForgetPackingCursor();
        if ((e & CompressedFlag) != 0)
        {
            var (off, len) = CompressedRange(e);
            Refcounts.AddRange(off, len, -1);
        }
        else if ((e & OffsetMask) != 0) Refcounts.Add((long)(e & OffsetMask) >> ClusterBits, -1);
    }

    /// <summary>
    /// Stores one whole guest cluster compressed (convert -c). Compressed data is packed at byte granularity:
    /// each host cluster's refcount counts the compressed clusters that touch it.
    /// </summary>
    public void WriteCompressed(long guestCluster, ReadOnlySpan<byte> cluster)
    {
        lock (_sync)
        {
            AwaitUnlockedIo();
            CheckRange(guestCluster << ClusterBits, Math.Min(ClusterSize, Size - (guestCluster << ClusterBits)));
            BeginWrite();
            if (cluster.Length != ClusterSize) throw new ArgumentException("WriteCompressed takes exactly one cluster");
            WriteCompressedData(guestCluster, Compress(cluster), cluster);
        }
    }

    /// <summary>Compresses one cluster with the image's codec; null when that would not save a sector. Thread-safe (no image state).</summary>
    public byte[]? Compress(ReadOnlySpan<byte> cluster)
    {
        if (_crypto != null) return null; // compressed clusters are stored in the clear: never for encrypted images
        var tmp = new byte[ClusterSize + 1024];
        int n = Header.CompressionType == 1 ? NativeCompression.ZstdCompress(cluster, tmp) : NativeCompression.Deflate(cluster, tmp);
        if (n < 0 || n >= ClusterSize - 512) return null;
        return tmp.AsSpan(0, n).ToArray();
    }

    /// <summary>
    /// Stops packing compressed clusters into the current host cluster. Called wherever references are dropped: the
    /// cluster the cursor points into may become free and be handed out again (as data, an L1 or refcount table),
    /// and appending compressed bytes to it then would overwrite whatever it holds now.
    /// </summary>
    private void ForgetPackingCursor() => _compCursor = _compCursorEnd = 0;

    /// <summary>Stores a cluster compressed by <see cref="Compress"/> (or plainly when <paramref name="compressed"/> is null).</summary>
    public void WriteCompressedData(long guestCluster, byte[]? compressed, ReadOnlySpan<byte> cluster)
    {
        lock (_sync)
        {
            AwaitUnlockedIo();
            CheckRange(guestCluster << ClusterBits, Math.Min(ClusterSize, Size - (guestCluster << ClusterBits)));
            BeginWrite();
            if (compressed == null) { WriteChunk(guestCluster << ClusterBits, cluster); return; }
            var tmp = compressed;
            int n = compressed.Length;
            long off;
            if (_compCursor != 0 && _compCursor + n <= _compCursorEnd)
            {
                off = _compCursor;
                Refcounts.Add(off >> ClusterBits, 1);
            }
            else
            {
                int k = (n + ClusterSize - 1) >> ClusterBits;
                off = AllocateData(k);
                _compCursorEnd = off + ((long)k << ClusterBits);
            }
            _compCursor = off + n;
            File.Write(off, tmp.AsSpan(0, n));
            ulong nsecAdd = (ulong)(((off + n - 1) >> 9) - (off >> 9));
            ulong ne = CompressedFlag | (nsecAdd << CsizeShift) | (ulong)off;
            var (e, _) = GetEntry(guestCluster);
            long l2 = GetL2ForWrite(guestCluster);
            SetEntry(l2, guestCluster, ne, 0);
            ReleaseLater(e);
        }
    }

    /// <summary>Zeroes or discards a range: whole clusters lose their data (zero flag / unallocated), partial ones get zeros written.</summary>
    private void ZeroOrDiscard(long offset, long length, bool discard)
    {
        lock (_sync)
        {
            AwaitUnlockedIo();
            CheckRange(offset, length);
            BeginWrite();
            long end = offset + length;
            long pos = offset;
            while (pos < end)
            {
                long gc = pos >> ClusterBits;
                long cstart = gc << ClusterBits;
                long cend = Math.Min(cstart + ClusterSize, Size);
                long n = Math.Min(end, cstart + ClusterSize) - pos;
                bool whole = pos == cstart && pos + n >= cend;
                if (!whole)
                {
                    if (!discard) WriteChunk(pos, new byte[n]);
                    pos += n;
                    continue;
                }
                var (e, bm) = GetEntry(gc);
                ulong ne; ulong nbm = 0;
                bool v3 = Header.Version >= 3;
                if (Extended) { ne = 0; nbm = discard && _backing == null ? 0 : 0xffffffff00000000UL; }
                else if (v3 && (_backing != null || !discard)) ne = ZeroFlag;
                else if (_backing == null || discard) ne = 0;
                else { WriteChunk(pos, new byte[n]); pos += n; continue; } // v2 with backing: zeros must be real data
                if (ne != e || nbm != bm)
                {
                    // Skip creating an L2 table just to record what an absent one already means.
                    long l1i = gc >> L2Bits;
                    bool noTable = (L1[l1i] & OffsetMask) == 0;
                    if (!(noTable && ne == 0 && nbm == 0) && !(noTable && _backing == null && !Extended && ne == ZeroFlag && false))
                    {
                        long l2 = GetL2ForWrite(gc);
                        SetEntry(l2, gc, ne, nbm);
                        ReleaseLater(e);
                    }
                }
                pos += n;
            }
        }
    }

    public void WriteZeroes(long offset, long length) => ZeroOrDiscard(offset, length, false);
    public void Discard(long offset, long length) => ZeroOrDiscard(offset, length, true);

    public void Flush()
    {
        lock (_sync)
        {
            AwaitUnlockedIo(); // frees deferred clusters: no unlocked pwrite may still be aimed at one
            if (File.ReadOnly) return;
            TrimPool(); // before the fsync, which makes the give-back durable too
            if (!ApplyPendingFrees()) File.Flush();
        }
    }

    // ---------------------------------------------------------------- power-loss ordering

    /// <summary>
    /// Clusters [_poolNext, _poolEnd) already carry refcount 1 on disk (synced) but are referenced by nothing yet.
    /// Guest writes take new clusters from this pool, so an L2 entry can never reach the disk before the refcount
    /// that covers it, at the price of one fsync per batch; a crash leaks at most the rest of the pool (leaks cost
    /// space, never data; check -r leaks reclaims them).
    /// Batches start at 8 MiB and double while the image keeps growing, up to 32 MiB: a long sequential fill
    /// (convert, a guest's first write of its disk) pays ~35 fsyncs per GiB instead of 128, and a crash in the middle
    /// of it leaks at most 32 MiB. A flush gives back all but 8 MiB of what is left (<see cref="TrimPool"/>), so a
    /// crash after a completed flush (an idle guest has flushed) leaks at most 8 MiB, and the next allocating write
    /// still finds clusters ready without another fsync.
    /// </summary>
    private long _poolNext, _poolEnd;
    private long _poolBatchBytes = MinPoolBatchBytes;
    private const long MinPoolBatchBytes = 8L << 20, MaxPoolBatchBytes = 32L << 20, MaxPendingFreeBytes = 32L << 20;
    /// <summary>
    /// References dropped by guest writes, applied only after the fsync that makes their replacement durable. A crash
    /// before then leaks them too, so they are applied once they reach 4096 entries or <see cref="MaxPendingFreeBytes"/>
    /// worth of clusters, whichever comes first.
    /// </summary>
    private readonly List<ulong> _pendingEntries = [];
    private readonly List<long> _pendingClusters = [];

    private long AllocateData(int n)
    {
        long bytes = (long)n << ClusterBits;
        if (_poolEnd - _poolNext >= bytes)
        {
            long r = _poolNext;
            _poolNext += bytes;
            return r;
        }
        ReleasePool();
        // Batches stay under half a refcount block so the first-fit allocator can serve them.
        int batch = Math.Max(n, (int)Math.Clamp(_poolBatchBytes >> ClusterBits, 1, Math.Max(1, Refcounts.EntriesPerBlock / 2)));
        _poolBatchBytes = Math.Min(_poolBatchBytes * 2, MaxPoolBatchBytes);
        long start = Refcounts.Allocate(batch);
        File.Flush();
        _poolNext = start + bytes;
        _poolEnd = start + ((long)batch << ClusterBits);
        return start;
    }

    /// <summary>Gives back the pool's clusters beyond the first <see cref="MinPoolBatchBytes"/> still unused.</summary>
    private void TrimPool()
    {
        long keepEnd = Math.Min(_poolEnd, _poolNext + MinPoolBatchBytes); // cluster-aligned: MinPoolBatchBytes is a multiple of any cluster size
        if (_poolEnd <= keepEnd) return;
        Refcounts.SetRun(keepEnd >> ClusterBits, (_poolEnd - keepEnd) >> ClusterBits, 0);
        _poolEnd = keepEnd;
    }

    private void ReleasePool()
    {
        if (_poolEnd > _poolNext) Refcounts.SetRun(_poolNext >> ClusterBits, (_poolEnd - _poolNext) >> ClusterBits, 0);
        _poolNext = _poolEnd = 0;
    }

    private void ReleaseLater(ulong e)
    {
        if ((e & (CompressedFlag | OffsetMask)) == 0) return;
        _pendingEntries.Add(e);
        if (_pendingEntries.Count >= 4096 || (long)_pendingEntries.Count << ClusterBits >= MaxPendingFreeBytes) ApplyPendingFrees();
    }

    /// <summary>fsync, then drop the deferred references. Returns false when there was nothing to do.</summary>
    private bool ApplyPendingFrees()
    {
        if (_pendingEntries.Count == 0 && _pendingClusters.Count == 0) return false;
        File.Flush();
        foreach (var e in _pendingEntries) ReleaseEntry(e);
        foreach (var c in _pendingClusters) Refcounts.Add(c >> ClusterBits, -1);
        _pendingEntries.Clear();
        _pendingClusters.Clear();
        return true;
    }

    /// <summary>Brings refcounts to exactly what the metadata says (before whole-image walks: check, snapshots, amend).</summary>
    internal void Quiesce()
    {
        AwaitUnlockedIo();
        ForgetPackingCursor(); // the whole-image operations that follow may free the cluster it points into
        if (File.ReadOnly) return;
        ApplyPendingFrees();
        ReleasePool();
    }

    // ---------------------------------------------------------------- async surface (the VMM's view)

    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken ct = default)
    { ct.ThrowIfCancellationRequested(); Read(offset, buffer.Span); return ValueTask.CompletedTask; }
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct = default)
    { ct.ThrowIfCancellationRequested(); Write(offset, data.Span); return ValueTask.CompletedTask; }
    public ValueTask FlushAsync(CancellationToken ct = default) { Flush(); return ValueTask.CompletedTask; }
    public ValueTask DiscardAsync(long offset, long length, CancellationToken ct = default) { Discard(offset, length); return ValueTask.CompletedTask; }
    public ValueTask WriteZeroesAsync(long offset, long length, CancellationToken ct = default) { WriteZeroes(offset, length); return ValueTask.CompletedTask; }

    // ---------------------------------------------------------------- mapping

    public Extent GetExtent(long offset, long length)
    {
        lock (_sync)
        {
            CheckRange(offset, length);
            // Extended L2 images are classified per subcluster (each has its own state).
            long step = 1L << SubBits;
            var first = ClassifyCluster(offset);
            long pos = (offset >> SubBits << SubBits) + step;
            long len = Math.Min(pos, offset + length) - offset;
            if (first.Kind == ExtentKind.Unallocated && _backing != null && offset < _backing.Size)
            {
                var b = _backing.GetExtent(offset, Math.Min(len, _backing.Size - offset));
                return b with { Depth = b.Depth + 1 };
            }
            while (pos < offset + length)
            {
                var c = ClassifyCluster(pos);
                if (c.Kind != first.Kind) break;
                if ((first.HostOffset >= 0) != (c.HostOffset >= 0)) break;
                if (first.HostOffset >= 0 && c.HostOffset != first.HostOffset + (pos - offset)) break;
                if (first.Kind == ExtentKind.Unallocated && _backing != null) break;
                long n = Math.Min(step, offset + length - pos);
                len += n; pos += n;
            }
            return new Extent(offset, len, first.Kind, 0, first.HostOffset, Path);
        }
    }

    private (ExtentKind Kind, long HostOffset) ClassifyCluster(long g)
    {
        var (e, bm) = GetEntry(g >> ClusterBits);
        if ((e & CompressedFlag) != 0) return (ExtentKind.Compressed, -1);
        long host = (long)(e & OffsetMask);
        // Like qemu's block status, a zero or unallocated (sub)cluster that still owns a host cluster reports where
        // it lies (QCOW2_SUBCLUSTER_ZERO_ALLOC / UNALLOCATED_ALLOC): `map` shows that offset.
        long hostHere = host != 0 ? host + (g & (ClusterSize - 1)) : -1;
        if (Extended)
        {
            int s = (int)(g & (ClusterSize - 1)) >> SubBits;
            if ((bm >> s & 1) != 0) return (ExtentKind.Data, hostHere);
            if ((bm >> (32 + s) & 1) != 0) return (ExtentKind.Zero, hostHere);
            return (ExtentKind.Unallocated, hostHere);
        }
        if ((e & ZeroFlag) != 0 && Header.Version >= 3) return (ExtentKind.Zero, hostHere);
        if (host != 0) return (ExtentKind.Data, hostHere);
        return (ExtentKind.Unallocated, -1);
    }

    // ---------------------------------------------------------------- bitmaps

    /// <summary>
    /// We do not track dirty bitmaps, so before our first write every persistent bitmap is flagged in_use
    /// (inconsistent), which is what qcow2.rst asks of a writer that keeps the bitmaps extension.
    /// </summary>
    private void MarkBitmapsInUse()
    {
        if ((Header.AutoclearFeatures & Qcow2Header.AutoclearBitmaps) == 0) return;
        var dir = BitmapDirectory();
        if (dir == null) return;
        var (off, buf) = dir.Value;
        foreach (var (entryOff, _, _) in BitmapEntries(buf))
        {
            uint flags = BinaryPrimitives.ReadUInt32BigEndian(buf.AsSpan(entryOff + 12));
            BinaryPrimitives.WriteUInt32BigEndian(buf.AsSpan(entryOff + 12), flags | 1);
        }
        File.Write(off, buf);
        File.Flush();
    }

    internal (long Offset, byte[] Data)? BitmapDirectory()
    {
        var ext = Header.Extensions.FirstOrDefault(x => x.Type == Qcow2Header.ExtBitmaps);
        if (ext == null || ext.Data.Length < 24) return null;
        ulong size = BinaryPrimitives.ReadUInt64BigEndian(ext.Data.AsSpan(8));
        ulong off = BinaryPrimitives.ReadUInt64BigEndian(ext.Data.AsSpan(16));
        if (size > 64 << 20 || off >= (ulong)File.Length || size > (ulong)File.Length - off)
            throw new CorruptImageException("bitmap directory lies outside the file");
        var buf = new byte[size];
        File.Read((long)off, buf);
        return ((long)off, buf);
    }

    /// <summary>The public part of the embedded LUKS header (readable without the secret), or null when not encrypted.</summary>
    public LuksHeaderInfo? ReadLuksHeader()
    {
        lock (_sync)
        {
            if (Header.CryptoHeader is not { } ch) return null;
            if (ch.Length < LuksHeaderInfo.HeaderBytes || ch.Offset > (ulong)File.Length - LuksHeaderInfo.HeaderBytes)
                throw new CorruptImageException("LUKS header lies outside the file");
            var buf = new byte[LuksHeaderInfo.HeaderBytes];
            File.Read((long)ch.Offset, buf);
            return LuksHeaderInfo.Parse(buf);
        }
    }

    /// <summary>A persistent dirty bitmap as the bitmap directory describes it (qcow2.rst, "Bitmap directory").</summary>
    public readonly record struct BitmapInfo(string Name, int GranularityBits, bool InUse, bool Auto);

    /// <summary>The persistent dirty bitmaps in the image (we keep but do not track them), in directory order.</summary>
    public IReadOnlyList<BitmapInfo> ListBitmaps()
    {
        lock (_sync)
        {
            if (BitmapDirectory() is not var (_, dir)) return [];
            var list = new List<BitmapInfo>();
            foreach (var (o, _, _) in BitmapEntries(dir))
            {
                uint flags = BinaryPrimitives.ReadUInt32BigEndian(dir.AsSpan(o + 12));
                int granularityBits = dir[o + 17];
                int nameSize = BinaryPrimitives.ReadUInt16BigEndian(dir.AsSpan(o + 18));
                int extra = (int)BinaryPrimitives.ReadUInt32BigEndian(dir.AsSpan(o + 20));
                if (o + 24 + extra + nameSize > dir.Length || granularityBits is < 9 or > 31)
                    throw new CorruptImageException("bitmap directory entry is malformed");
                string name = System.Text.Encoding.UTF8.GetString(dir, o + 24 + extra, nameSize);
                list.Add(new BitmapInfo(name, granularityBits, (flags & 1) != 0, (flags & 2) != 0));
            }
            return list;
        }
    }

    /// <summary>(entry offset in directory, bitmap table offset, table size in entries).</summary>
    internal static IEnumerable<(int EntryOffset, ulong TableOffset, uint TableSize)> BitmapEntries(byte[] dir)
    {
        int o = 0;
        while (o + 24 <= dir.Length)
        {
            ulong to = BinaryPrimitives.ReadUInt64BigEndian(dir.AsSpan(o));
            uint ts = BinaryPrimitives.ReadUInt32BigEndian(dir.AsSpan(o + 8));
            int nameSize = BinaryPrimitives.ReadUInt16BigEndian(dir.AsSpan(o + 18));
            uint extra = BinaryPrimitives.ReadUInt32BigEndian(dir.AsSpan(o + 20));
            if (extra > 1 << 16) throw new CorruptImageException("bitmap directory entry has oversized extra data");
            yield return (o, to, ts);
            o += (int)((24 + extra + nameSize + 7) & ~7);
        }
    }

    public void Dispose()
    {
        lock (_sync)
        {
            AwaitUnlockedIo();
            if (_disposed) return;
            // The handles are closed even when the last flush fails (a failed fdatasync stays failed, see ImageFile):
            // the error still reaches the caller, but no descriptor is leaked.
            try
            {
                Quiesce();
                if (!File.ReadOnly) File.Flush();
            }
            finally
            {
                _disposed = true;
                try { File.Dispose(); }
                finally { _backing?.Dispose(); }
            }
        }
    }

    public ValueTask DisposeAsync() { Dispose(); return ValueTask.CompletedTask; }
}
