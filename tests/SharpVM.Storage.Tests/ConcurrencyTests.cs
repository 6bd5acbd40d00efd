using System.Collections.Concurrent;
using SharpVM.Storage.Qcow2;

namespace SharpVM.Storage.Tests;

/// <summary>
/// Reads and in-place writes run outside the image lock; snapshots, discards and allocating writes must wait for
/// them. Threads that each own a region hammer the same image while another thread keeps taking and dropping
/// snapshots (which turns owned clusters into shared ones, forcing copy-on-write): every region must end up exactly
/// as its own thread wrote it, and the image clean.
/// </summary>
public class ConcurrencyTests
{
    /// <summary>The gate itself: a snapshot must not be taken while an unlocked in-place write is still in flight.</summary>
    [Fact]
    public async Task SnapshotWaitsForAnInFlightUnlockedWrite()
    {
        using var d = new TempDir();
        using var img = Qcow2Image.Create(d["g.qcow2"], new Qcow2CreateOptions { Size = 1 << 20 });
        img.Write(0, new byte[65536]); // allocated and owned: the next write to it goes unlocked
        using var entered = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        img.BeforeUnlockedIo = () => { img.BeforeUnlockedIo = null; entered.Set(); release.Wait(); };
        var seven = Enumerable.Repeat((byte)7, 4096).ToArray();
        var writer = Task.Run(() => img.Write(0, seven));
        Assert.True(entered.Wait(10_000), "the write did not take the unlocked path");
        var snapshot = Task.Run(() => img.CreateSnapshot("s"));
        await Task.WhenAny(snapshot, Task.Delay(300));
        Assert.False(snapshot.IsCompleted, "the snapshot was taken while a write into its clusters was in flight");
        var other = new byte[4096];
        img.Read(8192, other); // reads still go through meanwhile
        release.Set();
        await writer;
        await snapshot;
        img.Write(0, new byte[4096]); // copy-on-write now: the snapshot keeps the 7s
        img.ApplySnapshot("s");
        var got = new byte[4096];
        img.Read(0, got);
        Assert.Equal(seven, got);
    }

    [Fact]
    public void ParallelIoWithSnapshotsAndDiscardsKeepsEveryRegionIntact()
    {
        const int Threads = 4, Cs = 16384, Region = 2 << 20;
        using var d = new TempDir();
        string path = d["c.qcow2"];
        Qcow2Image.Create(path, new Qcow2CreateOptions { Size = (long)Threads * Region, ClusterSize = Cs }).Dispose();
        using (var img = Qcow2Image.Open(path))
        {
            var mix = new OpMix(Iterations: 1200, MaxLength: 48 * 1024, Kinds: 12, WritesBelow: 7, Seed: t => t + 1);
            HammerRegions(img, Threads, Region, Cs, mix, extraOp: null, maintenance: k =>
            {
                img.CreateSnapshot("s" + k);
                if (k > 0) img.DeleteSnapshot("s" + (k - 1));
                if (k % 5 == 4) img.Flush();
                Thread.Sleep(1);
                return null;
            });
        }
        Qemu.AssertClean(path);
    }

    /// <summary>
    /// Unlocked reads and in-place writes alongside compressed writes, resizes, snapshot create/delete, flushes and
    /// whole-image checks: a check taken while the I/O runs must find the image exact (no leak, no corruption).
    /// </summary>
    [Fact]
    public void ParallelIoWithCompressionResizeAndChecksKeepsTheImageExact()
    {
        const int Threads = 4, Cs = 4096, Region = 1 << 20;
        using var d = new TempDir();
        string path = d["c.qcow2"];
        Qcow2Image.Create(path, new Qcow2CreateOptions { Size = (long)Threads * Region, ClusterSize = Cs }).Dispose();
        var text = System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("compressible ", Cs / 13 + 1)))[..Cs];
        using (var img = Qcow2Image.Open(path))
        {
            long size = img.Size;
            var mix = new OpMix(Iterations: 1500, MaxLength: 24 * 1024, Kinds: 14, WritesBelow: 6, Seed: t => 10 + t);
            HammerRegions(img, Threads, Region, Cs, mix,
                extraOp: (baseOff, off, model) =>
                {
                    int c = off / Cs;
                    img.WriteCompressed((baseOff >> 12) + c, text);
                    text.CopyTo(model, c * Cs);
                },
                maintenance: k =>
                {
                    switch (k % 6)
                    {
                        case 0: img.CreateSnapshot("s" + k); break;
                        case 1: size += 3 << 20; img.Resize(size, false); break;
                        case 2: img.Flush(); break;
                        case 3:
                            var r = img.Check();
                            if (r.Corruptions != 0 || r.Leaks != 0) return "mid-run check: " + string.Join("; ", r.Messages.Take(3));
                            break;
                        case 4: foreach (var s in img.ListSnapshots()) img.DeleteSnapshot(s.Name); break;
                        default: Thread.Sleep(1); break;
                    }
                    return null;
                });
        }
        Qemu.AssertClean(path);
    }

    /// <summary>How the region threads pick operations: op &lt; WritesBelow writes, then reads up to 9, 10 zeroes,
    /// 11 discards whole clusters, and the kinds above 11 go to the test's extra operation.</summary>
    private sealed record OpMix(int Iterations, int MaxLength, int Kinds, int WritesBelow, Func<int, int> Seed);

    /// <summary>
    /// One thread per region of <paramref name="regionSize"/> bytes runs <paramref name="mix"/> against its own
    /// in-memory model (reads are checked against it as they happen) while another thread calls
    /// <paramref name="maintenance"/> (k = 0, 1, ...; a non-null result is a failure) until they finish. Then every
    /// region must equal its model and the image must check clean.
    /// </summary>
    private static void HammerRegions(Qcow2Image img, int threads, int regionSize, int clusterSize, OpMix mix,
        Action<long, int, byte[]>? extraOp, Func<int, string?> maintenance)
    {
        var failures = new ConcurrentQueue<string>();
        var models = new byte[threads][];
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            var model = models[t] = new byte[regionSize];
            var rnd = new Random(mix.Seed(t));
            long baseOff = (long)t * regionSize;
            try
            {
                for (int i = 0; i < mix.Iterations; i++)
                {
                    int len = rnd.Next(1, mix.MaxLength);
                    int off = rnd.Next(0, regionSize - len);
                    int op = rnd.Next(mix.Kinds);
                    if (op < mix.WritesBelow)
                    {
                        var buf = new byte[len];
                        rnd.NextBytes(buf);
                        img.Write(baseOff + off, buf);
                        buf.CopyTo(model, off);
                    }
                    else if (op < 10)
                    {
                        var got = new byte[len];
                        img.Read(baseOff + off, got);
                        if (!got.AsSpan().SequenceEqual(model.AsSpan(off, len))) failures.Enqueue($"thread {t} op {i}: read at {off}+{len} differs");
                    }
                    else if (op == 10)
                    {
                        img.WriteZeroes(baseOff + off, len);
                        Array.Clear(model, off, len);
                    }
                    else if (op == 11)
                    {
                        // Discard is advisory for part of a cluster (qemu leaves it alone too): whole clusters only.
                        int c0 = off / clusterSize * clusterSize, c1 = Math.Max(c0 + clusterSize, (off + len) / clusterSize * clusterSize);
                        img.Discard(baseOff + c0, c1 - c0);
                        Array.Clear(model, c0, c1 - c0);
                    }
                    else extraOp!(baseOff, off, model);
                }
            }
            catch (Exception e) { failures.Enqueue($"thread {t}: {e}"); }
        })).ToList();
        bool stop = false;
        var maintainer = new Thread(() =>
        {
            try
            {
                for (int k = 0; !Volatile.Read(ref stop); k++)
                    if (maintenance(k) is { } failure) failures.Enqueue(failure);
            }
            catch (Exception e) { failures.Enqueue($"maintenance: {e}"); }
        });
        workers.ForEach(w => w.Start());
        maintainer.Start();
        workers.ForEach(w => w.Join());
        Volatile.Write(ref stop, true);
        maintainer.Join();
        Assert.True(failures.IsEmpty, string.Join("\n", failures.Take(5)));
        for (int t = 0; t < threads; t++)
        {
            var got = new byte[regionSize];
            img.Read((long)t * regionSize, got);
            Assert.True(got.AsSpan().SequenceEqual(models[t]), $"region {t} differs from what its thread wrote");
        }
        var check = img.Check();
        Assert.True(check.Corruptions == 0 && check.Leaks == 0, string.Join("\n", check.Messages.Take(5)));
    }
}
