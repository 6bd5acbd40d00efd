using SharpVM.Interop.Kvm;

namespace SharpVM.Hypervisor.Kvm;

/// <summary>
/// The GSI routing of a PC whose ACPI MADT says "ISA IRQ0 is GSI 2" (as SharpVM's does, and every PC
/// BIOS): GSI 0 (where the in-kernel PIT raises its interrupt) goes to PIC pin 0 and IOAPIC pin 2;
/// GSIs 1-15 go to the PIC pin and the IOAPIC pin of the same number, except GSI 2, which has no route
/// (PIC pin 2 is the cascade, IOAPIC pin 2 is IRQ0's); GSIs 16-23 go to the IOAPIC alone.
/// KVM's default table after KVM_CREATE_IRQCHIP maps GSI n to IOAPIC pin n for every n, so without
/// this the PIT would tick on pin 0, which Linux never unmasks for the timer once the MADT names pin 2.
/// QEMU's kvm_pc_setup_irq_routing builds the same table.
/// </summary>
public static class PcIrqRouting
{
    public const int IoapicPins = 24;

    public static KvmIrqRoutingEntry[] Entries()
    {
        var routes = new List<KvmIrqRoutingEntry>(40);
        for (uint gsi = 0; gsi < 16; gsi++)
        {
            if (gsi == 2) continue; // the slave PIC's cascade input, and IOAPIC pin 2 is IRQ0's
            routes.Add(Irqchip(gsi, gsi < 8 ? KvmIrqRoutingEntry.IrqchipPicMaster : KvmIrqRoutingEntry.IrqchipPicSlave, gsi % 8));
        }
        for (uint gsi = 0; gsi < IoapicPins; gsi++)
        {
            if (gsi == 2) continue;
            routes.Add(Irqchip(gsi, KvmIrqRoutingEntry.IrqchipIoapic, gsi == 0 ? 2u : gsi));
        }
        return routes.ToArray();
    }

    private static KvmIrqRoutingEntry Irqchip(uint gsi, uint chip, uint pin) => new()
    {
        Gsi = gsi, Type = KvmIrqRoutingEntry.TypeIrqchip, IrqchipOrAddressLo = chip, PinOrAddressHi = pin,
    };
}
