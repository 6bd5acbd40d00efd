using System.Runtime.CompilerServices;
using Iced.Intel;

namespace SharpVM.Cpu;

/// <summary>
/// More fast-path handlers, for forms that Linux's boot executes by the hundred million and the
/// generic interpreter used to run (measured with SHARPVM_OPSTATS): two- and three-operand IMUL,
/// CMOVcc, SETcc to a register, MOVSXD and ROL/ROR by an immediate; and the forms that most often still reached
/// the generic interpreter in a boot (~8 M of its ~12 M calls): NEG/NOT of a register, INC/DEC/NEG/NOT of memory
/// (not LOCK-ed), SHL/SHR/SAR of a register by CL and BSWAP. Their ids start at 200 so they never collide with
/// <see cref="FastOp"/>'s.
/// </summary>
internal static class FastOpExtra
{
    public const byte ImulRR = 200, ImulRM = 201, ImulRRI = 202, ImulRMI = 203, CmovRR = 204, CmovRM = 205,
        SetccR = 206, MovsxdRR = 207, MovsxdRM = 208, RotRI = 209,
        // Alu: 0 INC, 1 DEC, 2 NEG, 3 NOT (EmulatorVcpu.Unary's kinds).
        UnaryR = 210, UnaryM = 211,
        // Alu: 0 SHL/SAL, 1 SHR, 2 SAR.
        ShiftRCl = 212,
        BswapR = 213,
        // 64-bit code's near indirect CALL and JMP through a register or memory (function pointers, jump tables; with
        // enhanced IBRS Linux patches its retpoline calls into CALL r64): they end their block.
        CallR = 214, CallM = 215, JmpR = 216, JmpM = 217;

    /// <summary>The lowest id: the block loop sends ids from here up straight to ExecFastExtra.</summary>
    public const byte First = ImulRR;
}

public sealed partial class EmulatorVcpu
{
    /// <summary>Classifies the forms handled by <see cref="ExecFastExtra"/> (only when the generic predecoder found nothing).</summary>
    private static void PredecodeExtra(in Instruction i, ref DInsn d, int osz)
    {
        if (i.HasLockPrefix || i.HasRepPrefix || i.HasRepnePrefix || i.OpCount < 1) return;
        if (i.Code is Code.Call_rm64 or Code.Jmp_rm64)
        {
            bool call = i.Code == Code.Call_rm64;
            if (i.Op0Kind == OpKind.Register) { SetDst(ref d, i.Op0Register); d.Op = call ? FastOpExtra.CallR : FastOpExtra.JmpR; }
            else if (i.Op0Kind == OpKind.Memory && SetMem(ref d, i)) d.Op = call ? FastOpExtra.CallM : FastOpExtra.JmpM;
            return;
        }
        int unary = i.Mnemonic switch { Mnemonic.Inc => 0, Mnemonic.Dec => 1, Mnemonic.Neg => 2, Mnemonic.Not => 3, _ => -1 };
        if (unary >= 0 && i.OpCount == 1 && i.Op0Kind == OpKind.Memory && osz is 1 or 2 or 4 or 8)
        {
            if (!SetMem(ref d, i)) return;
            d.Alu = (byte)unary;
            d.Op = FastOpExtra.UnaryM;
            return;
        }
        if (i.Op0Kind != OpKind.Register || !IsGpr(i.Op0Register)) return;
        var k1 = i.OpCount > 1 ? i.Op1Kind : OpKind.Register;
        switch (i.Mnemonic)
        {
            case Mnemonic.Imul when osz is 2 or 4 or 8 && i.OpCount >= 2:
            {
                SetDst(ref d, i.Op0Register);
                bool imm = i.OpCount == 3;
                if (imm)
                {
                    if (!IsImm(i.Op2Kind)) return;
                    d.Imm = i.GetImmediate(2) & Bits.Mask(osz);
                }
                if (k1 == OpKind.Register && IsGpr(i.Op1Register)) { SetSrc(ref d, i.Op1Register); d.Op = imm ? FastOpExtra.ImulRRI : FastOpExtra.ImulRR; }
                else if (k1 == OpKind.Memory && SetMem(ref d, i)) d.Op = imm ? FastOpExtra.ImulRMI : FastOpExtra.ImulRM;
                return;
            }
            case Mnemonic.Cmovo: case Mnemonic.Cmovno: case Mnemonic.Cmovb: case Mnemonic.Cmovae: case Mnemonic.Cmove: case Mnemonic.Cmovne:
            case Mnemonic.Cmovbe: case Mnemonic.Cmova: case Mnemonic.Cmovs: case Mnemonic.Cmovns: case Mnemonic.Cmovp: case Mnemonic.Cmovnp:
            case Mnemonic.Cmovl: case Mnemonic.Cmovge: case Mnemonic.Cmovle: case Mnemonic.Cmovg:
                if (osz is not (2 or 4 or 8)) return;
                SetDst(ref d, i.Op0Register);
                d.Alu = (byte)i.ConditionCode;
                if (k1 == OpKind.Register && IsGpr(i.Op1Register)) { SetSrc(ref d, i.Op1Register); d.Op = FastOpExtra.CmovRR; }
                else if (k1 == OpKind.Memory && SetMem(ref d, i)) d.Op = FastOpExtra.CmovRM;
                return;
            case Mnemonic.Seto: case Mnemonic.Setno: case Mnemonic.Setb: case Mnemonic.Setae: case Mnemonic.Sete: case Mnemonic.Setne:
            case Mnemonic.Setbe: case Mnemonic.Seta: case Mnemonic.Sets: case Mnemonic.Setns: case Mnemonic.Setp: case Mnemonic.Setnp:
            case Mnemonic.Setl: case Mnemonic.Setge: case Mnemonic.Setle: case Mnemonic.Setg:
                SetDst(ref d, i.Op0Register);
                d.Alu = (byte)i.ConditionCode;
                d.Op = FastOpExtra.SetccR;
                return;
            case Mnemonic.Movsxd when i.Code == Code.Movsxd_r64_rm32:
                SetDst(ref d, i.Op0Register);
                if (k1 == OpKind.Register && IsGpr(i.Op1Register)) { SetSrc(ref d, i.Op1Register); d.Op = FastOpExtra.MovsxdRR; }
                else if (k1 == OpKind.Memory && SetMem(ref d, i)) d.Op = FastOpExtra.MovsxdRM;
                return;
            case Mnemonic.Neg or Mnemonic.Not when i.OpCount == 1 && osz is 1 or 2 or 4 or 8:
                SetDst(ref d, i.Op0Register);
                d.Alu = (byte)unary;
                d.Op = FastOpExtra.UnaryR;
                return;
            case Mnemonic.Shl or Mnemonic.Sal or Mnemonic.Shr or Mnemonic.Sar
                when i.OpCount == 2 && k1 == OpKind.Register && i.Op1Register == Register.CL && osz is 1 or 2 or 4 or 8:
                SetDst(ref d, i.Op0Register);
                d.Alu = (byte)(i.Mnemonic switch { Mnemonic.Shr => 1, Mnemonic.Sar => 2, _ => 0 });
                d.Op = FastOpExtra.ShiftRCl;
                return;
            case Mnemonic.Bswap when osz is 4 or 8: // BSWAP r16 is undefined: the interpreter's choice stays
                SetDst(ref d, i.Op0Register);
                d.Op = FastOpExtra.BswapR;
                return;
            case Mnemonic.Rol or Mnemonic.Ror when k1 == OpKind.Immediate8 && osz is 1 or 2 or 4 or 8:
                SetDst(ref d, i.Op0Register);
                d.Alu = (byte)(i.Mnemonic == Mnemonic.Rol ? 0 : 1);
                d.Imm = i.Immediate8;
                d.Op = FastOpExtra.RotRI;
                return;
        }
    }

    /// <summary>Executes a form classified by <see cref="PredecodeExtra"/>; false for anything else.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool ExecFastExtra(ref DInsn d)
    {
        int sz = d.Size;
        switch (d.Op)
        {
            case FastOpExtra.ImulRR: SetR(d.Dst, false, sz, Imul2(GetR(d.Dst, false, sz), GetR(d.Src, false, sz), sz)); return true;
            case FastOpExtra.ImulRM: SetR(d.Dst, false, sz, Imul2(GetR(d.Dst, false, sz), Read(FastLinear(ref d), sz), sz)); return true;
            case FastOpExtra.ImulRRI: SetR(d.Dst, false, sz, Imul2(GetR(d.Src, false, sz), d.Imm, sz)); return true;
            case FastOpExtra.ImulRMI: SetR(d.Dst, false, sz, Imul2(Read(FastLinear(ref d), sz), d.Imm, sz)); return true;
            case FastOpExtra.CmovRR:
            case FastOpExtra.CmovRM:
            {
                // The memory operand is read whatever the condition (it may fault), as on hardware.
                ulong v = d.Op == FastOpExtra.CmovRR ? GetR(d.Src, false, sz) : Read(FastLinear(ref d), sz);
                if (Cond((ConditionCode)d.Alu)) SetR(d.Dst, false, sz, v);
                else if (sz == 4) SetR(d.Dst, false, 4, GetR(d.Dst, false, 4)); // a 32-bit CMOV always zero-extends
                return true;
            }
            case FastOpExtra.SetccR: SetR(d.Dst, d.DstHigh, 1, Cond((ConditionCode)d.Alu) ? 1UL : 0); return true;
            case FastOpExtra.MovsxdRR: SetR(d.Dst, false, 8, (ulong)(long)(int)GetR(d.Src, false, 4)); return true;
            case FastOpExtra.MovsxdRM: SetR(d.Dst, false, 8, (ulong)(long)(int)Read(FastLinear(ref d), 4)); return true;
            case FastOpExtra.RotRI:
            {
                ulong count = d.Imm & (sz == 8 ? 63u : 31u);
                if (d.FlagsDead)
                {
                    // Set only on 32/64-bit rotates by a non-zero count: the rotation alone, flags untouched.
                    ulong v = GetR(d.Dst, false, sz);
                    int c = (int)count, bits = sz * 8;
                    SetR(d.Dst, false, sz, ((v << (d.Alu == 0 ? c : bits - c)) | (v >> (d.Alu == 0 ? bits - c : c))) & Bits.Mask(sz));
                    return true;
                }
                ulong res = Shift(d.Alu == 0 ? Mnemonic.Rol : Mnemonic.Ror, GetR(d.Dst, d.DstHigh, sz), d.Imm, sz);
                if (count != 0 || sz == 4) SetR(d.Dst, d.DstHigh, sz, res);
                return true;
            }
            case FastOpExtra.UnaryR: SetR(d.Dst, d.DstHigh, sz, Unary(d.Alu, GetR(d.Dst, d.DstHigh, sz), sz)); return true;
            case FastOpExtra.UnaryM:
            {
                ulong la = FastLinear(ref d);
                Write(la, sz, Unary(d.Alu, ReadForWrite(la, sz), sz));
                return true;
            }
            case FastOpExtra.ShiftRCl:
            {
                // As the interpreter: a masked count of 0 changes nothing but a 32-bit register's upper half.
                ulong count = Gpr[1] & 0xFF;
                var mn = d.Alu switch { 1 => Mnemonic.Shr, 2 => Mnemonic.Sar, _ => Mnemonic.Shl };
                ulong res = Shift(mn, GetR(d.Dst, d.DstHigh, sz), count, sz);
                if ((count & (sz == 8 ? 63u : 31u)) != 0 || sz == 4) SetR(d.Dst, d.DstHigh, sz, res);
                return true;
            }
            case FastOpExtra.BswapR:
            {
                ulong v = GetR(d.Dst, false, sz);
                SetR(d.Dst, false, sz, sz == 8 ? System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(v)
                    : System.Buffers.Binary.BinaryPrimitives.ReverseEndianness((uint)v));
                return true;
            }
            case FastOpExtra.CallR:
            case FastOpExtra.CallM:
            {
                // The target is read before RSP changes (CALL through RSP or a stack slot uses the old RSP).
                ulong target = d.Op == FastOpExtra.CallR ? Gpr[d.Dst] : Read(FastLinear(ref d), 8);
                ulong sp = Gpr[4] - 8;
                Write(sp, 8, d.NextIp);
                Gpr[4] = sp;
                Rip = target;
                _endBlock = true;
                return true;
            }
            case FastOpExtra.JmpR: Rip = Gpr[d.Dst]; _endBlock = true; return true;
            case FastOpExtra.JmpM: Rip = Read(FastLinear(ref d), 8); _endBlock = true; return true;
            default: return false;
        }
    }
}
