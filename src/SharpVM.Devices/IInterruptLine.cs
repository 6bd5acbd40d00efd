namespace SharpVM.Devices;

/// <summary>
/// An interrupt input of the platform (a GSI). On KVM it is KVM_IRQ_LINE or an irqfd into the
/// in-kernel irqchip; on the emulated CPU it is SharpVM's own PIC/IOAPIC. Devices only see this.
/// </summary>
public interface IInterruptLine
{
    /// <summary>Drives a level-triggered line high or low.</summary>
    void SetLevel(bool asserted);

    /// <summary>An edge: raise then lower (for edge-triggered sources such as the legacy ISA devices).</summary>
    void Pulse()
    {
        SetLevel(true);
        SetLevel(false);
    }
}
