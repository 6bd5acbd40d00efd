using System.Diagnostics;
using SharpVM.Devices.Bus;
using SharpVM.Hypervisor;

namespace SharpVM.Vmm.Exits;

/// <summary>
/// One vCPU's route from port and MMIO exits to the devices on the buses, counting each access in
/// that vCPU's <see cref="ExitStatistics"/>. Runs on the vCPU thread only.
/// </summary>
/// <remarks>
/// Counting is always on (an array increment). Timing each access is on only when asked for
/// (<see cref="VmConfig.TimeExits"/>, `--stats`): a clock read costs 25-250 ns here, a noticeable
/// part of a 3 µs exit, so the hot path does not pay for it unless someone will read the times.
/// </remarks>
public sealed class VcpuIoDispatcher(PioBus pio, MmioBus mmio, ExitStatistics statistics, bool timeAccesses) : IVcpuIoHandler
{
    private readonly bool _time = timeAccesses;

    public ExitStatistics Statistics { get; } = statistics;

    public void PioRead(ushort port, Span<byte> data)
    {
        long start = _time ? Stopwatch.GetTimestamp() : 0;
        pio.Read(port, data);
        long ticks = _time ? Stopwatch.GetTimestamp() - start : 0;
        Statistics.Record(ExitKind.PioRead, ticks);
        Statistics.RecordPort(port, ticks);
    }

    public void PioWrite(ushort port, ReadOnlySpan<byte> data)
    {
        long start = _time ? Stopwatch.GetTimestamp() : 0;
        pio.Write(port, data);
        long ticks = _time ? Stopwatch.GetTimestamp() - start : 0;
        Statistics.Record(ExitKind.PioWrite, ticks);
        Statistics.RecordPort(port, ticks);
    }

    public void MmioRead(ulong address, Span<byte> data)
    {
        long start = _time ? Stopwatch.GetTimestamp() : 0;
        var range = mmio.Read(address, data);
        long ticks = _time ? Stopwatch.GetTimestamp() - start : 0;
        Statistics.Record(ExitKind.MmioRead, ticks);
        Statistics.RecordMmioRange(range?.Index ?? -1, ticks);
    }

    public void MmioWrite(ulong address, ReadOnlySpan<byte> data)
    {
        long start = _time ? Stopwatch.GetTimestamp() : 0;
        var range = mmio.Write(address, data);
        long ticks = _time ? Stopwatch.GetTimestamp() - start : 0;
        Statistics.Record(ExitKind.MmioWrite, ticks);
        Statistics.RecordMmioRange(range?.Index ?? -1, ticks);
    }
}
