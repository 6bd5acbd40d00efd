using System.Globalization;
using SharpVM.Storage.Qcow2;

namespace SharpVM.Storage.Tests;

/// <summary>Images qemu-img / qemu-io write are read back byte-exactly by SharpVM.</summary>
public class InteropReadTests
{
    /// <summary>Applies a qemu-io script to the image and the same effects to the model.</summary>
    internal static void QemuWorkload(string path, Model model, int cs, Random rnd, int ops, string[]? prefix = null, string? imageOpts = null)
    {
        var cmds = new List<string>();
        for (int i = 0; i < ops; i++)
        {
            int kind = rnd.Next(10);
            long len = rnd.Next(1, 3 * cs + 1000) & ~511L;
            if (len == 0) len = 512;
            long off = rnd.NextInt64(0, (model.Data.Length - len) / 512) * 512;
            if (kind < 7)
            {
                int pat = rnd.Next(1, 255);
                cmds.Add(string.Create(CultureInfo.InvariantCulture, $"write -P {pat} {off} {len}"));
                Array.Fill(model.Data, (byte)pat, (int)off, (int)len);
            }
            else
            {
                cmds.Add(string.Create(CultureInfo.InvariantCulture, $"write -z {off} {len}"));
                Array.Clear(model.Data, (int)off, (int)len);
            }
        }
        var args = new List<string>(prefix ?? []);
        foreach (var c in cmds) { args.Add("-c"); args.Add(c); }
        if (imageOpts != null) { args.Add("--image-opts"); args.Add(imageOpts); }
        else args.Add(path);
        Qemu.Io([.. args]);
    }

    [Theory]
    [InlineData("cluster_size=512,refcount_bits=16", 512)]
    [InlineData("cluster_size=4096,refcount_bits=1", 4096)]
    [InlineData("cluster_size=65536,refcount_bits=64", 65536)]
    [InlineData("cluster_size=65536,compat=0.10", 65536)]
    [InlineData("cluster_size=65536,extended_l2=on", 65536)]
    [InlineData("cluster_size=32768,extended_l2=on,refcount_bits=8", 32768)]
    [InlineData("cluster_size=2M,lazy_refcounts=on", 2 << 20)]
    public void QemuWrittenImagesReadExactly(string opts, int cs)
    {
        using var d = new TempDir();
        long size = Math.Max(16L << 20, 4L * cs);
        Qemu.Img("create", "-q", "-f", "qcow2", "-o", opts, d["q.qcow2"], size.ToString(CultureInfo.InvariantCulture));
        var model = new Model(size);
        QemuWorkload(d["q.qcow2"], model, cs, new Random(cs), 60);
        using (var img = Qcow2Image.Open(d["q.qcow2"], new Qcow2Image.OpenOptions { ReadOnly = true }))
        {
            model.AssertMatches(img);
            var r = img.Check();
            Assert.Equal(0, r.Corruptions + r.Leaks);
        }
        // And SharpVM can keep writing into the qemu image.
        using (var img = Qcow2Image.Open(d["q.qcow2"]))
        {
            model.RandomWorkload(img, new Random(3), 40);
            model.AssertMatches(img);
        }
        model.SaveRaw(d["ref.raw"]);
        Qemu.AssertClean(d["q.qcow2"]);
        Qemu.Img("compare", "-f", "qcow2", "-F", "raw", d["q.qcow2"], d["ref.raw"]);
    }

    [Theory]
    [InlineData("zlib")]
    [InlineData("zstd")]
    public void QemuCompressedImagesRead(string type)
    {
        using var d = new TempDir();
        long size = 8L << 20;
        var model = new Model(size);
        var rnd = new Random(2);
        for (int i = 0; i < size / 2; i += 4096) Array.Fill(model.Data, (byte)rnd.Next(4), i, 4096);
        rnd.NextBytes(model.Data.AsSpan(5 << 20, 100_000));
        model.SaveRaw(d["src.raw"]);
        Qemu.Img("convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "compression_type=" + type, d["src.raw"], d["c.qcow2"]);
        using var img = Qcow2Image.Open(d["c.qcow2"], new Qcow2Image.OpenOptions { ReadOnly = true });
        model.AssertMatches(img);
        Assert.True(img.Check().CompressedClusters > 0);
    }

    [Fact]
    public void QemuSnapshotsAreAppliedBySharpVM()
    {
        using var d = new TempDir();
        long size = 8L << 20;
        Qemu.Img("create", "-q", "-f", "qcow2", d["s.qcow2"], size.ToString(CultureInfo.InvariantCulture));
        var m1 = new Model(size);
        QemuWorkload(d["s.qcow2"], m1, 65536, new Random(1), 30);
        Qemu.Img("snapshot", "-c", "first", d["s.qcow2"]);
        var m2 = new Model(size); m1.Data.CopyTo(m2.Data, 0);
        QemuWorkload(d["s.qcow2"], m2, 65536, new Random(2), 30);
        Qemu.Img("snapshot", "-c", "second", d["s.qcow2"]);
        var m3 = new Model(size); m2.Data.CopyTo(m3.Data, 0);
        QemuWorkload(d["s.qcow2"], m3, 65536, new Random(3), 30);
        using (var img = Qcow2Image.Open(d["s.qcow2"]))
        {
            Assert.Equal(["first", "second"], img.ListSnapshots().Select(s => s.Name));
            m3.AssertMatches(img);
            img.ApplySnapshot("first");
            m1.AssertMatches(img);
            img.ApplySnapshot("second");
            m2.AssertMatches(img);
            img.DeleteSnapshot("first");
            m2.AssertMatches(img);
            Assert.Equal(0, img.Check().Corruptions);
        }
        Qemu.AssertClean(d["s.qcow2"]);
        m2.SaveRaw(d["ref.raw"]);
        Qemu.Img("compare", "-f", "qcow2", "-F", "raw", d["s.qcow2"], d["ref.raw"]);
    }

    [Fact]
    public void QemuBackingChainReadsThrough()
    {
        using var d = new TempDir();
        long size = 8L << 20;
        var model = new Model(size);
        var rnd = new Random(4);
        rnd.NextBytes(model.Data.AsSpan(0, 3 << 20));
        model.SaveRaw(d["base.raw"]);
        Qemu.Img("create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", d["mid.qcow2"]);
        QemuWorkload(d["mid.qcow2"], model, 65536, new Random(5), 20);
        Qemu.Img("create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", d["top.qcow2"]);
        QemuWorkload(d["top.qcow2"], model, 65536, new Random(6), 20);
        using var img = DiskImage.Open(d["top.qcow2"], null, new Qcow2Image.OpenOptions { ReadOnly = true });
        Assert.Equal("raw", img.Backing!.Backing!.Format);
        model.AssertMatches(img);
    }
}
