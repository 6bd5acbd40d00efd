namespace SharpVM.Devices.Bus;

/// <summary>A registered range [Start, Start+Length) on a bus, the device behind it, and its index for per-range statistics.</summary>
public sealed record BusRange(ulong Start, ulong Length, IBusDevice Device, string Name, int Index)
{
    private string? _failure;

    public ulong End => Start + Length;
    public bool Contains(ulong address) => address >= Start && address - Start < Length;

    /// <summary>
    /// Why the device behind this range was taken off the bus (it threw while serving an access), or null while it
    /// works. A broken range reads as all ones and drops writes, like an empty slot: the guest's driver sees a dead
    /// device and the VM goes on.
    /// </summary>
    public string? Failure => Volatile.Read(ref _failure);

    internal bool MarkBroken(string why) => Interlocked.CompareExchange(ref _failure, why, null) is null;

    public override string ToString() => $"{Name} [0x{Start:x}-0x{End - 1:x}]";
}
