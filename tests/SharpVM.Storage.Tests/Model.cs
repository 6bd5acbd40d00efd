using SharpVM.Storage.Qcow2;

namespace SharpVM.Storage.Tests;

/// <summary>A flat in-memory disk mirrored by every operation a test applies to an image.</summary>
public sealed class Model(long size)
{
    public byte[] Data { get; } = new byte[size];

    public void Write(IDiskImage img, long off, byte[] data)
    {
        img.Write(off, data);
        data.CopyTo(Data, off);
    }

    public void Zero(IDiskImage img, long off, long len)
    {
        img.WriteZeroes(off, len);
        Array.Clear(Data, (int)off, (int)len);
    }

    /// <summary>Discard of whole clusters on an image without backing file reads back as zeros.</summary>
    public void Discard(IDiskImage img, long off, long len)
    {
        img.Discard(off, len);
        Array.Clear(Data, (int)off, (int)len);
    }

    public void SaveRaw(string path) => File.WriteAllBytes(path, Data);

    public void AssertMatches(IDiskImage img)
    {
        var buf = new byte[Data.Length];
        img.Read(0, buf);
        int i = buf.AsSpan().CommonPrefixLength(Data);
        Assert.True(i == Data.Length, $"image differs from model at offset {i}");
    }

    /// <summary>A mixed random workload: unaligned writes, cluster-spanning writes, zeroes, cluster discards.</summary>
    public void RandomWorkload(IDiskImage img, Random rnd, int ops, bool discards = true)
    {
        int cs = img.ClusterSize;
        for (int i = 0; i < ops; i++)
        {
            int kind = rnd.Next(10);
            if (kind < 7)
            {
                int len = rnd.Next(1, Math.Min(3 * cs + 100, 256 * 1024));
                long off = rnd.NextInt64(0, Data.Length - len);
                var d = new byte[len];
                rnd.NextBytes(d);
                Write(img, off, d);
            }
            else if (kind < 9 || !discards)
            {
                int len = rnd.Next(1, 4 * cs);
                long off = rnd.NextInt64(0, Data.Length - len);
                Zero(img, off, len);
            }
            else
            {
                long c0 = rnd.NextInt64(0, Data.Length / cs - 4);
                Discard(img, c0 * cs, (long)rnd.Next(1, 4) * cs);
            }
        }
    }
}
