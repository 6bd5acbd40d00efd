using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Iced.Intel;

namespace SharpVM.Cpu;

/// <summary>
/// The packed integer and bitwise operations SSE2 and MMX share, on the host's SSE2: MMX runs them on
/// the low 64 bits of a vector (its callers put the operands there and keep the low half).
/// </summary>
internal static class PackedInteger
{
    /// <summary>
    /// r = op(x0, x1) for the element-wise forms (not the shuffles, whole-register shifts, packs or
    /// high unpacks, whose MMX form differs); <paramref name="cnt"/> is the shift count for the shifts
    /// (an immediate or the source register). False when <paramref name="mn"/> is not one of them.
    /// </summary>
    public static bool TryCompute(Mnemonic mn, Vector128<byte> x0, Vector128<byte> x1, Vector128<ulong> cnt, out Vector128<byte> r)
    {
        switch (mn)
        {
            case Mnemonic.Pxor: case Mnemonic.Xorps: case Mnemonic.Xorpd: r = x0 ^ x1; return true;
            case Mnemonic.Por: case Mnemonic.Orps: case Mnemonic.Orpd: r = x0 | x1; return true;
            case Mnemonic.Pand: case Mnemonic.Andps: case Mnemonic.Andpd: r = x0 & x1; return true;
            case Mnemonic.Pandn: case Mnemonic.Andnps: case Mnemonic.Andnpd: r = Sse2.AndNot(x0, x1); return true;
            case Mnemonic.Paddb: r = Sse2.Add(x0, x1); return true;
            case Mnemonic.Paddw: r = Sse2.Add(x0.AsUInt16(), x1.AsUInt16()).AsByte(); return true;
            case Mnemonic.Paddd: r = Sse2.Add(x0.AsUInt32(), x1.AsUInt32()).AsByte(); return true;
            case Mnemonic.Paddq: r = Sse2.Add(x0.AsUInt64(), x1.AsUInt64()).AsByte(); return true;
            case Mnemonic.Psubb: r = Sse2.Subtract(x0, x1); return true;
            case Mnemonic.Psubw: r = Sse2.Subtract(x0.AsUInt16(), x1.AsUInt16()).AsByte(); return true;
            case Mnemonic.Psubd: r = Sse2.Subtract(x0.AsUInt32(), x1.AsUInt32()).AsByte(); return true;
            case Mnemonic.Psubq: r = Sse2.Subtract(x0.AsUInt64(), x1.AsUInt64()).AsByte(); return true;
            case Mnemonic.Pcmpeqb: r = Sse2.CompareEqual(x0, x1); return true;
            case Mnemonic.Pcmpeqw: r = Sse2.CompareEqual(x0.AsUInt16(), x1.AsUInt16()).AsByte(); return true;
            case Mnemonic.Pcmpeqd: r = Sse2.CompareEqual(x0.AsUInt32(), x1.AsUInt32()).AsByte(); return true;
            case Mnemonic.Pcmpgtb: r = Sse2.CompareGreaterThan(x0.AsSByte(), x1.AsSByte()).AsByte(); return true;
            case Mnemonic.Pcmpgtw: r = Sse2.CompareGreaterThan(x0.AsInt16(), x1.AsInt16()).AsByte(); return true;
            case Mnemonic.Pcmpgtd: r = Sse2.CompareGreaterThan(x0.AsInt32(), x1.AsInt32()).AsByte(); return true;
            case Mnemonic.Pminub: r = Sse2.Min(x0, x1); return true;
            case Mnemonic.Pmaxub: r = Sse2.Max(x0, x1); return true;
            case Mnemonic.Pminsw: r = Sse2.Min(x0.AsInt16(), x1.AsInt16()).AsByte(); return true;
            case Mnemonic.Pmaxsw: r = Sse2.Max(x0.AsInt16(), x1.AsInt16()).AsByte(); return true;
            case Mnemonic.Psubusb: r = Sse2.SubtractSaturate(x0, x1); return true;
            case Mnemonic.Psubusw: r = Sse2.SubtractSaturate(x0.AsUInt16(), x1.AsUInt16()).AsByte(); return true;
            case Mnemonic.Paddusb: r = Sse2.AddSaturate(x0, x1); return true;
            case Mnemonic.Paddusw: r = Sse2.AddSaturate(x0.AsUInt16(), x1.AsUInt16()).AsByte(); return true;
            case Mnemonic.Psubsb: r = Sse2.SubtractSaturate(x0.AsSByte(), x1.AsSByte()).AsByte(); return true;
            case Mnemonic.Psubsw: r = Sse2.SubtractSaturate(x0.AsInt16(), x1.AsInt16()).AsByte(); return true;
            case Mnemonic.Paddsb: r = Sse2.AddSaturate(x0.AsSByte(), x1.AsSByte()).AsByte(); return true;
            case Mnemonic.Paddsw: r = Sse2.AddSaturate(x0.AsInt16(), x1.AsInt16()).AsByte(); return true;
            case Mnemonic.Pmullw: r = Sse2.MultiplyLow(x0.AsInt16(), x1.AsInt16()).AsByte(); return true;
            case Mnemonic.Pmulhw: r = Sse2.MultiplyHigh(x0.AsInt16(), x1.AsInt16()).AsByte(); return true;
            case Mnemonic.Pmulhuw: r = Sse2.MultiplyHigh(x0.AsUInt16(), x1.AsUInt16()).AsByte(); return true;
            case Mnemonic.Pmuludq: r = Sse2.Multiply(x0.AsUInt32(), x1.AsUInt32()).AsByte(); return true;
            case Mnemonic.Pmaddwd: r = Sse2.MultiplyAddAdjacent(x0.AsInt16(), x1.AsInt16()).AsByte(); return true;
            case Mnemonic.Pavgb: r = Sse2.Average(x0, x1); return true;
            case Mnemonic.Pavgw: r = Sse2.Average(x0.AsUInt16(), x1.AsUInt16()).AsByte(); return true;
            case Mnemonic.Psadbw: r = Sse2.SumAbsoluteDifferences(x0, x1).AsByte(); return true;
            case Mnemonic.Psllw: case Mnemonic.Pslld: case Mnemonic.Psllq:
            case Mnemonic.Psrlw: case Mnemonic.Psrld: case Mnemonic.Psrlq:
            case Mnemonic.Psraw: case Mnemonic.Psrad:
            {
                r = mn switch
                {
                    Mnemonic.Psllw => Sse2.ShiftLeftLogical(x0.AsUInt16(), cnt.AsUInt16()).AsByte(),
                    Mnemonic.Pslld => Sse2.ShiftLeftLogical(x0.AsUInt32(), cnt.AsUInt32()).AsByte(),
                    Mnemonic.Psllq => Sse2.ShiftLeftLogical(x0.AsUInt64(), cnt).AsByte(),
                    Mnemonic.Psrlw => Sse2.ShiftRightLogical(x0.AsUInt16(), cnt.AsUInt16()).AsByte(),
                    Mnemonic.Psrld => Sse2.ShiftRightLogical(x0.AsUInt32(), cnt.AsUInt32()).AsByte(),
                    Mnemonic.Psrlq => Sse2.ShiftRightLogical(x0.AsUInt64(), cnt).AsByte(),
                    Mnemonic.Psraw => Sse2.ShiftRightArithmetic(x0.AsInt16(), cnt.AsInt16()).AsByte(),
                    _ => Sse2.ShiftRightArithmetic(x0.AsInt32(), cnt.AsInt32()).AsByte(),
                };
                return true;
            }
            case Mnemonic.Punpcklbw: r = Sse2.UnpackLow(x0, x1); return true;
            case Mnemonic.Punpcklwd: r = Sse2.UnpackLow(x0.AsUInt16(), x1.AsUInt16()).AsByte(); return true;
            case Mnemonic.Punpckldq: case Mnemonic.Unpcklps: r = Sse2.UnpackLow(x0.AsUInt32(), x1.AsUInt32()).AsByte(); return true;
            case Mnemonic.Punpcklqdq: case Mnemonic.Unpcklpd: r = Sse2.UnpackLow(x0.AsUInt64(), x1.AsUInt64()).AsByte(); return true;
            case Mnemonic.Punpckhbw: r = Sse2.UnpackHigh(x0, x1); return true;
            case Mnemonic.Punpckhwd: r = Sse2.UnpackHigh(x0.AsUInt16(), x1.AsUInt16()).AsByte(); return true;
            case Mnemonic.Punpckhdq: case Mnemonic.Unpckhps: r = Sse2.UnpackHigh(x0.AsUInt32(), x1.AsUInt32()).AsByte(); return true;
            case Mnemonic.Punpckhqdq: case Mnemonic.Unpckhpd: r = Sse2.UnpackHigh(x0.AsUInt64(), x1.AsUInt64()).AsByte(); return true;
            case Mnemonic.Packuswb: r = Sse2.PackUnsignedSaturate(x0.AsInt16(), x1.AsInt16()); return true;
            case Mnemonic.Packsswb: r = Sse2.PackSignedSaturate(x0.AsInt16(), x1.AsInt16()).AsByte(); return true;
            case Mnemonic.Packssdw: r = Sse2.PackSignedSaturate(x0.AsInt32(), x1.AsInt32()).AsByte(); return true;
            default:
                r = default;
                return false;
        }
    }
}
