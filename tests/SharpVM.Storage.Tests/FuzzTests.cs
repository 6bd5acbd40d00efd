using SharpVM.Storage.Qcow2;

namespace SharpVM.Storage.Tests;

/// <summary>Mutation fuzzing of real images: random byte changes in the metadata must never escape as anything but DiskImageException.</summary>
public class FuzzTests
{
    /// <summary>Open, read everything, check, then try a write: only typed errors, no hang, no write past a bound.</summary>
    internal static void OpenReadCheck(string path, byte[] original)
    {
        var task = Task.Run(() =>
        {
            try
            {
                using (var img = Qcow2Image.Open(path, new Qcow2Image.OpenOptions { ReadOnly = true }))
                {
                    var buf = new byte[Math.Min(img.Size, 8 << 20)];
                    img.Read(0, buf);
                    img.Check();
                }
                long before = new FileInfo(path).Length;
                using (var img = Qcow2Image.Open(path))
                {
                    if (img.Size > 70000) img.Write(65536 - 100, new byte[4000]);
                    img.Discard(0, Math.Min(img.Size, 1 << 20) & ~(img.ClusterSize - 1L));
                }
                Assert.True(new FileInfo(path).Length <= before + (64L << 20), "a mutated image made us write far past its end");
            }
            catch (DiskImageException) { }
            catch (ArgumentOutOfRangeException e) when (e.ParamName == "offset") { } // virtual size mutated below our probe offsets
        });
        if (!task.Wait(TimeSpan.FromSeconds(20))) Assert.Fail($"hang on {path}");
        if (task.Exception != null) throw new Xunit.Sdk.XunitException($"untyped failure on mutated image {path}: {task.Exception.InnerException}");
    }

    [Theory]
    [InlineData("cluster_size=512", 1)]
    [InlineData("cluster_size=4096,refcount_bits=2", 2)]
    [InlineData("cluster_size=16384,extended_l2=on", 3)]
    [InlineData("cluster_size=4096,compat=0.10", 4)]
    public void MutatedImagesFailCleanly(string opts, int seed)
    {
        using var d = new TempDir();
        Qemu.Img("create", "-q", "-f", "qcow2", "-o", opts, d["seed.qcow2"], "1M");
        Qemu.Io("-c", "write -P 3 0 100k", "-c", "write -z 200k 64k", "-c", "write -P 4 600k 50k", d["seed.qcow2"]);
        Qemu.Img("snapshot", "-c", "s", d["seed.qcow2"]);
        Qemu.Io("-c", "write -P 8 10k 20k", d["seed.qcow2"]);
        var original = File.ReadAllBytes(d["seed.qcow2"]);
        var rnd = new Random(seed);
        for (int i = 0; i < 120; i++)
        {
            var m = (byte[])original.Clone();
            int flips = rnd.Next(1, 6);
            for (int k = 0; k < flips; k++)
            {
                // Bias toward the header and the metadata clusters that follow it.
                int pos = rnd.Next(3) == 0 ? rnd.Next(Math.Min(m.Length, 128)) : rnd.Next(Math.Min(m.Length, 64 * 1024));
                m[pos] = rnd.Next(3) switch { 0 => (byte)rnd.Next(256), 1 => (byte)(m[pos] ^ (1 << rnd.Next(8))), _ => 0xff };
            }
            File.WriteAllBytes(d["m.qcow2"], m);
            OpenReadCheck(d["m.qcow2"], m);
        }
    }
}
