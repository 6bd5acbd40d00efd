using SharpVM.Devices.Bus;

namespace SharpVM.Devices.Legacy;

/// <summary>Snapshot state of <see cref="IgnoredPorts"/>: the last POST code written to port 0x80.</summary>
public sealed record IgnoredPortsState(byte LastPostCode);

/// <summary>Counters for <see cref="IgnoredPorts"/>.</summary>
public sealed class IgnoredPortsMetrics
{
    public long Reads;
    public long Writes;
}

/// <summary>
/// Ports Linux touches on a PC that need no behaviour, claimed so they are not counted as unclaimed
/// accesses: 0x80 (POST/debug port, used for I/O delays; the last value is kept), 0xED (the alternative
/// I/O-delay port) and 0x87 (a DMA page register). Reads return 0xFF, except 0x80 which returns the
/// last POST code. Others can be added with <see cref="Attach"/>.
/// </summary>
public sealed class IgnoredPorts : IBusDevice
{
    public const ushort PostCodePort = 0x80;

    /// <summary>(port, length, name) claimed by <see cref="AttachDefaults"/>.</summary>
    public static readonly IReadOnlyList<(ushort Port, ushort Length, string Name)> Defaults =
    [
        (PostCodePort, 1, "post-code"),
        (0x87, 1, "dma-page"),
        (0xED, 1, "io-delay"),
    ];

    private int _lastPostCode;

    public IgnoredPortsMetrics Metrics { get; } = new();

    /// <summary>The last byte written to port 0x80 (firmware and some kernels report progress there).</summary>
    public byte LastPostCode => (byte)Volatile.Read(ref _lastPostCode);

    public void AttachDefaults(PioBus bus)
    {
        foreach (var (port, length, name) in Defaults) Attach(bus, port, length, name);
    }

    public BusRange Attach(PioBus bus, ushort port, ushort length, string name) =>
        bus.Register(port, length, new View(this, port), name);

    public void Read(ulong offset, Span<byte> data) => Read(0, offset, data);
    public void Write(ulong offset, ReadOnlySpan<byte> data) => Write(0, offset, data);

    private void Read(ushort basePort, ulong offset, Span<byte> data)
    {
        Interlocked.Increment(ref Metrics.Reads);
        data.Fill(0xFF);
        if (basePort + offset == PostCodePort && !data.IsEmpty) data[0] = LastPostCode;
    }

    private void Write(ushort basePort, ulong offset, ReadOnlySpan<byte> data)
    {
        Interlocked.Increment(ref Metrics.Writes);
        if (basePort + offset == PostCodePort && !data.IsEmpty) Volatile.Write(ref _lastPostCode, data[0]);
    }

    public IgnoredPortsState SaveState() => new(LastPostCode);
    public void RestoreState(IgnoredPortsState s) => Volatile.Write(ref _lastPostCode, s.LastPostCode);

    /// <summary>The device as registered at one base port (bus offsets are relative to the range start).</summary>
    private sealed class View(IgnoredPorts owner, ushort basePort) : IBusDevice
    {
        public void Read(ulong offset, Span<byte> data) => owner.Read(basePort, offset, data);
        public void Write(ulong offset, ReadOnlySpan<byte> data) => owner.Write(basePort, offset, data);
    }
}
