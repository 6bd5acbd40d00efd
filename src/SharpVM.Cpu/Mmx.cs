using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Iced.Intel;

namespace SharpVM.Cpu;

/// <summary>
/// MMX (and the SSE/SSE2 instructions on MMX registers: PSHUFW, PMOVMSKB, PINSRW/PEXTRW, PAVG*, PMIN*/PMAX*,
/// PSADBW, PMULHUW, PADDQ/PSUBQ, PMULUDQ, MOVNTQ, MASKMOVQ, MOVQ2DQ/MOVDQ2Q and the CVT*PI* conversions).
/// MMi is the significand of physical x87 register Ri; writing it sets that register's exponent to
/// all ones, and every MMX instruction but EMMS sets TOP = 0 and tags all registers valid, as on
/// hardware. Both happen only once the instruction can no longer fault.
/// </summary>
public sealed unsafe partial class EmulatorVcpu
{
    private ulong GetMm(Register r) => FpuSignificand[r - Register.MM0];

    private void SetMm(Register r, ulong v)
    {
        int k = r - Register.MM0;
        FpuSignificand[k] = v;
        FpuSignExponent[k] = 0xFFFF;
    }

    /// <summary>The x87-to-MMX transition every MMX instruction makes: TOP = 0, all tags valid.</summary>
    private void MmxTransition()
    {
        SetFpuTop(0);
        Ftw = 0xFF;
    }

    private void CheckMmx()
    {
        if ((Cr0 & Cr0Em) != 0) throw UD();
        if ((Cr0 & Cr0Ts) != 0) throw Fault(7);
        if ((Fsw & FswErrorSummary) != 0 && (Cr0 & Cr0Ne) != 0) throw Fault(16);
    }

    /// <summary>Operand <paramref name="n"/> as 64 bits: an MMX register, a GPR, memory (its own size) or an immediate.</summary>
    private ulong MmxSource(ref Instruction i, int n)
    {
        var k = i.GetOpKind(n);
        if (k == OpKind.Register)
        {
            var r = i.GetOpRegister(n);
            if (r.IsMM()) return GetMm(r);
            if (r.IsXMM()) return Xmm[2 * XmmIndex(r)];
            return GetReg(r);
        }
        if (k == OpKind.Memory) return Read(MemAddr(ref i), Math.Min(8, i.MemorySize.GetSize()));
        return i.GetImmediate(n);
    }

    /// <summary>True for the conversions between MMX and XMM registers that also take a memory operand instead of the MMX one.</summary>
    private static bool IsMmxConversion(Mnemonic mn) => mn is Mnemonic.Cvtpi2ps or Mnemonic.Cvtpi2pd;

    private void ExecMmx(ref Instruction i)
    {
        var mn = i.Mnemonic;
        bool transition = IsMmx(ref i);
        if (mn is Mnemonic.Cvtpi2ps or Mnemonic.Cvtpi2pd or Mnemonic.Cvtps2pi or Mnemonic.Cvttps2pi or Mnemonic.Cvtpd2pi or Mnemonic.Cvttpd2pi
            or Mnemonic.Movq2dq or Mnemonic.Movdq2q)
        {
            CheckSse();
            if (transition) CheckMmx();
            ExecMmxConversion(ref i);
            if (transition) MmxTransition();
            return;
        }
        CheckMmx();
        var k0 = i.Op0Kind;
        switch (mn)
        {
            case Mnemonic.Movd:
            case Mnemonic.Movq:
            case Mnemonic.Movntq:
                if (k0 == OpKind.Register && i.Op0Register.IsMM())
                {
                    ulong v = MmxSource(ref i, 1);
                    SetMm(i.Op0Register, mn == Mnemonic.Movd ? (uint)v : v);
                }
                else
                {
                    ulong v = GetMm(i.Op1Register);
                    int size = mn == Mnemonic.Movd ? 4 : 8;
                    if (k0 == OpKind.Register) SetReg(i.Op0Register, size == 4 ? (uint)v : v);
                    else Write(MemAddr(ref i), size, v);
                }
                break;
            case Mnemonic.Maskmovq:
            {
                ulong data = GetMm(i.Op1Register), mask = GetMm(i.Op2Register);
                ulong la = Linear((int)(i.MemorySegment - Register.ES), Gpr[7] & Bits.Mask(_asz));
                if (mask != 0)
                {
                    for (int b = 0; b < 8; b++) if (((mask >> (8 * b + 7)) & 1) != 0) Read(la + (ulong)b, 1, NeedW);
                    for (int b = 0; b < 8; b++) if (((mask >> (8 * b + 7)) & 1) != 0) Write(la + (ulong)b, 1, data >> (8 * b));
                }
                break;
            }
            case Mnemonic.Pmovmskb:
                SetReg(i.Op0Register, (ulong)(Sse2.MoveMask(Vector128.Create(GetMm(i.Op1Register), 0UL).AsByte()) & 0xFF));
                break;
            case Mnemonic.Pextrw:
                SetReg(i.Op0Register, (GetMm(i.Op1Register) >> (16 * (i.Immediate8 & 3))) & 0xFFFF);
                break;
            case Mnemonic.Pinsrw:
            {
                ulong w = MmxSource(ref i, 1) & 0xFFFF;
                int shift = 16 * (i.Immediate8 & 3);
                SetMm(i.Op0Register, (GetMm(i.Op0Register) & ~(0xFFFFUL << shift)) | (w << shift));
                break;
            }
            case Mnemonic.Pshufw:
            {
                ulong s = MmxSource(ref i, 1), r = 0;
                int imm = i.Immediate8;
                for (int k = 0; k < 4; k++) r |= ((s >> (16 * ((imm >> (2 * k)) & 3))) & 0xFFFF) << (16 * k);
                SetMm(i.Op0Register, r);
                break;
            }
            default:
            {
                ulong a = GetMm(i.Op0Register), b = MmxSource(ref i, 1);
                Vector128<byte> r;
                switch (mn)
                {
                    case Mnemonic.Packsswb: case Mnemonic.Packssdw: case Mnemonic.Packuswb:
                    {
                        // Both 64-bit operands in one vector: the low half of pack(v, v) is pack(a, b).
                        var v = Vector128.Create(a, b);
                        r = mn switch
                        {
                            Mnemonic.Packsswb => Sse2.PackSignedSaturate(v.AsInt16(), v.AsInt16()).AsByte(),
                            Mnemonic.Packssdw => Sse2.PackSignedSaturate(v.AsInt32(), v.AsInt32()).AsByte(),
                            _ => Sse2.PackUnsignedSaturate(v.AsInt16(), v.AsInt16()),
                        };
                        break;
                    }
                    case Mnemonic.Punpckhbw: case Mnemonic.Punpckhwd: case Mnemonic.Punpckhdq:
                    {
                        // The high halves of 64-bit registers, interleaved like a low unpack.
                        var x = Vector128.Create(a >> 32, 0UL).AsByte();
                        var y = Vector128.Create(b >> 32, 0UL).AsByte();
                        var low = mn switch { Mnemonic.Punpckhbw => Mnemonic.Punpcklbw, Mnemonic.Punpckhwd => Mnemonic.Punpcklwd, _ => Mnemonic.Punpckldq };
                        PackedInteger.TryCompute(low, x, y, default, out r);
                        break;
                    }
                    default:
                    {
                        var cnt = Vector128.Create(b, 0UL);
                        if (!PackedInteger.TryCompute(mn, Vector128.Create(a, 0UL).AsByte(), Vector128.Create(b, 0UL).AsByte(), cnt, out r))
                            throw new CpuUnimplemented($"unimplemented instruction {i.Code} ({i})");
                        break;
                    }
                }
                SetMm(i.Op0Register, r.AsUInt64().GetElement(0));
                break;
            }
        }
        MmxTransition();
    }

    /// <summary>CVTPI2PS/CVTPI2PD/CVT(T)PS2PI/CVT(T)PD2PI and MOVQ2DQ/MOVDQ2Q (MXCSR rounding is not applied: round to nearest).</summary>
    private void ExecMmxConversion(ref Instruction i)
    {
        switch (i.Mnemonic)
        {
            case Mnemonic.Cvtpi2ps:
            {
                int d = XmmIndex(i.Op0Register);
                var f = Sse2.ConvertToVector128Single(Vector128.Create(MmxSource(ref i, 1), 0UL).AsInt32());
                Xmm[2 * d] = f.AsUInt64().GetElement(0);
                return;
            }
            case Mnemonic.Cvtpi2pd:
            {
                var f = Sse2.ConvertToVector128Double(Vector128.Create(MmxSource(ref i, 1), 0UL).AsInt32());
                SetXmm(XmmIndex(i.Op0Register), f.AsByte());
                return;
            }
            case Mnemonic.Cvtps2pi:
            case Mnemonic.Cvttps2pi:
            {
                var s = Vector128.Create(MmxSource(ref i, 1), 0UL).AsSingle();
                var v = i.Mnemonic == Mnemonic.Cvtps2pi ? Sse2.ConvertToVector128Int32(s) : Sse2.ConvertToVector128Int32WithTruncation(s);
                SetMm(i.Op0Register, v.AsUInt64().GetElement(0));
                return;
            }
            case Mnemonic.Cvtpd2pi:
            case Mnemonic.Cvttpd2pi:
            {
                var s = VecSrc(ref i, 1, true).AsDouble();
                var v = i.Mnemonic == Mnemonic.Cvtpd2pi ? Sse2.ConvertToVector128Int32(s) : Sse2.ConvertToVector128Int32WithTruncation(s);
                SetMm(i.Op0Register, v.AsUInt64().GetElement(0));
                return;
            }
            case Mnemonic.Movq2dq:
                SetXmm(XmmIndex(i.Op0Register), Vector128.Create(GetMm(i.Op1Register), 0UL).AsByte());
                return;
            default: // Movdq2q
                SetMm(i.Op0Register, Xmm[2 * XmmIndex(i.Op1Register)]);
                return;
        }
    }
}
