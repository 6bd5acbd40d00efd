using System.Runtime.CompilerServices;
using Iced.Intel;

namespace SharpVM.Cpu;

public sealed partial class EmulatorVcpu
{
    /// <summary>
    /// The most executed fast-path forms (64/32-bit MOV, MOVZX, ALU, LEA, INC/DEC, shifts by an immediate,
    /// SETcc, 64-bit CMOVcc, MOVSXD, JMP/Jcc/CALL/RET, PUSH/POP and the fused compare-and-branch), inlined
    /// into the block loop so they cost one switch and no call; false for everything else, which goes on to
    /// <see cref="ExecFast"/>. Profiling the boot showed the call into the large ExecFast (its prologue and
    /// epilogue) costing about as much as the switch itself.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool ExecHot(ref DInsn d, ref ulong regs)
    {
        switch (d.Op)
        {
            case FastOp.MovRR64: Reg(ref regs, d.Dst) = Reg(ref regs, d.Src); return true;
            case FastOp.MovRM64: Reg(ref regs, d.Dst) = Read(FastLinear(ref d, ref regs), 8); return true;
            case FastOp.MovMR64: Write(FastLinear(ref d, ref regs), 8, Reg(ref regs, d.Src)); return true;
            case FastOp.MovRI64: Reg(ref regs, d.Dst) = d.Imm; return true;
            case FastOp.AluRR64:
            {
                ulong r = Alu64(d.Alu, Reg(ref regs, d.Dst), Reg(ref regs, d.Src));
                if (d.Alu < OpCmp) Reg(ref regs, d.Dst) = r;
                return true;
            }
            case FastOp.AluRI64:
            {
                ulong r = Alu64(d.Alu, Reg(ref regs, d.Dst), d.Imm);
                if (d.Alu < OpCmp) Reg(ref regs, d.Dst) = r;
                return true;
            }
            case FastOp.AluRM64:
            {
                ulong r = Alu64(d.Alu, Reg(ref regs, d.Dst), Read(FastLinear(ref d, ref regs), 8));
                if (d.Alu < OpCmp) Reg(ref regs, d.Dst) = r;
                return true;
            }
            case FastOp.Lea64: Reg(ref regs, d.Dst) = FastAddr(ref d, ref regs); return true;
            case FastOp.MovRR32: Reg(ref regs, d.Dst) = (uint)Reg(ref regs, d.Src); return true;
            case FastOp.MovRM32: Reg(ref regs, d.Dst) = (uint)Read(FastLinear(ref d, ref regs), 4); return true;
            case FastOp.MovMR32: Write(FastLinear(ref d, ref regs), 4, (uint)Reg(ref regs, d.Src)); return true;
            case FastOp.MovRI32: Reg(ref regs, d.Dst) = (uint)d.Imm; return true;
            case FastOp.AluRR32:
            {
                uint r = Alu32(d.Alu, (uint)Reg(ref regs, d.Dst), (uint)Reg(ref regs, d.Src));
                if (d.Alu < OpCmp) Reg(ref regs, d.Dst) = r;
                return true;
            }
            case FastOp.AluRI32:
            {
                uint r = Alu32(d.Alu, (uint)Reg(ref regs, d.Dst), (uint)d.Imm);
                if (d.Alu < OpCmp) Reg(ref regs, d.Dst) = r;
                return true;
            }
            case FastOp.Jcc:
                if (Cond((ConditionCode)d.Alu)) { Rip = d.Imm; _endBlock = true; }
                return true;
            case FastOp.IncR64: IncDecRegister64(ref Reg(ref regs, d.Dst), dec: false); return true;
            case FastOp.DecR64: IncDecRegister64(ref Reg(ref regs, d.Dst), dec: true); return true;
            case FastOp.IncR32: IncDecRegister32(ref Reg(ref regs, d.Dst), dec: false); return true;
            case FastOp.DecR32: IncDecRegister32(ref Reg(ref regs, d.Dst), dec: true); return true;
            case FastOp.Jmp: Rip = d.Imm; _endBlock = true; return true;
            case FastOp.Call:
            {
                ulong sp = Reg(ref regs, 4) - 8;
                Write(sp, 8, d.NextIp);
                Reg(ref regs, 4) = sp;
                Rip = d.Imm;
                _endBlock = true;
                return true;
            }
            case FastOp.Ret:
            {
                ulong sp = Reg(ref regs, 4);
                Rip = Read(sp, 8);
                Reg(ref regs, 4) = sp + 8;
                _endBlock = true;
                return true;
            }
            case FastOp.Push:
            {
                ulong v = Reg(ref regs, d.Dst);
                ulong sp = Reg(ref regs, 4) - 8;
                Write(sp, 8, v);
                Reg(ref regs, 4) = sp;
                return true;
            }
            case FastOp.Pop:
            {
                ulong sp = Reg(ref regs, 4);
                ulong v = Read(sp, 8);
                Reg(ref regs, 4) = sp + 8;
                Reg(ref regs, d.Dst) = v;
                return true;
            }
            case FastOp.ShiftRI64:
            {
                int c = (int)(d.Imm & 63);
                if (c != 0) ShiftRegister64(ref Reg(ref regs, d.Dst), d.Alu, c);
                return true;
            }
            case FastOp.MovzxRRWide: Reg(ref regs, d.Dst) = GetR(d.Src, d.SrcHigh, (int)d.Imm); return true;
            case FastOp.MovzxRMWide: Reg(ref regs, d.Dst) = Read(FastLinear(ref d, ref regs), (int)d.Imm); return true;
            case FastOp.SetccR: SetR(d.Dst, d.DstHigh, 1, Cond((ConditionCode)d.Alu) ? 1UL : 0); return true;
            case FastOp.CmovRR64:
                if (Cond((ConditionCode)d.Alu)) Reg(ref regs, d.Dst) = Reg(ref regs, d.Src);
                return true;
            case FastOp.CmovRM64:
            {
                // The memory operand is read whatever the condition (it may fault), as on hardware.
                ulong v = Read(FastLinear(ref d, ref regs), 8);
                if (Cond((ConditionCode)d.Alu)) Reg(ref regs, d.Dst) = v;
                return true;
            }
            case FastOp.MovsxdRR: Reg(ref regs, d.Dst) = (ulong)(long)(int)Reg(ref regs, d.Src); return true;
            case FastOp.MovsxdRM: Reg(ref regs, d.Dst) = (ulong)(long)(int)Read(FastLinear(ref d, ref regs), 4); return true;
            case FastOp.AluJccRR64:
            {
                ulong r = Alu64(d.Alu, Reg(ref regs, d.Dst), Reg(ref regs, d.Src));
                if (d.Alu < OpCmp) Reg(ref regs, d.Dst) = r;
                Rip = Cond((ConditionCode)d.Cc) ? d.Target : d.JccNext;
                return true;
            }
            case FastOp.AluJccRI64:
            {
                ulong r = Alu64(d.Alu, Reg(ref regs, d.Dst), d.Imm);
                if (d.Alu < OpCmp) Reg(ref regs, d.Dst) = r;
                Rip = Cond((ConditionCode)d.Cc) ? d.Target : d.JccNext;
                return true;
            }
            case FastOp.AluJccRR32:
            {
                uint r = Alu32(d.Alu, (uint)Reg(ref regs, d.Dst), (uint)Reg(ref regs, d.Src));
                if (d.Alu < OpCmp) Reg(ref regs, d.Dst) = r;
                Rip = Cond((ConditionCode)d.Cc) ? d.Target : d.JccNext;
                return true;
            }
            case FastOp.AluJccRI32:
            {
                uint r = Alu32(d.Alu, (uint)Reg(ref regs, d.Dst), (uint)d.Imm);
                if (d.Alu < OpCmp) Reg(ref regs, d.Dst) = r;
                Rip = Cond((ConditionCode)d.Cc) ? d.Target : d.JccNext;
                return true;
            }
            case FastOp.AluJccRM64:
            {
                ulong r = Alu64(d.Alu, Reg(ref regs, d.Dst), Read(FastLinear(ref d, ref regs), 8));
                if (d.Alu < OpCmp) Reg(ref regs, d.Dst) = r;
                Rip = Cond((ConditionCode)d.Cc) ? d.Target : d.JccNext;
                return true;
            }
            case FastOp.AluJccRR:
            case FastOp.AluJccRI:
            {
                int sz = d.Size;
                ulong src = d.Op == FastOp.AluJccRR ? GetR(d.Src, d.SrcHigh, sz) : d.Imm;
                ulong r = Alu(d.Alu, GetR(d.Dst, d.DstHigh, sz), src, sz);
                if (d.Alu < OpCmp) SetR(d.Dst, d.DstHigh, sz, r);
                Rip = Cond((ConditionCode)d.Cc) ? d.Target : d.JccNext;
                return true;
            }
            default:
                return false;
        }
    }

    // Handlers shared by the block loop and the translator's templates (which call them with constant arguments).

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void IncDecRegister64(ref ulong g, bool dec)
    {
        ulong a = g, r = dec ? a - 1 : a + 1;
        SetLazy(dec ? LazyDec : LazyInc, a, CarryFlag(), r, 8);
        g = r;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void IncDecRegister32(ref ulong g, bool dec)
    {
        uint a = (uint)g, r = dec ? a - 1 : a + 1;
        SetLazy(dec ? LazyDec : LazyInc, a, CarryFlag(), r, 4);
        g = r;
    }

    /// <summary>SHL (kind 0), SHR (1) or SAR (2) of a 64-bit register by a count of 1-63.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void ShiftRegister64(ref ulong g, int kind, int count)
    {
        ulong a = g, r;
        bool cf, of;
        switch (kind)
        {
            case 0: r = a << count; cf = ((a >> (64 - count)) & 1) != 0; of = ((r >> 63) != 0) ^ cf; break;
            case 1: r = a >> count; cf = ((a >> (count - 1)) & 1) != 0; of = count == 1 && (a >> 63) != 0; break;
            default: r = (ulong)((long)a >> count); cf = (((long)a >> (count - 1)) & 1) != 0; of = false; break;
        }
        SetSzp(r, 8, (cf ? Flags.CF : 0) | (of ? Flags.OF : 0));
        g = r;
    }

    /// <summary>
    /// 64-bit two-operand IMUL into a register. The signed high half comes from the unsigned product (a MULX, inlined;
    /// the signed BigMul is not): subtract each operand where the other one is negative.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void ImulRegister64(ref ulong dst, ulong b)
    {
        ulong a = dst;
        ulong hu = Math.BigMul(a, b, out ulong l);
        ulong h = hu - ((ulong)((long)a >> 63) & b) - ((ulong)((long)b >> 63) & a);
        SetSzp(l, 8, h != (ulong)((long)l >> 63) ? Flags.CF | Flags.OF : 0);
        dst = l;
    }

    // The register file as a ref hoisted out of the block loop: Gpr is a readonly field, but the JIT would
    // still reload and null-check it for every register access.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ref ulong Reg(ref ulong regs, int idx) => ref Unsafe.Add(ref regs, idx);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong FastAddr(ref DInsn d, ref ulong regs)
    {
        ulong a = d.Disp;
        if (d.Base >= 0) a += Reg(ref regs, d.Base);
        if (d.Index >= 0) a += Reg(ref regs, d.Index) << d.Scale;
        if (d.ASize != 8) a = d.ASize == 4 ? (uint)a : (ushort)a;
        return a;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong FastLinear(ref DInsn d, ref ulong regs) => Linear(d.Seg, FastAddr(ref d, ref regs));

    /// <summary>
    /// Fuses a block's closing "ALU/CMP/TEST register, register/immediate/memory; Jcc" pair into one entry (the
    /// compare's), so the pair costs one dispatch. The fused entry stays the last one, so the block loop needs
    /// no special case: the Jcc cannot fault, and the compare writes no memory and, when it reads memory and
    /// faults, does so before anything changed (FaultRip is its own address). Returns the number of entries
    /// to dispatch.
    /// </summary>
    internal static int FuseCompareAndBranch(DInsn[] d, int count)
    {
        if (count < 2 || d[count - 1].Op != FastOp.Jcc) return count;
        ref DInsn alu = ref d[count - 2];
        byte fused = alu.Op switch
        {
            FastOp.AluRR64 => FastOp.AluJccRR64,
            FastOp.AluRI64 => FastOp.AluJccRI64,
            FastOp.AluRR32 => FastOp.AluJccRR32,
            FastOp.AluRI32 => FastOp.AluJccRI32,
            FastOp.AluRM64 => FastOp.AluJccRM64,
            FastOp.AluRR => FastOp.AluJccRR,
            FastOp.AluRI => FastOp.AluJccRI,
            _ => FastOp.None,
        };
        if (fused == FastOp.None) return count;
        ref DInsn jcc = ref d[count - 1];
        alu.Op = fused;
        alu.Cc = jcc.Alu;
        alu.Target = jcc.Imm;
        alu.JccNext = jcc.NextIp;
        return count - 1;
    }
}
