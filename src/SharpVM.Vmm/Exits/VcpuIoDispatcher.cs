using System.Diagnostics;
using SharpVM.Devices.Bus;
using SharpVM.Hypervisor;

namespace SharpVM.Vmm.Exits;

/// <summary>
/// One vCPU's route from port and MMIO exits to the devices on the buses, timing and counting each
/// access in that vCPU's <see cref="ExitStatistics"/>. Runs on the vCPU thread only.
/// </summary>
public sealed class VcpuIoDispatcher(PioBus pio, MmioBus mmio, ExitStatistics statistics) : IVcpuIoHandler
{
    public ExitStatistics Statistics { get; } = statistics;

    public void PioRead(ushort port, Span<byte> data)
    {
        long start = Stopwatch.GetTimestamp();
        pio.Read(port, data);
        long ticks = Stopwatch.GetTimestamp() - start;
        Statistics.Record(ExitKind.PioRead, ticks);
        Statistics.RecordPort(port, ticks);
    }

    public void PioWrite(ushort port, ReadOnlySpan<byte> data)
    {
        long start = Stopwatch.GetTimestamp();
        pio.Write(port, data);
        long ticks = Stopwatch.GetTimestamp() - start;
        Statistics.Record(ExitKind.PioWrite, ticks);
        Statistics.RecordPort(port, ticks);
    }

    public void MmioRead(ulong address, Span<byte> data)
    {
        long start = Stopwatch.GetTimestamp();
        var range = mmio.Read(address, data);
        long ticks = Stopwatch.GetTimestamp() - start;
        Statistics.Record(ExitKind.MmioRead, ticks);
        Statistics.RecordMmioRange(range?.Index ?? -1, ticks);
    }

    public void MmioWrite(ulong address, ReadOnlySpan<byte> data)
    {
        long start = Stopwatch.GetTimestamp();
        var range = mmio.Write(address, data);
        long ticks = Stopwatch.GetTimestamp() - start;
        Statistics.Record(ExitKind.MmioWrite, ticks);
        Statistics.RecordMmioRange(range?.Index ?? -1, ticks);
    }
}
