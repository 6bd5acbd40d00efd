namespace SharpVM.Devices.Legacy;

/// <summary>A machine-level request made by the guest through a legacy device.</summary>
public enum PlatformEvent
{
    /// <summary>The guest asked to be switched off (ACPI S5).</summary>
    PowerOff,

    /// <summary>The guest asked for a system reset (0xCF9, i8042 0xFE, FADT reset register, port 0x92).</summary>
    Reset,
}

/// <summary>An <see cref="IInterruptLine"/> that goes nowhere: for devices whose IRQ is not wired.</summary>
public sealed class NullInterruptLine : IInterruptLine
{
    public static readonly NullInterruptLine Instance = new();
    public void SetLevel(bool asserted) { }
}
