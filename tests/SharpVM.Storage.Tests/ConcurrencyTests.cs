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
        const int Threads = 4;
        const int Region = 2 << 20;
        using var d = new TempDir();
        string path = d["c.qcow2"];
        Qcow2Image.Create(path, new Qcow2CreateOptions { Size = (long)Threads * Region, ClusterSize = 16384 }).Dispose();
        var failures = new ConcurrentQueue<string>();
        var models = new byte[Threads][];
        using (var img = Qcow2Image.Open(path))
        {
            var workers = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
            {
                var model = models[t] = new byte[Region];
                var rnd = new Random(t + 1);
                long baseOff = (long)t * Region;
                try
                {
                    for (int i = 0; i < 1200; i++)
                    {
                        int len = rnd.Next(1, 48 * 1024);
                        int off = rnd.Next(0, Region - len);
                        int op = rnd.Next(12);
                        if (op < 7)
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
                        else
                        {
                            // Discard is advisory for part of a cluster (qemu leaves it alone too): whole clusters only.
                            int c0 = off / 16384 * 16384, c1 = Math.Max(c0 + 16384, (off + len) / 16384 * 16384);
                            img.Discard(baseOff + c0, c1 - c0);
                            Array.Clear(model, c0, c1 - c0);
                        }
                    }
                }
                catch (Exception e) { failures.Enqueue($"thread {t}: {e}"); }
            })).ToList();
            bool stop = false;
            var snapshotter = new Thread(() =>
            {
                try
                {
                    for (int k = 0; !Volatile.Read(ref stop); k++)
                    {
                        img.CreateSnapshot("s" + k);
                        if (k > 0) img.DeleteSnapshot("s" + (k - 1));
                        if (k % 5 == 4) img.Flush();
                        Thread.Sleep(1);
                    }
                }
                catch (Exception e) { failures.Enqueue($"snapshotter: {e}"); }
            });
            workers.ForEach(w => w.Start());
            snapshotter.Start();
            workers.ForEach(w => w.Join());
            Volatile.Write(ref stop, true);
            snapshotter.Join();
            Assert.True(failures.IsEmpty, string.Join("\n", failures.Take(5)));
            for (int t = 0; t < Threads; t++)
            {
                var got = new byte[Region];
                img.Read((long)t * Region, got);
                Assert.True(got.AsSpan().SequenceEqual(models[t]), $"region {t} differs from what its thread wrote");
            }
            var r = img.Check();
            Assert.True(r.Corruptions == 0 && r.Leaks == 0, string.Join("\n", r.Messages.Take(5)));
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
        const int seed = 1;
        const int Threads = 4;
        const int Cs = 4096;
        const int Region = 1 << 20;
        using var d = new TempDir();
        string path = d["c.qcow2"];
        Qcow2Image.Create(path, new Qcow2CreateOptions { Size = (long)Threads * Region, ClusterSize = Cs }).Dispose();
        var failures = new ConcurrentQueue<string>();
        var models = new byte[Threads][];
        var text = System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("compressible ", Cs / 13 + 1)))[..Cs];
        using (var img = Qcow2Image.Open(path))
        {
            var workers = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
            {
                var model = models[t] = new byte[Region];
                var rnd = new Random(seed * 10 + t);
                long baseOff = (long)t * Region;
                try
                {
                    for (int i = 0; i < 1500; i++)
                    {
                        int len = rnd.Next(1, 24 * 1024);
                        int off = rnd.Next(0, Region - len);
                        int op = rnd.Next(14);
                        if (op < 6)
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
                        else if (op == 10) { img.WriteZeroes(baseOff + off, len); Array.Clear(model, off, len); }
                        else if (op == 11)
                        {
                            int c0 = off / Cs * Cs, c1 = Math.Max(c0 + Cs, (off + len) / Cs * Cs);
                            img.Discard(baseOff + c0, c1 - c0);
                            Array.Clear(model, c0, c1 - c0);
                        }
                        else
                        {
                            int c = off / Cs;
                            img.WriteCompressed((baseOff >> 12) + c, text);
                            text.CopyTo(model, c * Cs);
                        }
                    }
                }
                catch (Exception e) { failures.Enqueue($"thread {t}: {e}"); }
            })).ToList();
            bool stop = false;
            var maint = new Thread(() =>
            {
                try
                {
                    long size = img.Size;
                    for (int k = 0; !Volatile.Read(ref stop); k++)
                    {
                        switch (k % 6)
                        {
                            case 0: img.CreateSnapshot("s" + k); break;
                            case 1: size += 3 << 20; img.Resize(size, false); break;
                            case 2: img.Flush(); break;
                            case 3:
                                var r = img.Check();
                                if (r.Corruptions != 0 || r.Leaks != 0) failures.Enqueue("mid-run check: " + string.Join("; ", r.Messages.Take(3)));
                                break;
                            case 4: foreach (var s in img.ListSnapshots()) img.DeleteSnapshot(s.Name); break;
                            default: Thread.Sleep(1); break;
                        }
                    }
                }
                catch (Exception e) { failures.Enqueue($"maint: {e}"); }
            });
            workers.ForEach(w => w.Start());
            maint.Start();
            workers.ForEach(w => w.Join());
            Volatile.Write(ref stop, true);
            maint.Join();
            Assert.True(failures.IsEmpty, string.Join("\n", failures.Take(5)));
            for (int t = 0; t < Threads; t++)
            {
                var got = new byte[Region];
                img.Read((long)t * Region, got);
                Assert.True(got.AsSpan().SequenceEqual(models[t]), $"region {t} differs");
            }
            var rr = img.Check();
            Assert.True(rr.Corruptions == 0 && rr.Leaks == 0, string.Join("\n", rr.Messages.Take(5)));
        }
        Qemu.AssertClean(path);
    }
}
