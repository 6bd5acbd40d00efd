using System.Buffers.Binary;
using System.Security.Cryptography;

namespace SharpVM.Vmm.Boot;

/// <summary>
/// A setup_data entry of type SETUP_RNG_SEED (arch/x86/include/uapi/asm/bootparam.h): 32 bytes from the host's
/// cryptographic RNG for the guest kernel's random number generator (what the boot protocol has for a loader's seed).
/// Linux mixes them in at once and, with RANDOM_TRUST_BOOTLOADER (Debian's kernels have it), credits them, so its RNG
/// is ready from the start: without a seed, and without RDRAND, every request for random bytes until enough entropy
/// has trickled in from interrupts re-extracts the entropy pool (BLAKE2s), which the slab allocator's freelist
/// randomisation does all through the boot. The kernel zeroes the seed after use.
/// </summary>
public static class RngSeed
{
    public const uint SetupRngSeed = 9;
    public const int SeedBytes = 32;

    /// <summary>struct setup_data { u64 next; u32 type; u32 len; u8 data[len]; }, the last of its list.</summary>
    public static byte[] Build()
    {
        var entry = new byte[16 + SeedBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(entry, 0); // no next entry
        BinaryPrimitives.WriteUInt32LittleEndian(entry.AsSpan(8), SetupRngSeed);
        BinaryPrimitives.WriteUInt32LittleEndian(entry.AsSpan(12), SeedBytes);
        RandomNumberGenerator.Fill(entry.AsSpan(16));
        return entry;
    }
}
