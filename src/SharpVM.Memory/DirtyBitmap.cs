using System.Numerics;

namespace SharpVM.Memory;

/// <summary>
/// One bit per 4 KiB guest page over [Base, Base+Length): which pages were written since the log was
/// last cleared. Filled from KVM_GET_DIRTY_LOG on the KVM backend, or by SharpVM's own writers.
/// Thread-safe for concurrent marking.
/// </summary>
public sealed class DirtyBitmap
{
    private readonly ulong[] _words;

    public GuestAddress Base { get; }
    public ulong Length { get; }
    public ulong PageCount { get; }

    public DirtyBitmap(GuestAddress @base, ulong length)
    {
        Base = @base;
        Length = length;
        PageCount = (length + MemoryLayout.PageSize - 1) / MemoryLayout.PageSize;
        _words = new ulong[(PageCount + 63) / 64];
    }

    /// <summary>Wraps a bitmap in KVM's layout (little-endian 64-bit words, bit n = page n).</summary>
    public DirtyBitmap(GuestAddress @base, ulong length, ulong[] kvmWords) : this(@base, length)
    {
        if (kvmWords.Length != _words.Length) throw new ArgumentException("bitmap size does not match the region", nameof(kvmWords));
        kvmWords.CopyTo(_words, 0);
    }

    /// <summary>Raw words, for KVM_GET_DIRTY_LOG to fill.</summary>
    public Span<ulong> Words => _words;

    public bool IsDirty(ulong page) => (Volatile.Read(ref _words[page / 64]) & (1UL << (int)(page % 64))) != 0;

    public void MarkPage(ulong page)
    {
        if (page >= PageCount) return;
        Interlocked.Or(ref _words[page / 64], 1UL << (int)(page % 64));
    }

    /// <summary>Marks every page touched by [address, address+length).</summary>
    public void MarkRange(GuestAddress address, ulong length)
    {
        if (length == 0 || address < Base) return;
        ulong first = (address.Value - Base.Value) / MemoryLayout.PageSize;
        ulong last = (address.Value - Base.Value + length - 1) / MemoryLayout.PageSize;
        for (ulong p = first; p <= last && p < PageCount; p++) MarkPage(p);
    }

    public int CountDirty()
    {
        int n = 0;
        foreach (ulong w in _words) n += BitOperations.PopCount(w);
        return n;
    }

    /// <summary>Guest addresses of the dirty pages, in order.</summary>
    public IEnumerable<GuestAddress> DirtyPages()
    {
        for (int i = 0; i < _words.Length; i++)
        {
            ulong w = _words[i];
            while (w != 0)
            {
                int bit = BitOperations.TrailingZeroCount(w);
                w &= w - 1;
                yield return Base + ((ulong)i * 64 + (ulong)bit) * MemoryLayout.PageSize;
            }
        }
    }

    /// <summary>ORs another log of the same range into this one.</summary>
    public void Merge(DirtyBitmap other)
    {
        if (other.Base != Base || other.PageCount != PageCount) throw new ArgumentException("bitmaps cover different ranges", nameof(other));
        for (int i = 0; i < _words.Length; i++) Interlocked.Or(ref _words[i], other._words[i]);
    }

    public void Clear() => Array.Clear(_words);
}
