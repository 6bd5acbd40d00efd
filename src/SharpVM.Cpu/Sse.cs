using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Iced.Intel;

namespace SharpVM.Cpu;

/// <summary>
/// SSE/SSE2 and the x87 control instructions. Packed operations use the host's own SSE2 through
/// System.Runtime.Intrinsics, so their results match hardware bit for bit. MXCSR rounding control
/// and exception flags are stored, not applied (round-to-nearest, masked exceptions).
/// </summary>
public sealed unsafe partial class EmulatorVcpu
{
    private Vector128<byte> GetXmm(int n) => Vector128.Create(Xmm[2 * n], Xmm[2 * n + 1]).AsByte();

    private void SetXmm(int n, Vector128<byte> v)
    {
        var q = v.AsUInt64();
        Xmm[2 * n] = q.GetElement(0);
        Xmm[2 * n + 1] = q.GetElement(1);
    }

    private static int XmmIndex(Register r) => r - Register.XMM0;

    private void CheckSse()
    {
        if ((Cr0 & Cr0Em) != 0 || (Cr4 & Cr4Osfxsr) == 0) throw UD();
        if ((Cr0 & Cr0Ts) != 0) throw Fault(7);
    }

    private void CheckFpu()
    {
        if ((Cr0 & (Cr0Em | Cr0Ts)) != 0) throw Fault(7);
    }

    private Vector128<byte> ReadMem128(ulong la, int size)
    {
        ulong lo = 0, hi = 0;
        switch (size)
        {
            case 16: lo = Read(la, 8); hi = Read(la + 8, 8); break;
            case 8: lo = Read(la, 8); break;
            case 4: lo = Read(la, 4); break;
            case 2: lo = Read(la, 2); break;
            default: lo = Read(la, 1); break;
        }
        return Vector128.Create(lo, hi).AsByte();
    }

    private void WriteMem128(ulong la, int size, Vector128<byte> v)
    {
        var q = v.AsUInt64();
        switch (size)
        {
            case 16:
                // Check both halves are writable before writing either.
                Read(la + 8, 1, NeedW);
                Write(la, 8, q.GetElement(0)); Write(la + 8, 8, q.GetElement(1));
                break;
            case 8: Write(la, 8, q.GetElement(0)); break;
            default: Write(la, 4, q.GetElement(0)); break;
        }
    }

    /// <summary>Reads operand <paramref name="n"/> as a vector: an XMM register, a GPR (zero-extended) or memory.</summary>
    private Vector128<byte> VecSrc(ref Instruction i, int n, bool aligned)
    {
        var k = i.GetOpKind(n);
        if (k == OpKind.Register)
        {
            var r = i.GetOpRegister(n);
            if (r.IsXMM()) return GetXmm(XmmIndex(r));
            if (r.IsGPR()) return Vector128.Create(GetReg(r), 0UL).AsByte();
            throw new CpuUnimplemented($"{i.Mnemonic} with {r}");
        }
        if (k == OpKind.Memory)
        {
            ulong la = MemAddr(ref i);
            int size = i.MemorySize.GetSize();
            if (size > 16) size = 16;
            if (aligned && size == 16 && (la & 15) != 0) throw GP();
            return ReadMem128(la, size);
        }
        return Vector128.Create(i.GetImmediate(n), 0UL).AsByte();
    }

    private static bool IsMmx(ref Instruction i)
    {
        for (int k = 0; k < i.OpCount; k++)
            if (i.GetOpKind(k) == OpKind.Register && i.GetOpRegister(k).IsMM()) return true;
        return false;
    }

    private void ExecSse(ref Instruction i)
    {
        var mn = i.Mnemonic;
        if (TryExecX87(ref i)) return;
        if (IsMmx(ref i) || IsMmxConversion(mn)) { ExecMmx(ref i); return; }
        switch (mn)
        {
            case Mnemonic.Emms:
                CheckMmx();
                Ftw = 0;
                SetFpuTop(0); // as the host CPU does (the SDM only mentions the tags)
                return;
            case Mnemonic.Fxsave:
            case Mnemonic.Fxsave64:
                CheckFpu();
                Fxsave(MemAddr(ref i), mn == Mnemonic.Fxsave64);
                return;
            case Mnemonic.Fxrstor:
            case Mnemonic.Fxrstor64:
                CheckFpu();
                Fxrstor(MemAddr(ref i), mn == Mnemonic.Fxrstor64);
                return;
            case Mnemonic.Ldmxcsr:
            {
                CheckSse();
                uint v = (uint)Read(MemAddr(ref i), 4);
                if ((v & ~0xFFFFu) != 0) throw GP();
                Mxcsr = v;
                return;
            }
            case Mnemonic.Stmxcsr:
                CheckSse();
                Write(MemAddr(ref i), 4, Mxcsr);
                return;
            case Mnemonic.Movnti:
                Write(MemAddr(ref i), RegTable.Size[(int)i.Op1Register], GetReg(i.Op1Register));
                return;
        }

        if (!IsSseMnemonic(mn))
            throw new CpuUnimplemented($"unimplemented instruction {i.Code} ({i})");
        CheckSse();
        ExecSseOp(ref i, mn);
    }

    private static bool IsSseMnemonic(Mnemonic mn) => mn switch
    {
        Mnemonic.Movaps or Mnemonic.Movups or Mnemonic.Movapd or Mnemonic.Movupd or Mnemonic.Movdqa or Mnemonic.Movdqu
        or Mnemonic.Movntdq or Mnemonic.Movntps or Mnemonic.Movntpd or Mnemonic.Movd or Mnemonic.Movq or Mnemonic.Movss
        or Mnemonic.Movsd or Mnemonic.Movlps or Mnemonic.Movhps or Mnemonic.Movlpd or Mnemonic.Movhpd or Mnemonic.Movhlps
        or Mnemonic.Movlhps or Mnemonic.Movmskps or Mnemonic.Movmskpd or Mnemonic.Pmovmskb
        or Mnemonic.Pxor or Mnemonic.Por or Mnemonic.Pand or Mnemonic.Pandn or Mnemonic.Xorps or Mnemonic.Xorpd
        or Mnemonic.Andps or Mnemonic.Andpd or Mnemonic.Andnps or Mnemonic.Andnpd or Mnemonic.Orps or Mnemonic.Orpd
        or Mnemonic.Paddb or Mnemonic.Paddw or Mnemonic.Paddd or Mnemonic.Paddq or Mnemonic.Psubb or Mnemonic.Psubw
        or Mnemonic.Psubd or Mnemonic.Psubq or Mnemonic.Pcmpeqb or Mnemonic.Pcmpeqw or Mnemonic.Pcmpeqd
        or Mnemonic.Pcmpgtb or Mnemonic.Pcmpgtw or Mnemonic.Pcmpgtd or Mnemonic.Pminub or Mnemonic.Pmaxub
        or Mnemonic.Pminsw or Mnemonic.Pmaxsw or Mnemonic.Psubusb or Mnemonic.Psubusw or Mnemonic.Paddusb
        or Mnemonic.Paddusw or Mnemonic.Psubsb or Mnemonic.Psubsw or Mnemonic.Paddsb or Mnemonic.Paddsw
        or Mnemonic.Pmullw or Mnemonic.Pmulhw or Mnemonic.Pmulhuw or Mnemonic.Pmuludq or Mnemonic.Pmaddwd
        or Mnemonic.Pavgb or Mnemonic.Pavgw or Mnemonic.Psadbw
        or Mnemonic.Psllw or Mnemonic.Pslld or Mnemonic.Psllq or Mnemonic.Psrlw or Mnemonic.Psrld or Mnemonic.Psrlq
        or Mnemonic.Psraw or Mnemonic.Psrad or Mnemonic.Pslldq or Mnemonic.Psrldq
        or Mnemonic.Punpcklbw or Mnemonic.Punpcklwd or Mnemonic.Punpckldq or Mnemonic.Punpcklqdq
        or Mnemonic.Punpckhbw or Mnemonic.Punpckhwd or Mnemonic.Punpckhdq or Mnemonic.Punpckhqdq
        or Mnemonic.Unpcklps or Mnemonic.Unpckhps or Mnemonic.Unpcklpd or Mnemonic.Unpckhpd
        or Mnemonic.Packuswb or Mnemonic.Packsswb or Mnemonic.Packssdw
        or Mnemonic.Pshufd or Mnemonic.Pshuflw or Mnemonic.Pshufhw or Mnemonic.Shufps or Mnemonic.Shufpd
        or Mnemonic.Pextrw or Mnemonic.Pinsrw
        or Mnemonic.Addsd or Mnemonic.Subsd or Mnemonic.Mulsd or Mnemonic.Divsd or Mnemonic.Minsd or Mnemonic.Maxsd or Mnemonic.Sqrtsd
        or Mnemonic.Addss or Mnemonic.Subss or Mnemonic.Mulss or Mnemonic.Divss or Mnemonic.Minss or Mnemonic.Maxss or Mnemonic.Sqrtss
        or Mnemonic.Addpd or Mnemonic.Subpd or Mnemonic.Mulpd or Mnemonic.Divpd or Mnemonic.Minpd or Mnemonic.Maxpd or Mnemonic.Sqrtpd
        or Mnemonic.Addps or Mnemonic.Subps or Mnemonic.Mulps or Mnemonic.Divps or Mnemonic.Minps or Mnemonic.Maxps or Mnemonic.Sqrtps
        or Mnemonic.Ucomisd or Mnemonic.Comisd or Mnemonic.Ucomiss or Mnemonic.Comiss
        or Mnemonic.Cvtsi2sd or Mnemonic.Cvtsi2ss or Mnemonic.Cvttsd2si or Mnemonic.Cvtsd2si or Mnemonic.Cvttss2si
        or Mnemonic.Cvtss2si or Mnemonic.Cvtsd2ss or Mnemonic.Cvtss2sd or Mnemonic.Cvtdq2pd or Mnemonic.Cvtdq2ps
        or Mnemonic.Cvttps2dq or Mnemonic.Cvtps2dq or Mnemonic.Cvtps2pd or Mnemonic.Cvtpd2ps or Mnemonic.Cvttpd2dq or Mnemonic.Cvtpd2dq
        or Mnemonic.Cmpps or Mnemonic.Cmppd or Mnemonic.Cmpss or Mnemonic.Cmpsd => true,
        _ => false,
    };

    private void ExecSseOp(ref Instruction i, Mnemonic mn)
    {
        var k0 = i.Op0Kind;
        // ----- moves -----
        switch (mn)
        {
            case Mnemonic.Movaps: case Mnemonic.Movups: case Mnemonic.Movapd: case Mnemonic.Movupd:
            case Mnemonic.Movdqa: case Mnemonic.Movdqu: case Mnemonic.Movntdq: case Mnemonic.Movntps: case Mnemonic.Movntpd:
            {
                bool aligned = mn is Mnemonic.Movaps or Mnemonic.Movapd or Mnemonic.Movdqa or Mnemonic.Movntdq or Mnemonic.Movntps or Mnemonic.Movntpd;
                if (k0 == OpKind.Register) { SetXmm(XmmIndex(i.Op0Register), VecSrc(ref i, 1, aligned)); return; }
                ulong la = MemAddr(ref i);
                if (aligned && (la & 15) != 0) throw GP();
                WriteMem128(la, 16, GetXmm(XmmIndex(i.Op1Register)));
                return;
            }
            case Mnemonic.Movd:
            case Mnemonic.Movq:
            {
                if (k0 == OpKind.Register && i.Op0Register.IsXMM())
                {
                    var v = VecSrc(ref i, 1, false).AsUInt64();
                    ulong lo = v.GetElement(0);
                    if (mn == Mnemonic.Movd) lo &= 0xFFFFFFFF;
                    SetXmm(XmmIndex(i.Op0Register), Vector128.Create(lo, 0UL).AsByte());
                    return;
                }
                ulong val = Xmm[2 * XmmIndex(i.Op1Register)];
                int size = mn == Mnemonic.Movd ? 4 : 8;
                if (k0 == OpKind.Register) SetReg(i.Op0Register, size == 4 ? val & 0xFFFFFFFF : val);
                else Write(MemAddr(ref i), size, val);
                return;
            }
            case Mnemonic.Movss:
            case Mnemonic.Movsd:
            {
                int size = mn == Mnemonic.Movss ? 4 : 8;
                ulong m = size == 4 ? 0xFFFFFFFFUL : ulong.MaxValue;
                if (k0 == OpKind.Register)
                {
                    int d = XmmIndex(i.Op0Register);
                    if (i.Op1Kind == OpKind.Register)
                    {
                        ulong s = Xmm[2 * XmmIndex(i.Op1Register)];
                        Xmm[2 * d] = (Xmm[2 * d] & ~m) | (s & m);
                    }
                    else
                    {
                        Xmm[2 * d] = Read(MemAddr(ref i), size);
                        Xmm[2 * d + 1] = 0;
                    }
                    return;
                }
                Write(MemAddr(ref i), size, Xmm[2 * XmmIndex(i.Op1Register)]);
                return;
            }
            case Mnemonic.Movlps: case Mnemonic.Movlpd: case Mnemonic.Movhps: case Mnemonic.Movhpd:
            {
                int half = mn is Mnemonic.Movhps or Mnemonic.Movhpd ? 1 : 0;
                if (k0 == OpKind.Register) Xmm[2 * XmmIndex(i.Op0Register) + half] = Read(MemAddr(ref i), 8);
                else Write(MemAddr(ref i), 8, Xmm[2 * XmmIndex(i.Op1Register) + half]);
                return;
            }
            case Mnemonic.Movhlps:
                Xmm[2 * XmmIndex(i.Op0Register)] = Xmm[2 * XmmIndex(i.Op1Register) + 1];
                return;
            case Mnemonic.Movlhps:
                Xmm[2 * XmmIndex(i.Op0Register) + 1] = Xmm[2 * XmmIndex(i.Op1Register)];
                return;
            case Mnemonic.Movmskps:
                SetReg(i.Op0Register, (ulong)(uint)Sse.MoveMask(GetXmm(XmmIndex(i.Op1Register)).AsSingle()));
                return;
            case Mnemonic.Movmskpd:
                SetReg(i.Op0Register, (ulong)Sse2.MoveMask(GetXmm(XmmIndex(i.Op1Register)).AsDouble()));
                return;
            case Mnemonic.Pmovmskb:
                SetReg(i.Op0Register, (ulong)Sse2.MoveMask(GetXmm(XmmIndex(i.Op1Register))));
                return;
            case Mnemonic.Pextrw:
            {
                var v = GetXmm(XmmIndex(i.Op1Register)).AsUInt16();
                ulong w = v.GetElement(i.Immediate8 & 7);
                if (i.Op0Kind == OpKind.Register) SetReg(i.Op0Register, w);
                else Write(MemAddr(ref i), 2, w);
                return;
            }
            case Mnemonic.Pinsrw:
            {
                int d = XmmIndex(i.Op0Register);
                ulong w = i.Op1Kind == OpKind.Register ? GetReg(i.Op1Register) : Read(MemAddr(ref i), 2);
                SetXmm(d, GetXmm(d).AsUInt16().WithElement(i.Immediate8 & 7, (ushort)w).AsByte());
                return;
            }
            case Mnemonic.Ucomisd: case Mnemonic.Comisd: case Mnemonic.Ucomiss: case Mnemonic.Comiss:
            {
                var a = GetXmm(XmmIndex(i.Op0Register));
                var b = VecSrc(ref i, 1, false);
                bool dbl = mn is Mnemonic.Ucomisd or Mnemonic.Comisd;
                double x = dbl ? a.AsDouble().GetElement(0) : a.AsSingle().GetElement(0);
                double y = dbl ? b.AsDouble().GetElement(0) : b.AsSingle().GetElement(0);
                ulong f;
                if (double.IsNaN(x) || double.IsNaN(y)) f = Flags.ZF | Flags.PF | Flags.CF;
                else if (x < y) f = Flags.CF;
                else if (x == y) f = Flags.ZF;
                else f = 0;
                Rflags = (Rflags & ~Flags.Arith) | f;
                return;
            }
            case Mnemonic.Cvtsi2sd:
            case Mnemonic.Cvtsi2ss:
            {
                int d = XmmIndex(i.Op0Register);
                int ssz = OpSizeOf(ref i, 1);
                long v = Bits.SignExtend(ReadOp(ref i, 1, ssz), ssz);
                if (mn == Mnemonic.Cvtsi2sd) Xmm[2 * d] = BitConverter.DoubleToUInt64Bits(v);
                else Xmm[2 * d] = (Xmm[2 * d] & ~0xFFFFFFFFUL) | BitConverter.SingleToUInt32Bits(v);
                return;
            }
            case Mnemonic.Cvttsd2si: case Mnemonic.Cvtsd2si: case Mnemonic.Cvttss2si: case Mnemonic.Cvtss2si:
            {
                var s = VecSrc(ref i, 1, false);
                bool is64 = RegTable.Size[(int)i.Op0Register] == 8;
                ulong res = mn switch
                {
                    Mnemonic.Cvttsd2si => is64 ? (ulong)Sse2.X64.ConvertToInt64WithTruncation(s.AsDouble()) : (uint)Sse2.ConvertToInt32WithTruncation(s.AsDouble()),
                    Mnemonic.Cvtsd2si => is64 ? (ulong)Sse2.X64.ConvertToInt64(s.AsDouble()) : (uint)Sse2.ConvertToInt32(s.AsDouble()),
                    Mnemonic.Cvttss2si => is64 ? (ulong)Sse.X64.ConvertToInt64WithTruncation(s.AsSingle()) : (uint)Sse.ConvertToInt32WithTruncation(s.AsSingle()),
                    _ => is64 ? (ulong)Sse.X64.ConvertToInt64(s.AsSingle()) : (uint)Sse.ConvertToInt32(s.AsSingle()),
                };
                SetReg(i.Op0Register, res);
                return;
            }
        }

        // ----- two-operand vector operations: op0 = f(op0, op1[, imm]) -----
        int dst = XmmIndex(i.Op0Register);
        var x0 = GetXmm(dst);
        bool alignedSrc = mn is not (Mnemonic.Addsd or Mnemonic.Subsd or Mnemonic.Mulsd or Mnemonic.Divsd or Mnemonic.Minsd or Mnemonic.Maxsd
            or Mnemonic.Sqrtsd or Mnemonic.Addss or Mnemonic.Subss or Mnemonic.Mulss or Mnemonic.Divss or Mnemonic.Minss or Mnemonic.Maxss
            or Mnemonic.Sqrtss or Mnemonic.Cvtsd2ss or Mnemonic.Cvtss2sd or Mnemonic.Cmpss or Mnemonic.Cmpsd or Mnemonic.Cvtdq2pd or Mnemonic.Cvtps2pd);
        var x1 = i.OpCount > 1 ? VecSrc(ref i, 1, alignedSrc) : default;
        byte imm = i.OpCount > 2 ? i.Immediate8 : (byte)0;
        if (PackedInteger.TryCompute(mn, x0, x1, i.Op1Kind == OpKind.Immediate8 ? Vector128.Create((ulong)i.Immediate8, 0UL) : x1.AsUInt64(), out var packed))
        {
            SetXmm(dst, packed);
            return;
        }
        Vector128<byte> r;
        switch (mn)
        {
            case Mnemonic.Pslldq:
            case Mnemonic.Psrldq:
            {
                int n = i.Immediate8;
                UInt128 v = ((UInt128)x0.AsUInt64().GetElement(1) << 64) | x0.AsUInt64().GetElement(0);
                v = n > 15 ? 0 : mn == Mnemonic.Pslldq ? v << (8 * n) : v >> (8 * n);
                r = Vector128.Create((ulong)v, (ulong)(v >> 64)).AsByte();
                break;
            }
            case Mnemonic.Pshufd:
            {
                var s = x1.AsUInt32();
                r = Vector128.Create(s.GetElement(imm & 3), s.GetElement((imm >> 2) & 3), s.GetElement((imm >> 4) & 3), s.GetElement((imm >> 6) & 3)).AsByte();
                break;
            }
            case Mnemonic.Pshuflw:
            case Mnemonic.Pshufhw:
            {
                var s = x1.AsUInt16();
                int o = mn == Mnemonic.Pshufhw ? 4 : 0;
                var t = s;
                for (int k = 0; k < 4; k++) t = t.WithElement(o + k, s.GetElement(o + ((imm >> (2 * k)) & 3)));
                r = t.AsByte();
                break;
            }
            case Mnemonic.Shufps:
            {
                var a = x0.AsUInt32(); var b = x1.AsUInt32();
                r = Vector128.Create(a.GetElement(imm & 3), a.GetElement((imm >> 2) & 3), b.GetElement((imm >> 4) & 3), b.GetElement((imm >> 6) & 3)).AsByte();
                break;
            }
            case Mnemonic.Shufpd:
            {
                var a = x0.AsUInt64(); var b = x1.AsUInt64();
                r = Vector128.Create(a.GetElement(imm & 1), b.GetElement((imm >> 1) & 1)).AsByte();
                break;
            }
            case Mnemonic.Addsd: r = SseNan.Sd(x0.AsDouble(), x1.AsDouble(), Sse2.AddScalar(x0.AsDouble(), x1.AsDouble())).AsByte(); break;
            case Mnemonic.Subsd: r = Sse2.SubtractScalar(x0.AsDouble(), x1.AsDouble()).AsByte(); break;
            case Mnemonic.Mulsd: r = SseNan.Sd(x0.AsDouble(), x1.AsDouble(), Sse2.MultiplyScalar(x0.AsDouble(), x1.AsDouble())).AsByte(); break;
            case Mnemonic.Divsd: r = Sse2.DivideScalar(x0.AsDouble(), x1.AsDouble()).AsByte(); break;
            case Mnemonic.Minsd: r = Sse2.MinScalar(x0.AsDouble(), x1.AsDouble()).AsByte(); break;
            case Mnemonic.Maxsd: r = Sse2.MaxScalar(x0.AsDouble(), x1.AsDouble()).AsByte(); break;
            case Mnemonic.Sqrtsd: r = Sse2.SqrtScalar(x0.AsDouble(), x1.AsDouble()).AsByte(); break;
            case Mnemonic.Addss: r = SseNan.Ss(x0.AsSingle(), x1.AsSingle(), Sse.AddScalar(x0.AsSingle(), x1.AsSingle())).AsByte(); break;
            case Mnemonic.Subss: r = Sse.SubtractScalar(x0.AsSingle(), x1.AsSingle()).AsByte(); break;
            case Mnemonic.Mulss: r = SseNan.Ss(x0.AsSingle(), x1.AsSingle(), Sse.MultiplyScalar(x0.AsSingle(), x1.AsSingle())).AsByte(); break;
            case Mnemonic.Divss: r = Sse.DivideScalar(x0.AsSingle(), x1.AsSingle()).AsByte(); break;
            case Mnemonic.Minss: r = Sse.MinScalar(x0.AsSingle(), x1.AsSingle()).AsByte(); break;
            case Mnemonic.Maxss: r = Sse.MaxScalar(x0.AsSingle(), x1.AsSingle()).AsByte(); break;
            case Mnemonic.Sqrtss: r = Sse.SqrtScalar(x0.AsSingle(), x1.AsSingle()).AsByte(); break;
            case Mnemonic.Addpd: r = SseNan.Pd(x0.AsDouble(), x1.AsDouble(), Sse2.Add(x0.AsDouble(), x1.AsDouble())).AsByte(); break;
            case Mnemonic.Subpd: r = Sse2.Subtract(x0.AsDouble(), x1.AsDouble()).AsByte(); break;
            case Mnemonic.Mulpd: r = SseNan.Pd(x0.AsDouble(), x1.AsDouble(), Sse2.Multiply(x0.AsDouble(), x1.AsDouble())).AsByte(); break;
            case Mnemonic.Divpd: r = Sse2.Divide(x0.AsDouble(), x1.AsDouble()).AsByte(); break;
            case Mnemonic.Minpd: r = Sse2.Min(x0.AsDouble(), x1.AsDouble()).AsByte(); break;
            case Mnemonic.Maxpd: r = Sse2.Max(x0.AsDouble(), x1.AsDouble()).AsByte(); break;
            case Mnemonic.Sqrtpd: r = Sse2.Sqrt(x1.AsDouble()).AsByte(); break;
            case Mnemonic.Addps: r = SseNan.Ps(x0.AsSingle(), x1.AsSingle(), Sse.Add(x0.AsSingle(), x1.AsSingle())).AsByte(); break;
            case Mnemonic.Subps: r = Sse.Subtract(x0.AsSingle(), x1.AsSingle()).AsByte(); break;
            case Mnemonic.Mulps: r = SseNan.Ps(x0.AsSingle(), x1.AsSingle(), Sse.Multiply(x0.AsSingle(), x1.AsSingle())).AsByte(); break;
            case Mnemonic.Divps: r = Sse.Divide(x0.AsSingle(), x1.AsSingle()).AsByte(); break;
            case Mnemonic.Minps: r = Sse.Min(x0.AsSingle(), x1.AsSingle()).AsByte(); break;
            case Mnemonic.Maxps: r = Sse.Max(x0.AsSingle(), x1.AsSingle()).AsByte(); break;
            case Mnemonic.Sqrtps: r = Sse.Sqrt(x1.AsSingle()).AsByte(); break;
            case Mnemonic.Cvtsd2ss: r = Sse2.ConvertScalarToVector128Single(x0.AsSingle(), x1.AsDouble()).AsByte(); break;
            case Mnemonic.Cvtss2sd: r = Sse2.ConvertScalarToVector128Double(x0.AsDouble(), x1.AsSingle()).AsByte(); break;
            case Mnemonic.Cvtdq2pd: r = Sse2.ConvertToVector128Double(x1.AsInt32()).AsByte(); break;
            case Mnemonic.Cvtdq2ps: r = Sse2.ConvertToVector128Single(x1.AsInt32()).AsByte(); break;
            case Mnemonic.Cvttps2dq: r = Sse2.ConvertToVector128Int32WithTruncation(x1.AsSingle()).AsByte(); break;
            case Mnemonic.Cvtps2dq: r = Sse2.ConvertToVector128Int32(x1.AsSingle()).AsByte(); break;
            case Mnemonic.Cvtps2pd: r = Sse2.ConvertToVector128Double(x1.AsSingle()).AsByte(); break;
            case Mnemonic.Cvtpd2ps: r = Sse2.ConvertToVector128Single(x1.AsDouble()).AsByte(); break;
            case Mnemonic.Cvttpd2dq: r = Sse2.ConvertToVector128Int32WithTruncation(x1.AsDouble()).AsByte(); break;
            case Mnemonic.Cvtpd2dq: r = Sse2.ConvertToVector128Int32(x1.AsDouble()).AsByte(); break;
            case Mnemonic.Cmpps: case Mnemonic.Cmppd: case Mnemonic.Cmpss: case Mnemonic.Cmpsd:
                r = Compare(mn, imm & 7, x0, x1);
                break;
            default:
                throw new CpuUnimplemented($"unimplemented instruction {i.Code} ({i})");
        }
        SetXmm(dst, r);
    }

    // The JIT treats packed Add/Multiply as commutative and may swap their operands, which changes
    // which NaN comes out. x86 is exact: a NaN lane yields the first operand's NaN if it has one,
    // else the second's, quieted. These re-impose that on every lane with a NaN input.
    private static Vector128<float> X86NaN(Vector128<float> r, Vector128<float> a, Vector128<float> b)
    {
        if (Sse.MoveMask(Sse.CompareUnordered(a, b)) == 0) return r;
        var quiet = Vector128.Create(0x0040_0000u).AsSingle();
        var aNaN = Sse.CompareUnordered(a, a);
        var bNaN = Sse.CompareUnordered(b, b);
        var fromB = Sse.Or(Sse.And(bNaN, Sse.Or(b, quiet)), Sse.AndNot(bNaN, r));
        return Sse.Or(Sse.And(aNaN, Sse.Or(a, quiet)), Sse.AndNot(aNaN, fromB));
    }

    private static Vector128<double> X86NaN(Vector128<double> r, Vector128<double> a, Vector128<double> b)
    {
        if (Sse2.MoveMask(Sse2.CompareUnordered(a, b)) == 0) return r;
        var quiet = Vector128.Create(0x0008_0000_0000_0000UL).AsDouble();
        var aNaN = Sse2.CompareUnordered(a, a);
        var bNaN = Sse2.CompareUnordered(b, b);
        var fromB = Sse2.Or(Sse2.And(bNaN, Sse2.Or(b, quiet)), Sse2.AndNot(bNaN, r));
        return Sse2.Or(Sse2.And(aNaN, Sse2.Or(a, quiet)), Sse2.AndNot(aNaN, fromB));
    }

    private static Vector128<byte> Compare(Mnemonic mn, int pred, Vector128<byte> a, Vector128<byte> b)
    {
        switch (mn)
        {
            case Mnemonic.Cmpps:
            {
                var x = a.AsSingle(); var y = b.AsSingle();
                return (pred switch
                {
                    0 => Sse.CompareEqual(x, y), 1 => Sse.CompareLessThan(x, y), 2 => Sse.CompareLessThanOrEqual(x, y),
                    3 => Sse.CompareUnordered(x, y), 4 => Sse.CompareNotEqual(x, y), 5 => Sse.CompareNotLessThan(x, y),
                    6 => Sse.CompareNotLessThanOrEqual(x, y), _ => Sse.CompareOrdered(x, y),
                }).AsByte();
            }
            case Mnemonic.Cmppd:
            {
                var x = a.AsDouble(); var y = b.AsDouble();
                return (pred switch
                {
                    0 => Sse2.CompareEqual(x, y), 1 => Sse2.CompareLessThan(x, y), 2 => Sse2.CompareLessThanOrEqual(x, y),
                    3 => Sse2.CompareUnordered(x, y), 4 => Sse2.CompareNotEqual(x, y), 5 => Sse2.CompareNotLessThan(x, y),
                    6 => Sse2.CompareNotLessThanOrEqual(x, y), _ => Sse2.CompareOrdered(x, y),
                }).AsByte();
            }
            case Mnemonic.Cmpss:
            {
                var x = a.AsSingle(); var y = b.AsSingle();
                return (pred switch
                {
                    0 => Sse.CompareScalarEqual(x, y), 1 => Sse.CompareScalarLessThan(x, y), 2 => Sse.CompareScalarLessThanOrEqual(x, y),
                    3 => Sse.CompareScalarUnordered(x, y), 4 => Sse.CompareScalarNotEqual(x, y), 5 => Sse.CompareScalarNotLessThan(x, y),
                    6 => Sse.CompareScalarNotLessThanOrEqual(x, y), _ => Sse.CompareScalarOrdered(x, y),
                }).AsByte();
            }
            default:
            {
                var x = a.AsDouble(); var y = b.AsDouble();
                return (pred switch
                {
                    0 => Sse2.CompareScalarEqual(x, y), 1 => Sse2.CompareScalarLessThan(x, y), 2 => Sse2.CompareScalarLessThanOrEqual(x, y),
                    3 => Sse2.CompareScalarUnordered(x, y), 4 => Sse2.CompareScalarNotEqual(x, y), 5 => Sse2.CompareScalarNotLessThan(x, y),
                    6 => Sse2.CompareScalarNotLessThanOrEqual(x, y), _ => Sse2.CompareScalarOrdered(x, y),
                }).AsByte();
            }
        }
    }

    private void Fxsave(ulong la, bool rex)
    {
        if ((la & 15) != 0) throw GP();
        Read(la + 511, 1, NeedW);
        Read(la, 1, NeedW);
        Write(la, 2, Fcw);
        Write(la + 2, 2, Fsw);
        byte abridged = 0;
        for (int k = 0; k < 8; k++) if (((Ftw >> k) & 1) != 0) abridged |= (byte)(1 << k);
        Write(la + 4, 1, abridged);
        Write(la + 5, 1, 0);
        Write(la + 6, 2, 0);
        Write(la + 8, 8, 0);
        Write(la + 16, 8, 0);
        Write(la + 24, 4, Mxcsr);
        Write(la + 28, 4, 0xFFFF);
        for (int k = 0; k < 8; k++)
        {
            // Register slots are in stack order: slot k is ST(k).
            int p = FpuPhysical(k);
            Write(la + 32 + (ulong)k * 16, 8, FpuSignificand[p]);
            Write(la + 40 + (ulong)k * 16, 8, FpuSignExponent[p]);
        }
        int nx = Bitness == 64 ? 16 : 8;
        _ = rex;
        for (int k = 0; k < nx; k++)
        {
            Write(la + 160 + (ulong)k * 16, 8, Xmm[2 * k]);
            Write(la + 168 + (ulong)k * 16, 8, Xmm[2 * k + 1]);
        }
    }

    private void Fxrstor(ulong la, bool rex)
    {
        if ((la & 15) != 0) throw GP();
        uint mx = (uint)Read(la + 24, 4);
        if ((mx & ~0xFFFFu) != 0) throw GP();
        // Read everything before changing anything: a fault leaves the state as it was.
        ushort cw = (ushort)Read(la, 2), sw = (ushort)Read(la + 2, 2);
        byte tags = (byte)Read(la + 4, 1);
        Span<ulong> sig = stackalloc ulong[8];
        Span<ushort> se = stackalloc ushort[8];
        for (int k = 0; k < 8; k++)
        {
            sig[k] = Read(la + 32 + (ulong)k * 16, 8);
            se[k] = (ushort)Read(la + 40 + (ulong)k * 16, 2);
        }
        int nx = Bitness == 64 ? 16 : 8;
        _ = rex;
        Span<ulong> xmm = stackalloc ulong[32];
        for (int k = 0; k < 2 * nx; k++) xmm[k] = Read(la + 160 + (ulong)k * 8, 8);
        Fcw = cw;
        Fsw = sw;
        Ftw = tags;
        Mxcsr = mx;
        for (int k = 0; k < 8; k++)
        {
            int p = FpuPhysical(k);
            FpuSignificand[p] = sig[k];
            FpuSignExponent[p] = se[k];
        }
        xmm[..(2 * nx)].CopyTo(Xmm);
    }
}
