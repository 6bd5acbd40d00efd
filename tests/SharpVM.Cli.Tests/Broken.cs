using SharpVM.Storage.Qcow2;

namespace SharpVM.Cli.Tests;

/// <summary>Images with known damage, made through the storage library's own structures.</summary>
public static class Broken
{
    /// <summary>Three clusters marked in use that nothing points to (what a crash between allocation and mapping leaves).</summary>
    public static string Leaky(string path)
    {
        using var img = Qcow2Image.Create(path, new Qcow2CreateOptions { Size = 1 << 20, ClusterSize = 4096 });
        img.Write(0, new byte[10000]);
        long leaked = img.Refcounts.Allocate(3);
        img.File.Write(leaked, new byte[3 * 4096]);
        return path;
    }

    /// <summary>A data cluster whose refcount is 0 although an L2 entry points at it: a corruption, not a leak.</summary>
    public static string Corrupt(string path)
    {
        using var img = Qcow2Image.Create(path, new Qcow2CreateOptions { Size = 1 << 20, ClusterSize = 4096 });
        img.Write(0, new byte[] { 1, 2, 3 });
        long host = img.GetExtent(0, 4096).HostOffset;
        img.Refcounts.Set(host / 4096, 0);
        return path;
    }
}
