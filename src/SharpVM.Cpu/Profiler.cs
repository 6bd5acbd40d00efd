namespace SharpVM.Cpu;

/// <summary>
/// Off-by-default sampling profile of guest code: with <c>SHARPVM_PROFILE=/path/file</c>, a background
/// thread samples each vCPU's RIP every millisecond and rewrites <c>file.N</c> (vCPU N) every two seconds
/// with the most frequent RIPs (4 KiB granularity is too coarse for symbols, so exact RIPs are kept) and
/// how often the vCPU was halted or waiting for a start-up IPI.
/// </summary>
public sealed partial class EmulatorVcpu
{
    private static readonly string? s_profilePath = Environment.GetEnvironmentVariable("SHARPVM_PROFILE") is { Length: > 0 } p ? p : null;
    private Thread? _profiler;

    private void StartProfilerIfRequested()
    {
        if (s_profilePath is null || _profiler is not null) return;
        _profiler = new Thread(ProfileLoop) { IsBackground = true, Name = $"vcpu{Id}-profiler" };
        _profiler.Start();
    }

    private void ProfileLoop()
    {
        var counts = new Dictionary<ulong, long>();
        long halted = 0, waiting = 0, total = 0;
        var lastWrite = Environment.TickCount64;
        while (true)
        {
            Thread.Sleep(1);
            total++;
            if (_waitForSipi) waiting++;
            else if (_halted) halted++;
            else
            {
                ulong rip = FaultRip;
                counts[rip] = counts.GetValueOrDefault(rip) + 1;
            }
            if (Environment.TickCount64 - lastWrite < 2000) continue;
            lastWrite = Environment.TickCount64;
            try
            {
                using var w = new StreamWriter($"{s_profilePath}.{Id}");
                w.WriteLine($"samples {total} halted {halted} waiting-for-sipi {waiting} instructions {InstructionsRetired}");
                foreach (var (rip, n) in counts.OrderByDescending(kv => kv.Value).Take(400)) w.WriteLine($"{rip:x16} {n}");
            }
            catch (IOException)
            {
            }
        }
    }
}
