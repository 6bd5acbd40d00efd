namespace SharpVM.Devices.Bus;

/// <summary>A registered range [Start, Start+Length) on a bus, the device behind it, and its index for per-range statistics.</summary>
public sealed record BusRange(ulong Start, ulong Length, IBusDevice Device, string Name, int Index)
{
    public ulong End => Start + Length;
    public bool Contains(ulong address) => address >= Start && address - Start < Length;
    public override string ToString() => $"{Name} [0x{Start:x}-0x{End - 1:x}]";
}
