using SharpVM.Hypervisor;

namespace SharpVM.Cpu;

/// <summary>The emulated CPU's CPUID leaves as a table, for <see cref="IHypervisor.GetSupportedCpuid"/>.</summary>
internal static class SupportedCpuid
{
    private static readonly (uint Leaf, uint Sub)[] Leaves =
    [
        (0, 0), (1, 0), (7, 0), (7, 1), (7, 2), (0x15, 0), (0x16, 0), (0x4000_0000, 0), (0x4000_0010, 0), (0x8000_0000, 0),
        (0x8000_0001, 0), (0x8000_0002, 0), (0x8000_0003, 0), (0x8000_0004, 0), (0x8000_0008, 0),
    ];

    public static IReadOnlyList<CpuidEntry> Table()
    {
        var entries = new CpuidEntry[Leaves.Length];
        for (int i = 0; i < Leaves.Length; i++)
        {
            var (leaf, sub) = Leaves[i];
            EmulatorCpuid.Default(leaf, sub, 0, out uint a, out uint b, out uint c, out uint d);
            entries[i] = new CpuidEntry(leaf, sub, a, b, c, d, Indexed: leaf == 7);
        }
        return entries;
    }
}
