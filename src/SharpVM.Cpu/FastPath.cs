using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Iced.Intel;

namespace SharpVM.Cpu;

/// <summary>
/// A pre-decoded instruction for the hot path: the common integer forms get a handler id and their
/// operands as plain register numbers, displacement and immediate, so executing them needs no Iced
/// property decoding. Everything else has <see cref="Op"/> = 0 and runs through the generic interpreter.
/// </summary>
/// <remarks>
/// 64 bytes: the byte fields share the first 16 (Cc among them; after the ulongs it cost 8 bytes of padding and made
/// the struct 72), so an entry is at most two cache lines and a block's array is smaller. Interpreting code that is not
/// hot yet is mostly waiting for these arrays to come from memory.
/// </remarks>
internal struct DInsn
{
    public byte Op;      // FastOp
    public byte Alu;     // ALU sub-operation or condition code
    public byte Size;    // operand size
    public byte ASize;   // address size
    public sbyte Dst;    // GPR number of the register operand written/read first
    public sbyte Src;    // GPR number of the second register operand
    public bool DstHigh, SrcHigh;
    public sbyte Base, Index;
    public byte Scale;   // shift
    public byte Seg;
    /// <summary>Fused compare-and-branch only (see <see cref="FastOp.AluJccRR64"/>): the Jcc's condition (its target and fall-through are <see cref="Target"/> and <see cref="JccNext"/>).</summary>
    public byte Cc;
    /// <summary>
    /// Set at decode on a 32/64-bit rotate by an immediate whose flags nothing in the block sees (FlagsLiveness): the
    /// interpreter then rotates without materializing the lazy flags first (it sits in what was padding).
    /// </summary>
    public bool FlagsDead;
    public ulong Disp;
    public ulong Imm;
    public ulong Ip, NextIp;
    public ulong Target, JccNext;
}

internal static class FastOp
{
    public const byte None = 0, MovRR = 1, MovRM = 2, MovMR = 3, MovRI = 4, MovMI = 5,
        AluRR = 6, AluRM = 7, AluMR = 8, AluRI = 9, AluMI = 10, Lea = 11, IncR = 12, DecR = 13,
        Jcc = 14, Jmp = 15, Call = 16, Ret = 17, Push = 18, Pop = 19, ShiftRI = 20, MovzxRR = 21, MovzxRM = 22,
        MovsxRR = 23, MovsxRM = 24, Nop = 25,
        // Size-specialised forms of the most common operations (no width dispatch, no masking).
        MovRR64 = 26, MovRM64 = 27, MovMR64 = 28, MovRI64 = 29, AluRR64 = 30, AluRI64 = 31, AluRM64 = 32, Lea64 = 33,
        MovRR32 = 34, AluRR32 = 35, AluRI32 = 36, MovRM32 = 37, MovMR32 = 38, MovRI32 = 39,
        IncR64 = 40, DecR64 = 41, IncR32 = 42, DecR32 = 43, ShiftRI64 = 44,
        // An ALU/CMP/TEST on registers fused with the Jcc that follows it and ends the block: one dispatch for
        // both (see EmulatorVcpu.FuseCompareAndBranch). Always the last entry of a block's DInsn array.
        AluJccRR64 = 45, AluJccRI64 = 46, AluJccRR32 = 47, AluJccRI32 = 48,
        // 64-bit two-operand IMUL (multi-precision arithmetic in the kernel's RSA code runs it by the hundred million).
        ImulRR64 = 49, ImulRM64 = 50,
        // MOVZX into a 32/64-bit register: the whole register is the zero-extended source.
        MovzxRRWide = 51, MovzxRMWide = 52,
        // More fused compare-and-branch forms: a 64-bit ALU/CMP with a memory source, and any-width register forms.
        AluJccRM64 = 53, AluJccRR = 54, AluJccRI = 55,
        // SETcc, 64-bit CMOVcc and MOVSXD (classified by PredecodeExtra, renumbered so the block loop inlines them).
        SetccR = 56, CmovRR64 = 57, CmovRM64 = 58, MovsxdRR = 59, MovsxdRM = 60;
}

public sealed unsafe partial class EmulatorVcpu
{
    private static bool IsGpr(Register r) => r != Register.None && RegTable.Index[(int)r] >= 0 && r.IsGPR();

    private static bool SetMem(ref DInsn d, in Instruction i)
    {
        if (i.IsIPRelativeMemoryOperand)
        {
            d.Base = -1; d.Index = -1;
            d.Disp = d.ASize == 4 ? (uint)i.IPRelativeMemoryAddress : i.IPRelativeMemoryAddress;
        }
        else
        {
            var b = i.MemoryBase;
            var x = i.MemoryIndex;
            if (b != Register.None && !b.IsGPR()) return false;
            if (x != Register.None && (!x.IsGPR() || RegTable.High8[(int)x])) return false;
            d.Base = b == Register.None ? (sbyte)-1 : RegTable.Index[(int)b];
            d.Index = x == Register.None ? (sbyte)-1 : RegTable.Index[(int)x];
            d.Scale = (byte)System.Numerics.BitOperations.Log2((uint)i.MemoryIndexScale);
            d.Disp = i.MemoryDisplacement64;
        }
        d.Seg = (byte)(i.MemorySegment - Register.ES);
        return true;
    }

    private static void SetDst(ref DInsn d, Register r)
    {
        d.Dst = RegTable.Index[(int)r];
        d.DstHigh = RegTable.High8[(int)r];
    }

    private static void SetSrc(ref DInsn d, Register r)
    {
        d.Src = RegTable.Index[(int)r];
        d.SrcHigh = RegTable.High8[(int)r];
    }

    private static bool IsImm(OpKind k) => k is OpKind.Immediate8 or OpKind.Immediate16 or OpKind.Immediate32 or OpKind.Immediate64
        or OpKind.Immediate8to16 or OpKind.Immediate8to32 or OpKind.Immediate8to64 or OpKind.Immediate32to64;

    /// <summary>Classifies an instruction for the fast path (see <see cref="DInsn"/>).</summary>
    internal static DInsn Predecode(in Instruction i, int osz, int asz, int bitness)
    {
        var d = PredecodeGeneric(i, osz, asz, bitness);
        if (d.Op == FastOp.None) PredecodeExtra(i, ref d, osz);
        d.Op = d.Op switch
        {
            FastOpExtra.SetccR => FastOp.SetccR,
            FastOpExtra.MovsxdRR => FastOp.MovsxdRR,
            FastOpExtra.MovsxdRM => FastOp.MovsxdRM,
            FastOpExtra.CmovRR when osz == 8 => FastOp.CmovRR64,
            FastOpExtra.CmovRM when osz == 8 => FastOp.CmovRM64,
            _ => d.Op,
        };
        if (d.Op == FastOp.MovzxRR && osz >= 4) d.Op = FastOp.MovzxRRWide;
        if (d.Op == FastOp.MovzxRM && osz >= 4) d.Op = FastOp.MovzxRMWide;
        if (d.DstHigh || d.SrcHigh) return d;
        if (osz == 8)
        {
            d.Op = d.Op switch
            {
                FastOp.MovRR => FastOp.MovRR64, FastOp.MovRM => FastOp.MovRM64, FastOp.MovMR => FastOp.MovMR64,
                FastOp.MovRI => FastOp.MovRI64, FastOp.AluRR => FastOp.AluRR64, FastOp.AluRI => FastOp.AluRI64,
                FastOp.AluRM => FastOp.AluRM64, FastOp.Lea => FastOp.Lea64, FastOp.IncR => FastOp.IncR64,
                FastOp.DecR => FastOp.DecR64, FastOp.ShiftRI => FastOp.ShiftRI64,
                FastOpExtra.ImulRR => FastOp.ImulRR64, FastOpExtra.ImulRM => FastOp.ImulRM64, _ => d.Op,
            };
        }
        else if (osz == 4)
        {
            d.Op = d.Op switch
            {
                FastOp.MovRR => FastOp.MovRR32, FastOp.AluRR => FastOp.AluRR32, FastOp.AluRI => FastOp.AluRI32,
                FastOp.MovRM => FastOp.MovRM32, FastOp.MovMR => FastOp.MovMR32, FastOp.MovRI => FastOp.MovRI32,
                FastOp.IncR => FastOp.IncR32, FastOp.DecR => FastOp.DecR32, _ => d.Op,
            };
        }
        return d;
    }

    private static DInsn PredecodeGeneric(in Instruction i, int osz, int asz, int bitness)
    {
        var d = new DInsn { Size = (byte)osz, ASize = (byte)asz, Ip = i.IP, NextIp = i.NextIP, Dst = -1, Src = -1, Base = -1, Index = -1 };
        if (i.HasLockPrefix || i.HasRepPrefix || i.HasRepnePrefix) return d;
        var mn = i.Mnemonic;
        int alu = mn switch
        {
            Mnemonic.Add => OpAdd, Mnemonic.Or => OpOr, Mnemonic.Adc => OpAdc, Mnemonic.Sbb => OpSbb, Mnemonic.And => OpAnd,
            Mnemonic.Sub => OpSub, Mnemonic.Xor => OpXor, Mnemonic.Cmp => OpCmp, Mnemonic.Test => OpTest, _ => -1,
        };
        var k0 = i.OpCount > 0 ? i.Op0Kind : OpKind.Register;
        var k1 = i.OpCount > 1 ? i.Op1Kind : OpKind.Register;
        if (mn == Mnemonic.Mov || alu >= 0)
        {
            if (i.OpCount != 2) return d;
            byte rr, rm, mr, ri, mi;
            if (mn == Mnemonic.Mov) { rr = FastOp.MovRR; rm = FastOp.MovRM; mr = FastOp.MovMR; ri = FastOp.MovRI; mi = FastOp.MovMI; }
            else { rr = FastOp.AluRR; rm = FastOp.AluRM; mr = FastOp.AluMR; ri = FastOp.AluRI; mi = FastOp.AluMI; d.Alu = (byte)alu; }
            if (k0 == OpKind.Register && IsGpr(i.Op0Register))
            {
                SetDst(ref d, i.Op0Register);
                if (k1 == OpKind.Register && IsGpr(i.Op1Register)) { SetSrc(ref d, i.Op1Register); d.Op = rr; }
                else if (k1 == OpKind.Memory) { if (SetMem(ref d, i)) d.Op = rm; }
                else if (IsImm(k1)) { d.Imm = i.GetImmediate(1) & Bits.Mask(osz); d.Op = ri; }
            }
            else if (k0 == OpKind.Memory)
            {
                if (!SetMem(ref d, i)) return d;
                if (k1 == OpKind.Register && IsGpr(i.Op1Register)) { SetSrc(ref d, i.Op1Register); d.Op = mr; }
                else if (IsImm(k1)) { d.Imm = i.GetImmediate(1) & Bits.Mask(osz); d.Op = mi; }
            }
            return d;
        }
        switch (mn)
        {
            case Mnemonic.Lea:
                if (IsGpr(i.Op0Register) && SetMem(ref d, i)) { SetDst(ref d, i.Op0Register); d.Op = FastOp.Lea; }
                break;
            case Mnemonic.Inc:
            case Mnemonic.Dec:
                if (k0 == OpKind.Register && IsGpr(i.Op0Register)) { SetDst(ref d, i.Op0Register); d.Op = mn == Mnemonic.Inc ? FastOp.IncR : FastOp.DecR; }
                break;
            case Mnemonic.Jo: case Mnemonic.Jno: case Mnemonic.Jb: case Mnemonic.Jae: case Mnemonic.Je: case Mnemonic.Jne:
            case Mnemonic.Jbe: case Mnemonic.Ja: case Mnemonic.Js: case Mnemonic.Jns: case Mnemonic.Jp: case Mnemonic.Jnp:
            case Mnemonic.Jl: case Mnemonic.Jge: case Mnemonic.Jle: case Mnemonic.Jg:
                d.Op = FastOp.Jcc; d.Alu = (byte)i.ConditionCode; d.Imm = i.NearBranchTarget;
                break;
            case Mnemonic.Jmp:
                if (k0 is OpKind.NearBranch16 or OpKind.NearBranch32 or OpKind.NearBranch64) { d.Op = FastOp.Jmp; d.Imm = i.NearBranchTarget; }
                break;
            case Mnemonic.Call:
                if (k0 is OpKind.NearBranch64 && bitness == 64) { d.Op = FastOp.Call; d.Imm = i.NearBranchTarget; }
                break;
            case Mnemonic.Ret:
                if (i.OpCount == 0 && bitness == 64 && osz == 8) d.Op = FastOp.Ret;
                break;
            case Mnemonic.Push:
                if (bitness == 64 && k0 == OpKind.Register && i.Op0Register.IsGPR64()) { SetDst(ref d, i.Op0Register); d.Op = FastOp.Push; }
                break;
            case Mnemonic.Pop:
                if (bitness == 64 && k0 == OpKind.Register && i.Op0Register.IsGPR64()) { SetDst(ref d, i.Op0Register); d.Op = FastOp.Pop; }
                break;
            case Mnemonic.Shl: case Mnemonic.Shr: case Mnemonic.Sar:
                if (k0 == OpKind.Register && IsGpr(i.Op0Register) && k1 == OpKind.Immediate8)
                {
                    SetDst(ref d, i.Op0Register);
                    d.Op = FastOp.ShiftRI;
                    d.Alu = (byte)(mn == Mnemonic.Shl ? 0 : mn == Mnemonic.Shr ? 1 : 2);
                    d.Imm = i.Immediate8;
                }
                break;
            case Mnemonic.Movzx:
            case Mnemonic.Movsx:
            {
                if (!IsGpr(i.Op0Register)) break;
                SetDst(ref d, i.Op0Register);
                bool zx = mn == Mnemonic.Movzx;
                if (k1 == OpKind.Register && IsGpr(i.Op1Register))
                {
                    SetSrc(ref d, i.Op1Register);
                    d.Imm = (ulong)RegTable.Size[(int)i.Op1Register];
                    d.Op = zx ? FastOp.MovzxRR : FastOp.MovsxRR;
                }
                else if (k1 == OpKind.Memory && SetMem(ref d, i))
                {
                    d.Imm = (ulong)i.MemorySize.GetSize();
                    d.Op = zx ? FastOp.MovzxRM : FastOp.MovsxRM;
                }
                break;
            }
            case Mnemonic.Nop:
            case Mnemonic.Pause:
            case Mnemonic.Endbr64:
                d.Op = FastOp.Nop;
                break;
        }
        return d;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref ulong G(int idx) => ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(Gpr), idx);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong GetR(int idx, bool high, int size)
    {
        ulong v = G(idx);
        if (high) return (v >> 8) & 0xFF;
        return size switch { 8 => v, 4 => (uint)v, 2 => (ushort)v, _ => (byte)v };
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void SetR(int idx, bool high, int size, ulong v)
    {
        ref ulong g = ref G(idx);
        switch (size)
        {
            case 8: g = v; break;
            case 4: g = (uint)v; break;
            case 2: g = (g & ~0xFFFFUL) | (ushort)v; break;
            default:
                if (high) g = (g & ~0xFF00UL) | ((v & 0xFF) << 8);
                else g = (g & ~0xFFUL) | (byte)v;
                break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong FastAddr(ref DInsn d)
    {
        ulong a = d.Disp;
        if (d.Base >= 0) a += G(d.Base);
        if (d.Index >= 0) a += G(d.Index) << d.Scale;
        if (d.ASize != 8) a = d.ASize == 4 ? (uint)a : (ushort)a;
        return a;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong FastLinear(ref DInsn d) => Linear(d.Seg, FastAddr(ref d));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong Alu64(int op, ulong a, ulong b)
    {
        ulong r;
        switch (op)
        {
            case OpAdd: r = a + b; SetLazy(LazyAdd, a, b, r, 8); return r;
            case OpSub: case OpCmp: r = a - b; SetLazy(LazySub, a, b, r, 8); return r;
            case OpAnd: case OpTest: r = a & b; SetLazy(LazyLogic, a, b, r, 8); return r;
            case OpOr: r = a | b; SetLazy(LazyLogic, a, b, r, 8); return r;
            case OpXor: r = a ^ b; SetLazy(LazyLogic, a, b, r, 8); return r;
            default: return Alu(op, a, b, 8);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private uint Alu32(int op, uint a, uint b)
    {
        uint r;
        switch (op)
        {
            case OpAdd: r = a + b; SetLazy(LazyAdd, a, b, r, 4); return r;
            case OpSub: case OpCmp: r = a - b; SetLazy(LazySub, a, b, r, 4); return r;
            case OpAnd: case OpTest: r = a & b; SetLazy(LazyLogic, a, b, r, 4); return r;
            case OpOr: r = a | b; SetLazy(LazyLogic, a, b, r, 4); return r;
            case OpXor: r = a ^ b; SetLazy(LazyLogic, a, b, r, 4); return r;
            default: return (uint)Alu(op, a, b, 4);
        }
    }

    /// <summary>Executes a pre-decoded instruction that <see cref="ExecHot"/> does not cover; false if it has no fast handler.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool ExecFast(ref DInsn d)
    {
        int sz = d.Size;
        switch (d.Op)
        {
            case FastOp.ImulRR64 or FastOp.ImulRM64:
            {
                ulong b = d.Op == FastOp.ImulRR64 ? G(d.Src) : Read(FastLinear(ref d), 8);
                ImulRegister64(ref G(d.Dst), b);
                return true;
            }
            case FastOp.MovRR: SetR(d.Dst, d.DstHigh, sz, GetR(d.Src, d.SrcHigh, sz)); return true;
            case FastOp.MovRM: SetR(d.Dst, d.DstHigh, sz, Read(FastLinear(ref d), sz)); return true;
            case FastOp.MovMR: Write(FastLinear(ref d), sz, GetR(d.Src, d.SrcHigh, sz)); return true;
            case FastOp.MovRI: SetR(d.Dst, d.DstHigh, sz, d.Imm); return true;
            case FastOp.MovMI: Write(FastLinear(ref d), sz, d.Imm); return true;
            case FastOp.AluRR:
            {
                ulong r = Alu(d.Alu, GetR(d.Dst, d.DstHigh, sz), GetR(d.Src, d.SrcHigh, sz), sz);
                if (d.Alu < OpCmp) SetR(d.Dst, d.DstHigh, sz, r);
                return true;
            }
            case FastOp.AluRM:
            {
                ulong r = Alu(d.Alu, GetR(d.Dst, d.DstHigh, sz), Read(FastLinear(ref d), sz), sz);
                if (d.Alu < OpCmp) SetR(d.Dst, d.DstHigh, sz, r);
                return true;
            }
            case FastOp.AluRI:
            {
                ulong r = Alu(d.Alu, GetR(d.Dst, d.DstHigh, sz), d.Imm, sz);
                if (d.Alu < OpCmp) SetR(d.Dst, d.DstHigh, sz, r);
                return true;
            }
            case FastOp.AluMR:
            {
                ulong la = FastLinear(ref d);
                ulong m = d.Alu < OpCmp ? ReadForWrite(la, sz) : Read(la, sz); // see ReadForWrite
                ulong r = Alu(d.Alu, m, GetR(d.Src, d.SrcHigh, sz), sz);
                if (d.Alu < OpCmp) Write(la, sz, r);
                return true;
            }
            case FastOp.AluMI:
            {
                ulong la = FastLinear(ref d);
                ulong m = d.Alu < OpCmp ? ReadForWrite(la, sz) : Read(la, sz);
                ulong r = Alu(d.Alu, m, d.Imm, sz);
                if (d.Alu < OpCmp) Write(la, sz, r);
                return true;
            }
            case FastOp.Lea: SetR(d.Dst, false, sz, FastAddr(ref d)); return true;
            case FastOp.IncR: SetR(d.Dst, d.DstHigh, sz, IncDec(GetR(d.Dst, d.DstHigh, sz), sz, false)); return true;
            case FastOp.DecR: SetR(d.Dst, d.DstHigh, sz, IncDec(GetR(d.Dst, d.DstHigh, sz), sz, true)); return true;
            case FastOp.ShiftRI:
            {
                var mn = d.Alu == 0 ? Mnemonic.Shl : d.Alu == 1 ? Mnemonic.Shr : Mnemonic.Sar;
                ulong count = d.Imm & (sz == 8 ? 63u : 31u);
                ulong res = Shift(mn, GetR(d.Dst, d.DstHigh, sz), d.Imm, sz);
                if (count != 0 || sz == 4) SetR(d.Dst, d.DstHigh, sz, res);
                return true;
            }
            case FastOp.MovzxRR: SetR(d.Dst, false, sz, GetR(d.Src, d.SrcHigh, (int)d.Imm)); return true;
            case FastOp.MovzxRM: SetR(d.Dst, false, sz, Read(FastLinear(ref d), (int)d.Imm)); return true;
            case FastOp.MovsxRR: SetR(d.Dst, false, sz, (ulong)Bits.SignExtend(GetR(d.Src, d.SrcHigh, (int)d.Imm), (int)d.Imm)); return true;
            case FastOp.MovsxRM: SetR(d.Dst, false, sz, (ulong)Bits.SignExtend(Read(FastLinear(ref d), (int)d.Imm), (int)d.Imm)); return true;
            case FastOp.Nop: return true;
            default: return ExecFastExtra(ref d);
        }
    }
}
