namespace SharpVM.Hypervisor;

/// <summary>General-purpose registers, RIP and RFLAGS (backend-neutral; KVM's kvm_regs has the same order).</summary>
public struct Registers
{
    public ulong Rax, Rbx, Rcx, Rdx, Rsi, Rdi, Rsp, Rbp;
    public ulong R8, R9, R10, R11, R12, R13, R14, R15;
    public ulong Rip, Rflags;
}

/// <summary>A segment register with its hidden descriptor part.</summary>
public struct Segment
{
    public ulong Base;
    public uint Limit;
    public ushort Selector;
    public byte Type;
    public bool Present, Db, S, L, G, Avl, Unusable;
    public byte Dpl;

    /// <summary>A flat code/data segment as long-mode or protected-mode boot code sets it up.</summary>
    public static Segment Flat(ushort selector, byte type, bool longMode, bool code) => new()
    {
        Base = 0, Limit = 0xFFFF_FFFF, Selector = selector, Type = type, Present = true, S = true,
        L = longMode && code, Db = !(longMode && code), G = true, Dpl = 0,
    };
}

/// <summary>A descriptor-table register (GDTR, IDTR).</summary>
public struct DescriptorTable
{
    public ulong Base;
    public ushort Limit;
}

/// <summary>Segments, control registers and EFER.</summary>
public struct SpecialRegisters
{
    public Segment Cs, Ds, Es, Fs, Gs, Ss, Tr, Ldt;
    public DescriptorTable Gdt, Idt;
    public ulong Cr0, Cr2, Cr3, Cr4, Cr8, Efer, ApicBase;
}

/// <summary>One CPUID leaf/subleaf and what it returns.</summary>
public readonly record struct CpuidEntry(uint Function, uint Index, uint Eax, uint Ebx, uint Ecx, uint Edx, bool Indexed = false);
