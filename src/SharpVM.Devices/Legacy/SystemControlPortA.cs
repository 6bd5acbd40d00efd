using SharpVM.Devices.Bus;

namespace SharpVM.Devices.Legacy;

/// <summary>Snapshot state of a <see cref="SystemControlPortA"/>.</summary>
public sealed record SystemControlPortAState(byte Value);

/// <summary>Counters for a <see cref="SystemControlPortA"/>.</summary>
public sealed class SystemControlPortAMetrics
{
    public long ResetRequests;
}

/// <summary>
/// Port 0x92, "System Control Port A" (fast A20 gate and fast reset): bit 1 is A20 (kept, always
/// reported on), writing bit 0 as 1 requests a CPU reset (<see cref="PlatformEvent.Reset"/>).
/// </summary>
public sealed class SystemControlPortA(Action<PlatformEvent> platformEvent) : IBusDevice
{
    public const ushort Port = 0x92;
    public const byte FastReset = 0x01, A20 = 0x02;
    private int _value = A20;

    public SystemControlPortAMetrics Metrics { get; } = new();

    public BusRange Attach(PioBus bus) => bus.Register(Port, 1, this, "port92");

    public void Read(ulong offset, Span<byte> data)
    {
        data.Fill(0xFF);
        if (!data.IsEmpty) data[0] = (byte)(Volatile.Read(ref _value) | A20);
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty) return;
        Volatile.Write(ref _value, data[0] & ~FastReset);
        if ((data[0] & FastReset) != 0)
        {
            Interlocked.Increment(ref Metrics.ResetRequests);
            platformEvent(PlatformEvent.Reset);
        }
    }

    public SystemControlPortAState SaveState() => new((byte)Volatile.Read(ref _value));
    public void RestoreState(SystemControlPortAState s) => Volatile.Write(ref _value, s.Value & ~FastReset);
}
