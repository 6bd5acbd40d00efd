using System.Buffers.Binary;
using SharpVM.Storage.Crypto;

namespace SharpVM.Storage.Qcow2;

/// <summary>Everything `create -o` can set for a qcow2 image (names follow qemu-img's options).</summary>
public sealed class Qcow2CreateOptions
{
    public long Size { get; set; }
    public int ClusterSize { get; set; } = 65536;
    /// <summary>"0.10" (version 2) or "1.1" (version 3).</summary>
    public string Compat { get; set; } = "1.1";
    public int RefcountBits { get; set; } = 16;
    public bool ExtendedL2 { get; set; }
    public bool LazyRefcounts { get; set; }
    /// <summary>"zlib" or "zstd".</summary>
    public string CompressionType { get; set; } = "zlib";
    public string? BackingFile { get; set; }
    public string? BackingFormat { get; set; }
    /// <summary>Non-null: create a LUKS-encrypted image unlocked by this secret.</summary>
    public string? EncryptSecret { get; set; }
    public int EncryptIterTimeMs { get; set; } = 250;
    /// <summary>"off" or "metadata" (allocate every L2 table up front).</summary>
    public string Preallocation { get; set; } = "off";
}

public sealed partial class Qcow2Image
{
    public static Qcow2Image Create(string path, Qcow2CreateOptions o, OpenOptions? openOptions = null)
    {
        int cs = o.ClusterSize;
        if (cs < 512 || cs > 2 << 20 || (cs & (cs - 1)) != 0) throw new DiskImageException($"cluster size {cs} must be a power of two between 512 and 2M");
        int cb = System.Numerics.BitOperations.Log2((uint)cs);
        int version = o.Compat switch { "0.10" or "v2" => 2, "1.1" or "v3" => 3, _ => throw new DiskImageException($"invalid compat level '{o.Compat}' (0.10 or 1.1)") };
        int rb = o.RefcountBits;
        if (rb < 1 || rb > 64 || (rb & (rb - 1)) != 0) throw new DiskImageException($"refcount_bits {rb} must be a power of two from 1 to 64");
        if (version == 2 && rb != 16) throw new DiskImageException("compat=0.10 only supports refcount_bits=16");
        if (version == 2 && (o.ExtendedL2 || o.LazyRefcounts || o.CompressionType != "zlib")) throw new DiskImageException("extended_l2, lazy_refcounts and compression_type need compat=1.1");
        if (o.ExtendedL2 && cs < 16384) throw new DiskImageException("extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
        if (o.Size < 0) throw new DiskImageException("image size must not be negative");
        if (o.EncryptSecret != null && o.CompressionType == "zstd" && false) { }

        long sizeBytes = (o.Size + 511) & ~511L;
        int entryBytes = o.ExtendedL2 ? 16 : 8;
        long l2Cover = (long)(cs / entryBytes) * cs;
        long l1Size = (sizeBytes + l2Cover - 1) / l2Cover;
        if (l1Size * 8 > Qcow2Header.MaxL1Bytes) throw new DiskImageException($"image size {o.Size} is too large for cluster size {cs}");

        var h = new Qcow2Header
        {
            Version = (uint)version,
            ClusterBits = cb,
            Size = (ulong)sizeBytes,
            L1Size = (uint)l1Size,
            RefcountTableOffset = (ulong)cs,
            RefcountTableClusters = 1,
            RefcountOrder = System.Numerics.BitOperations.Log2((uint)rb),
            HeaderLength = version == 3 ? 112u : 72u,
            BackingFile = o.BackingFile,
        };
        if (version == 3)
        {
            h.Extensions.Add(Qcow2Header.StandardFeatureTable());
            if (o.ExtendedL2) h.IncompatibleFeatures |= Qcow2Header.IncompatExtendedL2;
            if (o.LazyRefcounts) h.CompatibleFeatures |= Qcow2Header.CompatLazyRefcounts;
            if (o.CompressionType == "zstd") { h.CompressionType = 1; h.IncompatibleFeatures |= Qcow2Header.IncompatCompression; }
            else if (o.CompressionType != "zlib") throw new DiskImageException($"unknown compression_type '{o.CompressionType}' (zlib or zstd)");
        }
        if (o.BackingFile != null && o.BackingFormat != null) h.BackingFormat = o.BackingFormat;
        if (o.EncryptSecret != null) h.CryptMethod = 2;

        using (var f = new ImageFile(path, false, create: !System.IO.File.Exists(path) || Truncate(path)) { IgnoreFlushes = openOptions?.UnsafeCache ?? false })
        {
            // Cluster 0 header, cluster 1 refcount table, cluster 2 first refcount block (covers clusters 0..2).
            h.L1TableOffset = 0;
            var hb = h.Serialize();
            f.Write(0, hb);
            var rt = new byte[cs];
            BinaryPrimitives.WriteUInt64BigEndian(rt, (ulong)(2 * cs));
            f.Write(cs, rt);
            f.Write(2L * cs, new byte[cs]);
            var rc = new RefcountTable(f, cb, h.RefcountOrder, cs, 1, 16, (off, n) =>
            {
                h.RefcountTableOffset = off; h.RefcountTableClusters = n;
                Span<byte> b = stackalloc byte[12];
                BinaryPrimitives.WriteUInt64BigEndian(b, off);
                BinaryPrimitives.WriteUInt32BigEndian(b[8..], n);
                f.Write(48, b);
            });
            for (int c = 0; c < 3; c++) rc.Set(c, 1);
            if (l1Size > 0)
            {
                int l1Clusters = (int)((l1Size * 8 + cs - 1) / cs);
                long l1off = rc.Allocate(l1Clusters);
                f.Write(l1off, new byte[(long)l1Clusters * cs]);
                h.L1TableOffset = (ulong)l1off;
            }
            else h.L1TableOffset = (ulong)(3L * cs); // QEMU also records an offset for an empty L1.
            if (o.EncryptSecret != null)
            {
                var luks = LuksCrypto.CreateHeader(o.EncryptSecret, o.EncryptIterTimeMs);
                int n = (luks.Length + cs - 1) / cs;
                long off = rc.Allocate(n);
                var padded = new byte[(long)n * cs];
                luks.CopyTo(padded, 0);
                f.Write(off, padded);
                h.CryptoHeader = ((ulong)off, (ulong)padded.Length);
            }
            hb = h.Serialize();
            f.Write(0, hb.AsSpan(0, h.UsedBytes));
            f.Flush();
        }
        var img = Open(path, openOptions ?? new OpenOptions { Secret = o.EncryptSecret });
        if (o.Preallocation == "metadata")
            for (long gc = 0; gc < sizeBytes >> cb; gc += img.L2Entries) img.GetL2ForWrite(gc);
        else if (o.Preallocation != "off") throw new DiskImageException($"preallocation '{o.Preallocation}' is not supported (off, metadata)");
        return img;
    }

    private static bool Truncate(string path)
    {
        System.IO.File.Delete(path);
        return true;
    }
}
