using SharpVM.Hypervisor;
using SharpVM.Memory;

namespace SharpVM.Vmm.X86;

/// <summary>
/// Puts a vCPU straight into real, protected or long mode with flat segments, the way a VMM does
/// before jumping to a kernel entry point: it writes a GDT, a TSS and (for long mode) identity-mapped
/// page tables for the first 4 GiB into guest RAM, and returns the special registers to load.
/// </summary>
public static class GuestCpuSetup
{
    // Selectors in the GDT this class writes. Linux's 64-bit boot protocol wants __BOOT_CS=0x10, __BOOT_DS=0x18.
    public const ushort Code32Selector = 0x08, Code64Selector = 0x10, DataSelector = 0x18,
        UserData32Selector = 0x20 | 3, UserDataSelector = 0x28 | 3, UserCode64Selector = 0x30 | 3, TssSelector = 0x38;

    public const ulong Cr0Pe = 1, Cr0Mp = 2, Cr0Et = 0x10, Cr0Ne = 0x20, Cr0Wp = 0x1_0000, Cr0Pg = 0x8000_0000;
    public const ulong Cr4Pae = 0x20, Cr4Pge = 0x80, Cr4Osfxsr = 0x200, Cr4Osxmmexcpt = 0x400;
    public const ulong EferSce = 1, EferLme = 0x100, EferLma = 0x400, EferNxe = 0x800;

    /// <summary>Where the tables go: a GDT page, a TSS page, and 6 pages of page tables (PML4, PDPT, 4 PDs).</summary>
    public sealed record Layout(ulong GdtAddress = 0x1000, ulong TssAddress = 0x2000, ulong PageTablesAddress = 0x9000, ulong Tss0Stack = 0x8000);

    /// <summary>Real mode with CS:IP pointing at <paramref name="codeAddress"/> (below 1 MiB).</summary>
    public static SpecialRegisters RealMode(SpecialRegisters current, ulong codeAddress)
    {
        var s = current;
        s.Cs = RealSegment((ushort)(codeAddress >> 4));
        s.Ds = s.Es = s.Fs = s.Gs = s.Ss = RealSegment(0);
        s.Cr0 = Cr0Et;
        s.Cr4 = 0;
        s.Efer = 0;
        return s;
    }

    private static Segment RealSegment(ushort selector) => new()
    {
        Base = (ulong)selector << 4, Limit = 0xFFFF, Selector = selector, Type = 3, Present = true, S = true,
    };

    /// <summary>32-bit protected mode, flat 4 GiB segments, paging off.</summary>
    public static SpecialRegisters ProtectedMode(GuestMemory memory, SpecialRegisters current, Layout? layout = null)
    {
        layout ??= new Layout();
        WriteGdt(memory, layout);
        var s = current;
        s.Cs = Descriptor(Code32Selector, type: 0xB, code: true, longMode: false, dpl: 0);
        s.Ds = s.Es = s.Fs = s.Gs = s.Ss = Descriptor(DataSelector, type: 3, code: false, longMode: false, dpl: 0);
        s.Tr = TaskSegment(layout);
        s.Gdt = new DescriptorTable { Base = layout.GdtAddress, Limit = GdtLimit };
        s.Cr0 = Cr0Pe | Cr0Et | Cr0Ne;
        s.Cr4 = 0;
        s.Efer = 0;
        return s;
    }

    /// <summary>64-bit long mode at CPL0, identity paging of the first 4 GiB with 2 MiB pages.</summary>
    public static SpecialRegisters LongMode(GuestMemory memory, SpecialRegisters current, Layout? layout = null)
    {
        layout ??= new Layout();
        WriteGdt(memory, layout);
        WriteIdentityPageTables(memory, layout.PageTablesAddress);
        var s = current;
        s.Cs = Descriptor(Code64Selector, type: 0xB, code: true, longMode: true, dpl: 0);
        s.Ds = s.Es = s.Fs = s.Gs = s.Ss = Descriptor(DataSelector, type: 3, code: false, longMode: true, dpl: 0);
        s.Tr = TaskSegment(layout);
        s.Gdt = new DescriptorTable { Base = layout.GdtAddress, Limit = GdtLimit };
        s.Cr3 = layout.PageTablesAddress;
        s.Cr4 = Cr4Pae | Cr4Osfxsr | Cr4Osxmmexcpt;
        s.Cr0 = Cr0Pe | Cr0Mp | Cr0Et | Cr0Ne | Cr0Wp | Cr0Pg;
        s.Efer = EferLme | EferLma | EferSce | EferNxe;
        return s;
    }

    private const ushort GdtLimit = 8 * 9 - 1;

    private static void WriteGdt(GuestMemory memory, Layout layout)
    {
        var gdt = new GuestAddress(layout.GdtAddress);
        memory.Write(gdt + 0x00, 0UL);
        memory.Write(gdt + Code32Selector, 0x00CF_9B00_0000_FFFFUL);        // 32-bit code, DPL0
        memory.Write(gdt + Code64Selector, 0x00AF_9B00_0000_FFFFUL);        // 64-bit code, DPL0
        memory.Write(gdt + DataSelector, 0x00CF_9300_0000_FFFFUL);          // data, DPL0
        memory.Write(gdt + (UserData32Selector & ~3UL), 0x00CF_F300_0000_FFFFUL); // data, DPL3 (unused slot kept for SYSRET's layout)
        memory.Write(gdt + (UserDataSelector & ~3UL), 0x00CF_F300_0000_FFFFUL);   // data, DPL3
        memory.Write(gdt + (UserCode64Selector & ~3UL), 0x00AF_FB00_0000_FFFFUL); // 64-bit code, DPL3
        // A 64-bit TSS descriptor takes two slots.
        ulong tss = layout.TssAddress;
        const ulong tssLimit = 0x67;
        ulong low = tssLimit | ((tss & 0xFF_FFFF) << 16) | (0x89UL << 40) | (((tss >> 24) & 0xFF) << 56);
        memory.Write(gdt + TssSelector, low);
        memory.Write(gdt + TssSelector + 8, tss >> 32);
        // RSP0 in the 64-bit TSS: the stack an interrupt from CPL3 switches to.
        memory.GetWritableSpan(new GuestAddress(tss), 0x68).Clear();
        memory.Write(new GuestAddress(tss + 4), layout.Tss0Stack);
        memory.Write(new GuestAddress(tss + 0x66), (ushort)0x68); // I/O map base beyond the limit: no bitmap
    }

    private static Segment TaskSegment(Layout layout) => new()
    {
        Base = layout.TssAddress, Limit = 0x67, Selector = TssSelector, Type = 0xB, Present = true,
    };

    private static Segment Descriptor(ushort selector, byte type, bool code, bool longMode, byte dpl) => new()
    {
        Base = 0, Limit = 0xFFFF_FFFF, Selector = selector, Type = type, Present = true, S = true, Dpl = dpl,
        L = code && longMode, Db = !(code && longMode), G = true,
    };

    /// <summary>PML4 → one PDPT → four page directories of 2 MiB pages: virtual = physical below 4 GiB.</summary>
    public static void WriteIdentityPageTables(GuestMemory memory, ulong address)
    {
        const ulong present = 1, writable = 2, user = 4, large = 0x80;
        var pml4 = new GuestAddress(address);
        var pdpt = pml4 + 0x1000;
        memory.GetWritableSpan(pml4, 6 * 0x1000).Clear();
        memory.Write(pml4, pdpt.Value | present | writable | user);
        for (ulong i = 0; i < 4; i++)
        {
            var pd = pdpt + 0x1000 * (i + 1);
            memory.Write(pdpt + i * 8, pd.Value | present | writable | user);
            for (ulong j = 0; j < 512; j++)
                memory.Write(pd + j * 8, ((i * 512 + j) << 21) | present | writable | user | large);
        }
    }
}
