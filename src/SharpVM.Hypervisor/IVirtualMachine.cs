using SharpVM.Devices;
using SharpVM.Memory;

namespace SharpVM.Hypervisor;

/// <summary>A VM on some backend: its memory is mapped, its vCPUs are created from here.</summary>
public interface IVirtualMachine : IDisposable
{
    GuestMemory Memory { get; }

    /// <summary>Creates vCPU <paramref name="id"/> (0 is the bootstrap processor).</summary>
    IVcpu CreateVcpu(int id);

    /// <summary>Interrupt input <paramref name="gsi"/> of the platform's interrupt controllers.</summary>
    IInterruptLine GetInterruptLine(int gsi);

    /// <summary>Starts recording which guest pages the guest writes.</summary>
    void EnableDirtyLogging();

    /// <summary>Pages written since the last call, per RAM region, in region order; clears the log.</summary>
    IReadOnlyList<DirtyBitmap> TakeDirtyLog();
}
