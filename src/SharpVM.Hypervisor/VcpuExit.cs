namespace SharpVM.Hypervisor;

/// <summary>Why <see cref="IVcpu.Run"/> returned.</summary>
public enum VcpuExitReason
{
    /// <summary>HLT with interrupts that cannot wake it (or an in-kernel irqchip absent).</summary>
    Halt,
    /// <summary>Triple fault or another reset-class shutdown.</summary>
    Shutdown,
    /// <summary>The guest asked the platform to power off, reset or crash (KVM_EXIT_SYSTEM_EVENT, ACPI).</summary>
    SystemEvent,
    /// <summary>The hypervisor could not enter the guest (invalid state).</summary>
    FailEntry,
    /// <summary>The backend failed: emulation failure, unhandled instruction, and the like.</summary>
    InternalError,
    /// <summary><see cref="IVcpu.RequestExit"/> was called.</summary>
    Interrupted,
    /// <summary>A debug exit (breakpoint, single step).</summary>
    Debug,
    /// <summary>An exit this version does not know; <see cref="VcpuExit.RawReason"/> says which.</summary>
    Unknown,
}

/// <summary>What a system event asked for.</summary>
public enum SystemEventKind { None, PowerOff, Reset, Crash }

/// <summary>An exit as a value: unknown exits are reported, never thrown.</summary>
/// <param name="Reason">The kind of exit.</param>
/// <param name="RawReason">The backend's own code (KVM_EXIT_*), for reports.</param>
/// <param name="Detail">Human-readable detail: the suberror, the failure reason.</param>
/// <param name="HardwareCode">KVM's hardware_entry_failure_reason or internal-error suberror.</param>
/// <param name="SystemEvent">For <see cref="VcpuExitReason.SystemEvent"/>.</param>
public readonly record struct VcpuExit(
    VcpuExitReason Reason,
    uint RawReason = 0,
    string? Detail = null,
    ulong HardwareCode = 0,
    SystemEventKind SystemEvent = SystemEventKind.None);
