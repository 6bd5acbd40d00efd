namespace SharpVM.Devices.Interrupts;

/// <summary>
/// The legacy INTR wire into a local APIC's LINT0 pin: the 8259 pair. The local APIC polls it instead
/// of latching its level, so the PIC never calls into the APIC while holding its own lock.
/// </summary>
public interface IExtIntSource
{
    /// <summary>True while the PIC asserts INTR (an unmasked request outranks what is in service).</summary>
    bool InterruptRequested { get; }

    /// <summary>The INTA cycle: returns the vector (the PIC's spurious IRQ7 vector if the request went away).</summary>
    int AcknowledgeInterrupt();

    /// <summary>Raised (outside the PIC's lock) when INTR may have gone high, to wake a halted CPU.</summary>
    event Action? InterruptRequestRaised;
}
