namespace SharpVM.Hypervisor;

/// <summary>
/// One virtual CPU. All methods except <see cref="RequestExit"/> must be called on the thread that
/// runs the vCPU (KVM requires it, and the emulator relies on it).
/// </summary>
public interface IVcpu : IDisposable
{
    int Id { get; }

    /// <summary>
    /// Runs guest code until something the VMM must decide on happens. Port and MMIO accesses are
    /// handed to <paramref name="io"/> on this thread and do not return from Run.
    /// </summary>
    VcpuExit Run(IVcpuIoHandler io);

    /// <summary>
    /// From any thread: makes the current or next <see cref="Run"/> return
    /// <see cref="VcpuExitReason.Interrupted"/> promptly, even if the guest spins.
    /// </summary>
    void RequestExit();

    /// <summary>
    /// Makes an application processor runnable at the registers set, as if INIT/SIPI had started it
    /// (test guests and direct boots; Linux starts its APs itself).
    /// </summary>
    void MakeRunnable() { }

    /// <summary>
    /// Sets what a PC's firmware leaves behind for a kernel entered directly: local APIC LINT0 =
    /// ExtINT and LINT1 = NMI, MTRRs on with write-back default, fast strings, x87/SSE control words
    /// at their reset values. Call on the vCPU's thread before it first runs; a backend whose reset
    /// state already is that does nothing.
    /// </summary>
    void ApplyFirmwareState() { }

    /// <summary>Prepares the calling thread to run this vCPU (signal masks and the like). Call once, on the vCPU thread.</summary>
    void AttachToCurrentThread();

    Registers GetRegisters();
    void SetRegisters(in Registers registers);
    SpecialRegisters GetSpecialRegisters();
    void SetSpecialRegisters(in SpecialRegisters registers);

    /// <summary>Reads model-specific registers; unknown ones come back as null.</summary>
    ulong? GetMsr(uint index);
    void SetMsr(uint index, ulong value);

    /// <summary>The CPUID leaves the guest sees.</summary>
    void SetCpuid(IReadOnlyList<CpuidEntry> entries);

    /// <summary>Translates a guest-virtual address with the guest's current page tables; null if unmapped.</summary>
    ulong? Translate(ulong linearAddress);
}
