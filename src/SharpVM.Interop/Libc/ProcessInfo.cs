namespace SharpVM.Interop.Libc;

/// <summary>Resource figures about this process (for stats and benchmarks).</summary>
public static unsafe class ProcessInfo
{
    /// <summary>Peak resident set size in bytes (getrusage ru_maxrss).</summary>
    public static long PeakResidentBytes()
    {
        Rusage usage;
        Errno.Check(Native.getrusage(0, &usage), "getrusage");
        return usage.MaxRss * 1024;
    }
}
