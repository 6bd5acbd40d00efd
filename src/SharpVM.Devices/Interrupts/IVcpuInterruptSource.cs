namespace SharpVM.Devices.Interrupts;

/// <summary>
/// What an emulated vCPU asks its local interrupt controller between instructions. (On KVM the
/// in-kernel LAPIC does this; the emulated CPU backend uses SharpVM's own, through this interface.)
/// </summary>
public interface IVcpuInterruptSource
{
    /// <summary>True if a maskable interrupt is pending and deliverable at the current task priority.</summary>
    bool HasPendingInterrupt { get; }

    /// <summary>The CPU accepts the highest-priority pending interrupt (INTA); returns its vector.</summary>
    int AcknowledgeInterrupt();

    /// <summary>True if an NMI is pending; taking it clears it.</summary>
    bool TakePendingNmi();

    /// <summary>Called (from any thread) when an interrupt becomes pending, so a halted vCPU wakes up.</summary>
    Action? WakeUp { get; set; }
}
