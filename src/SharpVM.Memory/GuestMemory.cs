using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using SharpVM.Interop.Libc;

namespace SharpVM.Memory;

/// <summary>Options for allocating guest RAM.</summary>
/// <param name="HugePages">Ask for transparent huge pages (MADV_HUGEPAGE): fewer TLB misses for the guest.</param>
/// <param name="Mergeable">Let KSM merge identical pages across VMs (MADV_MERGEABLE).</param>
public sealed record GuestMemoryOptions(bool HugePages = false, bool Mergeable = false);

/// <summary>
/// All of a guest's RAM. Every access is bounds-checked against the regions; nothing here can
/// reach host memory outside them, whatever address the guest hands us.
/// </summary>
public sealed unsafe class GuestMemory : IDisposable
{
    private readonly GuestMemoryRegion[] _regions;

    public IReadOnlyList<GuestMemoryRegion> Regions => _regions;

    /// <summary>Total RAM in bytes.</summary>
    public ulong Size { get; }

    /// <summary>
    /// Software dirty log for writes made by SharpVM itself (devices, the emulated CPU). KVM keeps its
    /// own log for guest writes on the KVM backend; both are merged for snapshots and migration.
    /// </summary>
    public DirtyBitmap? SoftwareDirtyLog { get; private set; }

    /// <summary>
    /// Versions of the pages an emulated CPU has decoded code from (null unless <see cref="EnableCodePageTracking"/>
    /// was called): the write methods here bump them, so the emulator sees code that devices or loaders overwrite.
    /// </summary>
    public CodePageVersions? CodePages => Volatile.Read(ref _codePages);
    private CodePageVersions? _codePages;

    private GuestMemory(GuestMemoryRegion[] regions)
    {
        _regions = regions;
        foreach (var r in regions) Size += r.Size;
    }

    /// <summary>Maps <paramref name="ramBytes"/> of guest RAM laid out by <see cref="MemoryLayout"/>.</summary>
    public static GuestMemory Create(ulong ramBytes, GuestMemoryOptions? options = null)
    {
        options ??= new GuestMemoryOptions();
        ulong high = MemoryLayout.HighRamSize(ramBytes);
        // At most two regions, below and above the MMIO hole (see MemoryLayout).
        var regions = new GuestMemoryRegion[high == 0 ? 1 : 2];
        int created = 0;
        try
        {
            regions[0] = CreateRegion(new GuestAddress(0), ramBytes - high, options);
            created = 1;
            if (high != 0) regions[1] = CreateRegion(new GuestAddress(MemoryLayout.MmioHoleEnd), high, options);
        }
        catch
        {
            for (int i = 0; i < created; i++) regions[i].Dispose();
            throw;
        }
        return new GuestMemory(regions);
    }

    private static GuestMemoryRegion CreateRegion(GuestAddress start, ulong size, GuestMemoryOptions options)
    {
        var backing = MappedMemory.Anonymous(size);
        try
        {
            if (options.HugePages) backing.Advise(MemoryAdvice.HugePage);
            if (options.Mergeable) backing.Advise(MemoryAdvice.Mergeable);
        }
        catch
        {
            backing.Dispose();
            throw;
        }
        return new GuestMemoryRegion(start, size, backing);
    }

    /// <summary>Starts recording pages written through this object (see <see cref="SoftwareDirtyLog"/>).</summary>
    public void EnableSoftwareDirtyLog()
    {
        ulong top = _regions[^1].End.Value;
        SoftwareDirtyLog = new DirtyBitmap(new GuestAddress(0), top);
    }

    /// <summary>Starts keeping <see cref="CodePages"/> (each emulated vCPU asks, before it runs) and returns them; idempotent.</summary>
    public CodePageVersions EnableCodePageTracking()
    {
        if (CodePages is { } kept) return kept;
        Interlocked.CompareExchange(ref _codePages, new CodePageVersions(_regions[^1].End), null);
        return _codePages;
    }

    /// <summary>
    /// Records a write to [address, address+length): the dirty log and the code versions, when kept. The write
    /// methods here call it; a writer through a span from <see cref="GetWritableSpan"/> while the guest runs (a
    /// device) calls it again after writing.
    /// </summary>
    public void NoteWritten(GuestAddress address, ulong length)
    {
        SoftwareDirtyLog?.MarkRange(address, length);
        CodePages?.NoteWrites(address, length);
    }

    /// <summary>The region holding <paramref name="address"/>, or null if it is not RAM.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public GuestMemoryRegion? FindRegion(GuestAddress address)
    {
        foreach (var r in _regions)
            if (r.Contains(address)) return r;
        return null;
    }

    /// <summary>True if the whole range [address, address+length) is RAM in one region.</summary>
    public bool IsRam(GuestAddress address, ulong length) => FindRegion(address)?.Contains(address, length) == true;

    /// <summary>
    /// A reference to the first of <paramref name="length"/> bytes at <paramref name="address"/>, after
    /// checking the whole range is inside one region.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref byte GetReference(GuestAddress address, ulong length)
    {
        foreach (var r in _regions)
        {
            ulong offset = address.Value - r.Start.Value;
            if (address.Value >= r.Start.Value && offset < r.Size && length <= r.Size - offset)
                // SAFETY: offset + length <= region size, checked just above; the mapping lives as long as this object.
                return ref Unsafe.AsRef<byte>(r.Backing.Pointer + offset);
        }
        throw new GuestMemoryException(address, length);
    }

    /// <summary>A span over guest RAM; throws <see cref="GuestMemoryException"/> if not all of it is RAM.</summary>
    public Span<byte> GetSpan(GuestAddress address, int length)
    {
        if (length < 0) throw new ArgumentOutOfRangeException(nameof(length));
        if (length == 0) return Span<byte>.Empty;
        return MemoryMarshal.CreateSpan(ref GetReference(address, (ulong)length), length);
    }

    /// <summary>
    /// Like <see cref="GetSpan"/> for writing: also records the pages as dirty and as overwritten for the emulator's
    /// decoded code. Those records are made here, before the caller writes, so a writer that runs while the guest
    /// does (a device) must call <see cref="NoteWritten"/> again once it has written.
    /// </summary>
    public Span<byte> GetWritableSpan(GuestAddress address, int length)
    {
        var span = GetSpan(address, length);
        NoteWritten(address, (ulong)length);
        return span;
    }


    public T Read<T>(GuestAddress address) where T : unmanaged =>
        Unsafe.ReadUnaligned<T>(ref GetReference(address, (ulong)sizeof(T)));

    public void Write<T>(GuestAddress address, T value) where T : unmanaged
    {
        Unsafe.WriteUnaligned(ref GetReference(address, (ulong)sizeof(T)), value);
        NoteWritten(address, (ulong)sizeof(T));
    }

    /// <summary>Copies guest bytes into <paramref name="destination"/>; the range may span regions only if both are RAM.</summary>
    public void Read(GuestAddress address, Span<byte> destination)
    {
        while (!destination.IsEmpty)
        {
            var region = FindRegion(address) ?? throw new GuestMemoryException(address, (ulong)destination.Length);
            int chunk = (int)Math.Min((ulong)destination.Length, region.End - address);
            GetSpan(address, chunk).CopyTo(destination);
            destination = destination[chunk..];
            address += (ulong)chunk;
        }
    }

    /// <summary>Copies <paramref name="source"/> into guest RAM at <paramref name="address"/>.</summary>
    public void Write(GuestAddress address, ReadOnlySpan<byte> source)
    {
        while (!source.IsEmpty)
        {
            var region = FindRegion(address) ?? throw new GuestMemoryException(address, (ulong)source.Length);
            int chunk = (int)Math.Min((ulong)source.Length, region.End - address);
            source[..chunk].CopyTo(GetSpan(address, chunk));
            NoteWritten(address, (ulong)chunk);
            source = source[chunk..];
            address += (ulong)chunk;
        }
    }

    public void Dispose()
    {
        foreach (var r in _regions) r.Dispose();
    }
}
