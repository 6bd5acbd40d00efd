using SharpVM.Hypervisor;

namespace SharpVM.Cpu;

/// <summary>The emulated CPU's CPUID leaves as a table, for <see cref="IHypervisor.GetSupportedCpuid"/>.</summary>
internal static class SupportedCpuid
{
    private static readonly uint[] Leaves =
    [
        0, 1, 7, 0x15, 0x16, 0x4000_0000, 0x4000_0010, 0x8000_0000, 0x8000_0001, 0x8000_0002, 0x8000_0003,
        0x8000_0004, 0x8000_0008,
    ];

    public static IReadOnlyList<CpuidEntry> Table()
    {
        var entries = new CpuidEntry[Leaves.Length];
        for (int i = 0; i < Leaves.Length; i++)
        {
            EmulatorCpuid.Default(Leaves[i], 0, 0, out uint a, out uint b, out uint c, out uint d);
            entries[i] = new CpuidEntry(Leaves[i], 0, a, b, c, d, Indexed: Leaves[i] == 7);
        }
        return entries;
    }
}
