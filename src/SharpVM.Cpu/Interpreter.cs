using System.Numerics;
using System.Runtime.CompilerServices;
using Iced.Intel;

namespace SharpVM.Cpu;

public sealed unsafe partial class EmulatorVcpu
{
    private int _asz;

    // ---------- operand access ----------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong GetReg(Register r)
    {
        int ri = (int)r;
        ulong v = Gpr[RegTable.Index[ri]];
        if (RegTable.High8[ri]) return (v >> 8) & 0xFF;
        return v & Bits.Mask(RegTable.Size[ri]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void SetReg(Register r, ulong v)
    {
        int ri = (int)r;
        ref ulong g = ref Gpr[RegTable.Index[ri]];
        switch (RegTable.Size[ri])
        {
            case 8: g = v; break;
            case 4: g = (uint)v; break;
            case 2: g = (g & ~0xFFFFUL) | (v & 0xFFFF); break;
            default:
                if (RegTable.High8[ri]) g = (g & ~0xFF00UL) | ((v & 0xFF) << 8);
                else g = (g & ~0xFFUL) | (v & 0xFF);
                break;
        }
    }

    /// <summary>Writes a GPR with an explicit width (for implicit operands).</summary>
    private void SetGpr(int idx, int sz, ulong v)
    {
        ref ulong g = ref Gpr[idx];
        switch (sz)
        {
            case 8: g = v; break;
            case 4: g = (uint)v; break;
            case 2: g = (g & ~0xFFFFUL) | (v & 0xFFFF); break;
            default: g = (g & ~0xFFUL) | (v & 0xFF); break;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong EffectiveAddress(ref Instruction i)
    {
        if (i.IsIPRelativeMemoryOperand) return _asz == 4 ? (uint)i.IPRelativeMemoryAddress : i.IPRelativeMemoryAddress;
        ulong a = i.MemoryDisplacement64;
        var b = i.MemoryBase;
        if (b != Register.None) a += Gpr[RegTable.Index[(int)b]];
        var x = i.MemoryIndex;
        if (x != Register.None) a += Gpr[RegTable.Index[(int)x]] * (ulong)i.MemoryIndexScale;
        return _asz switch { 8 => a, 4 => (uint)a, _ => (ushort)a };
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong MemAddr(ref Instruction i) => Linear((int)(i.MemorySegment - Register.ES), EffectiveAddress(ref i));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong ReadOp(ref Instruction i, int n, int sz)
    {
        var kind = i.GetOpKind(n);
        if (kind == OpKind.Register) return GetReg(i.GetOpRegister(n));
        if (kind == OpKind.Memory) return Read(MemAddr(ref i), sz);
        return i.GetImmediate(n) & Bits.Mask(sz);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void WriteOp0(ref Instruction i, int sz, ulong v)
    {
        if (i.Op0Kind == OpKind.Register) SetReg(i.Op0Register, v);
        else Write(MemAddr(ref i), sz, v);
    }

    /// <summary>Size of operand <paramref name="n"/> when it differs from the instruction's (MOVZX sources and the like).</summary>
    private static int OpSizeOf(ref Instruction i, int n)
    {
        var kind = i.GetOpKind(n);
        if (kind == OpKind.Register) return RegTable.Size[(int)i.GetOpRegister(n)];
        return i.MemorySize.GetSize();
    }

    // ---------- stack ----------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong StackMask() => StackSize == 8 ? ulong.MaxValue : StackSize == 4 ? 0xFFFFFFFF : 0xFFFF;

    private void SetSp(ulong sp)
    {
        if (StackSize == 8) Gpr[4] = sp;
        else if (StackSize == 4) Gpr[4] = (uint)sp;
        else Gpr[4] = (Gpr[4] & ~0xFFFFUL) | (sp & 0xFFFF);
    }

    internal void Push(ulong v, int size)
    {
        ulong sp = (Gpr[4] - (ulong)size) & StackMask();
        Write(Linear(SS, sp), size, v);
        SetSp(sp);
    }

    internal ulong Pop(int size)
    {
        ulong sp = Gpr[4] & StackMask();
        ulong v = Read(Linear(SS, sp), size);
        SetSp(sp + (ulong)size);
        return v;
    }

    private void Branch(ulong target, int osz)
    {
        Rip = osz == 8 ? target : osz == 4 ? (uint)target : (ushort)target;
        _endBlock = true;
    }

    // ---------- the interpreter ----------

    private void Exec(ref Instruction i, int sz, int asz)
    {
        _asz = asz;
        switch (i.Mnemonic)
        {
            case Mnemonic.Mov: ExecMov(ref i, sz); break;
            case Mnemonic.Add: AluRmw(ref i, sz, OpAdd); break;
            case Mnemonic.Or: AluRmw(ref i, sz, OpOr); break;
            case Mnemonic.Adc: AluRmw(ref i, sz, OpAdc); break;
            case Mnemonic.Sbb: AluRmw(ref i, sz, OpSbb); break;
            case Mnemonic.And: AluRmw(ref i, sz, OpAnd); break;
            case Mnemonic.Sub: AluRmw(ref i, sz, OpSub); break;
            case Mnemonic.Xor: AluRmw(ref i, sz, OpXor); break;
            case Mnemonic.Cmp: Alu(OpCmp, ReadOp(ref i, 0, sz), ReadOp(ref i, 1, sz), sz); break;
            case Mnemonic.Test: Alu(OpTest, ReadOp(ref i, 0, sz), ReadOp(ref i, 1, sz), sz); break;
            case Mnemonic.Inc: UnaryRmw(ref i, sz, 0); break;
            case Mnemonic.Dec: UnaryRmw(ref i, sz, 1); break;
            case Mnemonic.Neg: UnaryRmw(ref i, sz, 2); break;
            case Mnemonic.Not: UnaryRmw(ref i, sz, 3); break;
            case Mnemonic.Lea: SetReg(i.Op0Register, EffectiveAddress(ref i)); break;
            case Mnemonic.Movzx: SetReg(i.Op0Register, ReadOp(ref i, 1, OpSizeOf(ref i, 1))); break;
            case Mnemonic.Movsx:
            case Mnemonic.Movsxd:
            {
                int ss = OpSizeOf(ref i, 1);
                SetReg(i.Op0Register, (ulong)Bits.SignExtend(ReadOp(ref i, 1, ss), ss));
                break;
            }
            case Mnemonic.Xchg: ExecXchg(ref i, sz); break;
            case Mnemonic.Xadd: ExecXadd(ref i, sz); break;
            case Mnemonic.Cmpxchg: ExecCmpxchg(ref i, sz); break;
            case Mnemonic.Cmpxchg8b: ExecCmpxchg8b(ref i); break;
            case Mnemonic.Cmpxchg16b: ExecCmpxchg16b(ref i); break;

            case Mnemonic.Jo: case Mnemonic.Jno: case Mnemonic.Jb: case Mnemonic.Jae: case Mnemonic.Je: case Mnemonic.Jne:
            case Mnemonic.Jbe: case Mnemonic.Ja: case Mnemonic.Js: case Mnemonic.Jns: case Mnemonic.Jp: case Mnemonic.Jnp:
            case Mnemonic.Jl: case Mnemonic.Jge: case Mnemonic.Jle: case Mnemonic.Jg:
                if (Cond(i.ConditionCode)) { Rip = i.NearBranchTarget; _endBlock = true; }
                break;
            case Mnemonic.Seto: case Mnemonic.Setno: case Mnemonic.Setb: case Mnemonic.Setae: case Mnemonic.Sete: case Mnemonic.Setne:
            case Mnemonic.Setbe: case Mnemonic.Seta: case Mnemonic.Sets: case Mnemonic.Setns: case Mnemonic.Setp: case Mnemonic.Setnp:
            case Mnemonic.Setl: case Mnemonic.Setge: case Mnemonic.Setle: case Mnemonic.Setg:
                WriteOp0(ref i, 1, Cond(i.ConditionCode) ? 1UL : 0);
                break;
            case Mnemonic.Cmovo: case Mnemonic.Cmovno: case Mnemonic.Cmovb: case Mnemonic.Cmovae: case Mnemonic.Cmove: case Mnemonic.Cmovne:
            case Mnemonic.Cmovbe: case Mnemonic.Cmova: case Mnemonic.Cmovs: case Mnemonic.Cmovns: case Mnemonic.Cmovp: case Mnemonic.Cmovnp:
            case Mnemonic.Cmovl: case Mnemonic.Cmovge: case Mnemonic.Cmovle: case Mnemonic.Cmovg:
            {
                ulong v = ReadOp(ref i, 1, sz);
                if (Cond(i.ConditionCode)) SetReg(i.Op0Register, v);
                else if (sz == 4) SetReg(i.Op0Register, GetReg(i.Op0Register));
                break;
            }
            case Mnemonic.Jmp: ExecJmp(ref i, sz); break;
            case Mnemonic.Call: ExecCall(ref i, sz); break;
            case Mnemonic.Ret:
            {
                ulong t = Pop(sz);
                if (i.OpCount > 0) SetSp((Gpr[4] + i.Immediate16) & StackMask());
                Branch(t, sz);
                break;
            }
            case Mnemonic.Loop: case Mnemonic.Loope: case Mnemonic.Loopne:
            {
                ulong c = (Gpr[1] - 1) & Bits.Mask(asz);
                SetGpr(1, asz, c);
                bool take = c != 0 && (i.Mnemonic == Mnemonic.Loop || (i.Mnemonic == Mnemonic.Loope) == ((Rflags & Flags.ZF) != 0));
                if (take) { Rip = i.NearBranchTarget; _endBlock = true; }
                break;
            }
            case Mnemonic.Jcxz: case Mnemonic.Jecxz: case Mnemonic.Jrcxz:
                if ((Gpr[1] & Bits.Mask(asz)) == 0) { Rip = i.NearBranchTarget; _endBlock = true; }
                break;
            case Mnemonic.Push: ExecPush(ref i, sz); break;
            case Mnemonic.Pop: ExecPop(ref i, sz); break;
            case Mnemonic.Pushf: case Mnemonic.Pushfd: case Mnemonic.Pushfq:
            {
                if ((SystemFlags & Flags.VM) != 0 && ((SystemFlags >> 12) & 3) < 3) throw GP();
                int psz = -i.StackPointerIncrement;
                Push(Rflags & ~(Flags.RF | Flags.VM), psz);
                break;
            }
            case Mnemonic.Popf: case Mnemonic.Popfd: case Mnemonic.Popfq:
            {
                int psz = i.StackPointerIncrement;
                if ((SystemFlags & Flags.VM) != 0 && ((SystemFlags >> 12) & 3) < 3) throw GP();
                ulong v = Pop(psz);
                LoadFlags(v, psz);
                _endBlock = true;
                break;
            }
            case Mnemonic.Pusha: case Mnemonic.Pushad:
            {
                int s = i.Mnemonic == Mnemonic.Pushad ? 4 : 2;
                ulong sp = Gpr[4];
                for (int r = 0; r < 8; r++) Push(r == 4 ? sp : Gpr[r], s);
                break;
            }
            case Mnemonic.Popa: case Mnemonic.Popad:
            {
                int s = i.Mnemonic == Mnemonic.Popad ? 4 : 2;
                for (int r = 7; r >= 0; r--)
                {
                    ulong v = Pop(s);
                    if (r != 4) SetGpr(r, s, v);
                }
                break;
            }
            case Mnemonic.Enter: ExecEnter(ref i, sz); break;
            case Mnemonic.Leave:
            {
                ulong bp = Gpr[5] & StackMask();
                SetSp(bp);
                SetGpr(5, sz, Pop(sz));
                break;
            }
            case Mnemonic.Mul: MulOp(ReadOp(ref i, 0, sz), sz, false); break;
            case Mnemonic.Imul:
                if (i.OpCount == 1) MulOp(ReadOp(ref i, 0, sz), sz, true);
                else if (i.OpCount == 2) SetReg(i.Op0Register, Imul2(GetReg(i.Op0Register), ReadOp(ref i, 1, sz), sz));
                else SetReg(i.Op0Register, Imul2(ReadOp(ref i, 1, sz), ReadOp(ref i, 2, sz), sz));
                break;
            case Mnemonic.Div: DivOp(ReadOp(ref i, 0, sz), sz, false); break;
            case Mnemonic.Idiv: DivOp(ReadOp(ref i, 0, sz), sz, true); break;
            case Mnemonic.Rol: case Mnemonic.Ror: case Mnemonic.Rcl: case Mnemonic.Rcr:
            case Mnemonic.Shl: case Mnemonic.Sal: case Mnemonic.Shr: case Mnemonic.Sar:
            {
                ulong count = i.Op1Kind == OpKind.Register ? Gpr[1] & 0xFF : i.Immediate8;
                if (i.Op0Kind == OpKind.Register)
                {
                    var r = i.Op0Register;
                    ulong res = Shift(i.Mnemonic, GetReg(r), count, sz);
                    if ((count & (sz == 8 ? 63u : 31u)) != 0 || sz == 4) SetReg(r, res);
                }
                else
                {
                    ulong la = MemAddr(ref i);
                    ulong v = ReadForWrite(la, sz);
                    ulong res = Shift(i.Mnemonic, v, count, sz);
                    Write(la, sz, res);
                }
                break;
            }
            case Mnemonic.Shld: case Mnemonic.Shrd:
            {
                ulong count = i.Op2Kind == OpKind.Register ? Gpr[1] & 0xFF : i.Immediate8;
                ulong src = GetReg(i.Op1Register);
                bool left = i.Mnemonic == Mnemonic.Shld;
                if (i.Op0Kind == OpKind.Register)
                {
                    var r = i.Op0Register;
                    ulong res = DoubleShift(left, GetReg(r), src, count, sz);
                    if ((count & (sz == 8 ? 63u : 31u)) != 0 || sz == 4) SetReg(r, res);
                }
                else
                {
                    ulong la = MemAddr(ref i);
                    Write(la, sz, DoubleShift(left, ReadForWrite(la, sz), src, count, sz));
                }
                break;
            }
            case Mnemonic.Bt: case Mnemonic.Bts: case Mnemonic.Btr: case Mnemonic.Btc: ExecBt(ref i, sz); break;
            case Mnemonic.Bsf: case Mnemonic.Bsr:
            {
                ulong v = ReadOp(ref i, 1, sz);
                if (v == 0)
                {
                    Rflags |= Flags.ZF;
                }
                else
                {
                    ulong idx = i.Mnemonic == Mnemonic.Bsf ? (ulong)BitOperations.TrailingZeroCount(v) : (ulong)(63 - BitOperations.LeadingZeroCount(v));
                    SetReg(i.Op0Register, idx);
                    SetSzp(idx, sz, 0);
                    Rflags &= ~Flags.ZF;
                }
                break;
            }
            case Mnemonic.Tzcnt: case Mnemonic.Lzcnt: case Mnemonic.Popcnt:
            {
                ulong v = ReadOp(ref i, 1, sz);
                int bits = sz * 8;
                ulong res = i.Mnemonic switch
                {
                    Mnemonic.Tzcnt => v == 0 ? (ulong)bits : (ulong)BitOperations.TrailingZeroCount(v),
                    Mnemonic.Lzcnt => v == 0 ? (ulong)bits : (ulong)(BitOperations.LeadingZeroCount(v) - (64 - bits)),
                    _ => (ulong)Popcount(v),
                };
                SetReg(i.Op0Register, res);
                ulong f = 0;
                if (i.Mnemonic == Mnemonic.Popcnt) { if (v == 0) f |= Flags.ZF; }
                else
                {
                    if (v == 0) f |= Flags.CF;
                    if (res == 0) f |= Flags.ZF;
                }
                Rflags = (Rflags & ~Flags.Arith) | f;
                break;
            }
            case Mnemonic.Bswap:
            {
                var r = i.Op0Register;
                ulong v = GetReg(r);
                SetReg(r, sz == 8 ? BinaryPrimitivesReverse(v) : sz == 4 ? (ulong)System.Buffers.Binary.BinaryPrimitives.ReverseEndianness((uint)v) : 0);
                break;
            }
            case Mnemonic.Movbe:
            {
                ulong v = ReadOp(ref i, 1, sz);
                v = sz == 2 ? System.Buffers.Binary.BinaryPrimitives.ReverseEndianness((ushort)v)
                    : sz == 4 ? System.Buffers.Binary.BinaryPrimitives.ReverseEndianness((uint)v) : BinaryPrimitivesReverse(v);
                WriteOp0(ref i, sz, v);
                break;
            }
            case Mnemonic.Cbw: SetGpr(0, 2, (ulong)(sbyte)Gpr[0]); break;
            case Mnemonic.Cwde: SetGpr(0, 4, (ulong)(short)Gpr[0]); break;
            case Mnemonic.Cdqe: Gpr[0] = (ulong)(int)Gpr[0]; break;
            case Mnemonic.Cwd: SetGpr(2, 2, (Gpr[0] & 0x8000) != 0 ? 0xFFFFUL : 0); break;
            case Mnemonic.Cdq: SetGpr(2, 4, (Gpr[0] & 0x80000000) != 0 ? 0xFFFFFFFFUL : 0); break;
            case Mnemonic.Cqo: Gpr[2] = (Gpr[0] & 0x8000000000000000) != 0 ? ulong.MaxValue : 0; break;
            case Mnemonic.Lahf: SetReg(Register.AH, (Rflags & 0xD5) | 2); break;
            case Mnemonic.Sahf: Rflags = (Rflags & ~0xD5UL) | ((Gpr[0] >> 8) & 0xD5); break;
            case Mnemonic.Clc: Rflags &= ~Flags.CF; break;
            case Mnemonic.Stc: Rflags |= Flags.CF; break;
            case Mnemonic.Cmc: Rflags ^= Flags.CF; break;
            case Mnemonic.Cld: _flags &= ~Flags.DF; break; // DF is never part of a lazy state
            case Mnemonic.Std: _flags |= Flags.DF; break;
            case Mnemonic.Cli:
                if (Protected && Cpl > (int)((SystemFlags >> 12) & 3)) throw GP();
                _flags &= ~Flags.IF;
                break;
            case Mnemonic.Sti:
                if (Protected && Cpl > (int)((SystemFlags >> 12) & 3)) throw GP();
                if ((SystemFlags & Flags.IF) == 0) { _interruptShadow = true; _irqHint = true; }
                _flags |= Flags.IF;
                _endBlock = true;
                break;
            case Mnemonic.Xlatb:
            {
                ulong ea = (Gpr[3] + (Gpr[0] & 0xFF)) & Bits.Mask(asz);
                SetGpr(0, 1, Read(Linear((int)(i.MemorySegment - Register.ES), ea), 1));
                break;
            }
            case Mnemonic.Nop: case Mnemonic.Pause: case Mnemonic.Lfence: case Mnemonic.Mfence: case Mnemonic.Sfence:
            case Mnemonic.Prefetchnta: case Mnemonic.Prefetcht0: case Mnemonic.Prefetcht1: case Mnemonic.Prefetcht2:
            case Mnemonic.Prefetchw: case Mnemonic.Prefetch: case Mnemonic.Endbr64: case Mnemonic.Endbr32:
                break;
            case Mnemonic.Clflush: case Mnemonic.Clflushopt: case Mnemonic.Clwb:
                Read(MemAddr(ref i), 1);
                break;
            case Mnemonic.Ud0: case Mnemonic.Ud1: case Mnemonic.Ud2:
                throw UD();
            case Mnemonic.INVALID:
                throw UD();

            case Mnemonic.Movsb: case Mnemonic.Movsw: case Mnemonic.Movsq:
            case Mnemonic.Stosb: case Mnemonic.Stosw: case Mnemonic.Stosd: case Mnemonic.Stosq:
            case Mnemonic.Lodsb: case Mnemonic.Lodsw: case Mnemonic.Lodsd: case Mnemonic.Lodsq:
            case Mnemonic.Cmpsb: case Mnemonic.Cmpsw: case Mnemonic.Cmpsq:
            case Mnemonic.Scasb: case Mnemonic.Scasw: case Mnemonic.Scasd: case Mnemonic.Scasq:
            case Mnemonic.Insb: case Mnemonic.Insw: case Mnemonic.Insd:
            case Mnemonic.Outsb: case Mnemonic.Outsw: case Mnemonic.Outsd:
                ExecString(ref i, asz);
                break;
            case Mnemonic.Movsd:
                if (i.Code == Code.Movsd_m32_m32) ExecString(ref i, asz); else ExecSse(ref i);
                break;
            case Mnemonic.Cmpsd:
                if (i.Code == Code.Cmpsd_m32_m32) ExecString(ref i, asz); else ExecSse(ref i);
                break;

            case Mnemonic.Aaa: case Mnemonic.Aas: case Mnemonic.Daa: case Mnemonic.Das: case Mnemonic.Aam: case Mnemonic.Aad:
                ExecBcd(ref i);
                break;
            case Mnemonic.Arpl:
            {
                if (!Protected || (SystemFlags & Flags.VM) != 0) throw UD();
                ulong dst = ReadOp(ref i, 0, 2), src = GetReg(i.Op1Register);
                if ((dst & 3) < (src & 3))
                {
                    WriteOp0(ref i, 2, (dst & ~3UL) | (src & 3));
                    Rflags |= Flags.ZF;
                }
                else Rflags &= ~Flags.ZF;
                break;
            }
            case Mnemonic.Salc:
                SetGpr(0, 1, (Rflags & Flags.CF) != 0 ? 0xFFUL : 0);
                break;
            case Mnemonic.In: ExecIn(ref i); break;
            case Mnemonic.Out: ExecOut(ref i); break;
            default:
                ExecSystem(ref i, sz, asz);
                break;
        }
    }

    /// <summary>The BCD adjust instructions (16/32-bit modes only; #UD in 64-bit mode is the decoder's job).</summary>
    private void ExecBcd(ref Instruction i)
    {
        ulong al = Gpr[0] & 0xFF, ah = (Gpr[0] >> 8) & 0xFF;
        bool cf = (Rflags & Flags.CF) != 0, af = (Rflags & Flags.AF) != 0;
        switch (i.Mnemonic)
        {
            case Mnemonic.Aaa:
            case Mnemonic.Aas:
            {
                bool adj = (al & 0xF) > 9 || af;
                if (adj)
                {
                    ulong ax = Gpr[0] & 0xFFFF;
                    ax = i.Mnemonic == Mnemonic.Aaa ? ax + 0x106 : ax - 6 - 0x100;
                    al = ax & 0xFF; ah = (ax >> 8) & 0xFF;
                }
                al &= 0xF;
                Gpr[0] = (Gpr[0] & ~0xFFFFUL) | (ah << 8) | al;
                SetSzp(al, 1, adj ? Flags.AF | Flags.CF : 0);
                return;
            }
            case Mnemonic.Daa:
            case Mnemonic.Das:
            {
                bool sub = i.Mnemonic == Mnemonic.Das;
                ulong oldAl = al;
                bool ncf = false, naf = false;
                if ((al & 0xF) > 9 || af)
                {
                    ncf = cf || (sub ? al < 6 : al > 0xF9);
                    al = (sub ? al - 6 : al + 6) & 0xFF;
                    naf = true;
                }
                if (oldAl > 0x99 || cf)
                {
                    al = (sub ? al - 0x60 : al + 0x60) & 0xFF;
                    ncf = true;
                }
                Gpr[0] = (Gpr[0] & ~0xFFUL) | al;
                SetSzp(al, 1, (ncf ? Flags.CF : 0) | (naf ? Flags.AF : 0));
                return;
            }
            case Mnemonic.Aam:
            {
                ulong b = i.Immediate8;
                if (b == 0) throw Fault(0);
                ah = al / b; al %= b;
                Gpr[0] = (Gpr[0] & ~0xFFFFUL) | (ah << 8) | al;
                SetSzp(al, 1, 0);
                return;
            }
            default:
            {
                ulong b = i.Immediate8;
                al = (al + ah * b) & 0xFF;
                Gpr[0] = (Gpr[0] & ~0xFFFFUL) | al;
                SetSzp(al, 1, 0);
                return;
            }
        }
    }

    private static ulong BinaryPrimitivesReverse(ulong v) => System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(v);

    private void ExecMov(ref Instruction i, int sz)
    {
        var k0 = i.Op0Kind;
        var k1 = i.Op1Kind;
        if (k0 == OpKind.Register)
        {
            var r = i.Op0Register;
            int ri = RegTable.Index[(int)r];
            if (r.IsGPR())
            {
                if (k1 == OpKind.Register)
                {
                    var s = i.Op1Register;
                    if (s.IsSegmentRegister()) { SetReg(r, Sregs[RegTable.Index[(int)s]].Sel); return; }
                    if (s.IsCR()) { SetReg(r, ReadCr(RegTable.Index[(int)s])); return; }
                    if (s.IsDR()) { if (Cpl != 0) throw GP(); SetReg(r, Dr[RegTable.Index[(int)s]]); return; }
                    SetReg(r, GetReg(s));
                    return;
                }
                SetReg(r, ReadOp(ref i, 1, sz));
                return;
            }
            if (r.IsSegmentRegister())
            {
                ulong sel = k1 == OpKind.Register ? GetReg(i.Op1Register) : Read(MemAddr(ref i), 2);
                if (ri == CS) throw UD();
                LoadSegment(ri, (ushort)sel);
                if (ri == SS) { _interruptShadow = true; _irqHint = true; }
                return;
            }
            if (r.IsCR()) { WriteCr(ri, GetReg(i.Op1Register)); return; }
            if (r.IsDR()) { if (Cpl != 0) throw GP(); Dr[ri] = GetReg(i.Op1Register); return; }
            throw new CpuUnimplemented($"mov to {r}");
        }
        // Memory destination.
        ulong la = MemAddr(ref i);
        if (k1 == OpKind.Register)
        {
            var s = i.Op1Register;
            if (s.IsSegmentRegister()) { Write(la, 2, Sregs[RegTable.Index[(int)s]].Sel); return; }
            Write(la, sz, GetReg(s));
            return;
        }
        Write(la, sz, i.GetImmediate(1));
    }

    /// <summary>
    /// Diagnostics: LOCK-ed ALU read-modify-writes whose compare-and-swap lost to another writer and was retried (tests
    /// use it to prove that a retry really happened).
    /// </summary>
    internal long LockedRmwRetries;

    /// <summary>
    /// Tests only: called between the load and the compare-and-swap of a LOCK-ed ALU read-modify-write, so a test can
    /// play the other CPU that writes in between (and make the retry path run deterministically).
    /// </summary>
    internal Action? BeforeLockedCompareAndSwap;

    private void AluRmw(ref Instruction i, int sz, int op)
    {
        if (i.Op0Kind == OpKind.Register)
        {
            var r = i.Op0Register;
            ulong b = i.Op1Kind == OpKind.Register ? GetReg(i.Op1Register) : ReadOp(ref i, 1, sz);
            SetReg(r, Alu(op, GetReg(r), b, sz));
            return;
        }
        ulong src = ReadOp(ref i, 1, sz);
        ulong la = MemAddr(ref i);
        if (i.HasLockPrefix)
        {
            byte* p = WritablePointer(la, sz);
            if (p != null)
            {
                // A failed CAS retries with the flags of before (LOCK ADC/SBB read CF).
                ulong saved = Rflags;
                while (true)
                {
                    ulong old = LoadRaw(p, sz);
                    ulong res = Alu(op, old, src, sz);
                    BeforeLockedCompareAndSwap?.Invoke();
                    if (CasRaw(p, sz, old, res)) return;
                    Rflags = saved;
                    LockedRmwRetries++;
                }
            }
        }
        ulong a = ReadForWrite(la, sz);
        Write(la, sz, Alu(op, a, src, sz));
    }

    private ulong Unary(int kind, ulong v, int sz) => kind switch
    {
        0 => IncDec(v, sz, false),
        1 => IncDec(v, sz, true),
        2 => Neg(v, sz),
        _ => ~v & Bits.Mask(sz),
    };

    private void UnaryRmw(ref Instruction i, int sz, int kind)
    {
        if (i.Op0Kind == OpKind.Register)
        {
            var r = i.Op0Register;
            SetReg(r, Unary(kind, GetReg(r), sz));
            return;
        }
        ulong la = MemAddr(ref i);
        if (i.HasLockPrefix)
        {
            byte* p = WritablePointer(la, sz);
            if (p != null)
            {
                while (true)
                {
                    ulong old = LoadRaw(p, sz);
                    ulong saved = Rflags;
                    ulong res = Unary(kind, old, sz);
                    if (CasRaw(p, sz, old, res)) return;
                    Rflags = saved;
                }
            }
        }
        Write(la, sz, Unary(kind, ReadForWrite(la, sz), sz));
    }

    // ---------- atomics on guest RAM ----------

    // SAFETY: p comes from WritablePointer(la, sz), so sz bytes at p are inside one RAM page.
    private static ulong LoadRaw(byte* p, int sz) => sz switch
    {
        1 => Volatile.Read(ref *p),
        2 => Volatile.Read(ref *(ushort*)p),
        4 => Volatile.Read(ref *(uint*)p),
        _ => Volatile.Read(ref *(ulong*)p),
    };

    /// <summary>Compare-and-swap of 1-8 bytes of guest RAM; sub-word and misaligned sizes go through an enclosing aligned word.</summary>
    private static bool CasRaw(byte* p, int sz, ulong expected, ulong value)
    {
        nuint addr = (nuint)p;
        if (sz == 8 && (addr & 7) == 0)
            return Interlocked.CompareExchange(ref *(long*)p, (long)value, (long)expected) == (long)expected;
        if (sz == 4 && (addr & 3) == 0)
            return Interlocked.CompareExchange(ref *(int*)p, (int)value, (int)expected) == (int)expected;
        // Fits in an aligned 8-byte word?
        nuint wordAddr = addr & ~(nuint)7;
        int shift = (int)(addr - wordAddr) * 8;
        if ((int)(addr - wordAddr) + sz <= 8)
        {
            long* w = (long*)wordAddr;
            ulong mask = (sz == 8 ? ulong.MaxValue : (1UL << (sz * 8)) - 1) << shift;
            while (true)
            {
                ulong cur = (ulong)Volatile.Read(ref *w);
                if (((cur & mask) >> shift) != (expected & (mask >> shift))) return false;
                ulong next = (cur & ~mask) | ((value << shift) & mask);
                if (Interlocked.CompareExchange(ref *w, (long)next, (long)cur) == (long)cur) return true;
            }
        }
        // Split across 8-byte words (misaligned LOCK): not atomic on real hardware either without a bus lock.
        lock (SplitLock)
        {
            ulong cur = 0;
            for (int k = 0; k < sz; k++) cur |= (ulong)p[k] << (8 * k);
            if (cur != expected) return false;
            for (int k = 0; k < sz; k++) p[k] = (byte)(value >> (8 * k));
            return true;
        }
    }

    private static readonly object SplitLock = new();

    private void ExecXchg(ref Instruction i, int sz)
    {
        if (i.Op0Kind == OpKind.Register && i.Op1Kind == OpKind.Register)
        {
            var a = i.Op0Register; var b = i.Op1Register;
            ulong va = GetReg(a), vb = GetReg(b);
            SetReg(a, vb); SetReg(b, va);
            return;
        }
        var reg = i.Op0Kind == OpKind.Register ? i.Op0Register : i.Op1Register;
        ulong la = MemAddr(ref i);
        ulong nv = GetReg(reg);
        byte* p = WritablePointer(la, sz);
        if (p != null)
        {
            while (true)
            {
                ulong old = LoadRaw(p, sz);
                if (CasRaw(p, sz, old, nv)) { SetReg(reg, old); return; }
            }
        }
        ulong m = Read(la, sz);
        Write(la, sz, nv);
        SetReg(reg, m);
    }

    private void ExecXadd(ref Instruction i, int sz)
    {
        var src = i.Op1Register;
        ulong b = GetReg(src);
        if (i.Op0Kind == OpKind.Register)
        {
            var d = i.Op0Register;
            ulong a = GetReg(d);
            ulong r = Alu(OpAdd, a, b, sz);
            SetReg(src, a);
            SetReg(d, r);
            return;
        }
        ulong la = MemAddr(ref i);
        if (i.HasLockPrefix)
        {
            byte* p = WritablePointer(la, sz);
            if (p != null)
            {
                while (true)
                {
                    ulong old = LoadRaw(p, sz);
                    ulong r = Alu(OpAdd, old, b, sz);
                    if (CasRaw(p, sz, old, r)) { SetReg(src, old); return; }
                }
            }
        }
        ulong m = ReadForWrite(la, sz);
        ulong res = Alu(OpAdd, m, b, sz);
        Write(la, sz, res);
        SetReg(src, m);
    }

    private void ExecCmpxchg(ref Instruction i, int sz)
    {
        ulong acc = Gpr[0] & Bits.Mask(sz);
        ulong src = GetReg(i.Op1Register);
        if (i.Op0Kind == OpKind.Register)
        {
            var d = i.Op0Register;
            ulong dv = GetReg(d);
            Alu(OpCmp, acc, dv, sz);
            if (acc == dv) SetReg(d, src);
            else SetGpr(0, sz, dv);
            return;
        }
        ulong la = MemAddr(ref i);
        byte* p = i.HasLockPrefix ? WritablePointer(la, sz) : null;
        if (p != null)
        {
            while (true)
            {
                ulong old = LoadRaw(p, sz);
                if (old != acc)
                {
                    Alu(OpCmp, acc, old, sz);
                    SetGpr(0, sz, old);
                    return;
                }
                if (CasRaw(p, sz, old, src)) { Alu(OpCmp, acc, old, sz); return; }
            }
        }
        ulong m = ReadForWrite(la, sz); // CMPXCHG always writes
        Alu(OpCmp, acc, m, sz);
        if (acc == m) Write(la, sz, src);
        else { Write(la, sz, m); SetGpr(0, sz, m); }
    }

    private void ExecCmpxchg8b(ref Instruction i)
    {
        ulong la = MemAddr(ref i);
        ulong expected = (Gpr[0] & 0xFFFFFFFF) | (Gpr[2] << 32);
        ulong nv = (Gpr[3] & 0xFFFFFFFF) | (Gpr[1] << 32);
        byte* p = WritablePointer(la, 8);
        ulong old;
        bool ok;
        if (p != null)
        {
            while (true)
            {
                old = LoadRaw(p, 8);
                if (old != expected) { ok = false; break; }
                if (CasRaw(p, 8, old, nv)) { ok = true; break; }
            }
        }
        else
        {
            old = Read(la, 8);
            ok = old == expected;
            Write(la, 8, ok ? nv : old);
        }
        if (ok) Rflags |= Flags.ZF;
        else
        {
            Rflags &= ~Flags.ZF;
            Gpr[0] = (uint)old; Gpr[2] = old >> 32;
        }
    }

    private void ExecCmpxchg16b(ref Instruction i)
    {
        ulong la = MemAddr(ref i);
        if ((la & 15) != 0) throw GP();
        Write(la + 8, 8, Read(la + 8, 8)); // make sure the second half is writable too
        bool ok;
        ulong lo, hi;
        lock (SplitLock)
        {
            lo = Read(la, 8); hi = Read(la + 8, 8);
            ok = lo == Gpr[0] && hi == Gpr[2];
            if (ok) { Write(la, 8, Gpr[3]); Write(la + 8, 8, Gpr[1]); }
        }
        if (ok) Rflags |= Flags.ZF;
        else { Rflags &= ~Flags.ZF; Gpr[0] = lo; Gpr[2] = hi; }
    }

    private void ExecBt(ref Instruction i, int sz)
    {
        int bits = sz * 8;
        ulong bitOff;
        bool isReg = i.Op0Kind == OpKind.Register;
        ulong la = 0;
        if (i.Op1Kind == OpKind.Register)
        {
            ulong off = GetReg(i.Op1Register);
            if (isReg) bitOff = off & (ulong)(bits - 1);
            else
            {
                long so = Bits.SignExtend(off, sz);
                la = MemAddr(ref i) + (ulong)((so >> (sz == 8 ? 6 : sz == 4 ? 5 : 4)) * sz);
                if (Bitness != 64) la = (uint)la;
                bitOff = (ulong)so & (ulong)(bits - 1);
            }
        }
        else
        {
            bitOff = i.Immediate8 & (ulong)(bits - 1);
            if (!isReg) la = MemAddr(ref i);
        }
        ulong mask = 1UL << (int)bitOff;
        ulong v = isReg ? GetReg(i.Op0Register) : i.Mnemonic == Mnemonic.Bt ? Read(la, sz) : ReadForWrite(la, sz);
        bool cf = (v & mask) != 0;
        Rflags = cf ? Rflags | Flags.CF : Rflags & ~Flags.CF;
        if (i.Mnemonic == Mnemonic.Bt) return;
        ulong nv = i.Mnemonic switch { Mnemonic.Bts => v | mask, Mnemonic.Btr => v & ~mask, _ => v ^ mask };
        if (isReg) { SetReg(i.Op0Register, nv); return; }
        if (i.HasLockPrefix)
        {
            byte* p = WritablePointer(la, sz);
            if (p != null)
            {
                while (true)
                {
                    ulong old = LoadRaw(p, sz);
                    ulong n2 = i.Mnemonic switch { Mnemonic.Bts => old | mask, Mnemonic.Btr => old & ~mask, _ => old ^ mask };
                    if (CasRaw(p, sz, old, n2))
                    {
                        Rflags = (old & mask) != 0 ? Rflags | Flags.CF : Rflags & ~Flags.CF;
                        return;
                    }
                }
            }
        }
        Write(la, sz, nv);
    }

    private void ExecJmp(ref Instruction i, int sz)
    {
        switch (i.Op0Kind)
        {
            case OpKind.NearBranch16: case OpKind.NearBranch32: case OpKind.NearBranch64:
                Rip = i.NearBranchTarget;
                _endBlock = true;
                return;
            case OpKind.FarBranch16: case OpKind.FarBranch32:
                FarJump(i.FarBranchSelector, i.Op0Kind == OpKind.FarBranch16 ? i.FarBranch16 : i.FarBranch32, false, sz);
                return;
            case OpKind.Register:
                Branch(GetReg(i.Op0Register), sz);
                return;
            default:
            {
                ulong la = MemAddr(ref i);
                if (i.IsJmpFarIndirect)
                {
                    int osz = i.MemorySize.GetSize() - 2;
                    ulong off = Read(la, osz);
                    ushort sel = (ushort)Read(la + (ulong)osz, 2);
                    FarJump(sel, off, false, osz);
                    return;
                }
                Branch(Read(la, sz), sz);
                return;
            }
        }
    }

    private void ExecCall(ref Instruction i, int sz)
    {
        switch (i.Op0Kind)
        {
            case OpKind.NearBranch16: case OpKind.NearBranch32: case OpKind.NearBranch64:
                Push(Rip, sz);
                Rip = i.NearBranchTarget;
                _endBlock = true;
                return;
            case OpKind.FarBranch16: case OpKind.FarBranch32:
            {
                int osz = i.Op0Kind == OpKind.FarBranch16 ? 2 : 4;
                FarJump(i.FarBranchSelector, osz == 2 ? i.FarBranch16 : i.FarBranch32, true, osz);
                return;
            }
            case OpKind.Register:
            {
                ulong t = GetReg(i.Op0Register);
                Push(Rip, sz);
                Branch(t, sz);
                return;
            }
            default:
            {
                ulong la = MemAddr(ref i);
                if (i.IsCallFarIndirect)
                {
                    int osz = i.MemorySize.GetSize() - 2;
                    ulong off = Read(la, osz);
                    ushort sel = (ushort)Read(la + (ulong)osz, 2);
                    FarJump(sel, off, true, osz);
                    return;
                }
                ulong t = Read(la, sz);
                Push(Rip, sz);
                Branch(t, sz);
                return;
            }
        }
    }

    private void ExecPush(ref Instruction i, int sz)
    {
        int psz = -i.StackPointerIncrement;
        if (i.Op0Kind == OpKind.Register)
        {
            var r = i.Op0Register;
            if (r.IsSegmentRegister()) { Push(Sregs[RegTable.Index[(int)r]].Sel, psz); return; }
            Push(GetReg(r), psz);
            return;
        }
        if (i.Op0Kind == OpKind.Memory) { Push(Read(MemAddr(ref i), psz), psz); return; }
        Push(i.GetImmediate(0), psz);
    }

    private void ExecPop(ref Instruction i, int sz)
    {
        int psz = i.StackPointerIncrement;
        if (i.Op0Kind == OpKind.Register)
        {
            var r = i.Op0Register;
            if (r.IsSegmentRegister())
            {
                int si = RegTable.Index[(int)r];
                ulong sp = Gpr[4] & StackMask();
                ushort sel = (ushort)Read(Linear(SS, sp), psz);
                LoadSegment(si, sel);
                SetSp(sp + (ulong)psz);
                if (si == SS) { _interruptShadow = true; _irqHint = true; }
                return;
            }
            ulong v = Pop(psz);
            SetReg(r, v);
            return;
        }
        // pop to memory: the address is computed after RSP is incremented.
        ulong sp0 = Gpr[4] & StackMask();
        ulong val = Read(Linear(SS, sp0), psz);
        SetSp(sp0 + (ulong)psz);
        try
        {
            Write(MemAddr(ref i), psz, val);
        }
        catch (CpuFault)
        {
            SetSp(sp0);
            throw;
        }
    }

    private void ExecEnter(ref Instruction i, int sz)
    {
        int alloc = i.Immediate16;
        int level = i.Immediate8_2nd & 31;
        Push(Gpr[5], sz);
        ulong frame = Gpr[4] & StackMask();
        if (level > 0)
        {
            ulong bp = Gpr[5];
            for (int k = 1; k < level; k++)
            {
                bp -= (ulong)sz;
                Push(Read(Linear(SS, bp & StackMask()), sz), sz);
            }
            Push(frame, sz);
        }
        SetGpr(5, sz == 8 ? 8 : StackSize == 2 ? 2 : sz, frame);
        SetSp((Gpr[4] - (ulong)alloc) & StackMask());
    }

    private void LoadFlags(ulong v, int size)
    {
        ulong mask = Flags.Arith | Flags.TF | Flags.DF | Flags.NT | Flags.AC | Flags.ID;
        int iopl = (int)((SystemFlags >> 12) & 3);
        if (!Protected || Cpl == 0) mask |= Flags.IOPL | Flags.IF;
        else if (Cpl <= iopl) mask |= Flags.IF;
        if (size == 2) mask &= 0xFFFF;
        ulong old = Rflags;
        Rflags = (Rflags & ~mask) | (v & mask) | 2;
        if ((SystemFlags & Flags.IF) != 0 && (old & Flags.IF) == 0) _irqHint = true;
    }

    // ---------- strings ----------

    private void ExecString(ref Instruction i, int asz)
    {
        var mn = i.Mnemonic;
        int sz = mn switch
        {
            Mnemonic.Movsb or Mnemonic.Stosb or Mnemonic.Lodsb or Mnemonic.Cmpsb or Mnemonic.Scasb or Mnemonic.Insb or Mnemonic.Outsb => 1,
            Mnemonic.Movsw or Mnemonic.Stosw or Mnemonic.Lodsw or Mnemonic.Cmpsw or Mnemonic.Scasw or Mnemonic.Insw or Mnemonic.Outsw => 2,
            Mnemonic.Movsq or Mnemonic.Stosq or Mnemonic.Lodsq or Mnemonic.Cmpsq or Mnemonic.Scasq => 8,
            _ => 4,
        };
        ulong am = Bits.Mask(asz);
        bool rep = i.HasRepPrefix || i.HasRepnePrefix;
        int srcSeg = i.SegmentPrefix == Register.None ? DS : (int)(i.SegmentPrefix - Register.ES);
        ulong delta = (SystemFlags & Flags.DF) != 0 ? (ulong)(-sz) : (ulong)sz;
        int iter = 0;
        if (mn is Mnemonic.Insb or Mnemonic.Insw or Mnemonic.Insd or Mnemonic.Outsb or Mnemonic.Outsw or Mnemonic.Outsd)
            CheckIo();
        while (true)
        {
            if (rep)
            {
                if ((Gpr[1] & am) == 0) return;
                if (++iter > 4096 && (_exitRequested != 0 || _irqHint))
                {
                    // Resume the instruction later (it is restartable): lets RequestExit and interrupts in.
                    // It has not retired: the block counted it on entry, and will again when it is resumed, so
                    // it counts once, when it completes (as on hardware), however often it was interrupted.
                    Rip = FaultRip;
                    _endBlock = true;
                    InstructionsRetired--;
                    return;
                }
            }
            ulong si = Gpr[6] & am, di = Gpr[7] & am;
            switch (mn)
            {
                case Mnemonic.Movsb: case Mnemonic.Movsw: case Mnemonic.Movsd: case Mnemonic.Movsq:
                    if (rep && sz == 1 && delta == 1 && BulkMovs(srcSeg, asz)) continue;
                    Write(Linear(ES, di), sz, Read(Linear(srcSeg, si), sz));
                    SetGpr(6, asz, si + delta); SetGpr(7, asz, di + delta);
                    break;
                case Mnemonic.Stosb: case Mnemonic.Stosw: case Mnemonic.Stosd: case Mnemonic.Stosq:
                    if (rep && delta == (ulong)sz && BulkStos(sz, asz)) continue;
                    Write(Linear(ES, di), sz, Gpr[0]);
                    SetGpr(7, asz, di + delta);
                    break;
                case Mnemonic.Lodsb: case Mnemonic.Lodsw: case Mnemonic.Lodsd: case Mnemonic.Lodsq:
                    SetGpr(0, sz, Read(Linear(srcSeg, si), sz));
                    SetGpr(6, asz, si + delta);
                    break;
                case Mnemonic.Cmpsb: case Mnemonic.Cmpsw: case Mnemonic.Cmpsd: case Mnemonic.Cmpsq:
                {
                    ulong a = Read(Linear(srcSeg, si), sz), b = Read(Linear(ES, di), sz);
                    Alu(OpCmp, a, b, sz);
                    SetGpr(6, asz, si + delta); SetGpr(7, asz, di + delta);
                    break;
                }
                case Mnemonic.Scasb: case Mnemonic.Scasw: case Mnemonic.Scasd: case Mnemonic.Scasq:
                    Alu(OpCmp, Gpr[0], Read(Linear(ES, di), sz), sz);
                    SetGpr(7, asz, di + delta);
                    break;
                case Mnemonic.Insb: case Mnemonic.Insw: case Mnemonic.Insd:
                {
                    Span<byte> buf = stackalloc byte[4];
                    ulong target = Linear(ES, di);
                    Read(target, sz, NeedW); // fault before the port read has side effects
                    _io!.PioRead((ushort)Gpr[2], buf[..sz]);
                    Write(target, sz, BitConverter.ToUInt32(buf));
                    SetGpr(7, asz, di + delta);
                    break;
                }
                default:
                {
                    Span<byte> buf = stackalloc byte[4];
                    BitConverter.TryWriteBytes(buf, (uint)Read(Linear(srcSeg, si), sz));
                    _io!.PioWrite((ushort)Gpr[2], buf[..sz]);
                    SetGpr(6, asz, si + delta);
                    break;
                }
            }
            if (!rep) return;
            SetGpr(1, asz, (Gpr[1] - 1) & am);
            if (mn is Mnemonic.Cmpsb or Mnemonic.Cmpsw or Mnemonic.Cmpsd or Mnemonic.Cmpsq or Mnemonic.Scasb or Mnemonic.Scasw or Mnemonic.Scasd or Mnemonic.Scasq)
            {
                bool zf = (Rflags & Flags.ZF) != 0;
                if (i.HasRepePrefix && !zf) return;
                if (i.HasRepnePrefix && zf) return;
            }
        }
    }

    /// <summary>REP MOVSB forward, page chunk at a time, when both sides are RAM and do not overlap harmfully.</summary>
    private bool BulkMovs(int srcSeg, int asz)
    {
        ulong am = Bits.Mask(asz);
        ulong count = Gpr[1] & am;
        ulong si = Gpr[6] & am, di = Gpr[7] & am;
        ulong sla = Linear(srcSeg, si), dla = Linear(ES, di);
        ulong chunk = Math.Min(count, Math.Min(4096 - (sla & 0xFFF), 4096 - (dla & 0xFFF)));
        if (chunk < 8) return false;
        if (asz != 8 && (si + chunk > am || di + chunk > am)) return false;
        ref var se = ref Fill(sla, NeedR);
        if (se.Host == null) return false;
        byte* src = se.Host + (sla & 0xFFF);
        byte* dst = WritablePointer(dla, (int)chunk);
        if (dst == null) return false;
        if (dst > src && dst < src + chunk) return false;
        // SAFETY: chunk bytes fit in both pages (chunk <= bytes to each page end) and both are RAM.
        Buffer.MemoryCopy(src, dst, chunk, chunk);
        SetGpr(6, asz, si + chunk); SetGpr(7, asz, di + chunk);
        SetGpr(1, asz, count - chunk);
        return true;
    }

    private bool BulkStos(int sz, int asz)
    {
        ulong am = Bits.Mask(asz);
        ulong count = Gpr[1] & am;
        ulong di = Gpr[7] & am;
        ulong dla = Linear(ES, di);
        if ((dla & (ulong)(sz - 1)) != 0) return false;
        ulong elems = Math.Min(count, (4096 - (dla & 0xFFF)) / (ulong)sz);
        if (elems < 4) return false;
        if (asz != 8 && di + elems * (ulong)sz > am) return false;
        byte* dst = WritablePointer(dla, (int)(elems * (ulong)sz));
        if (dst == null) return false;
        ulong v = Gpr[0];
        switch (sz)
        {
            case 1: new Span<byte>(dst, (int)elems).Fill((byte)v); break;
            case 2: new Span<ushort>(dst, (int)elems).Fill((ushort)v); break;
            case 4: new Span<uint>(dst, (int)elems).Fill((uint)v); break;
            default: new Span<ulong>(dst, (int)elems).Fill(v); break;
        }
        SetGpr(7, asz, di + elems * (ulong)sz);
        SetGpr(1, asz, count - elems);
        return true;
    }

    // ---------- port I/O ----------

    private void CheckIo()
    {
        if (Protected && (Cpl > (int)((SystemFlags >> 12) & 3) || (SystemFlags & Flags.VM) != 0)) throw GP();
    }

    private void ExecIn(ref Instruction i)
    {
        CheckIo();
        ushort port = i.Op1Kind == OpKind.Register ? (ushort)Gpr[2] : i.Immediate8;
        int sz = RegTable.Size[(int)i.Op0Register];
        Span<byte> buf = stackalloc byte[4];
        buf.Clear();
        _io!.PioRead(port, buf[..sz]);
        SetGpr(0, sz, BitConverter.ToUInt32(buf));
    }

    private void ExecOut(ref Instruction i)
    {
        CheckIo();
        ushort port = i.Op0Kind == OpKind.Register ? (ushort)Gpr[2] : i.Immediate8;
        int sz = RegTable.Size[(int)i.Op1Register];
        Span<byte> buf = stackalloc byte[4];
        BitConverter.TryWriteBytes(buf, (uint)Gpr[0]);
        _io!.PioWrite(port, buf[..sz]);
    }
}
