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
        ulong high = HighRamSize(ramBytes);
        if (high == 0) return [(new GuestAddress(0), ramBytes)];
        return [(new GuestAddress(0), MmioHoleStart), (new GuestAddress(MmioHoleEnd), high)];
    }

    /// <summary>
    /// Bytes of RAM above 4 GiB (0 if it all fits below the MMIO hole); the rest starts at 0. Checks
    /// the size like <see cref="RamRanges"/>. <see cref="GuestMemory.Create"/> uses this rather than
    /// <see cref="RamRanges"/>: a list of tuples of our own struct is a CoreLib generic that ReadyToRun
    /// cannot precompile, so it would be JIT-compiled on the first VM's setup path (bench/README.md).
    /// </summary>
    public static ulong HighRamSize(ulong ramBytes)
    {
        if (ramBytes == 0 || ramBytes % PageSize != 0)
            throw new ArgumentException($"guest RAM size {ramBytes} must be a non-zero multiple of {PageSize} bytes", nameof(ramBytes));
        return ramBytes <= MmioHoleStart ? 0 : ramBytes - MmioHoleStart;
    }
}
