using SharpVM.Storage.Tests;

namespace SharpVM.Cli.Tests;

/// <summary>qemu-img's exit codes, and one clear line on stderr for every kind of bad input.</summary>
public class ExitCodeTests
{
    /// <summary>Exit non-zero, print nothing on stdout and exactly one "sharpvm: ..." line on stderr that contains <paramref name="expected"/>.</summary>
    private static void FailsWithOneLine(string expected, params string[] args)
    {
        var (code, o, e) = SharpVm.Run(["img", .. args]);
        Assert.NotEqual(0, code);
        Assert.Equal("", o);
        var lines = e.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"expected one line on stderr for {string.Join(' ', args)}, got:\n{e}");
        Assert.StartsWith("sharpvm: ", lines[0]);
        Assert.Contains(expected, lines[0]);
    }

    [Fact]
    public void CheckExitCodesMatchQemu()
    {
        using var d = new TempDir();
        Assert.Equal(0, SharpVm.Run("img", "check", SampleImages.Base(d)).Code);
        string leaky = Broken.Leaky(d["l.qcow2"]);
        Assert.Equal(3, Qemu.Run("qemu-img", "check", leaky).Code);
        var (code, o, _) = SharpVm.Run("img", "check", leaky);
        Assert.Equal(3, code);
        Assert.Contains("3 leaked clusters were found on the image", o);
        string corrupt = Broken.Corrupt(d["c.qcow2"]);
        Assert.Equal(2, Qemu.Run("qemu-img", "check", corrupt).Code);
        Assert.Equal(2, SharpVm.Run("img", "check", corrupt).Code);
        // check on a format without checks: qemu-img's 63.
        Assert.Equal(63, SharpVm.Run("img", "check", SampleImages.Raw(d)).Code);
    }

    [Fact]
    public void CheckRepairsLeaksAndAll()
    {
        using var d = new TempDir();
        string leaky = Broken.Leaky(d["l.qcow2"]);
        var (code, o, _) = SharpVm.Run("img", "check", "-r", "leaks", leaky);
        Assert.Equal(0, code);
        Assert.Contains("3 leaked clusters", o);
        Qemu.AssertClean(leaky);
        string corrupt = Broken.Corrupt(d["c.qcow2"]);
        Assert.Equal(0, SharpVm.Run("img", "check", "-r", "all", corrupt).Code);
        Qemu.AssertClean(corrupt);
        Assert.Contains("read 3/3 bytes", Qemu.Io("-c", "read -P 1 0 1", "-c", "read -v 0 3", corrupt));
    }

    [Fact]
    public void CompareExitCodes()
    {
        using var d = new TempDir();
        string top = SampleImages.Overlay(d);
        var (same, so, _) = SharpVm.Run("img", "compare", d["base.qcow2"], d["base.qcow2"]);
        Assert.Equal(0, same);
        Assert.Contains("Images are identical.", so);
        var (diff, dout, _) = SharpVm.Run("img", "compare", d["base.qcow2"], top);
        Assert.Equal(1, diff);
        Assert.Equal(Qemu.Run("qemu-img", "compare", d["base.qcow2"], top).Out, dout); // same offset named
        FailsWithOneLine("No such file", "compare", d["base.qcow2"], d["missing.qcow2"]);
    }

    [Fact]
    public void BadFlagsAndArguments()
    {
        using var d = new TempDir();
        string p = SampleImages.Base(d);
        FailsWithOneLine("unrecognized option '--bogus'", "info", "--bogus", p);
        FailsWithOneLine("unrecognized option '-Z'", "check", "-Z", p);
        FailsWithOneLine("filename", "check");
        FailsWithOneLine("-f", "info", p, "-f");
        FailsWithOneLine("Invalid -r option 'foo'", "check", "-r", "foo", p);
        FailsWithOneLine("invalid size '64Q'", "create", "-f", "qcow2", d["n.qcow2"], "64Q");
        FailsWithOneLine("Invalid parameter 'bogus'", "create", "-f", "qcow2", "-o", "bogus=1", d["n.qcow2"], "1M");
        FailsWithOneLine("Unknown file format 'vhdx'", "create", "-f", "vhdx", d["n.vhdx"], "1M");
        FailsWithOneLine("needs a size", "create", "-f", "qcow2", d["n.qcow2"]);
        FailsWithOneLine("shrink", "resize", p, "1M");
        FailsWithOneLine("snapshot", "snapshot", "-a", "nosuch", p);
        FailsWithOneLine("Unrecognized command", "img-nosuch");
        FailsWithOneLine("cache mode 'none' is not supported", "convert", "-t", "none", "-O", "qcow2", p, d["out.qcow2"]);
        Qemu.AssertClean(p); // none of it touched the image
    }

    [Fact]
    public void MissingFilesAreOneLineErrors()
    {
        using var d = new TempDir();
        string missing = d["missing.qcow2"];
        foreach (var args in new[]
        {
            new[] { "info", missing }, ["info", "--output", "json", missing], ["check", missing], ["map", missing],
            ["convert", "-O", "qcow2", missing, d["out.qcow2"]], ["snapshot", "-l", missing], ["resize", missing, "1G"],
            ["commit", missing], ["rebase", "-b", "", missing], ["amend", "-o", "compat=0.10", missing], ["measure", "-O", "qcow2", missing],
            ["bench", "-c", "1", missing],
        })
            FailsWithOneLine("No such file or directory", args);
        Assert.False(File.Exists(d["out.qcow2"]));
    }

    [Fact]
    public void MissingBackingFileIsOneLineError()
    {
        using var d = new TempDir();
        string top = SampleImages.Overlay(d);
        File.Delete(d["base.qcow2"]);
        FailsWithOneLine("base.qcow2", "map", top);
        FailsWithOneLine("base.qcow2", "convert", "-O", "raw", top, d["out.raw"]);
    }
}
