namespace SharpVM.Vmm.Exits;

/// <summary>
/// The exit reasons SharpVM accounts for (port and MMIO accesses included, though they never leave
/// the backend's Run). Unknown stays last: <see cref="ExitStatistics"/> sizes its tables by it.
/// </summary>
public enum ExitKind
{
    PioRead, PioWrite, MmioRead, MmioWrite, Halt, Shutdown, SystemEvent, FailEntry, InternalError,
    Interrupted, Debug, Unknown,
}
