using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace SharpVM.Memory;

/// <summary>
/// A version per 4 KiB page of guest physical memory, for an emulated CPU that keeps decoded (and translated)
/// code: a block decoded from a page stays valid while the page's version is the one it saw, which replaces
/// comparing the block's bytes with memory on every entry. Every writer of guest RAM (the emulated CPU's stores,
/// <see cref="GuestMemory"/>'s write methods for devices and loaders) calls <see cref="NoteWrite"/>.
///
/// A version is a generation count (bits 1-31) and a watched flag (bit 0), set by <see cref="Watch"/> when code is
/// decoded from the page. A write to a watched page clears the flag and moves to the next generation, so a write
/// costs one load while nobody decodes from the page again, and blocks from before it never match again.
///
/// Ordering: a decoder calls <see cref="Watch"/> (a full fence) before it reads the bytes; a writer stores, then
/// checks. A store from another thread that is still in its CPU's store buffer while the decoder reads the page
/// can be missed; that is a guest modifying code that another vCPU is running with no synchronization, which x86
/// leaves undefined (cross-modifying code must serialize the executing processor first), and which QEMU's TCG
/// does not close either. Devices' writes (<see cref="NoteWrites"/>) fence before they check.
/// </summary>
public sealed class CodePageVersions
{
    private const uint Watched = 1;
    private readonly uint[] _versions;

    /// <param name="top">The end of guest physical memory covered (pages at and above it are never code).</param>
    public CodePageVersions(GuestAddress top)
    {
        _versions = new uint[(top.Value + MemoryLayout.PageSize - 1) / MemoryLayout.PageSize];
    }

    /// <summary>The current version of page <paramref name="ppn"/> (0 for pages beyond guest memory).</summary>
    public uint Current(ulong ppn) =>
        // SAFETY: ppn < length, checked here once (the array's own check would repeat it on the block dispatch path).
        ppn < (ulong)_versions.Length ? Volatile.Read(ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_versions), (nint)ppn)) : 0;

    /// <summary>
    /// Marks page <paramref name="ppn"/> as holding decoded code and returns the version a block decoded from it
    /// now must see to stay valid. Call it before reading the page's bytes.
    /// </summary>
    public uint Watch(ulong ppn)
    {
        if (ppn >= (ulong)_versions.Length) return 0;
        return Interlocked.Or(ref _versions[ppn], Watched) | Watched;
    }

    /// <summary>Called after a write to page <paramref name="ppn"/>: invalidates the code decoded from it, if any.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void NoteWrite(ulong ppn)
    {
        // SAFETY: as in Current (every store of an emulated vCPU comes here: the checked ulong index cost an overflow
        // check and a second range check).
        if (ppn < (ulong)_versions.Length
            && (Volatile.Read(ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_versions), (nint)ppn)) & Watched) != 0)
            Invalidate(ppn);
    }

    /// <summary>Called after a device or loader wrote [address, address+length): <see cref="NoteWrite"/> for each page, after a fence.</summary>
    public void NoteWrites(GuestAddress address, ulong length)
    {
        if (length == 0) return;
        Interlocked.MemoryBarrier();
        ulong first = address.Value / MemoryLayout.PageSize, last = (address.Value + length - 1) / MemoryLayout.PageSize;
        for (ulong p = first; p <= last && p < (ulong)_versions.Length; p++) NoteWrite(p);
    }

    private void Invalidate(ulong ppn)
    {
        ref uint v = ref _versions[ppn];
        uint old = Volatile.Read(ref v);
        // The next generation, unwatched; a racing Watch retries against it.
        while ((old & Watched) != 0)
        {
            uint seen = Interlocked.CompareExchange(ref v, (old + 2) & ~Watched, old);
            if (seen == old) return;
            old = seen;
        }
    }
}
