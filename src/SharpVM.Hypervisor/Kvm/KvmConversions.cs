using System.Runtime.CompilerServices;
using SharpVM.Interop.Kvm;

namespace SharpVM.Hypervisor.Kvm;

/// <summary>Between the backend-neutral register records and KVM's structs.</summary>
internal static class KvmConversions
{
    // Registers and kvm_regs are both 18 consecutive u64s in the same order (checked by a test).
    public static Registers ToRegisters(in KvmRegs r) => Unsafe.BitCast<KvmRegs, Registers>(r);
    public static KvmRegs ToKvm(in Registers r) => Unsafe.BitCast<Registers, KvmRegs>(r);

    public static Segment ToSegment(in KvmSegment s) => new()
    {
        Base = s.Base, Limit = s.Limit, Selector = s.Selector, Type = s.Type, Present = s.Present != 0,
        Dpl = s.Dpl, Db = s.Db != 0, S = s.S != 0, L = s.L != 0, G = s.G != 0, Avl = s.Avl != 0,
        Unusable = s.Unusable != 0,
    };

    public static KvmSegment ToKvm(in Segment s) => new()
    {
        Base = s.Base, Limit = s.Limit, Selector = s.Selector, Type = s.Type, Present = B(s.Present),
        Dpl = s.Dpl, Db = B(s.Db), S = B(s.S), L = B(s.L), G = B(s.G), Avl = B(s.Avl), Unusable = B(s.Unusable),
    };

    private static byte B(bool b) => b ? (byte)1 : (byte)0;

    public static SpecialRegisters ToSpecialRegisters(in KvmSregs s) => new()
    {
        Cs = ToSegment(s.Cs), Ds = ToSegment(s.Ds), Es = ToSegment(s.Es), Fs = ToSegment(s.Fs),
        Gs = ToSegment(s.Gs), Ss = ToSegment(s.Ss), Tr = ToSegment(s.Tr), Ldt = ToSegment(s.Ldt),
        Gdt = new DescriptorTable { Base = s.Gdt.Base, Limit = s.Gdt.Limit },
        Idt = new DescriptorTable { Base = s.Idt.Base, Limit = s.Idt.Limit },
        Cr0 = s.Cr0, Cr2 = s.Cr2, Cr3 = s.Cr3, Cr4 = s.Cr4, Cr8 = s.Cr8, Efer = s.Efer, ApicBase = s.ApicBase,
    };

    /// <summary>Applies <paramref name="r"/> onto <paramref name="s"/>, keeping KVM's pending-interrupt bitmap.</summary>
    public static void Apply(in SpecialRegisters r, ref KvmSregs s)
    {
        s.Cs = ToKvm(r.Cs); s.Ds = ToKvm(r.Ds); s.Es = ToKvm(r.Es); s.Fs = ToKvm(r.Fs);
        s.Gs = ToKvm(r.Gs); s.Ss = ToKvm(r.Ss); s.Tr = ToKvm(r.Tr); s.Ldt = ToKvm(r.Ldt);
        s.Gdt = new KvmDtable { Base = r.Gdt.Base, Limit = r.Gdt.Limit };
        s.Idt = new KvmDtable { Base = r.Idt.Base, Limit = r.Idt.Limit };
        s.Cr0 = r.Cr0; s.Cr2 = r.Cr2; s.Cr3 = r.Cr3; s.Cr4 = r.Cr4; s.Cr8 = r.Cr8; s.Efer = r.Efer; s.ApicBase = r.ApicBase;
    }

    private const uint CpuidFlagSignificantIndex = 1;

    public static CpuidEntry ToCpuidEntry(KvmCpuidEntry2 e) =>
        new(e.Function, e.Index, e.Eax, e.Ebx, e.Ecx, e.Edx, (e.Flags & CpuidFlagSignificantIndex) != 0);

    public static KvmCpuidEntry2 ToKvm(CpuidEntry e) => new()
    {
        Function = e.Function, Index = e.Index, Flags = e.Indexed ? CpuidFlagSignificantIndex : 0,
        Eax = e.Eax, Ebx = e.Ebx, Ecx = e.Ecx, Edx = e.Edx,
    };
}
