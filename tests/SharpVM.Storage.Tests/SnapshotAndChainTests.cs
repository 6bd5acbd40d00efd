using System.Globalization;
using SharpVM.Storage.Operations;
using SharpVM.Storage.Qcow2;

namespace SharpVM.Storage.Tests;

public class SnapshotAndChainTests
{
    /// <summary>
    /// Property test: random writes, zeroes, discards and snapshot create/apply/delete against flat models; the image
    /// must always equal the active model, pass our check and qemu-img check, and qemu must export each snapshot exactly.
    /// </summary>
    [Theory]
    [InlineData(1, 65536, 16, false)]
    [InlineData(2, 4096, 4, false)]
    [InlineData(3, 32768, 64, true)]
    [InlineData(4, 512, 8, false)]
    public void RandomSnapshotSequencesMatchModel(int seed, int cs, int refbits, bool extl2)
    {
        using var d = new TempDir();
        long size = 4L << 20;
        var rnd = new Random(seed);
        var active = new Model(size);
        var snaps = new Dictionary<string, byte[]>();
        int n = 0;
        using (var img = Qcow2Image.Create(d["p.qcow2"], new Qcow2CreateOptions { Size = size, ClusterSize = cs, RefcountBits = refbits, ExtendedL2 = extl2 }))
        {
            for (int step = 0; step < 25; step++)
            {
                int k = rnd.Next(10);
                if (k < 5) active.RandomWorkload(img, rnd, 6);
                else if (k < 7 && snaps.Count < 5)
                {
                    string name = "s" + n++;
                    img.CreateSnapshot(name, vmStateSize: 0, vmClockNsec: (ulong)step * 1_000_000_007UL);
                    snaps[name] = (byte[])active.Data.Clone();
                }
                else if (k < 9 && snaps.Count > 0)
                {
                    var name = snaps.Keys.ElementAt(rnd.Next(snaps.Count));
                    img.ApplySnapshot(name);
                    snaps[name].CopyTo(active.Data, 0);
                }
                else if (snaps.Count > 0)
                {
                    var name = snaps.Keys.ElementAt(rnd.Next(snaps.Count));
                    img.DeleteSnapshot(name);
                    snaps.Remove(name);
                }
                active.AssertMatches(img);
                var r = img.Check();
                Assert.True(r.Corruptions == 0 && r.Leaks == 0, $"step {step}: " + string.Join("\n", r.Messages.Take(5)));
            }
            var listed = img.ListSnapshots();
            Assert.Equal(snaps.Keys.Order(), listed.Select(s => s.Name).Order());
        }
        Qemu.AssertClean(d["p.qcow2"]);
        active.SaveRaw(d["active.raw"]);
        Qemu.Img("compare", "-f", "qcow2", "-F", "raw", d["p.qcow2"], d["active.raw"]);
        foreach (var (name, data) in snaps)
        {
            File.WriteAllBytes(d["snap.raw"], data);
            Qemu.Img("convert", "-f", "qcow2", "-O", "raw", "-l", "snapshot.name=" + name, d["p.qcow2"], d["export.raw"]);
            Assert.True(File.ReadAllBytes(d["export.raw"]).AsSpan().SequenceEqual(data), $"qemu's export of snapshot {name} differs");
        }
    }

    [Fact]
    public void SnapshotVmStateFieldsRoundTrip()
    {
        using var d = new TempDir();
        using (var img = Qcow2Image.Create(d["v.qcow2"], new Qcow2CreateOptions { Size = 1 << 20 }))
            img.CreateSnapshot("vm", vmStateSize: 12345, vmClockNsec: 3_500_000_000);
        var json = Qemu.Img("snapshot", "-l", d["v.qcow2"]);
        Assert.Contains("vm", json);
        var info = Qemu.Img("info", "--output", "json", d["v.qcow2"]);
        Assert.Contains("\"vm-state-size\": 12345", info);
        Assert.Contains("\"vm-clock-sec\": 3", info);
        using var img2 = Qcow2Image.Open(d["v.qcow2"], new Qcow2Image.OpenOptions { ReadOnly = true });
        var s = img2.ListSnapshots().Single();
        Assert.Equal(12345UL, s.VmStateSize);
        Assert.Equal(3_500_000_000UL, s.VmClockNsec);
        Assert.Equal((ulong)(1 << 20), s.DiskSize);
    }

    [Theory]
    [InlineData("qcow2", "1.1")]
    [InlineData("raw", "1.1")]
    [InlineData("qcow2", "0.10")]
    public void OverlayOnBackingFile(string baseFormat, string compat)
    {
        using var d = new TempDir();
        long size = 8L << 20;
        var model = new Model(size);
        new Random(1).NextBytes(model.Data.AsSpan(0, 5 << 20));
        string basePath = d["base." + baseFormat];
        if (baseFormat == "raw") model.SaveRaw(basePath);
        else
        {
            using var b = Qcow2Image.Create(basePath, new Qcow2CreateOptions { Size = size });
            b.Write(0, model.Data);
        }
        using (var top = Qcow2Image.Create(d["top.qcow2"], new Qcow2CreateOptions { Size = size, Compat = compat, BackingFile = "base." + baseFormat, BackingFormat = baseFormat }))
        {
            Assert.NotNull(top.Backing);
            model.AssertMatches(top);
            var rnd = new Random(2);
            for (int i = 0; i < 40; i++)
            {
                var buf = new byte[rnd.Next(1, 200_000)];
                rnd.NextBytes(buf);
                model.Write(top, rnd.NextInt64(0, size - buf.Length), buf);
            }
            // Zeroing over a backing file must hide the backing data (zero flag), not expose it.
            model.Zero(top, 65536, 3 * 65536);
            model.AssertMatches(top);
        }
        Qemu.AssertClean(d["top.qcow2"]);
        model.SaveRaw(d["ref.raw"]);
        Qemu.Img("compare", "-f", "qcow2", "-F", "raw", d["top.qcow2"], d["ref.raw"]);
        Assert.Contains($"\"backing-filename-format\": \"{baseFormat}\"", Qemu.Img("info", "--output", "json", d["top.qcow2"]));
    }

    [Fact]
    public void CommitAndRebaseMatchQemu()
    {
        using var d = new TempDir();
        long size = 4L << 20;
        string sz = size.ToString(CultureInfo.InvariantCulture);
        Qemu.Img("create", "-q", "-f", "qcow2", d["base.qcow2"], sz);
        Qemu.Io("-c", "write -P 1 0 2M", d["base.qcow2"]);
        Qemu.Img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", d["mid.qcow2"]);
        Qemu.Io("-c", "write -P 2 1M 1M", d["mid.qcow2"]);
        Qemu.Img("create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", d["top.qcow2"]);
        Qemu.Io("-c", "write -P 3 1536k 1M", "-c", "write -z 0 64k", d["top.qcow2"]);
        Qemu.Img("convert", "-O", "raw", d["top.qcow2"], d["expected.raw"]);

        // Safe rebase of top onto base (dropping mid): content must not change.
        File.Copy(d["top.qcow2"], d["top2.qcow2"]);
        using (var top = Qcow2Image.Open(d["top2.qcow2"]))
        using (var nb = DiskImage.Open(d["base.qcow2"], "qcow2", new Qcow2Image.OpenOptions { ReadOnly = true }))
        {
            ImageOps.RebaseCopy(top, nb);
            top.SetBackingFile("base.qcow2", "qcow2");
        }
        Qemu.AssertClean(d["top2.qcow2"]);
        Qemu.Img("compare", "-F", "raw", d["top2.qcow2"], d["expected.raw"]);
        Assert.Contains("\"backing-filename\": \"base.qcow2\"", Qemu.Img("info", "--output", "json", d["top2.qcow2"]));

        // Commit top into mid: mid then shows the whole chain's content.
        using (var top = Qcow2Image.Open(d["top.qcow2"]))
        {
            using (var mid = DiskImage.Open(d["mid.qcow2"], "qcow2"))
                ImageOps.Commit(top, mid, 1);
            top.MakeEmpty();
        }
        Qemu.AssertClean(d["mid.qcow2"]);
        Qemu.AssertClean(d["top.qcow2"]);
        Qemu.Img("compare", "-F", "raw", d["mid.qcow2"], d["expected.raw"]);
        Qemu.Img("compare", "-F", "raw", d["top.qcow2"], d["expected.raw"]);
    }

    [Fact]
    public void ResizeGrowAndShrink()
    {
        using var d = new TempDir();
        var model = new Model(8L << 20);
        using (var img = Qcow2Image.Create(d["r.qcow2"], new Qcow2CreateOptions { Size = 1 << 20, ClusterSize = 4096 }))
        {
            img.Write(0, new byte[] { 1, 2, 3 });
            img.Resize(8L << 20, false);
            model.Data[0] = 1; model.Data[1] = 2; model.Data[2] = 3;
            var buf = new byte[1 << 20]; new Random(1).NextBytes(buf);
            model.Write(img, 7L << 20, buf);
            model.AssertMatches(img);
            Assert.Throws<DiskImageException>(() => img.Resize(1 << 20, false));
            img.Resize(2 << 20, true);
            Assert.Equal(2L << 20, img.Size);
        }
        Qemu.AssertClean(d["r.qcow2"]);
        File.WriteAllBytes(d["ref.raw"], model.Data.AsSpan(0, 2 << 20).ToArray());
        Qemu.Img("compare", "-F", "raw", d["r.qcow2"], d["ref.raw"]);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(64)]
    [InlineData(8)]
    public void AmendRefcountBitsAndCompat(int bits)
    {
        using var d = new TempDir();
        var model = new Model(4L << 20);
        using (var img = Qcow2Image.Create(d["a.qcow2"], new Qcow2CreateOptions { Size = 4L << 20 }))
        {
            model.RandomWorkload(img, new Random(bits), 40);
            if (bits > 1) img.CreateSnapshot("s"); // shared clusters need refcount 2
            img.ChangeRefcountBits(bits);
            model.AssertMatches(img);
            model.RandomWorkload(img, new Random(bits + 1), 20);
        }
        Qemu.AssertClean(d["a.qcow2"]);
        Assert.Contains($"\"refcount-bits\": {bits}", Qemu.Img("info", "--output", "json", d["a.qcow2"]));
        using (var img = Qcow2Image.Open(d["a.qcow2"]))
        {
            img.ChangeRefcountBits(16);
            img.ChangeCompat("0.10");
        }
        Qemu.AssertClean(d["a.qcow2"]);
        Assert.Contains("\"compat\": \"0.10\"", Qemu.Img("info", "--output", "json", d["a.qcow2"]));
        model.SaveRaw(d["ref.raw"]);
        Qemu.Img("compare", "-F", "raw", d["a.qcow2"], d["ref.raw"]);
    }

    [Theory]
    [InlineData("cluster_size=65536")]
    [InlineData("extended_l2=on")]
    public void MeasureMatchesQemu(string srcOpts)
    {
        using var d = new TempDir();
        Qemu.Img("create", "-q", "-f", "qcow2", "-o", srcOpts, d["m.qcow2"], "64M");
        Qemu.Io("-c", "write -P 1 0 3M", "-c", "write -P 2 10M 100k", "-c", "write -z 20M 1M", d["m.qcow2"]);
        using var img = Qcow2Image.Open(d["m.qcow2"], new Qcow2Image.OpenOptions { ReadOnly = true });
        foreach (var (cs, rb) in new[] { (65536, 16), (4096, 1), (2 << 20, 64), (512, 8) })
        {
            var (req, full) = ImageOps.MeasureQcow2(img, img.Size, cs, rb, false, 0);
            var q = Qemu.Img("measure", "--output", "json", "-O", "qcow2", "-o", $"cluster_size={cs},refcount_bits={rb}", d["m.qcow2"]);
            Assert.Contains($"\"required\": {req}", q);
            Assert.Contains($"\"fully-allocated\": {full}", q);
        }
    }
}

public class MixedFeatureTests
{
    private const string Pw = "pw-123";

    [Fact]
    public void QemuAppliesSharpVMSnapshots()
    {
        using var d = new TempDir();
        long size = 4L << 20;
        var a = new Model(size);
        using (var img = Qcow2Image.Create(d["s.qcow2"], new Qcow2CreateOptions { Size = size, ClusterSize = 16384 }))
        {
            a.RandomWorkload(img, new Random(1), 30);
            img.CreateSnapshot("before");
            var b = new Model(size);
            a.Data.CopyTo(b.Data, 0);
            b.RandomWorkload(img, new Random(2), 30);
        }
        Qemu.Img("snapshot", "-a", "before", d["s.qcow2"]);
        Qemu.AssertClean(d["s.qcow2"]);
        a.SaveRaw(d["a.raw"]);
        Qemu.Img("compare", "-F", "raw", d["s.qcow2"], d["a.raw"]);
    }

    [Fact]
    public void EncryptedOverlayWithSnapshotsOverEncryptedBase()
    {
        using var d = new TempDir();
        long size = 4L << 20;
        var m = new Model(size);
        using (var b = Qcow2Image.Create(d["base.qcow2"], new Qcow2CreateOptions { Size = size, EncryptSecret = Pw, EncryptIterTimeMs = 5 }))
            m.RandomWorkload(b, new Random(1), 20);
        using (var top = Qcow2Image.Create(d["top.qcow2"], new Qcow2CreateOptions { Size = size, EncryptSecret = Pw, EncryptIterTimeMs = 5, BackingFile = "base.qcow2", BackingFormat = "qcow2" }))
        {
            m.AssertMatches(top);
            top.CreateSnapshot("s");
            m.RandomWorkload(top, new Random(2), 20, discards: false);
            m.AssertMatches(top);
            Assert.Equal(0, top.Check().Corruptions);
        }
        m.SaveRaw(d["ref.raw"]);
        Qemu.Img("compare", "--object", $"secret,id=sec0,data={Pw}", "--image-opts",
            $"driver=qcow2,file.filename={d["top.qcow2"]},encrypt.key-secret=sec0,backing.encrypt.key-secret=sec0",
            $"driver=raw,file.filename={d["ref.raw"]}");
    }
}
