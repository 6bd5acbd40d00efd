namespace SharpVM.Vmm.Exits;

/// <summary>The exit reasons SharpVM accounts for (port and MMIO accesses included, though they never leave the backend's Run).</summary>
public enum ExitKind
{
    PioRead, PioWrite, MmioRead, MmioWrite, Halt, Shutdown, SystemEvent, FailEntry, InternalError,
    Interrupted, Debug, Unknown,
}
