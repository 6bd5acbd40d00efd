using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using SharpVM.Storage.Qcow2;

namespace SharpVM.Storage.Tests;

/// <summary>
/// New clusters come from a pool whose refcounts are made durable before anything points into it, so a kill -9 leaks
/// the part of the pool not yet used (leaks cost space, never data; `check -r leaks` reclaims them). That part must
/// stay small: at most <see cref="WhileWritingBound"/> while the image grows, and at most <see cref="AfterFlushBound"/>
/// once a flush has completed (an idle guest has flushed).
/// </summary>
public class CrashLeakBoundTests
{
    private const long Size = 1L << 30;
    private const int Chunk = 1 << 20;
    /// <summary>The largest pool batch: a kill in the middle of a long sequential fill leaks at most this.</summary>
    private const long WhileWritingBound = 32L << 20;
    /// <summary>What a flush leaves reserved, so that the next allocating write needs no extra fsync.</summary>
    private const long AfterFlushBound = 8L << 20;

    /// <summary>
    /// The child process: fills the image sequentially with 1 MiB writes up to <paramref name="stopAtMib"/>, flushes
    /// if asked, publishes that it got there and waits to be killed. (Between two writes is where a kill in the middle
    /// of a fill finds the image; stopping there makes the moment exact, where a free-running writer outpaces polling.)
    /// </summary>
    internal static int Worker(string path, int stopAtMib, bool flush)
    {
        using var img = Qcow2Image.Open(path);
        var data = new byte[Chunk];
        for (int mib = 0; mib < stopAtMib; mib++)
        {
            data.AsSpan().Fill((byte)(mib | 1));
            img.Write((long)mib * Chunk, data);
        }
        if (flush) img.Flush();
        Publish(path, stopAtMib);
        Thread.Sleep(Timeout.Infinite);
        return 0;
    }

    private static void Publish(string path, int mib)
    {
        File.WriteAllText(path + ".tmp", mib.ToString(CultureInfo.InvariantCulture));
        File.Move(path + ".tmp", path + ".progress", overwrite: true);
    }

    [Theory]
    // Killed in the middle of a sequential fill, well past the point where the pool has reached its largest batch.
    [InlineData(140, false)]
    // Killed while idle after a flush at 200 MiB.
    [InlineData(200, true)]
    public async Task KillNineLeaksAtMostTheBound(int killAtMib, bool flushed)
    {
        using var d = new TempDir();
        string path = d["l.qcow2"];
        Qcow2Image.Create(path, new Qcow2CreateOptions { Size = Size }).Dispose();
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardError = true };
        foreach (var a in new[] { "exec", typeof(CrashLeakBoundTests).Assembly.Location, "leak-worker", path, killAtMib.ToString(CultureInfo.InvariantCulture), flushed ? "flush" : "no-flush" })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var sw = Stopwatch.StartNew();
        while (true)
        {
            if (p.HasExited) Assert.Fail("worker ended on its own: " + await p.StandardError.ReadToEndAsync());
            if (File.Exists(path + ".progress") && int.TryParse(File.ReadAllText(path + ".progress"), out int mib) && mib == killAtMib) break;
            Assert.True(sw.ElapsedMilliseconds < 60_000, "worker made no progress");
            await Task.Delay(2);
        }
        p.Kill(entireProcessTree: true); // SIGKILL
        await p.WaitForExitAsync();

        // Reserved clusters past the end of the file are invisible to check (it only walks the file's length) until
        // the file grows over them: the next allocation after a restart skips them, as any later one would.
        Qemu.Io("-c", "write -P 7 1000M 64k", path);
        var (code, o, e) = Qemu.Run("qemu-img", "check", "--output=json", path);
        Assert.True(code is 0 or 3, $"qemu-img check exit {code} (0 = clean, 3 = leaks only)\n{o}\n{e}");
        using var report = JsonDocument.Parse(o);
        long leaks = report.RootElement.TryGetProperty("leaks", out var l) ? l.GetInt64() : 0;
        long clusterSize = 65536;
        long bound = flushed ? AfterFlushBound : WhileWritingBound;
        Assert.True(leaks * clusterSize <= bound, $"a kill -9 leaked {leaks * clusterSize >> 20} MiB ({leaks} clusters); the bound is {bound >> 20} MiB");
        Assert.Equal(0, report.RootElement.TryGetProperty("corruptions", out var c) ? c.GetInt64() : 0);
    }
}
