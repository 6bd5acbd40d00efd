using System.Buffers.Binary;
using SharpVM.Storage.Qcow2;

namespace SharpVM.Storage.Tests;

/// <summary>Truncated, corrupt and hostile images must fail with a typed error naming the problem.</summary>
public class HostileImageTests
{
    private static string Fresh(TempDir d, string name = "h.qcow2", string opts = "cluster_size=4096")
    {
        Qemu.Img("create", "-q", "-f", "qcow2", "-o", opts, d[name], "4M");
        Qemu.Io("-c", "write -P 5 0 64k", "-c", "write -P 6 1M 4k", d[name]);
        return d[name];
    }

    private static void Patch(string path, long off, params byte[] bytes)
    {
        using var f = new FileStream(path, FileMode.Open);
        f.Position = off;
        f.Write(bytes);
    }

    private static byte[] Be32(uint v) { var b = new byte[4]; BinaryPrimitives.WriteUInt32BigEndian(b, v); return b; }
    private static byte[] Be64(ulong v) { var b = new byte[8]; BinaryPrimitives.WriteUInt64BigEndian(b, v); return b; }

    private static T Fails<T>(string path, string expected, bool readOnly = true) where T : DiskImageException
    {
        var e = Assert.ThrowsAny<T>(() =>
        {
            using var img = Qcow2Image.Open(path, new Qcow2Image.OpenOptions { ReadOnly = readOnly });
            var buf = new byte[img.Size];
            img.Read(0, buf);
        });
        Assert.True(e.Message.Contains(expected, StringComparison.OrdinalIgnoreCase), $"expected '{expected}' in: {e.Message}");
        return e;
    }

    [Fact] public void BadMagic() { using var d = new TempDir(); var p = Fresh(d); Patch(p, 0, 0, 0, 0, 0); Fails<CorruptImageException>(p, "magic"); }
    [Fact] public void UnknownVersion() { using var d = new TempDir(); var p = Fresh(d); Patch(p, 4, Be32(7)); Fails<UnsupportedImageException>(p, "version 7"); }
    [Fact] public void ClusterBitsOutOfRange() { using var d = new TempDir(); var p = Fresh(d); Patch(p, 20, Be32(40)); Fails<CorruptImageException>(p, "cluster_bits"); }
    [Fact] public void L1PastEof() { using var d = new TempDir(); var p = Fresh(d); Patch(p, 40, Be64(1UL << 40)); Fails<CorruptImageException>(p, "L1 table"); }
    [Fact] public void L1TooLarge() { using var d = new TempDir(); var p = Fresh(d); Patch(p, 36, Be32(0x10000000)); Fails<CorruptImageException>(p, "too large"); }
    [Fact] public void RefcountTablePastEof() { using var d = new TempDir(); var p = Fresh(d); Patch(p, 48, Be64(1UL << 30)); Fails<CorruptImageException>(p, "refcount table"); }
    [Fact] public void L1OverlapsRefcountTable() { using var d = new TempDir(); var p = Fresh(d); Patch(p, 40, Be64(4096)); Fails<CorruptImageException>(p, "overlapping"); }
    [Fact] public void HeaderLengthLies() { using var d = new TempDir(); var p = Fresh(d); Patch(p, 100, Be32(101)); Fails<CorruptImageException>(p, "header_length"); }
    [Fact] public void HeaderLengthPastCluster() { using var d = new TempDir(); var p = Fresh(d); Patch(p, 100, Be32(1 << 20)); Fails<CorruptImageException>(p, "header_length"); }
    [Fact] public void TooManySnapshots() { using var d = new TempDir(); var p = Fresh(d); Patch(p, 60, Be32(1_000_000)); Fails<CorruptImageException>(p, "snapshots"); }

    [Fact]
    public void UnknownIncompatibleFeatureIsNamed()
    {
        using var d = new TempDir();
        // qemu-img create writes the feature-name table (qemu-io's header rewrite drops it, so no I/O here).
        var p = d["f.qcow2"];
        Qemu.Img("create", "-q", "-f", "qcow2", p, "1M");
        Patch(p, 72, Be64(1UL << 9));
        Fails<UnsupportedImageException>(p, "bit 9");
        Patch(p, 72, Be64(4)); // external data file: known name from the feature table
        Fails<UnsupportedImageException>(p, "external data file");
    }

    [Fact]
    public void TruncatedFiles()
    {
        using var d = new TempDir(); var p = Fresh(d);
        var all = File.ReadAllBytes(p);
        foreach (int n in new[] { 0, 3, 50, 90, 4096, 8192 })
        {
            File.WriteAllBytes(d["t.qcow2"], all.AsSpan(0, n).ToArray());
            Assert.ThrowsAny<DiskImageException>(() => { using var img = Qcow2Image.Open(d["t.qcow2"], new Qcow2Image.OpenOptions { ReadOnly = true }); img.Read(0, new byte[img.Size]); });
        }
    }

    [Fact]
    public void L2PointingAtHeaderIsRefused()
    {
        using var d = new TempDir(); var p = Fresh(d);
        long l1 = BinaryPrimitives.ReadInt64BigEndian(File.ReadAllBytes(p).AsSpan(40));
        Patch(p, l1, Be64(Qcow2Image.Copied | 0)); // offset 0 with COPIED = unallocated, harmless
        Patch(p, l1, Be64(Qcow2Image.Copied | 4096)); // the refcount table
        Fails<CorruptImageException>(p, "overlaps");
    }

    [Fact]
    public void DataClusterOnMetadataIsNotWritten()
    {
        using var d = new TempDir(); var p = Fresh(d);
        var bytes = File.ReadAllBytes(p);
        long l1 = BinaryPrimitives.ReadInt64BigEndian(bytes.AsSpan(40));
        long l2 = BinaryPrimitives.ReadInt64BigEndian(bytes.AsSpan((int)l1)) & (long)Qcow2Image.OffsetMask;
        Patch(p, l2, Be64(Qcow2Image.Copied | 4096)); // guest cluster 0 -> host cluster 1 (the refcount table)
        var before = File.ReadAllBytes(p).AsSpan(0, 8192).ToArray();
        using (var img = Qcow2Image.Open(p))
            Assert.Throws<CorruptImageException>(() => img.Write(0, new byte[100]));
        var after = File.ReadAllBytes(p);
        Assert.Equal(before.AsSpan(4096, 4096).ToArray(), after.AsSpan(4096, 4096).ToArray()); // refcount table untouched
        // The image is now flagged corrupt: no more writers until repaired.
        Assert.Contains("\"corrupt\": true", Qemu.Img("info", "--output", "json", p));
        Assert.Throws<ImageReadOnlyException>(() => Qcow2Image.Open(p));
    }

    [Fact]
    public void CorruptBitRefusesWritesWithExplanation()
    {
        using var d = new TempDir(); var p = Fresh(d);
        Patch(p, 72, Be64(2));
        var e = Assert.Throws<ImageReadOnlyException>(() => Qcow2Image.Open(p));
        Assert.Contains("corrupt", e.Message);
        using var img = Qcow2Image.Open(p, new Qcow2Image.OpenOptions { ReadOnly = true });
        var b = new byte[4096]; img.Read(0, b);
        Assert.Equal(5, b[0]);
    }

    [Fact]
    public void RepairClearsCorruptBit()
    {
        using var d = new TempDir(); var p = Fresh(d);
        Patch(p, 72, Be64(2));
        using (var img = Qcow2Image.Open(p, new Qcow2Image.OpenOptions { ForRepair = true, NoRepairOnOpen = true }))
            Assert.Equal(0, img.Check(CheckRepair.All).Corruptions);
        using (var img = Qcow2Image.Open(p)) img.Write(0, new byte[] { 1 });
        Qemu.AssertClean(p);
    }

    [Fact]
    public void SelfReferencingBackingFile()
    {
        using var d = new TempDir();
        Qemu.Img("create", "-q", "-f", "qcow2", d["a.qcow2"], "1M");
        Qemu.Img("create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", d["b.qcow2"]);
        Qemu.Img("rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", d["a.qcow2"]); // a -> b -> a
        var e = Assert.ThrowsAny<DiskImageException>(() => Qcow2Image.Open(d["b.qcow2"], new Qcow2Image.OpenOptions { ReadOnly = true }).Dispose());
        Assert.Contains("chain", e.Message);
    }

    [Fact]
    public void DirtyImageIsRepairedOnOpen()
    {
        using var d = new TempDir(); var p = Fresh(d, opts: "cluster_size=4096,lazy_refcounts=on");
        // Leak a cluster by hand and set the dirty bit, as a crash with lazy refcounts would leave it.
        Patch(p, 72, Be64(1));
        using (var img = Qcow2Image.Open(p))
        {
            Assert.Equal(0UL, img.Header.IncompatibleFeatures & Qcow2Header.IncompatDirty);
            img.Write(8192, new byte[] { 9 });
        }
        Qemu.AssertClean(p);
    }

    [Fact]
    public void UnknownAndBitmapExtensionsArePreserved()
    {
        using var d = new TempDir(); var p = Fresh(d);
        Qemu.Img("bitmap", "--add", p, "bm0");
        // Add an unknown extension by hand before the end marker.
        var h = Qcow2Header.Parse(File.ReadAllBytes(p).AsSpan(0, 4096), new FileInfo(p).Length);
        h.Extensions.Add(new HeaderExtension(0x12345678, [1, 2, 3, 4, 5]));
        File.OpenWrite(p).Using(f => { f.Write(h.Serialize(), 0, h.UsedBytes); });
        using (var img = Qcow2Image.Open(p))
        {
            img.Write(0, new byte[] { 1 });
            img.SetBackingFile(null, null); // forces a full header rewrite
        }
        var h2 = Qcow2Header.Parse(File.ReadAllBytes(p).AsSpan(0, 4096), new FileInfo(p).Length);
        Assert.Contains(h2.Extensions, e => e.Type == 0x12345678 && e.Data.SequenceEqual(new byte[] { 1, 2, 3, 4, 5 }));
        Assert.Contains(h2.Extensions, e => e.Type == Qcow2Header.ExtBitmaps);
        Qemu.AssertClean(p);
        var info = Qemu.Img("info", "--output", "json", p);
        Assert.Contains("bm0", info);
        Assert.Contains("in-use", info); // we wrote without tracking the bitmap, so it is flagged inconsistent
    }

    /// <summary>Committed corpus of hostile images: each must open-and-read cleanly or fail with a typed error.</summary>
    [Fact]
    public void CorpusFailsCleanly()
    {
        string dir = Path.Combine(AppContext.BaseDirectory, "corpus");
        var files = Directory.GetFiles(dir, "*.qcow2");
        Assert.True(files.Length >= 8, "corpus missing");
        foreach (var f in files) FuzzTests.OpenReadCheck(f, File.ReadAllBytes(f));
    }
}

internal static class StreamExt
{
    public static void Using(this FileStream f, Action<FileStream> a) { using (f) a(f); }
}
