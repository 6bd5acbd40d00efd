using SharpVM.Interop.Libc;

namespace SharpVM.Memory;

/// <summary>One contiguous range of guest RAM backed by an anonymous host mapping.</summary>
public sealed class GuestMemoryRegion : IDisposable
{
    public GuestAddress Start { get; }
    public ulong Size { get; }
    public GuestAddress End => Start + Size;

    /// <summary>The host mapping; the hypervisor layer hands it to KVM_SET_USER_MEMORY_REGION.</summary>
    public MappedMemory Backing { get; }

    internal GuestMemoryRegion(GuestAddress start, ulong size, MappedMemory backing)
    {
        Start = start;
        Size = size;
        Backing = backing;
    }

    public bool Contains(GuestAddress address) => address >= Start && address.Value - Start.Value < Size;

    /// <summary>True if [address, address+length) lies inside this region.</summary>
    public bool Contains(GuestAddress address, ulong length) =>
        Contains(address) && length <= Size - (address.Value - Start.Value);

    public void Dispose() => Backing.Dispose();
}
