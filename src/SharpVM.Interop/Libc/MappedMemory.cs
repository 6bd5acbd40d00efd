namespace SharpVM.Interop.Libc;

/// <summary>Protection and flag bits for mmap, as in &lt;sys/mman.h&gt;.</summary>
[Flags]
public enum MemoryProtection { None = 0, Read = 1, Write = 2, Execute = 4 }

/// <summary>madvise advice values SharpVM uses.</summary>
public enum MemoryAdvice { DontNeed = 4, Mergeable = 12, HugePage = 14 }

/// <summary>
/// An anonymous or file-backed mmap region owned by this object, unmapped on dispose.
/// Guest RAM and kvm_run live in such regions: native memory the GC never moves.
/// </summary>
public sealed unsafe class MappedMemory : IDisposable
{
    private const int MapShared = 0x01, MapPrivate = 0x02, MapAnonymous = 0x20, MapNoReserve = 0x4000,
        MapHugeTlb = 0x40000;
    private void* _address;

    public nuint Length { get; }
    public bool IsDisposed => _address == null;

    /// <summary>Start of the mapping. Valid until <see cref="Dispose"/>.</summary>
    public byte* Pointer => _address != null ? (byte*)_address : throw new ObjectDisposedException(nameof(MappedMemory));

    private MappedMemory(void* address, nuint length)
    {
        _address = address;
        Length = length;
    }

    /// <summary>Anonymous private memory, zero-filled, reserved lazily (thin like guest RAM should be).</summary>
    public static MappedMemory Anonymous(ulong length, MemoryProtection protection = MemoryProtection.Read | MemoryProtection.Write, bool hugeTlb = false)
    {
        int flags = MapPrivate | MapAnonymous | MapNoReserve | (hugeTlb ? MapHugeTlb : 0);
        void* p = Native.mmap(null, (nuint)length, (int)protection, flags, -1, 0);
        if (p == (void*)-1) throw new SystemCallException($"mmap({length} bytes{(hugeTlb ? ", MAP_HUGETLB" : "")})", System.Runtime.InteropServices.Marshal.GetLastPInvokeError());
        return new MappedMemory(p, (nuint)length);
    }

    /// <summary>A shared mapping of a file descriptor (for kvm_run, which the kernel owns).</summary>
    public static MappedMemory OfFile(FileDescriptor fd, ulong length, MemoryProtection protection, long offset = 0)
    {
        void* p = Native.mmap(null, (nuint)length, (int)protection, MapShared, fd.Number, offset);
        if (p == (void*)-1) throw new SystemCallException("mmap(fd)", System.Runtime.InteropServices.Marshal.GetLastPInvokeError());
        return new MappedMemory(p, (nuint)length);
    }

    /// <summary>madvise over the whole region (KSM merging, transparent huge pages, dropping pages).</summary>
    public void Advise(MemoryAdvice advice) => Advise(0, Length, advice);

    public void Advise(nuint offset, nuint length, MemoryAdvice advice)
    {
        if (offset > Length || length > Length - offset) throw new ArgumentOutOfRangeException(nameof(length));
        Errno.Check(Native.madvise(Pointer + offset, length, (int)advice), $"madvise({advice})");
    }

    public void Dispose()
    {
        if (_address == null) return;
        Native.munmap(_address, Length);
        _address = null;
    }
}
