namespace SharpVM.Memory;

/// <summary>
/// A guest-physical address. A distinct type so a host offset or a length can never be passed where
/// a guest address is meant; arithmetic is checked, so overflow is an error, not a wrap-around.
/// </summary>
public readonly record struct GuestAddress(ulong Value) : IComparable<GuestAddress>
{
    public static GuestAddress operator +(GuestAddress address, ulong offset) => new(checked(address.Value + offset));

    public static ulong operator -(GuestAddress end, GuestAddress start) => checked(end.Value - start.Value);

    public static bool operator <(GuestAddress a, GuestAddress b) => a.Value < b.Value;
    public static bool operator >(GuestAddress a, GuestAddress b) => a.Value > b.Value;
    public static bool operator <=(GuestAddress a, GuestAddress b) => a.Value <= b.Value;
    public static bool operator >=(GuestAddress a, GuestAddress b) => a.Value >= b.Value;

    /// <summary>Adds without throwing; false if the sum would overflow 64 bits.</summary>
    public bool TryAdd(ulong offset, out GuestAddress result)
    {
        ulong sum = Value + offset;
        result = new GuestAddress(sum);
        return sum >= Value;
    }

    public GuestAddress AlignDown(ulong alignment) => new(Value & ~(alignment - 1));

    public int CompareTo(GuestAddress other) => Value.CompareTo(other.Value);

    public override string ToString() => $"0x{Value:x}";
}
