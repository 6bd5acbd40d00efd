using SharpVM.Storage.Tests;

namespace SharpVM.Cli.Tests;

/// <summary>Small images written by qemu-img/qemu-io, so both tools are judged on files neither of them shaped for itself.</summary>
public static class SampleImages
{
    /// <summary>64 MiB qcow2: 1 MiB of data, a compressed cluster, a zero range, an internal snapshot.</summary>
    public static string Base(TempDir d)
    {
        string p = d["base.qcow2"];
        Qemu.Img("create", "-q", "-f", "qcow2", p, "64M");
        Qemu.Io("-c", "write -P 1 0 1M", "-c", "write -c -P 3 4M 64k", "-c", "write -z 6M 128k", p);
        Qemu.Img("snapshot", "-c", "snap1", p);
        Qemu.Io("-c", "write -P 4 256k 64k", p);
        return p;
    }

    /// <summary>An overlay on <see cref="Base"/> that rewrites part of it and zeroes some more.</summary>
    public static string Overlay(TempDir d)
    {
        Base(d);
        string p = d["top.qcow2"];
        Qemu.Img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", p);
        Qemu.Io("-c", "write -P 2 512k 1M", "-c", "write -z 8M 1M", p);
        return p;
    }

    /// <summary>10 MiB raw file with 1 MiB of data in the middle of holes.</summary>
    public static string Raw(TempDir d)
    {
        string p = d["r.raw"];
        Qemu.Img("create", "-q", "-f", "raw", p, "10M");
        Qemu.Io("-f", "raw", "-c", "write -P 5 1M 1M", p);
        return p;
    }

    /// <summary>A qcow2 with the given -o options and some scattered small writes.</summary>
    public static string WithOptions(TempDir d, string name, string options)
    {
        string p = d[name];
        Qemu.Img("create", "-q", "-f", "qcow2", "-o", options, p, "16M");
        Qemu.Io("-c", "write -P 7 0 4k", "-c", "write -P 8 100k 8k", "-c", "write -P 9 3M 200k", p);
        return p;
    }
}
