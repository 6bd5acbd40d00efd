using SharpVM.Storage.Qcow2;

namespace SharpVM.Storage.Tests;

/// <summary>
/// The unlocked data path serves every guest read and in-place write of an allocated disk, so it must not allocate:
/// at tens of thousands of requests per second a per-request object is steady garbage-collector work.
/// </summary>
public class UnlockedIoAllocationTests
{
    [Theory]
    [InlineData(4096, 0)]
    [InlineData(65536, 32768)] // straddles two clusters: two pieces (or one run when the host clusters are adjacent)
    [InlineData(256 * 1024, 4096)]
    public void UnlockedReadsAndWritesAllocateNothing(int length, long start)
    {
        using var d = new TempDir();
        using var img = Qcow2Image.Create(d["a.qcow2"], new Qcow2CreateOptions { Size = 4 << 20 });
        img.Write(0, new byte[1 << 20]); // allocated and owned: reads and rewrites of it go unlocked
        int unlocked = 0;
        img.BeforeUnlockedIo = () => unlocked++;
        var data = new byte[length];
        var back = new byte[length];
        for (int k = 0; k < 10; k++) { img.Write(start, data); img.Read(start, back); } // JIT and first-use work

        const int Requests = 500;
        unlocked = 0;
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int k = 0; k < Requests; k++)
        {
            data[0] = (byte)k;
            img.Write(start + (k & 7) * 512, data);
            img.Read(start + (k & 7) * 512, back);
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(2 * Requests, unlocked); // every request took the unlocked path
        Assert.Equal(unchecked((byte)(Requests - 1)), back[0]);
        Assert.Equal(0, allocated);
    }
}
