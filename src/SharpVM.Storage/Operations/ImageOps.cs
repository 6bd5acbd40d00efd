using SharpVM.Storage.Qcow2;

namespace SharpVM.Storage.Operations;

/// <summary>Progress callback: bytes done, bytes total.</summary>
public delegate void ProgressFn(long done, long total);

/// <summary>Whole-image operations behind `sharpvm img` (convert, compare, commit, rebase, measure).</summary>
public static class ImageOps
{
    private const int Chunk = 2 << 20;

    /// <summary>True when every byte is zero (vectorised).</summary>
    public static bool IsZero(ReadOnlySpan<byte> b) => !b.ContainsAnyExcept((byte)0);

    /// <summary>
    /// Copies guest content. Ranges that read as zero in <paramref name="src"/> are skipped (the target is fresh, so
    /// they already read as zero), and all-zero data chunks are not written, keeping the result sparse.
    /// </summary>
    public static void Convert(IDiskImage src, IDiskImage dst, bool compress, ProgressFn? progress = null, bool dstIsFresh = true)
    {
        long size = Math.Min(src.Size, dst.Size);
        int chunk = Math.Max(Chunk, dst.ClusterSize);
        var q = dst as Qcow2Image;
        using var reader = new ChunkPrefetcher(src, size, chunk);
        foreach (var c in reader.Chunks())
        {
            long pos = c.Pos;
            int n = c.Length;
            if (c.Zero)
            {
                if (!dstIsFresh) dst.WriteZeroes(pos, n);
                progress?.Invoke(pos + n, size);
                continue;
            }
            var buf = c.Buffer!;
            var span = buf.AsSpan(0, n);
            if (compress && q != null && pos % q.ClusterSize == 0)
            {
                // Compress the chunk's clusters in parallel (the codec is the cost), then place them in order.
                int cs = q.ClusterSize;
                int count = (n + cs - 1) / cs;
                var packed = new byte[]?[count];
                var zero = new bool[count];
                var chunkBuf = buf;
                try
                {
                    Parallel.For(0, count, i =>
                    {
                        int len = Math.Min(cs, n - i * cs);
                        var part = chunkBuf.AsSpan(i * cs, len);
                        zero[i] = IsZero(part);
                        if (!zero[i] && len == cs) packed[i] = q.Compress(part);
                    });
                }
                catch (AggregateException ae) when (ae.InnerException is DiskImageException die) { throw die; }
                for (int i = 0; i < count; i++)
                {
                    int len = Math.Min(cs, n - i * cs);
                    var part = span.Slice(i * cs, len);
                    if (zero[i]) { if (!dstIsFresh) q.WriteZeroes(pos + (long)i * cs, len); }
                    else if (len == cs) q.WriteCompressedData(pos / cs + i, packed[i], part);
                    else q.Write(pos + (long)i * cs, part);
                }
            }
            else if (compress && q != null)
            {
                int cs = q.ClusterSize;
                long p = pos;
                while (p < pos + n)
                {
                    long cstart = p / cs * cs;
                    int len = (int)(Math.Min(cstart + cs, pos + n) - p);
                    var part = span.Slice((int)(p - pos), len);
                    if (p == cstart && len == cs && !IsZero(part)) q.WriteCompressed(cstart / cs, part);
                    else if (!IsZero(part)) q.Write(p, part);
                    else if (!dstIsFresh) q.WriteZeroes(p, len);
                    p += len;
                }
            }
            else
            {
                // Write only the non-zero clusters of the chunk.
                int g = Math.Max(dst.ClusterSize, 4096);
                int i = 0;
                while (i < n)
                {
                    int len = Math.Min(g - (int)((pos + i) % g), n - i);
                    bool zero = IsZero(span.Slice(i, len));
                    int j = i + len;
                    while (j < n)
                    {
                        int l2 = Math.Min(g, n - j);
                        if (IsZero(span.Slice(j, l2)) != zero) break;
                        j += l2;
                    }
                    if (!zero) dst.Write(pos + i, span[i..j]);
                    else if (!dstIsFresh) dst.WriteZeroes(pos + i, j - i);
                    i = j;
                }
            }
            reader.Return(buf);
            progress?.Invoke(pos + n, size);
        }
        dst.Flush();
    }

    /// <summary>First differing guest offset, or null if equal. Past the shorter size the longer one must read zero.</summary>
    public static long? Compare(IDiskImage a, IDiskImage b, bool strictSize, ProgressFn? progress = null)
    {
        if (strictSize && a.Size != b.Size) return Math.Min(a.Size, b.Size);
        long max = Math.Max(a.Size, b.Size);
        var ba = new byte[Chunk];
        var bb = new byte[Chunk];
        for (long pos = 0; pos < max; pos += Chunk)
        {
            int n = (int)Math.Min(Chunk, max - pos);
            ReadPadded(a, pos, ba.AsSpan(0, n));
            ReadPadded(b, pos, bb.AsSpan(0, n));
            int i = ba.AsSpan(0, n).CommonPrefixLength(bb.AsSpan(0, n));
            if (i < n) return pos + i;
            progress?.Invoke(pos + n, max);
        }
        return null;
    }

    private static void ReadPadded(IDiskImage img, long pos, Span<byte> dst)
    {
        int n = (int)Math.Clamp(img.Size - pos, 0, dst.Length);
        if (n > 0) img.Read(pos, dst[..n]);
        dst[n..].Clear();
    }

    /// <summary>
    /// Writes everything the chain above <paramref name="baseDepth"/> holds into <paramref name="baseImage"/>
    /// (a writable handle on the image at that depth below <paramref name="top"/>).
    /// </summary>
    public static void Commit(IDiskImage top, IDiskImage baseImage, int baseDepth, ProgressFn? progress = null)
    {
        long size = Math.Min(top.Size, baseImage.Size);
        var buf = new byte[Chunk];
        long pos = 0;
        while (pos < size)
        {
            var ext = top.GetExtent(pos, Math.Min(Chunk, size - pos));
            int n = (int)ext.Length;
            if (ext.Depth < baseDepth)
            {
                if (ext.Kind is ExtentKind.Zero or ExtentKind.Unallocated) baseImage.WriteZeroes(pos, n);
                else
                {
                    top.Read(pos, buf.AsSpan(0, n));
                    baseImage.Write(pos, buf.AsSpan(0, n));
                }
            }
            pos += n;
            progress?.Invoke(pos, size);
        }
        baseImage.Flush();
    }

    /// <summary>
    /// Safe rebase: wherever <paramref name="top"/> does not hold data itself, copy the old chain's content into it
    /// if the new backing file (null = none) would show something different.
    /// </summary>
    public static void RebaseCopy(Qcow2Image top, IDiskImage? newBacking, ProgressFn? progress = null)
    {
        long size = top.Size;
        int cs = top.ClusterSize;
        var oldBuf = new byte[cs];
        var newBuf = new byte[cs];
        for (long pos = 0; pos < size; pos += cs)
        {
            int n = (int)Math.Min(cs, size - pos);
            var ext = top.GetExtent(pos, n);
            if (ext.Depth == 0 && ext.Kind != ExtentKind.Unallocated)
            {
                progress?.Invoke(pos + n, size);
                continue;
            }
            top.Read(pos, oldBuf.AsSpan(0, n));
            if (newBacking != null) ReadPadded(newBacking, pos, newBuf.AsSpan(0, n));
            else newBuf.AsSpan(0, n).Clear();
            if (!oldBuf.AsSpan(0, n).SequenceEqual(newBuf.AsSpan(0, n))) top.Write(pos, oldBuf.AsSpan(0, n));
            progress?.Invoke(pos + n, size);
        }
        top.Flush();
    }

    /// <summary>qemu's qcow2_refcount_metadata_size: refcount table + blocks to cover <paramref name="clusters"/> and themselves.</summary>
    public static long RefcountMetadataSize(long clusters, long cs, int order)
    {
        long perTable = cs / 8, perBlock = cs * 8 >> order;
        long table = 0, blocks = 0, n = 0, last;
        do
        {
            last = n;
            blocks = (clusters + table + blocks + perBlock - 1) / perBlock;
            table = (blocks + perTable - 1) / perTable;
            n = clusters + blocks + table;
        } while (n != last);
        return (blocks + table) * cs;
    }

    /// <summary>qemu's qcow2_calc_prealloc_size: a fully allocated image's size.</summary>
    public static long PreallocSize(long size, long cs, int order, bool extendedL2)
    {
        long l2e = extendedL2 ? 16 : 8;
        long aligned = (size + cs - 1) / cs * cs;
        long meta = cs;
        long nl2e = aligned / cs;
        nl2e = (nl2e + cs / l2e - 1) / (cs / l2e) * (cs / l2e);
        meta += nl2e * l2e;
        long nl1e = nl2e * l2e / cs;
        nl1e = (nl1e + cs / 8 - 1) / (cs / 8) * (cs / 8);
        meta += nl1e * 8;
        meta += RefcountMetadataSize((meta + aligned) / cs, cs, order);
        return meta + aligned;
    }

    /// <summary>`measure` for a qcow2 target: (required, fully allocated) bytes.</summary>
    public static (long Required, long FullyAllocated) MeasureQcow2(IDiskImage? src, long size, int clusterSize, int refcountBits, bool extendedL2, long luksPayload)
    {
        long cs = clusterSize;
        int order = System.Numerics.BitOperations.Log2((uint)refcountBits);
        long vsize = (size + cs - 1) / cs * cs;
        long required = 0; // qemu counts no data for --size: only metadata is required
        if (src != null)
        {
            long pos = 0, lastEnd = 0;
            while (pos < src.Size)
            {
                var ext = src.GetExtent(pos, Math.Min(1L << 30, src.Size - pos));
                if (ext.Kind is ExtentKind.Data or ExtentKind.Compressed)
                {
                    long a = Math.Max(pos / cs * cs, lastEnd);
                    long b = (pos + ext.Length + cs - 1) / cs * cs;
                    if (b > a) { required += b - a; lastEnd = b; }
                }
                pos += ext.Length;
            }
        }
        long full = luksPayload + PreallocSize(vsize, cs, order, extendedL2);
        return (full - vsize + required, full);
    }

    /// <summary>
    /// Room the source's persistent bitmaps take in a qcow2 target with <paramref name="clusterSize"/>, counted as
    /// qemu's qcow2_measure does: every bitmap fully allocated, its table, and the directory.
    /// </summary>
    public static long MeasureBitmaps(Qcow2Image src, int clusterSize)
    {
        long cs = clusterSize, total = 0, dirSize = 0;
        foreach (var b in src.ListBitmaps())
        {
            long bits = (src.Size + (1L << b.GranularityBits) - 1) >> b.GranularityBits;
            long clusters = ((bits + 7) / 8 + cs - 1) / cs;
            total += clusters * cs;
            total += (clusters * 8 + cs - 1) / cs * cs; // bitmap table entries
            dirSize += (24 + System.Text.Encoding.UTF8.GetByteCount(b.Name) + 7) & ~7L;
        }
        return total + (dirSize + cs - 1) / cs * cs;
    }
}
