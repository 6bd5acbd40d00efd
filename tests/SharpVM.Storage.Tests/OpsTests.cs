using System.Globalization;
using System.Text.Json;
using SharpVM.Storage.Operations;
using SharpVM.Storage.Qcow2;

namespace SharpVM.Storage.Tests;

public class OpsTests
{
    [Theory]
    [InlineData(false, "zlib", false)]
    [InlineData(true, "zlib", false)]
    [InlineData(true, "zstd", false)]
    [InlineData(false, "zlib", true)]
    [InlineData(true, "zstd", true)]
    public void ConvertRawToQcow2AndBack(bool compress, string ctype, bool extl2)
    {
        using var d = new TempDir();
        long size = 16L << 20;
        var model = new Model(size);
        var rnd = new Random(11);
        for (int i = 0; i < 30; i++)
        {
            long off = rnd.NextInt64(0, size - 300_000);
            int len = rnd.Next(1, 300_000);
            if (i % 2 == 0) rnd.NextBytes(model.Data.AsSpan((int)off, len));
            else Array.Fill(model.Data, (byte)(i % 5 == 0 ? 0 : i), (int)off, len);
        }
        model.SaveRaw(d["src.raw"]);
        using (var src = DiskImage.Open(d["src.raw"], "raw", new Qcow2Image.OpenOptions { ReadOnly = true }))
        using (var dst = Qcow2Image.Create(d["dst.qcow2"], new Qcow2CreateOptions { Size = size, CompressionType = ctype, ExtendedL2 = extl2 }))
        {
            long last = 0;
            ImageOps.Convert(src, dst, compress, (done, total) => { Assert.True(done >= last && done <= total); last = done; });
            Assert.Equal(size, last);
            Assert.Null(ImageOps.Compare(src, dst, true));
        }
        Qemu.AssertClean(d["dst.qcow2"]);
        Qemu.Img("compare", "-F", "raw", d["dst.qcow2"], d["src.raw"]);
        using (var src = Qcow2Image.Open(d["dst.qcow2"], new Qcow2Image.OpenOptions { ReadOnly = true }))
        using (var dst = RawImage.Create(d["back.raw"], size))
            ImageOps.Convert(src, dst, false);
        Assert.Equal(model.Data, File.ReadAllBytes(d["back.raw"]));
        // Sparse: the all-zero stretches were not written.
        Assert.True(new RawImage(d["back.raw"], true).Using(r => r.ActualSize) < size);
    }

    [Fact]
    public void CompareFindsFirstDifference()
    {
        using var d = new TempDir();
        File.WriteAllBytes(d["a.raw"], new byte[1 << 20]);
        var b = new byte[1 << 20]; b[777_777] = 1;
        File.WriteAllBytes(d["b.raw"], b);
        using var ia = new RawImage(d["a.raw"], true);
        using var ib = new RawImage(d["b.raw"], true);
        Assert.Equal(777_777L, ImageOps.Compare(ia, ib, false));
    }

    /// <summary>Our extent map agrees with `qemu-img map --output json` on a chain with data, zero and unallocated ranges.</summary>
    [Fact]
    public void ExtentsAgreeWithQemuMap()
    {
        using var d = new TempDir();
        Qemu.Img("create", "-q", "-f", "qcow2", d["b.qcow2"], "4M");
        Qemu.Io("-c", "write -P 1 0 1M", d["b.qcow2"]);
        Qemu.Img("create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", d["t.qcow2"]);
        Qemu.Io("-c", "write -P 2 512k 128k", "-c", "write -z 2M 64k", "-c", "write -P 3 3M 64k", d["t.qcow2"]);
        var json = Qemu.Img("map", "--output", "json", d["t.qcow2"]);
        using var img = Qcow2Image.Open(d["t.qcow2"], new Qcow2Image.OpenOptions { ReadOnly = true });
        using var doc = JsonDocument.Parse(json);
        foreach (var e in doc.RootElement.EnumerateArray())
        {
            long start = e.GetProperty("start").GetInt64();
            var ext = img.GetExtent(start, e.GetProperty("length").GetInt64());
            Assert.Equal(e.GetProperty("depth").GetInt32(), e.GetProperty("present").GetBoolean() ? ext.Depth : e.GetProperty("depth").GetInt32());
            if (e.GetProperty("data").GetBoolean())
            {
                Assert.Equal(ExtentKind.Data, ext.Kind);
                Assert.Equal(e.GetProperty("offset").GetInt64(), ext.HostOffset);
            }
            else if (e.GetProperty("present").GetBoolean()) Assert.Equal(ExtentKind.Zero, ext.Kind);
            else Assert.Equal(ExtentKind.Unallocated, ext.Kind);
        }
    }

    /// <summary>Convert reads on a prefetch thread: a read error there must still reach the caller with its type.</summary>
    [Fact]
    public void ConvertOfCorruptCompressedSourceFailsWithTypedError()
    {
        using var d = new TempDir();
        using (var img = Qcow2Image.Create(d["c.qcow2"], new Qcow2CreateOptions { Size = 8 << 20 }))
        {
            var data = new byte[65536];
            new Random(5).NextBytes(data.AsSpan(0, 30000)); // compressible: half of it zeros
            for (int i = 0; i < 40; i++) img.WriteCompressed(i, data);
            var (off, len) = img.CompressedRange(img.GetEntry(17).Entry);
            img.File.Write(off, Enumerable.Repeat((byte)0xA5, len).ToArray()); // garbage where the 18th cluster's zlib stream was
        }
        using var src = Qcow2Image.Open(d["c.qcow2"], new Qcow2Image.OpenOptions { ReadOnly = true });
        using var dst = RawImage.Create(d["out.raw"], src.Size);
        Assert.ThrowsAny<CorruptImageException>(() => ImageOps.Convert(src, dst, false));
    }

    [Fact]
    public void CheckRepairsLeaks()
    {
        using var d = new TempDir();
        using (var img = Qcow2Image.Create(d["l.qcow2"], new Qcow2CreateOptions { Size = 1 << 20, ClusterSize = 4096 }))
        {
            img.Write(0, new byte[10000]);
            long leaked = img.Refcounts.Allocate(3); // leak three clusters (written, so they lie inside the file)
            img.File.Write(leaked, new byte[3 * 4096]);
            var r = img.Check();
            Assert.Equal(3, r.Leaks);
        }
        var (code, _, _) = Qemu.Run("qemu-img", "check", d["l.qcow2"]);
        Assert.Equal(3, code); // qemu agrees: leaks only
        using (var img = Qcow2Image.Open(d["l.qcow2"]))
        {
            var r = img.Check(CheckRepair.Leaks);
            Assert.Equal(3, r.LeaksFixed);
            Assert.Equal(0, r.Leaks);
        }
        Qemu.AssertClean(d["l.qcow2"]);
    }

    [Fact]
    public void ExtendedL2SubclustersOverBacking()
    {
        // Writes smaller than a subcluster over a backing file must keep the rest of each cluster from the backing file.
        using var d = new TempDir();
        long size = 4L << 20;
        var model = new Model(size);
        new Random(3).NextBytes(model.Data);
        model.SaveRaw(d["base.raw"]);
        using (var img = Qcow2Image.Create(d["x.qcow2"], new Qcow2CreateOptions { Size = size, ExtendedL2 = true, BackingFile = "base.raw", BackingFormat = "raw" }))
        {
            var rnd = new Random(4);
            for (int i = 0; i < 50; i++)
            {
                var buf = new byte[rnd.Next(1, 3000)]; rnd.NextBytes(buf);
                model.Write(img, rnd.NextInt64(0, size - buf.Length), buf);
            }
            model.Zero(img, 65536 * 3 + 2048 * 5, 2048 * 4);
            model.AssertMatches(img);
        }
        Qemu.AssertClean(d["x.qcow2"]);
        model.SaveRaw(d["ref.raw"]);
        Qemu.Img("compare", "-F", "raw", d["x.qcow2"], d["ref.raw"]);
        // Subcluster allocation: far fewer bytes than whole clusters would need.
        var map = Qemu.Img("map", "--output", "json", d["x.qcow2"]);
        Assert.Contains("\"depth\": 1", map);
    }

    [Fact]
    public async Task ConcurrentAsyncIoFromManyThreads()
    {
        using var d = new TempDir();
        long size = 32L << 20;
        var expected = new byte[size];
        await using var img = Qcow2Image.Create(d["c.qcow2"], new Qcow2CreateOptions { Size = size, ClusterSize = 4096 });
        IDiskImage disk = img;
        var tasks = Enumerable.Range(0, 8).Select(t => Task.Run(async () =>
        {
            var rnd = new Random(t);
            long region = size / 8 * t;
            for (int i = 0; i < 200; i++)
            {
                int len = rnd.Next(1, 20000);
                long off = region + rnd.NextInt64(0, size / 8 - len);
                var buf = new byte[len]; rnd.NextBytes(buf);
                await disk.WriteAsync(off, buf);
                lock (expected) buf.CopyTo(expected, off);
                var back = new byte[len];
                await disk.ReadAsync(off, back);
                Assert.Equal(buf, back);
                if (i % 50 == 0) await disk.FlushAsync();
                if (i % 30 == 0) { await disk.WriteZeroesAsync(region, 4096); lock (expected) Array.Clear(expected, (int)region, 4096); }
            }
        })).ToArray();
        await Task.WhenAll(tasks);
        var all = new byte[size];
        await disk.ReadAsync(0, all);
        Assert.True(all.AsSpan().SequenceEqual(expected));
        var r = img.Check();
        Assert.Equal(0, r.Corruptions + r.Leaks);
    }
}

internal static class DisposableExt
{
    public static TR Using<T, TR>(this T d, Func<T, TR> f) where T : IDisposable { using (d) return f(d); }
}
