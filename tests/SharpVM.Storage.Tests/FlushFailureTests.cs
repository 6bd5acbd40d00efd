using SharpVM.Storage.Qcow2;

namespace SharpVM.Storage.Tests;

/// <summary>
/// After fdatasync fails, Linux has already marked the unwritten pages clean and reported the error once: the next
/// fdatasync succeeds although the writes made before the failure never reached the disk. A flush acknowledged
/// then would promise durability the image does not have, so every later flush must fail as well (qemu's
/// file-posix does the same). The kernel's failure cannot be provoked on demand, so the test stands in for
/// fdatasync: it fails once with EIO and succeeds afterwards, which is what the kernel does.
/// </summary>
public class FlushFailureTests
{
    private const int EIO = 5;

    private static Func<int> FailOnceWithEio()
    {
        int calls = 0;
        return () => Interlocked.Increment(ref calls) == 1 ? EIO : 0;
    }

    [Fact]
    public void AFailedDataSyncFailsEveryLaterFlushOfTheFile()
    {
        using var d = new TempDir();
        System.IO.File.WriteAllBytes(d["f.raw"], new byte[1 << 20]);
        using var f = new ImageFile(d["f.raw"], readOnly: false) { DataSyncOverride = FailOnceWithEio() };
        f.Write(0, new byte[] { 1, 2, 3 });
        var first = Assert.Throws<IOException>(f.Flush);
        Assert.Contains("errno 5", first.Message);
        f.Write(4096, new byte[] { 4 });
        var later = Assert.Throws<IOException>(f.Flush); // the stand-in would succeed now: the error must stick
        Assert.Contains("earlier fdatasync", later.Message);
        f.DataSyncOverride = null; // even a real, successful fdatasync cannot vouch for the lost writes
        Assert.Throws<IOException>(f.Flush);
    }

    [Fact]
    public void Qcow2FlushAfterAFailedDataSyncFailsAndDisposeStillClosesTheFile()
    {
        using var d = new TempDir();
        string path = d["g.qcow2"];
        var img = Qcow2Image.Create(path, new Qcow2CreateOptions { Size = 4 << 20 });
        img.Write(0, new byte[2 * 65536]); // allocated: the next writes are in place
        img.Flush();
        img.File.DataSyncOverride = FailOnceWithEio();
        img.Write(0, Enumerable.Repeat((byte)9, 4096).ToArray());
        Assert.Throws<IOException>(img.Flush);
        img.Write(8192, Enumerable.Repeat((byte)8, 4096).ToArray());
        Assert.Throws<IOException>(img.Flush); // the guest must not get an acknowledged flush for the 9s
        img.Discard(65536, 65536); // a deferred free: closing must flush before it can apply it
        Assert.Equal(1, OpenDescriptors(path));
        Assert.Throws<IOException>(img.Dispose); // close reports it too...
        Assert.Throws<ObjectDisposedException>(() => img.Read(0, new byte[512]));
        Assert.Equal(0, OpenDescriptors(path)); // ...and still releases the file
    }

    /// <summary>How many of this process's file descriptors refer to <paramref name="path"/>.</summary>
    private static int OpenDescriptors(string path)
    {
        string full = Path.GetFullPath(path);
        int n = 0;
        foreach (var fd in Directory.GetFiles("/proc/self/fd"))
        {
            try { if (new FileInfo(fd).LinkTarget == full) n++; }
            catch (IOException) { } // the descriptor closed while we looked
        }
        return n;
    }

    [Fact]
    public void UnsafeCacheNeverCallsDataSync()
    {
        using var d = new TempDir();
        System.IO.File.WriteAllBytes(d["u.raw"], new byte[4096]);
        int calls = 0;
        using var f = new ImageFile(d["u.raw"], readOnly: false) { IgnoreFlushes = true, DataSyncOverride = () => { calls++; return EIO; } };
        f.Write(0, new byte[] { 1 });
        f.Flush();
        Assert.Equal(0, calls);
    }
}
