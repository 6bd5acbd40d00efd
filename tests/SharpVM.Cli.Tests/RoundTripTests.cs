using System.Text.Json.Nodes;
using SharpVM.Storage.Tests;

namespace SharpVM.Cli.Tests;

/// <summary>Every image-changing subcommand, judged by qemu-img: check must pass and compare must agree on the content.</summary>
public class RoundTripTests
{
    private static void Identical(string a, string b) => Qemu.Img("compare", a, b);

    [Fact]
    public void CreateMatchesQemuImg()
    {
        using var d = new TempDir();
        SharpVm.Img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096,refcount_bits=8,lazy_refcounts=on", d["a.qcow2"], "20M");
        Qemu.AssertClean(d["a.qcow2"]);
        var info = JsonNode.Parse(Qemu.Img("info", "--output", "json", d["a.qcow2"]))!;
        Assert.Equal(20L << 20, (long)info["virtual-size"]!);
        Assert.Equal(4096, (int)info["cluster-size"]!);
        Assert.Equal(8, (int)info["format-specific"]!["data"]!["refcount-bits"]!);
        Assert.True((bool)info["format-specific"]!["data"]!["lazy-refcounts"]!);
        // With a backing file and no size: the size and the backing format come from the backing file.
        var o = SharpVm.Img("create", "-f", "qcow2", "-b", "a.qcow2", d["b.qcow2"]);
        Assert.Contains("backing_fmt=qcow2", o);
        var b = JsonNode.Parse(Qemu.Img("info", "--output", "json", d["b.qcow2"]))!;
        Assert.Equal(20L << 20, (long)b["virtual-size"]!);
        Assert.Equal("qcow2", (string)b["backing-filename-format"]!);
        SharpVm.Img("create", "-q", "-f", "raw", d["r.raw"], "1536k");
        Assert.Equal(1536 * 1024, new FileInfo(d["r.raw"]).Length);
    }

    [Theory]
    [InlineData("-O", "qcow2")]
    [InlineData("-O", "qcow2", "-c")]
    [InlineData("-O", "qcow2", "-c", "-o", "compression_type=zstd")]
    [InlineData("-O", "qcow2", "-o", "cluster_size=4096,compat=0.10")]
    [InlineData("-O", "raw")]
    [InlineData("-O", "qcow2", "-t", "writeback")] // fsync on flush, instead of convert's default cache=unsafe
    public void ConvertFromRawAndBack(params string[] options)
    {
        using var d = new TempDir();
        string raw = SampleImages.Raw(d);
        string fmt = options[1];
        SharpVm.Img(["convert", "-f", "raw", .. options, raw, d["out"]]);
        Assert.Equal(fmt, (string)JsonNode.Parse(Qemu.Img("info", "--output", "json", d["out"]))!["format"]!);
        if (fmt == "qcow2") Qemu.AssertClean(d["out"]);
        Identical(raw, d["out"]);
        SharpVm.Img("convert", "-O", "raw", d["out"], d["back.raw"]);
        Identical(raw, d["back.raw"]);
        if (options.Contains("-c"))
            Assert.True(JsonNode.Parse(Qemu.Img("check", "--output", "json", d["out"]))!["compressed-clusters"] is not null);
    }

    [Fact]
    public void ConvertFlattensAnOverlayWithProgress()
    {
        using var d = new TempDir();
        string top = SampleImages.Overlay(d);
        SharpVm.Img("convert", "-p", "-O", "qcow2", top, d["flat.qcow2"]);
        Qemu.AssertClean(d["flat.qcow2"]);
        Identical(top, d["flat.qcow2"]);
        Assert.Null(JsonNode.Parse(Qemu.Img("info", "--output", "json", d["flat.qcow2"]))!["backing-filename"]);
    }

    [Fact]
    public void ResizeGrowsAndShrinks()
    {
        using var d = new TempDir();
        string p = SampleImages.Base(d);
        Qemu.Img("snapshot", "-d", "snap1", p); // qcow2 cannot shrink below a snapshot's size
        SharpVm.Img("resize", p, "+64M");
        Assert.Equal(128L << 20, (long)JsonNode.Parse(Qemu.Img("info", "--output", "json", p))!["virtual-size"]!);
        Qemu.Io("-c", "read -P 1 0 256k", "-c", "read -P 0 100M 1M", p);
        SharpVm.Img("resize", "--shrink", p, "2M");
        Assert.Equal(2L << 20, (long)JsonNode.Parse(Qemu.Img("info", "--output", "json", p))!["virtual-size"]!);
        Qemu.AssertClean(p);
        Qemu.Io("-c", "read -P 1 0 256k", "-c", "read -P 4 256k 64k", p);
        string raw = SampleImages.Raw(d);
        SharpVm.Img("resize", "--shrink", "-f", "raw", raw, "-1M"); // a negative size is a value, not an option
        Assert.Equal(9L << 20, new FileInfo(raw).Length);
    }

    [Fact]
    public void SnapshotCreateListApplyDelete()
    {
        using var d = new TempDir();
        string p = SampleImages.Base(d);
        SharpVm.Img("snapshot", "-c", "mine", p);
        Qemu.Io("-c", "write -P 9 0 64k", p);
        Assert.Contains("mine", Qemu.Img("snapshot", "-l", p));
        var list = SharpVm.Img("snapshot", "-l", p);
        Assert.Contains("snap1", list);
        Assert.Contains("mine", list);
        SharpVm.Img("snapshot", "-a", "mine", p);
        Qemu.Io("-c", "read -P 1 0 64k", p);
        SharpVm.Img("snapshot", "-a", "snap1", p);
        Qemu.Io("-c", "read -P 1 256k 64k", p); // before the write of 4s
        SharpVm.Img("snapshot", "-d", "mine", p);
        Assert.DoesNotContain("mine", Qemu.Img("snapshot", "-l", p));
        Qemu.AssertClean(p);
    }

    [Fact]
    public void CommitIntoBackingFile()
    {
        using var d = new TempDir();
        string top = SampleImages.Overlay(d);
        SharpVm.Img("convert", "-O", "raw", top, d["expected.raw"]);
        var o = SharpVm.Img("commit", top);
        Assert.Contains("Image committed.", o);
        Qemu.AssertClean(d["base.qcow2"]);
        Qemu.AssertClean(top);
        Identical(d["expected.raw"], d["base.qcow2"]);
        Identical(d["expected.raw"], top);
        // The overlay is emptied: nothing left at depth 0.
        var map = JsonNode.Parse(Qemu.Img("map", "--output", "json", top))!.AsArray();
        Assert.DoesNotContain(map, e => (int)e!["depth"]! == 0 && (bool)e["data"]!);
    }

    [Fact]
    public void RebaseSafeAndUnsafe()
    {
        using var d = new TempDir();
        string top = SampleImages.Overlay(d);
        SharpVm.Img("convert", "-O", "raw", top, d["expected.raw"]);
        Qemu.Img("create", "-q", "-f", "qcow2", d["other.qcow2"], "64M");
        Qemu.Io("-c", "write -P 6 0 8M", d["other.qcow2"]);
        // Safe: the guest-visible content must not change.
        SharpVm.Img("rebase", "-b", "other.qcow2", "-F", "qcow2", top);
        Qemu.AssertClean(top);
        Assert.Equal("other.qcow2", (string)JsonNode.Parse(Qemu.Img("info", "--output", "json", top))!["backing-filename"]!);
        Identical(d["expected.raw"], top);
        // Safe onto nothing: the overlay stands alone.
        SharpVm.Img("rebase", "-b", "", top);
        Assert.Null(JsonNode.Parse(Qemu.Img("info", "--output", "json", top))!["backing-filename"]);
        Identical(d["expected.raw"], top);
        // Unsafe: only the name changes, so the content now shows the new backing file underneath.
        SharpVm.Img("rebase", "-u", "-b", "other.qcow2", "-F", "qcow2", top);
        Assert.Equal("other.qcow2", (string)JsonNode.Parse(Qemu.Img("info", "--output", "json", top))!["backing-filename"]!);
        Identical(d["expected.raw"], top); // top holds every cluster after the flattening rebase
        Qemu.AssertClean(top);
    }

    [Fact]
    public void AmendCompatAndRefcountBits()
    {
        using var d = new TempDir();
        string p = SampleImages.Base(d);
        Qemu.Img("snapshot", "-d", "snap1", p);
        SharpVm.Img("convert", "-O", "raw", p, d["expected.raw"]);
        SharpVm.Img("amend", "-o", "refcount_bits=4", p);
        Qemu.AssertClean(p);
        Assert.Equal(4, (int)JsonNode.Parse(Qemu.Img("info", "--output", "json", p))!["format-specific"]!["data"]!["refcount-bits"]!);
        Identical(d["expected.raw"], p);
        SharpVm.Img("amend", "-o", "compat=0.10,refcount_bits=16", p);
        Qemu.AssertClean(p);
        Assert.Equal("0.10", (string)JsonNode.Parse(Qemu.Img("info", "--output", "json", p))!["format-specific"]!["data"]!["compat"]!);
        Identical(d["expected.raw"], p);
        SharpVm.Img("amend", "-o", "compat=1.1,lazy_refcounts=on", p);
        Qemu.AssertClean(p);
        Assert.True((bool)JsonNode.Parse(Qemu.Img("info", "--output", "json", p))!["format-specific"]!["data"]!["lazy-refcounts"]!);
        Identical(d["expected.raw"], p);
    }

    [Fact]
    public void BenchReadsAndWrites()
    {
        using var d = new TempDir();
        string p = SampleImages.Base(d);
        var o = SharpVm.Img("bench", "-w", "-c", "64", "-d", "4", "-s", "64k", "--pattern", "171", "-f", "qcow2", p);
        Assert.Contains("Sending 64 write requests, 65536 bytes each, 4 in parallel", o);
        Qemu.AssertClean(p);
        Qemu.Io("-c", "read -P 171 0 4M", p);
        Assert.Contains("Run completed in", SharpVm.Img("bench", "-c", "100", "-s", "4k", p));
    }
}
