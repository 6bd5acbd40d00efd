using SharpVM.Storage.Qcow2;

namespace SharpVM.Storage.Tests;

/// <summary>Images SharpVM writes must pass `qemu-img check` and equal the expected content under `qemu-img compare`.</summary>
public class InteropWriteTests
{
    [Theory]
    [InlineData(512, 16, "1.1", false)]
    [InlineData(4096, 1, "1.1", false)]
    [InlineData(4096, 2, "1.1", false)]
    [InlineData(65536, 4, "1.1", false)]
    [InlineData(65536, 8, "1.1", false)]
    [InlineData(65536, 16, "1.1", false)]
    [InlineData(65536, 32, "1.1", false)]
    [InlineData(8192, 64, "1.1", false)]
    [InlineData(65536, 16, "0.10", false)]
    [InlineData(4096, 16, "0.10", false)]
    [InlineData(2 << 20, 16, "1.1", false)]
    [InlineData(65536, 16, "1.1", true)]
    [InlineData(16384, 1, "1.1", true)]
    [InlineData(2 << 20, 64, "1.1", true)]
    public void RandomWorkloadMatchesQemu(int cs, int refbits, string compat, bool extl2)
    {
        using var d = new TempDir();
        long size = Math.Max(16L << 20, 6L * cs);
        var model = new Model(size);
        var rnd = new Random(cs ^ refbits ^ (extl2 ? 77 : 0));
        using (var img = Qcow2Image.Create(d["a.qcow2"], new Qcow2CreateOptions { Size = size, ClusterSize = cs, RefcountBits = refbits, Compat = compat, ExtendedL2 = extl2 }))
        {
            model.RandomWorkload(img, rnd, 150);
            model.AssertMatches(img);
            var r = img.Check();
            Assert.True(r.Corruptions == 0 && r.Leaks == 0, string.Join("\n", r.Messages));
        }
        model.SaveRaw(d["ref.raw"]);
        Qemu.AssertClean(d["a.qcow2"]);
        Qemu.Img("compare", "-f", "qcow2", "-F", "raw", d["a.qcow2"], d["ref.raw"]);
        var info = Qemu.Img("info", "--output", "json", d["a.qcow2"]);
        Assert.Contains($"\"cluster-size\": {cs}", info);
        Assert.Contains($"\"compat\": \"{compat}\"", info);
        if (compat == "1.1") Assert.Contains($"\"refcount-bits\": {refbits}", info);
    }

    [Theory]
    [InlineData("zlib", 65536)]
    [InlineData("zstd", 65536)]
    [InlineData("zlib", 4096)]
    [InlineData("zstd", 2 << 20)]
    public void CompressedClustersReadableByQemu(string type, int cs)
    {
        using var d = new TempDir();
        long size = Math.Max(8L << 20, 4L * cs);
        var model = new Model(size);
        var rnd = new Random(5);
        // Compressible content: repeated text with random runs.
        for (long off = 0; off < size / 2; off += 1000)
        {
            var line = System.Text.Encoding.ASCII.GetBytes($"line {off} of compressible text {rnd.Next(100)} ...........\n");
            Array.Copy(line, 0, model.Data, off, Math.Min(line.Length, size - off));
        }
        using (var img = Qcow2Image.Create(d["c.qcow2"], new Qcow2CreateOptions { Size = size, ClusterSize = cs, CompressionType = type }))
        {
            for (long gc = 0; gc < size / cs; gc++)
                img.WriteCompressed(gc, model.Data.AsSpan((int)(gc * cs), cs));
            // Overwrite part of a compressed cluster: must copy-on-write into a normal cluster.
            var patch = new byte[100]; rnd.NextBytes(patch);
            model.Write(img, cs + 17, patch);
            model.AssertMatches(img);
            var r = img.Check();
            Assert.Equal(size / cs - 1, r.CompressedClusters);
            Assert.Equal(0, r.Corruptions + r.Leaks);
        }
        model.SaveRaw(d["ref.raw"]);
        Qemu.AssertClean(d["c.qcow2"]);
        Qemu.Img("compare", "-f", "qcow2", "-F", "raw", d["c.qcow2"], d["ref.raw"]);
        if (cs == 65536) Assert.True(new FileInfo(d["c.qcow2"]).Length < size / 4, "compressed image should be much smaller than the data");
    }

    [Fact]
    public void FreshHundredGigImageIsTiny()
    {
        using var d = new TempDir();
        using (var img = Qcow2Image.Create(d["big.qcow2"], new Qcow2CreateOptions { Size = 100L << 30 }))
            Assert.Equal(100L << 30, img.Size);
        Assert.True(new FileInfo(d["big.qcow2"]).Length < 1 << 20);
        Qemu.AssertClean(d["big.qcow2"]);
    }

    [Fact]
    public void LargeImageRefcountTableGrows()
    {
        // 512-byte clusters with 1-bit refcounts: one refcount block covers 2 MiB, the table 64 blocks: writing
        // 40 MiB spread out forces new refcount blocks and a refcount table move.
        using var d = new TempDir();
        long size = 64L << 20;
        var model = new Model(size);
        using (var img = Qcow2Image.Create(d["g.qcow2"], new Qcow2CreateOptions { Size = size, ClusterSize = 512, RefcountBits = 1 }))
        {
            var rnd = new Random(9);
            for (int i = 0; i < 40; i++)
            {
                var buf = new byte[1 << 20]; rnd.NextBytes(buf);
                model.Write(img, (long)i * (1 << 20) + 512 * i, buf);
            }
            model.AssertMatches(img);
        }
        model.SaveRaw(d["ref.raw"]);
        Qemu.AssertClean(d["g.qcow2"]);
        Qemu.Img("compare", "-f", "qcow2", "-F", "raw", d["g.qcow2"], d["ref.raw"]);
    }
}

public class AllocatorTests
{
    /// <summary>Runs longer than a refcount block covers (512 B clusters, 64-bit refcounts: 64 clusters per block).</summary>
    [Fact]
    public void RunsLongerThanARefcountBlock()
    {
        using var d = new TempDir();
        long size = 1L << 30; // L1 alone is 512 clusters
        var rnd = new Random(12);
        var data = new byte[3 << 20];
        rnd.NextBytes(data);
        using (var img = Qcow2Image.Create(d["r.qcow2"], new Qcow2CreateOptions { Size = size, ClusterSize = 512, RefcountBits = 64 }))
        {
            img.Write(100L << 20, data);
            img.Write(7, data.AsSpan(0, 100_000));
            var back = new byte[data.Length];
            img.Read(100L << 20, back);
            Assert.Equal(data, back);
            Assert.Equal(0, img.Check().Corruptions);
        }
        Qemu.AssertClean(d["r.qcow2"]);
        var q = Qemu.Run("qemu-io", "-c", "read -v 104857600 16", d["r.qcow2"]).Out;
        // qemu-io's hex dump of what qemu reads there must be our first 16 bytes.
        string hex = string.Join(" ", data.Take(16).Select(b => b.ToString("x2", System.Globalization.CultureInfo.InvariantCulture)));
        Assert.Contains(hex, q);
    }
}
