namespace SharpVM.Memory;

/// <summary>
/// Where RAM goes in the guest-physical address space: up to 3 GiB below 4 GiB, then a 1 GiB hole
/// for MMIO devices, the local APIC, the IOAPIC and the firmware area, and the rest from 4 GiB up.
/// </summary>
public static class MemoryLayout
{
    public const ulong MmioHoleStart = 0xC000_0000;
    public const ulong MmioHoleEnd = 0x1_0000_0000;
    public const ulong PageSize = 4096;

    /// <summary>The (start, size) pairs of RAM for a guest of <paramref name="ramBytes"/> bytes.</summary>
    public static IReadOnlyList<(GuestAddress Start, ulong Size)> RamRanges(ulong ramBytes)
    {
        if (ramBytes == 0 || ramBytes % PageSize != 0)
            throw new ArgumentException($"guest RAM size {ramBytes} must be a non-zero multiple of {PageSize} bytes", nameof(ramBytes));
        if (ramBytes <= MmioHoleStart) return [(new GuestAddress(0), ramBytes)];
        return [(new GuestAddress(0), MmioHoleStart), (new GuestAddress(MmioHoleEnd), ramBytes - MmioHoleStart)];
    }
}
