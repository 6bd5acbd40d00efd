namespace SharpVM.Memory.Tests;

/// <summary>
/// The page versions an emulated CPU keeps its decoded code valid by: a write to a page code was decoded from
/// changes its version for good; writes to other pages, or to a page nobody decoded from, change nothing.
/// </summary>
public sealed class CodePageVersionsTests
{
    [Fact]
    public void AWriteToAWatchedPageChangesItsVersionOnce()
    {
        var versions = new CodePageVersions(new GuestAddress(16 * 4096));
        uint seen = versions.Watch(3);
        Assert.Equal(seen, versions.Current(3));
        versions.NoteWrite(2);
        versions.NoteWrite(4);
        Assert.Equal(seen, versions.Current(3));
        versions.NoteWrite(3);
        uint afterWrite = versions.Current(3);
        Assert.NotEqual(seen, afterWrite);
        // Unwatched now: further writes cost nothing and change nothing until code is decoded from it again.
        versions.NoteWrite(3);
        Assert.Equal(afterWrite, versions.Current(3));
        uint again = versions.Watch(3);
        Assert.NotEqual(seen, again);
        versions.NoteWrite(3);
        Assert.NotEqual(again, versions.Current(3));
        Assert.NotEqual(seen, versions.Current(3));
    }

    [Fact]
    public void RangeWritesReachEveryPageTheyTouch()
    {
        var versions = new CodePageVersions(new GuestAddress(16 * 4096));
        uint[] seen = [.. Enumerable.Range(0, 16).Select(p => versions.Watch((ulong)p))];
        versions.NoteWrites(new GuestAddress(5 * 4096 - 1), 2); // the last byte of page 4, the first of page 5
        for (int p = 0; p < 16; p++)
        {
            if (p is 4 or 5) Assert.NotEqual(seen[p], versions.Current((ulong)p));
            else Assert.Equal(seen[p], versions.Current((ulong)p));
        }
        // Beyond the end: ignored, not an error.
        versions.NoteWrites(new GuestAddress(100 * 4096), 4096);
        Assert.Equal(0u, versions.Watch(100));
    }

    [Fact]
    public void GuestMemoryWritesBumpTheVersionsOfCodePages()
    {
        using var memory = GuestMemory.Create(1 << 20);
        var versions = memory.EnableCodePageTracking();
        Assert.Same(versions, memory.EnableCodePageTracking());
        uint a = versions.Watch(0x10), b = versions.Watch(0x11), c = versions.Watch(0x12);
        memory.Write(new GuestAddress(0x10010), 0xC3UL);
        memory.Write(new GuestAddress(0x11FFF), new byte[] { 0x90, 0x90 });
        Assert.NotEqual(a, versions.Current(0x10));
        Assert.NotEqual(b, versions.Current(0x11));
        Assert.NotEqual(c, versions.Current(0x12));
        uint d = versions.Watch(0x13);
        memory.GetWritableSpan(new GuestAddress(0x13000), 16).Fill(0xCC);
        Assert.NotEqual(d, versions.Current(0x13));
    }
}
