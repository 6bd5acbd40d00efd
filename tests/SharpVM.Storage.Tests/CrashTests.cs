using System.Diagnostics;
using System.Globalization;
using SharpVM.Storage.Qcow2;

namespace SharpVM.Storage.Tests;

/// <summary>Entry point of the test assembly when run as a child process (dotnet exec SharpVM.Storage.Tests.dll crash-worker|leak-worker ...).</summary>
public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Length >= 3 && args[0] == "crash-worker")
            return CrashTests.Worker(args[1], int.Parse(args[2], CultureInfo.InvariantCulture), unsafeCache: args.Length > 3 && args[3] == "unsafe");
        if (args.Length >= 4 && args[0] == "leak-worker")
            return CrashLeakBoundTests.Worker(args[1], int.Parse(args[2], CultureInfo.InvariantCulture), flush: args[3] == "flush");
        return 0;
    }
}

/// <summary>
/// kill -9 during a write-heavy workload: the image must pass qemu-img check (leaks allowed, exit 0 or 3) and
/// every write acknowledged before a completed flush must read back.
/// </summary>
public class CrashTests
{
    private const int Stride = 9000; // not cluster aligned: writes straddle and share clusters
    private const long Size = 64L << 20;

    internal static byte[] Payload(int seed, int i)
    {
        var r = new Random(seed * 100_003 + i);
        var b = new byte[r.Next(1, Stride)];
        r.NextBytes(b);
        return b;
    }

    /// <summary>Where write number i goes: consecutive, wrapping around the disk.</summary>
    internal static long Offset(int i) => (long)i * Stride % (Size - Stride);

    internal static int Worker(string path, int seed, bool unsafeCache)
    {
        using var img = Qcow2Image.Open(path, new Qcow2Image.OpenOptions { UnsafeCache = unsafeCache });
        var rnd = new Random(seed);
        for (int i = 0; ; i++)
        {
            img.Write(Offset(i), Payload(seed, i));
            if (i % 7 == 3) img.WriteZeroes(((long)rnd.Next(0, 1000) * 65536 + 32L * Stride * 1000) % (Size / 2) + Size / 2 - 65536 * 2 & ~65535L, 65536);
            if (i % 25 == 24)
            {
                img.Flush();
                // Progress goes through a side file (stdout of a child of the test host proved unreliable).
                File.WriteAllText(path + ".tmp", (i + 1).ToString(CultureInfo.InvariantCulture));
                File.Move(path + ".tmp", path + ".acked", overwrite: true);
            }
            if (i % 100 == 50) img.CreateSnapshot("snap" + i);
            if (i % 100 == 90) img.DeleteSnapshot("snap" + (i - 40));
        }
    }

    [Theory]
    [InlineData(4096, 16)]
    [InlineData(65536, 2)]
    [InlineData(512, 64)]
    // cache=unsafe (convert's default) skips fsync, but a killed process must still leave a consistent image with
    // every acknowledged write: the page cache outlives the process, and the writes keep their order.
    [InlineData(4096, 16, true)]
    public async Task KillNineLeavesConsistentImage(int cs, int refbits, bool unsafeCache = false)
    {
        using var d = new TempDir();
        string dll = typeof(CrashTests).Assembly.Location;
        for (int round = 0; round < 3; round++)
        {
            string path = d[$"c{round}.qcow2"];
            Qcow2Image.Create(path, new Qcow2CreateOptions { Size = Size, ClusterSize = cs, RefcountBits = refbits }).Dispose();
            int seed = cs + round;
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = false, RedirectStandardError = true };
            foreach (var a in new[] { "exec", dll, "crash-worker", path, seed.ToString(CultureInfo.InvariantCulture), unsafeCache ? "unsafe" : "writeback" }) psi.ArgumentList.Add(a);
            using var p = Process.Start(psi)!;
            int flushed = 0;
            var sw = Stopwatch.StartNew();
            int killAfter = 400 + round * 300;
            // Poll the acknowledged-flush count until the worker has run long enough with at least one flush.
            while (true)
            {
                if (p.HasExited) Assert.Fail("worker died on its own: " + await p.StandardError.ReadToEndAsync());
                if (File.Exists(path + ".acked") && int.TryParse(File.ReadAllText(path + ".acked"), out var n)) flushed = n;
                if (flushed > 0 && sw.ElapsedMilliseconds >= killAfter) break;
                Assert.True(sw.ElapsedMilliseconds < 60_000, "worker made no progress");
                await Task.Delay(5);
            }
            p.Kill(entireProcessTree: true); // SIGKILL
            await p.WaitForExitAsync();
            // The kill may land between a flush and the count's publication: re-read what was published last.
            int acked = int.Parse(File.ReadAllText(path + ".acked"), CultureInfo.InvariantCulture);
            Assert.True(acked > 0, "no flush completed before the kill");

            // A kill inside a snapshot operation leaves the dirty bit set: the next read-write open repairs it (as
            // QEMU does). Otherwise the image must be consistent as it lies on disk.
            bool dirty = (File.ReadAllBytes(path)[79] & 1) != 0;
            if (!dirty)
            {
                var (code, o, e) = Qemu.Run("qemu-img", "check", path);
                Assert.True(code is 0 or 3, $"round {round}: qemu-img check exit {code}\n{o}\n{e}");
            }
            using var img = Qcow2Image.Open(path);
            var r = img.Check(CheckRepair.Leaks);
            Assert.Equal(0, r.Corruptions);
            // Writes before the last acknowledged flush are durable (the lower half is written and never zeroed). The
            // offsets wrap around the disk, so a fast worker overwrites its own earlier writes: only a write that no later
            // write may have touched is checked. Writes after the acknowledged one may be on disk: up to the next flush,
            // plus one more batch in case the kill landed between that flush and its publication.
            int lastPossible = acked + 2 * 25;
            var offsets = new long[lastPossible + 1];
            var lengths = new int[lastPossible + 1];
            for (int j = 0; j <= lastPossible; j++) { offsets[j] = Offset(j); lengths[j] = Payload(seed, j).Length; }
            int verified = 0;
            for (int i = 0; i < acked; i++)
            {
                if (offsets[i] + Stride >= Size / 2 - 2 * 65536) continue; // the upper half gets zeroed
                bool overwritten = false;
                for (int j = i + 1; j <= lastPossible && !overwritten; j++)
                    overwritten = offsets[j] < offsets[i] + lengths[i] && offsets[i] < offsets[j] + lengths[j];
                if (overwritten) continue;
                var want = Payload(seed, i);
                var got = new byte[want.Length];
                img.Read(offsets[i], got);
                Assert.True(want.AsSpan().SequenceEqual(got), $"round {round}: write {i} acknowledged by flush {acked} is lost");
                verified++;
            }
            Assert.True(verified > 0, $"round {round}: no acknowledged write could be checked");
            img.Dispose();
            Qemu.AssertClean(path); // after leak repair: fully clean
        }
    }
}
