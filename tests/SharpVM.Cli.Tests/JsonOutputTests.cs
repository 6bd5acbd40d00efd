using System.Text.Json.Nodes;
using SharpVM.Storage.Tests;

namespace SharpVM.Cli.Tests;

/// <summary>
/// `--output json` of info, check, map and measure must be what qemu-img prints for the same image: the same field
/// names, values and (so that text-level scripts work too) the same text.
/// </summary>
public class JsonOutputTests
{
    /// <summary>Runs qemu-img and sharpvm img with the same arguments; both must exit alike and print the same JSON.</summary>
    private static JsonNode SameAsQemu(params string[] args)
    {
        var (qc, qo, qe) = Qemu.Run("qemu-img", args);
        var (sc, so, se) = SharpVm.Run(["img", .. args]);
        Assert.True(qc == sc, $"exit codes differ for {string.Join(' ', args)}: qemu-img {qc} ({qe}), sharpvm {sc} ({se})");
        var qemuJson = JsonNode.Parse(qo)!;
        var ourJson = JsonNode.Parse(so)!;
        Assert.True(JsonNode.DeepEquals(qemuJson, ourJson), $"JSON differs for {string.Join(' ', args)}:\nqemu-img:\n{qo}\nsharpvm:\n{so}");
        Assert.Equal(qo.TrimEnd(), so.TrimEnd()); // same member order and layout as well
        return ourJson;
    }

    [Fact]
    public void InfoOfQcow2WithSnapshotAndCompressedData()
    {
        using var d = new TempDir();
        var info = SameAsQemu("info", "--output", "json", SampleImages.Base(d));
        Assert.Equal("snap1", (string)info["snapshots"]![0]!["name"]!);
        Assert.Equal(64L << 20, (long)info["virtual-size"]!);
    }

    [Fact]
    public void InfoOfOverlayAndItsBackingChain()
    {
        using var d = new TempDir();
        string top = SampleImages.Overlay(d);
        Assert.Equal("base.qcow2", (string)SameAsQemu("info", "--output", "json", top)["backing-filename"]!);
        var chain = SameAsQemu("info", "--output", "json", "--backing-chain", top).AsArray();
        Assert.Equal(2, chain.Count);
        // A relative spelling must stay relative, as qemu-img keeps it.
        var old = Environment.CurrentDirectory;
        Environment.CurrentDirectory = d.Path;
        try { SameAsQemu("info", "--output", "json", "--backing-chain", "top.qcow2"); }
        finally { Environment.CurrentDirectory = old; }
    }

    [Fact]
    public void InfoOfRawAndOfQcow2Variants()
    {
        using var d = new TempDir();
        Assert.Equal("raw", (string)SameAsQemu("info", "--output", "json", SampleImages.Raw(d))["format"]!);
        var v2 = SameAsQemu("info", "--output", "json", SampleImages.WithOptions(d, "v2.qcow2", "compat=0.10,cluster_size=4096"));
        Assert.Equal("0.10", (string)v2["format-specific"]!["data"]!["compat"]!);
        var x = SameAsQemu("info", "--output", "json", SampleImages.WithOptions(d, "x.qcow2", "extended_l2=on,compression_type=zstd,lazy_refcounts=on,refcount_bits=64"));
        Assert.True((bool)x["format-specific"]!["data"]!["extended-l2"]!);
    }

    [Fact]
    public void InfoOfLuksImageWithoutItsSecret()
    {
        using var d = new TempDir();
        string p = d["e.qcow2"];
        Qemu.Img("create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=pw", "-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", p, "4M");
        var encrypt = SameAsQemu("info", "--output", "json", p)["format-specific"]!["data"]!["encrypt"]!;
        Assert.Equal("aes-256", (string)encrypt["cipher-alg"]!);
        Assert.Equal(8, encrypt["slots"]!.AsArray().Count);
        SameTextAsQemu("info", p);
        // With the secret: the data is there, but (as in qemu) the map gives no offsets into ciphertext.
        Qemu.Io("--object", "secret,id=s0,data=pw", "--image-opts", "-c", "write -P 3 64k 128k", $"driver=qcow2,file.filename={p},encrypt.key-secret=s0");
        SameAsQemu("map", "--output", "json", "--object", "secret,id=s0,data=pw", "--image-opts", $"driver=qcow2,file.filename={p},encrypt.key-secret=s0");
    }

    [Fact]
    public void InfoAndMeasureOfImageWithBitmaps()
    {
        using var d = new TempDir();
        string p = SampleImages.Base(d);
        Qemu.Img("bitmap", "--add", p, "bm0");
        Qemu.Img("bitmap", "--add", "-g", "4096", "--disable", p, "second bitmap");
        var bitmaps = SameAsQemu("info", "--output", "json", p)["format-specific"]!["data"]!["bitmaps"]!.AsArray();
        Assert.Equal(2, bitmaps.Count);
        SameTextAsQemu("info", p);
        Assert.True((long)SameAsQemu("measure", "--output", "json", "-O", "qcow2", p)["bitmaps"]! > 0);
        SameAsQemu("measure", "--output", "json", "-O", "qcow2", "-o", "cluster_size=4096", p);
    }

    /// <summary>The human-readable output too, where scripts grep it.</summary>
    private static void SameTextAsQemu(params string[] args)
    {
        var (qc, qo, _) = Qemu.Run("qemu-img", args);
        var (sc, so, _) = SharpVm.Run(["img", .. args]);
        Assert.Equal(qc, sc);
        Assert.Equal(qo, so);
    }

    [Fact]
    public void HumanOutputOfInfoCheckAndMap()
    {
        using var d = new TempDir();
        string top = SampleImages.Overlay(d);
        foreach (var p in new[] { top, d["base.qcow2"], SampleImages.Raw(d) })
        {
            SameTextAsQemu("info", p);
            SameTextAsQemu("map", p);
        }
        SameTextAsQemu("info", "--backing-chain", top);
        SameTextAsQemu("check", top);
        SameTextAsQemu("check", d["base.qcow2"]);
        SameTextAsQemu("measure", "-O", "qcow2", top);
    }

    [Fact]
    public void CheckOfCleanImages()
    {
        using var d = new TempDir();
        var base_ = SameAsQemu("check", "--output", "json", SampleImages.Base(d));
        Assert.Equal(1, (int)base_["compressed-clusters"]!);
        Assert.True((int)base_["fragmented-clusters"]! >= 1);
        SameAsQemu("check", "--output", "json", d["base.qcow2"]);
        SameAsQemu("check", "--output", "json", SampleImages.WithOptions(d, "x.qcow2", "cluster_size=4096,refcount_bits=8"));
        SameAsQemu("check", "--output", "json", SampleImages.WithOptions(d, "e.qcow2", "compat=0.10"));
        SameAsQemu("check", "--output", "json", SampleImages.WithOptions(d, "empty.qcow2", "extended_l2=on"));
    }

    [Fact]
    public void CheckOfLeakyAndCorruptImages()
    {
        using var d = new TempDir();
        var leaks = SameAsQemu("check", "--output", "json", Broken.Leaky(d["l.qcow2"]));
        Assert.Equal(3, (int)leaks["leaks"]!);
        var bad = SameAsQemu("check", "--output", "json", Broken.Corrupt(d["c.qcow2"]));
        Assert.True((int)bad["corruptions"]! > 0);
    }

    [Fact]
    public void MapOfQcow2RawAndOverlay()
    {
        using var d = new TempDir();
        var top = SameAsQemu("map", "--output", "json", SampleImages.Overlay(d)).AsArray();
        Assert.Contains(top, e => (int)e!["depth"]! == 1 && (bool)e["data"]!);
        SameAsQemu("map", "--output", "json", d["base.qcow2"]);
        SameAsQemu("map", "--output", "json", SampleImages.Raw(d));
        SameAsQemu("map", "--output", "json", SampleImages.WithOptions(d, "x.qcow2", "extended_l2=on"));
        SameAsQemu("map", "--output", "json", SampleImages.WithOptions(d, "s.qcow2", "cluster_size=4096"));
    }

    [Fact]
    public void MeasureForSizesOptionsAndSources()
    {
        using var d = new TempDir();
        Assert.Equal(1L << 30, (long)SameAsQemu("measure", "--output", "json", "--size", "1G", "-O", "raw")["required"]!);
        SameAsQemu("measure", "--output", "json", "--size", "1G", "-O", "qcow2");
        SameAsQemu("measure", "--output", "json", "--size", "10G", "-O", "qcow2", "-o", "cluster_size=4096,refcount_bits=1");
        SameAsQemu("measure", "--output", "json", "--size", "3G", "-O", "qcow2", "-o", "extended_l2=on");
        SameAsQemu("measure", "--output", "json", "-O", "qcow2", SampleImages.Base(d));
        SameAsQemu("measure", "--output", "json", "-O", "qcow2", "-o", "cluster_size=16384", d["base.qcow2"]);
        SameAsQemu("measure", "--output", "json", "-O", "qcow2", SampleImages.Raw(d));
        SameAsQemu("measure", "--output", "json", "-O", "raw", SampleImages.Overlay(d));
        SameAsQemu("measure", "--output", "json", "-O", "qcow2", SampleImages.WithOptions(d, "v2.qcow2", "compat=0.10"));
    }
}
