using System.Diagnostics;

namespace SharpVM.Vmm.Exits;

/// <summary>
/// Exit counts and handling time for one vCPU: per reason, per port and per MMIO range. Written only
/// by its vCPU thread (no locks, no allocation on the hot path); read by others as a snapshot.
/// </summary>
public sealed class ExitStatistics(int vcpuId)
{
    // Unknown is ExitKind's last member (a test records every member). Not Enum.GetValues: that is
    // reflection, milliseconds on the first VM's setup path (bench/README.md).
    private const int KindCount = (int)ExitKind.Unknown + 1;
    private readonly long[] _count = new long[KindCount];
    private readonly long[] _ticks = new long[KindCount];
    private readonly long[] _portCount = new long[65536];
    private readonly long[] _portTicks = new long[65536];
    private long[] _rangeCount = new long[16];
    private long[] _rangeTicks = new long[16];
    private long _unclaimedMmio;

    public int VcpuId { get; } = vcpuId;

    public void Record(ExitKind kind, long ticks)
    {
        _count[(int)kind]++;
        _ticks[(int)kind] += ticks;
    }

    public void RecordPort(ushort port, long ticks)
    {
        _portCount[port]++;
        _portTicks[port] += ticks;
    }

    /// <summary>An MMIO access served by bus range <paramref name="rangeIndex"/> (-1: no device claimed it).</summary>
    public void RecordMmioRange(int rangeIndex, long ticks)
    {
        if (rangeIndex < 0) { _unclaimedMmio++; return; }
        if (rangeIndex >= _rangeCount.Length)
        {
            Array.Resize(ref _rangeCount, Math.Max(rangeIndex + 1, _rangeCount.Length * 2));
            Array.Resize(ref _rangeTicks, _rangeCount.Length);
        }
        _rangeCount[rangeIndex]++;
        _rangeTicks[rangeIndex] += ticks;
    }

    public long Count(ExitKind kind) => Volatile.Read(ref _count[(int)kind]);
    public TimeSpan Time(ExitKind kind) => Stopwatch.GetElapsedTime(0, Volatile.Read(ref _ticks[(int)kind]));
    public long PortCount(ushort port) => Volatile.Read(ref _portCount[port]);
    public long UnclaimedMmio => Volatile.Read(ref _unclaimedMmio);
    public long Total => _count.Sum();

    /// <summary>(port, count, time) for every port that saw traffic.</summary>
    public IEnumerable<(ushort Port, long Count, TimeSpan Time)> Ports()
    {
        for (int p = 0; p < _portCount.Length; p++)
            if (_portCount[p] != 0) yield return ((ushort)p, _portCount[p], Stopwatch.GetElapsedTime(0, _portTicks[p]));
    }

    /// <summary>(range index, count, time) for every MMIO range that saw traffic.</summary>
    public IEnumerable<(int RangeIndex, long Count, TimeSpan Time)> MmioRanges()
    {
        var counts = _rangeCount;
        var ticks = _rangeTicks;
        for (int i = 0; i < Math.Min(counts.Length, ticks.Length); i++)
            if (counts[i] != 0) yield return (i, counts[i], Stopwatch.GetElapsedTime(0, ticks[i]));
    }
}
