namespace SharpVM.Memory;

/// <summary>An access to guest-physical memory that falls outside guest RAM.</summary>
public sealed class GuestMemoryException(GuestAddress address, ulong length)
    : Exception($"guest memory access at {address} (+{length} bytes) is outside guest RAM")
{
    public GuestAddress Address { get; } = address;
    public ulong Length { get; } = length;
}
