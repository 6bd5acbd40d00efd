using SharpVM.Devices.Bus;

namespace SharpVM.Devices.Legacy;

/// <summary>Snapshot state of every device in a <see cref="LegacyPlatform"/>.</summary>
public sealed record LegacyPlatformState(
    Serial16550State Com1, I8042State I8042, CmosState Cmos, PciHostBridgeState PciHost, AcpiPmDeviceState AcpiPm,
    SystemControlPortAState Port92, IgnoredPortsState IgnoredPorts);

/// <summary>
/// The PC legacy devices SharpVM gives a Linux guest, created and claimed at their standard ports in
/// one call: COM1 (0x3F8, IRQ 4), i8042 (0x60/0x64, IRQ 1/12), CMOS/RTC (0x70-0x71), PCI host bridge
/// (0xCF8-0xCFF, with the reset control register at 0xCF9), ACPI PM (0x600-0x60B, SCI IRQ 9),
/// port 0x92 and the quietly ignored ports (0x80, 0x87, 0xED). The PIT, PICs, ELCR and speaker port
/// (0x40-0x43, 0x20/0x21, 0xA0/0xA1, 0x4D0/0x4D1, 0x61) belong to the interrupt/timer devices.
/// </summary>
public sealed class LegacyPlatform
{
    public required Serial16550 Com1 { get; init; }
    public required I8042 I8042 { get; init; }
    public required Cmos Cmos { get; init; }
    public required PciBus PciBus { get; init; }
    public required PciHostBridge PciHost { get; init; }
    public required AcpiPmDevice AcpiPm { get; init; }
    public required SystemControlPortA Port92 { get; init; }
    public required IgnoredPorts IgnoredPorts { get; init; }

    /// <param name="bus">The port I/O bus to claim the ports on.</param>
    /// <param name="irq">The platform's interrupt line for an ISA IRQ / GSI number (1, 4, 9, 12 are asked for).</param>
    /// <param name="platformEvent">Called (on a vCPU thread) when the guest powers off or resets.</param>
    /// <param name="serialOutput">Receives COM1's output.</param>
    /// <param name="ramBytes">Guest RAM size, for the CMOS memory fields.</param>
    /// <param name="lowRamEnd">End of RAM below 4 GiB.</param>
    public static LegacyPlatform Create(PioBus bus, Func<int, IInterruptLine> irq, Action<PlatformEvent> platformEvent,
        Action<ReadOnlySpan<byte>> serialOutput, ulong ramBytes, ulong lowRamEnd)
    {
        var pm = new AcpiPmDevice(irq(AcpiPmDevice.DefaultSciIrq), platformEvent);
        var pciBus = new PciBus();
        var platform = new LegacyPlatform
        {
            Com1 = new Serial16550(irq(Serial16550.Com1Irq), serialOutput),
            I8042 = new I8042(platformEvent, irq(I8042.KeyboardIrq), irq(I8042.AuxIrq)),
            Cmos = new Cmos(ramBytes, lowRamEnd),
            PciBus = pciBus,
            PciHost = new PciHostBridge(pciBus, pm.ResetControl),
            AcpiPm = pm,
            Port92 = new SystemControlPortA(platformEvent),
            IgnoredPorts = new IgnoredPorts(),
        };
        platform.Com1.Attach(bus);
        platform.I8042.Attach(bus);
        platform.Cmos.Attach(bus);
        platform.PciHost.Attach(bus);
        platform.AcpiPm.Attach(bus);
        platform.Port92.Attach(bus);
        platform.IgnoredPorts.AttachDefaults(bus);
        return platform;
    }

    public LegacyPlatformState SaveState() => new(Com1.SaveState(), I8042.SaveState(), Cmos.SaveState(), PciHost.SaveState(),
        AcpiPm.SaveState(), Port92.SaveState(), IgnoredPorts.SaveState());

    public void RestoreState(LegacyPlatformState s)
    {
        Com1.RestoreState(s.Com1);
        I8042.RestoreState(s.I8042);
        Cmos.RestoreState(s.Cmos);
        PciHost.RestoreState(s.PciHost);
        AcpiPm.RestoreState(s.AcpiPm);
        Port92.RestoreState(s.Port92);
        IgnoredPorts.RestoreState(s.IgnoredPorts);
    }
}
