using System.Buffers.Binary;
using System.Text;

namespace SharpVM.Storage.Qcow2;

/// <summary>One header extension as stored (type, payload). Unknown ones are carried through unchanged.</summary>
public sealed record HeaderExtension(uint Type, byte[] Data);

/// <summary>
/// The qcow2 header (docs/interop/qcow2.rst, "Header"), its extensions and the backing file name, all of which
/// live in cluster 0. Parsing validates every field against the file length so later code can trust offsets.
/// </summary>
public sealed class Qcow2Header
{
    public const uint Magic = 0x514649fb; // "QFI\xfb"
    public const uint ExtEnd = 0, ExtBackingFormat = 0xe2792aca, ExtFeatureTable = 0x6803f857,
        ExtBitmaps = 0x23852875, ExtCrypto = 0x0537be77, ExtDataFile = 0x44415441;
    public const ulong IncompatDirty = 1, IncompatCorrupt = 2, IncompatDataFile = 4, IncompatCompression = 8, IncompatExtendedL2 = 16;
    public const ulong KnownIncompat = 0x1f & ~IncompatDataFile;
    public const ulong CompatLazyRefcounts = 1;
    public const ulong AutoclearBitmaps = 1;
    public const int MaxL1Bytes = 32 << 20;      // QEMU's QCOW_MAX_L1_SIZE
    public const int MaxRefTableBytes = 8 << 20; // QEMU's QCOW_MAX_REFTABLE_SIZE
    public const int MaxSnapshots = 65536;

    public uint Version;
    public ulong BackingFileOffset;
    public uint BackingFileSize;
    public int ClusterBits;
    public ulong Size;
    public uint CryptMethod;
    public uint L1Size;
    public ulong L1TableOffset;
    public ulong RefcountTableOffset;
    public uint RefcountTableClusters;
    public uint NbSnapshots;
    public ulong SnapshotsOffset;
    public ulong IncompatibleFeatures;
    public ulong CompatibleFeatures;
    public ulong AutoclearFeatures;
    public int RefcountOrder = 4;
    public uint HeaderLength;
    public byte CompressionType;
    /// <summary>Bytes of the v3 header past the fields we know (kept verbatim when rewriting).</summary>
    public byte[] ExtraHeaderBytes = [];

    public string? BackingFile;
    public List<HeaderExtension> Extensions = [];

    public int ClusterSize => 1 << ClusterBits;
    public bool ExtendedL2 => (IncompatibleFeatures & IncompatExtendedL2) != 0;

    public string? BackingFormat
    {
        get => Extensions.FirstOrDefault(e => e.Type == ExtBackingFormat) is { } e ? Encoding.UTF8.GetString(e.Data) : null;
        set
        {
            Extensions.RemoveAll(e => e.Type == ExtBackingFormat);
            if (value != null) Extensions.Insert(0, new HeaderExtension(ExtBackingFormat, Encoding.UTF8.GetBytes(value)));
        }
    }

    public (ulong Offset, ulong Length)? CryptoHeader
    {
        get
        {
            var e = Extensions.FirstOrDefault(x => x.Type == ExtCrypto);
            if (e == null) return null;
            if (e.Data.Length < 16) throw new CorruptImageException("full disk encryption header extension is shorter than 16 bytes");
            return (BinaryPrimitives.ReadUInt64BigEndian(e.Data), BinaryPrimitives.ReadUInt64BigEndian(e.Data.AsSpan(8)));
        }
        set
        {
            Extensions.RemoveAll(x => x.Type == ExtCrypto);
            if (value is { } v)
            {
                var d = new byte[16];
                BinaryPrimitives.WriteUInt64BigEndian(d, v.Offset);
                BinaryPrimitives.WriteUInt64BigEndian(d.AsSpan(8), v.Length);
                Extensions.Add(new HeaderExtension(ExtCrypto, d));
            }
        }
    }

    /// <summary>Feature names from the feature-name table extension: (type 0 incompat/1 compat/2 autoclear, bit) → name.</summary>
    public Dictionary<(int, int), string> FeatureNames()
    {
        var map = new Dictionary<(int, int), string>();
        foreach (var e in Extensions.Where(x => x.Type == ExtFeatureTable))
            for (int i = 0; i + 48 <= e.Data.Length; i += 48)
                map[(e.Data[i], e.Data[i + 1])] = Encoding.UTF8.GetString(e.Data, i + 2, 46).TrimEnd('\0');
        return map;
    }

    /// <summary>The feature-name table QEMU writes into every v3 image, so qemu can name bits it does not know.</summary>
    public static HeaderExtension StandardFeatureTable()
    {
        (int type, int bit, string name)[] f =
        [
            (0, 0, "dirty bit"), (0, 1, "corrupt bit"), (0, 2, "external data file"), (0, 3, "compression type"),
            (0, 4, "extended L2 entries"), (1, 0, "lazy refcounts"), (2, 0, "bitmaps"), (2, 1, "raw external data"),
        ];
        var d = new byte[48 * f.Length];
        for (int i = 0; i < f.Length; i++)
        {
            d[i * 48] = (byte)f[i].type; d[i * 48 + 1] = (byte)f[i].bit;
            Encoding.UTF8.GetBytes(f[i].name, d.AsSpan(i * 48 + 2));
        }
        return new HeaderExtension(ExtFeatureTable, d);
    }

    public static Qcow2Header Parse(ReadOnlySpan<byte> buf, long fileLength)
    {
        if (buf.Length < 72 || fileLength < 72) throw new CorruptImageException("file is too short to hold a qcow2 header");
        if (BinaryPrimitives.ReadUInt32BigEndian(buf) != Magic) throw new CorruptImageException("bad magic: not a qcow2 image");
        var h = new Qcow2Header
        {
            Version = BinaryPrimitives.ReadUInt32BigEndian(buf[4..]),
            BackingFileOffset = BinaryPrimitives.ReadUInt64BigEndian(buf[8..]),
            BackingFileSize = BinaryPrimitives.ReadUInt32BigEndian(buf[16..]),
            ClusterBits = (int)Math.Min(BinaryPrimitives.ReadUInt32BigEndian(buf[20..]), 64),
            Size = BinaryPrimitives.ReadUInt64BigEndian(buf[24..]),
            CryptMethod = BinaryPrimitives.ReadUInt32BigEndian(buf[32..]),
            L1Size = BinaryPrimitives.ReadUInt32BigEndian(buf[36..]),
            L1TableOffset = BinaryPrimitives.ReadUInt64BigEndian(buf[40..]),
            RefcountTableOffset = BinaryPrimitives.ReadUInt64BigEndian(buf[48..]),
            RefcountTableClusters = BinaryPrimitives.ReadUInt32BigEndian(buf[56..]),
            NbSnapshots = BinaryPrimitives.ReadUInt32BigEndian(buf[60..]),
            SnapshotsOffset = BinaryPrimitives.ReadUInt64BigEndian(buf[64..]),
            HeaderLength = 72,
        };
        if (h.Version is not (2 or 3)) throw new UnsupportedImageException($"qcow2 version {h.Version} is not supported (only 2 and 3)");
        if (h.ClusterBits is < 9 or > 21) throw new CorruptImageException($"cluster_bits {h.ClusterBits} is outside 9..21 (512 B..2 MiB)");
        int cs = h.ClusterSize;
        if (buf.Length < Math.Min(cs, fileLength)) throw new ArgumentException("Parse needs the whole first cluster");
        if (h.Version == 3)
        {
            if (buf.Length < 104) throw new CorruptImageException("file is too short for a version 3 header");
            h.IncompatibleFeatures = BinaryPrimitives.ReadUInt64BigEndian(buf[72..]);
            h.CompatibleFeatures = BinaryPrimitives.ReadUInt64BigEndian(buf[80..]);
            h.AutoclearFeatures = BinaryPrimitives.ReadUInt64BigEndian(buf[88..]);
            h.RefcountOrder = (int)Math.Min(BinaryPrimitives.ReadUInt32BigEndian(buf[96..]), 64);
            h.HeaderLength = BinaryPrimitives.ReadUInt32BigEndian(buf[100..]);
            if (h.HeaderLength < 104 || h.HeaderLength % 8 != 0 || h.HeaderLength > cs || h.HeaderLength > buf.Length)
                throw new CorruptImageException($"header_length {h.HeaderLength} is invalid (must be a multiple of 8, >= 104, inside cluster 0)");
            if (h.HeaderLength > 104) h.CompressionType = buf[104];
            if (h.HeaderLength > 112) h.ExtraHeaderBytes = buf[112..(int)h.HeaderLength].ToArray();
        }
        if (h.RefcountOrder > 6) throw new CorruptImageException($"refcount_order {h.RefcountOrder} exceeds 6 (64-bit refcounts)");

        // Header extensions: sequence of (type, length, data padded to 8), inside cluster 0.
        int off = (int)h.HeaderLength;
        int limit = (int)Math.Min(cs, buf.Length);
        if (h.Version == 3 || true)
        {
            for (int guard = 0; ; guard++)
            {
                if (off + 8 > limit) break; // v2 images may end without a terminator.
                uint type = BinaryPrimitives.ReadUInt32BigEndian(buf[off..]);
                uint len = BinaryPrimitives.ReadUInt32BigEndian(buf[(off + 4)..]);
                if (type == ExtEnd) break;
                if (len > limit - off - 8) throw new CorruptImageException($"header extension 0x{type:x} (length {len}) runs past the end of cluster 0");
                h.Extensions.Add(new HeaderExtension(type, buf.Slice(off + 8, (int)len).ToArray()));
                off += 8 + (int)((len + 7) & ~7u);
                if (guard > cs / 8) throw new CorruptImageException("header extension list does not terminate");
            }
        }

        if (h.BackingFileOffset != 0)
        {
            if (h.BackingFileSize > 1023 || h.BackingFileOffset > (ulong)limit || h.BackingFileOffset + h.BackingFileSize > (ulong)limit)
                throw new CorruptImageException($"backing file name (offset {h.BackingFileOffset}, size {h.BackingFileSize}) does not fit in cluster 0");
            h.BackingFile = Encoding.UTF8.GetString(buf.Slice((int)h.BackingFileOffset, (int)h.BackingFileSize));
        }

        ulong unknown = h.IncompatibleFeatures & ~KnownIncompat;
        if (unknown != 0)
        {
            var names = h.FeatureNames();
            var list = Enumerable.Range(0, 64).Where(b => (unknown >> b & 1) != 0)
                .Select(b => names.TryGetValue((0, b), out var n) ? $"'{n}' (bit {b})" : $"bit {b}");
            throw new UnsupportedImageException($"image uses unsupported incompatible features: {string.Join(", ", list)}");
        }
        if (h.CompressionType > 1) throw new UnsupportedImageException($"unknown compression type {h.CompressionType}");
        if (h.CompressionType != 0 && (h.IncompatibleFeatures & IncompatCompression) == 0)
            throw new CorruptImageException("compression_type is set but the compression-type incompatible bit is not");
        if (h.CryptMethod > 2) throw new UnsupportedImageException($"unknown encryption method {h.CryptMethod}");
        if (h.CryptMethod == 1) throw new UnsupportedImageException("legacy AES-CBC qcow2 encryption is not supported (use encrypt.format=luks)");
        if (h.Size > (1UL << 62)) throw new CorruptImageException($"virtual size {h.Size} is absurdly large");

        // Table locations must be cluster aligned and inside the file, so nothing later reads garbage or allocates huge buffers.
        ulong fl = (ulong)fileLength;
        CheckTable("L1 table", h.L1TableOffset, (ulong)h.L1Size * 8, MaxL1Bytes, cs, fl, h.L1Size == 0);
        CheckTable("refcount table", h.RefcountTableOffset, (ulong)h.RefcountTableClusters * (ulong)cs, MaxRefTableBytes, cs, fl, false);
        if (h.RefcountTableClusters == 0) throw new CorruptImageException("refcount table has zero clusters");
        if (h.NbSnapshots > MaxSnapshots) throw new CorruptImageException($"{h.NbSnapshots} snapshots exceed the limit of {MaxSnapshots}");
        if (h.NbSnapshots > 0) CheckTable("snapshot table", h.SnapshotsOffset, 1, ulong.MaxValue, cs, fl, false);
        int entryBytes = h.ExtendedL2 ? 16 : 8;
        ulong l2Entries = (ulong)cs / (ulong)entryBytes;
        ulong needL1 = (h.Size + (l2Entries * (ulong)cs) - 1) / (l2Entries * (ulong)cs);
        if (h.L1Size < needL1) throw new CorruptImageException($"L1 table has {h.L1Size} entries, too few for a {h.Size}-byte disk ({needL1} needed)");
        return h;
    }

    private static void CheckTable(string what, ulong offset, ulong bytes, ulong max, int cs, ulong fileLength, bool allowEmpty)
    {
        if (allowEmpty && bytes == 0) return;
        if (bytes > max) throw new CorruptImageException($"{what} is too large ({bytes} bytes, limit {max})");
        if (offset == 0 || offset % (ulong)cs != 0) throw new CorruptImageException($"{what} offset 0x{offset:x} is not cluster aligned (or zero)");
        if (offset >= fileLength || bytes > fileLength - offset) throw new CorruptImageException($"{what} at 0x{offset:x} (+{bytes} bytes) lies past the end of the file ({fileLength} bytes)");
    }

    /// <summary>Serialises the header, extensions and backing file name into one cluster-sized buffer.</summary>
    public byte[] Serialize()
    {
        int cs = ClusterSize;
        var b = new byte[cs];
        if (Version == 3 && HeaderLength < 104) HeaderLength = 112;
        if (Version == 2) HeaderLength = 72;
        BinaryPrimitives.WriteUInt32BigEndian(b, Magic);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(4), Version);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(20), (uint)ClusterBits);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(24), Size);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(32), CryptMethod);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(36), L1Size);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(40), L1TableOffset);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(48), RefcountTableOffset);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(56), RefcountTableClusters);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(60), NbSnapshots);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(64), SnapshotsOffset);
        if (Version == 3)
        {
            BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(72), IncompatibleFeatures);
            BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(80), CompatibleFeatures);
            BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(88), AutoclearFeatures);
            BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(96), (uint)RefcountOrder);
            BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(100), HeaderLength);
            if (HeaderLength > 104) b[104] = CompressionType;
            if (HeaderLength > 112) ExtraHeaderBytes.AsSpan(0, Math.Min(ExtraHeaderBytes.Length, (int)HeaderLength - 112)).CopyTo(b.AsSpan(112));
        }
        int off = (int)HeaderLength;
        foreach (var e in Extensions)
        {
            // v2 images only carry the backing-format extension in QEMU's practice, but the format allows any.
            int padded = (e.Data.Length + 7) & ~7;
            if (off + 8 + padded + 8 > cs) throw new DiskImageException("header extensions do not fit in cluster 0");
            BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(off), e.Type);
            BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(off + 4), (uint)e.Data.Length);
            e.Data.CopyTo(b, off + 8);
            off += 8 + padded;
        }
        off += 8; // end-of-extensions marker (zeros)
        if (BackingFile != null)
        {
            var name = Encoding.UTF8.GetBytes(BackingFile);
            if (name.Length > 1023 || off + name.Length > cs) throw new DiskImageException("backing file name is too long for the header cluster");
            name.CopyTo(b, off);
            BackingFileOffset = (ulong)off; BackingFileSize = (uint)name.Length;
            off += name.Length;
        }
        else { BackingFileOffset = 0; BackingFileSize = 0; }
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(8), BackingFileOffset);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(16), BackingFileSize);
        UsedBytes = off;
        return b;
    }

    /// <summary>Bytes used by the last <see cref="Serialize"/> (header writes need not rewrite the whole cluster).</summary>
    public int UsedBytes { get; private set; }
}
