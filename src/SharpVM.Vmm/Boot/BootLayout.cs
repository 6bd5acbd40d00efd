using SharpVM.Memory;

namespace SharpVM.Vmm.Boot;

/// <summary>
/// Where the Linux boot structures live in guest-physical memory, in one place. Everything below
/// 1 MiB is left alone by Linux (it reserves the first megabyte), so the boot-time GDT, page tables
/// and zero page can sit there without being overwritten before the kernel builds its own.
/// </summary>
public static class BootLayout
{
    /// <summary>Boot GDT: null, null, __BOOT_CS (0x10), __BOOT_DS (0x18), a 64-bit TSS (0x20).</summary>
    public static readonly GuestAddress Gdt = new(0x500);
    public const ushort GdtLimit = 6 * 8 - 1;
    public const ushort BootCs = 0x10, BootDs = 0x18, BootTss = 0x20;

    /// <summary>The zero page (struct boot_params); RSI points here at entry.</summary>
    public static readonly GuestAddress ZeroPage = new(0x7000);

    /// <summary>An initial stack pointer (the kernel sets up its own at once).</summary>
    public static readonly GuestAddress StackTop = new(0x8FF0);

    /// <summary>Identity-mapping page tables for the first 4 GiB: PML4, PDPT and four page directories of 2 MiB pages.</summary>
    public static readonly GuestAddress Pml4 = new(0x9000);
    public static readonly GuestAddress Pdpt = new(0xA000);
    public static readonly GuestAddress PageDirectories = new(0xB000);

    /// <summary>The kernel command line, NUL-terminated.</summary>
    public static readonly GuestAddress CommandLine = new(0x20000);
    public const int CommandLineMax = 0x10000;

    /// <summary>The setup_data list (one SETUP_RNG_SEED entry), right after the command line's area.</summary>
    public static readonly GuestAddress SetupData = new(0x30000);

    /// <summary>Extended BIOS data area: reserved in the e820 map, up to the VGA hole.</summary>
    public static readonly GuestAddress EbdaStart = new(0x9FC00);
    public static readonly GuestAddress VgaHoleStart = new(0xA0000);

    /// <summary>The BIOS area 0xE0000-0xFFFFF: holds the ACPI RSDP (found by Linux's scan) and tables.</summary>
    public static readonly GuestAddress BiosAreaStart = new(0xE0000);
    public static readonly GuestAddress BiosAreaEnd = new(0x100000);

    /// <summary>Start of "high" memory, where bzImage kernels without pref_address are loaded.</summary>
    public static readonly GuestAddress HighMemory = new(0x100000);

    /// <summary>
    /// Platform devices at the top of the 32-bit hole (IOAPIC 0xFEC00000, local APIC 0xFEE00000,
    /// firmware area): reserved in the e820 map. The rest of the hole, from
    /// <see cref="MemoryLayout.MmioHoleStart"/> up to here, is left as a gap: it is the PCI MMIO window,
    /// and Linux only places device BARs in gaps of the e820 map.
    /// </summary>
    public const ulong PlatformReservedStart = 0xFEC0_0000;
    public const ulong IoApicAddress = 0xFEC0_0000;
    public const ulong LocalApicAddress = 0xFEE0_0000;

    public const ulong PciMmioWindowStart = MemoryLayout.MmioHoleStart;
    public const ulong PciMmioWindowEnd = PlatformReservedStart;
}
