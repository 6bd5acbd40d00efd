using SharpVM.Storage.Qcow2;

namespace SharpVM.Storage;

/// <summary>Format probing and opening of images and backing chains.</summary>
public static class DiskImage
{
    public const int MaxChainDepth = 256;

    public static string Probe(string path)
    {
        using var f = new ImageFile(path, true);
        Span<byte> m = stackalloc byte[4];
        f.Read(0, m);
        return m.SequenceEqual(new byte[] { 0x51, 0x46, 0x49, 0xfb }) ? "qcow2" : "raw";
    }

    public static IDiskImage Open(string path, string? format = null, Qcow2Image.OpenOptions? opts = null)
    {
        opts ??= new Qcow2Image.OpenOptions();
        format ??= Probe(path);
        return format switch
        {
            "qcow2" => Qcow2Image.Open(path, opts),
            "raw" => new RawImage(path, opts.ReadOnly, opts.UnsafeCache),
            _ => throw new DiskImageException($"unknown image format '{format}' (qcow2 or raw)"),
        };
    }

    /// <summary>Resolves a backing file name the way QEMU does: relative names are relative to the overlay's directory.</summary>
    public static string ResolveBacking(string overlayPath, string backing) =>
        System.IO.Path.IsPathRooted(backing) ? backing
            : System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(overlayPath)) ?? ".", backing);

    internal static IDiskImage OpenBacking(string overlayPath, string backing, string? format, Qcow2Image.OpenOptions opts)
    {
        if (opts.Depth + 1 > MaxChainDepth) throw new CorruptImageException($"backing chain is deeper than {MaxChainDepth} (a loop?)");
        string full = ResolveBacking(overlayPath, backing);
        if (System.IO.Path.GetFullPath(full) == System.IO.Path.GetFullPath(overlayPath))
            throw new CorruptImageException($"'{overlayPath}' names itself as its backing file");
        if (!System.IO.File.Exists(full)) throw new DiskImageException($"could not open backing file '{full}': no such file");
        var sub = new Qcow2Image.OpenOptions { ReadOnly = true, Secret = opts.Secret, L2CacheBytes = opts.L2CacheBytes, Depth = opts.Depth + 1 };
        return Open(full, format, sub);
    }
}
