using System.Numerics;

namespace SharpVM.Cpu;

/// <summary>x87 exception flags: the low bits of the FPU status word (and the mask bits of the control word).</summary>
internal static class X87Flags
{
    public const int Invalid = 1, Denormal = 2, ZeroDivide = 4, Overflow = 8, Underflow = 0x10, Precision = 0x20;
    /// <summary>Stack fault: always comes with <see cref="Invalid"/>; C1 tells overflow (1) from underflow (0).</summary>
    public const int StackFault = 0x40;
}

/// <summary>The FPU control word's rounding control field (RC).</summary>
internal enum X87Rounding { Nearest = 0, Down = 1, Up = 2, TowardZero = 3 }

/// <summary>
/// What one x87 operation runs under (rounding, precision) and what it raised: the exception flags
/// and the "rounded up" fact that becomes C1 for an inexact result.
/// </summary>
internal struct X87Context
{
    public X87Rounding Rounding;
    /// <summary>Significand bits results are rounded to: 24, 53 or 64 (the PC field, for the operations it applies to).</summary>
    public int Precision;
    public int Flags;
    public bool RoundedUp;
    /// <summary>
    /// A memory operand was a single/double denormal (normal once widened): the operation raises DE at
    /// the point it would for a denormal register, i.e. not after a stack fault, NaN or zero divide.
    /// </summary>
    public bool DenormalOperand;

    public X87Context(X87Rounding rounding, int precision)
    {
        Rounding = rounding;
        Precision = precision;
        Flags = 0;
        RoundedUp = false;
        DenormalOperand = false;
    }
}

/// <summary>
/// An x87 double extended-precision number exactly as the FPU register holds it: sign, 15-bit biased
/// exponent and a 64-bit significand with an explicit integer bit (J, bit 63). All encodings are
/// representable, including the ones the 387 and later reject as operands (unnormals, pseudo-NaNs,
/// pseudo-infinities), which <see cref="IsUnsupported"/> names.
/// </summary>
internal readonly record struct Float80(ulong Significand, ushort SignExponent)
{
    public const int Bias = 16383;
    public const int MinExponent = -16382, MaxExponent = 16383;
    public const ulong IntegerBit = 1UL << 63, QuietBit = 1UL << 62;

    public static readonly Float80 Indefinite = new(0xC000_0000_0000_0000, 0xFFFF);
    public static readonly Float80 One = new(IntegerBit, Bias);

    public bool Sign => (SignExponent & 0x8000) != 0;
    public int Exponent => SignExponent & 0x7FFF;
    public bool IsZero => Exponent == 0 && Significand == 0;
    /// <summary>A denormal or pseudo-denormal (exponent field 0, J set): both are denormal operands.</summary>
    public bool IsDenormal => Exponent == 0 && Significand != 0;
    public bool IsInfinity => Exponent == 0x7FFF && Significand == IntegerBit;
    public bool IsNaN => Exponent == 0x7FFF && (Significand & IntegerBit) != 0 && (Significand << 1) != 0;
    public bool IsSignalingNaN => IsNaN && (Significand & QuietBit) == 0;
    /// <summary>Unnormals, pseudo-NaNs and pseudo-infinities: invalid operands since the 387.</summary>
    public bool IsUnsupported => Exponent != 0 && (Significand & IntegerBit) == 0;
    /// <summary>A finite non-zero number (normal or denormal).</summary>
    public bool IsFiniteNonZero => Exponent != 0x7FFF && !IsZero && !IsUnsupported;

    public static Float80 Zero(bool sign) => new(0, (ushort)(sign ? 0x8000 : 0));
    public static Float80 Infinity(bool sign) => new(IntegerBit, (ushort)(sign ? 0xFFFF : 0x7FFF));
    public Float80 Negate() => new(Significand, (ushort)(SignExponent ^ 0x8000));
    public Float80 Abs() => new(Significand, (ushort)(SignExponent & 0x7FFF));
    public Float80 WithSign(bool sign) => new(Significand, (ushort)((SignExponent & 0x7FFF) | (sign ? 0x8000 : 0)));
    public Float80 Quieted() => new(Significand | QuietBit, SignExponent);

    /// <summary>
    /// The value of a finite non-zero number as sig × 2^(exponent − 63) with sig normalised (bit 63
    /// set); denormals are normalised, so the exponent can go below <see cref="MinExponent"/>.
    /// </summary>
    public int Unpack(out ulong sig)
    {
        if (Exponent == 0)
        {
            int lz = BitOperations.LeadingZeroCount(Significand);
            sig = Significand << lz;
            return MinExponent - lz;
        }
        sig = Significand;
        return Exponent - Bias;
    }

    /// <summary>The register tag class FNSTENV/FNSAVE report: 0 valid, 1 zero, 2 special (NaN, infinity, denormal, unsupported).</summary>
    public int TagClass => IsZero ? 1 : Exponent == 0 || Exponent == 0x7FFF || IsUnsupported ? 2 : 0;

    public override string ToString() => $"{SignExponent:X4}:{Significand:X16}";

    // ---------- rounding ----------

    /// <summary>
    /// A rounded result: <c>Sig × 2^(Exp − 63)</c> with Sig bit 63 set for a normal number, clear for a
    /// denormal (then Exp is the format's minimum exponent), 0 for zero; <see cref="IsInfinity"/> after
    /// overflow to infinity.
    /// </summary>
    internal readonly record struct Rounded(bool Sign, int Exp, ulong Sig, bool IsInfinity);

    /// <summary>
    /// Rounds sig × 2^(e − 127) (sig non-zero; bits below the rounding point only need to be non-zero
    /// when inexact, so callers may fold a sticky bit into bit 0) to <paramref name="prec"/> significand
    /// bits in a format whose normal exponents run from <paramref name="emin"/> to <paramref name="emax"/>,
    /// with the masked responses: overflow gives infinity or the largest finite number as the rounding
    /// mode says, underflow gives a denormal or zero. Tininess is detected after rounding (with an
    /// unbounded exponent, at the given precision), as the SDM (4.9.1.5) says the x87 does.
    /// </summary>
    internal static Rounded Round(bool sign, int e, UInt128 sig, int prec, int emin, int emax, ref X87Context c)
    {
        int lz = (int)UInt128.LeadingZeroCount(sig);
        sig <<= lz;
        e -= lz;
        var mode = c.Rounding;
        bool tiny = e < emin;
        if (e == emin - 1)
        {
            // Rounding with an unbounded exponent may carry into the smallest normal's exponent.
            UInt128 k = sig >> (128 - prec);
            if (RoundsUp(sign, k, sig & ((UInt128.One << (128 - prec)) - 1), 128 - prec, mode) && k + 1 == UInt128.One << prec) tiny = false;
        }
        int shift = 128 - prec + (e < emin ? emin - e : 0);
        UInt128 kept, rem;
        if (shift >= 128) { kept = 0; rem = shift == 128 ? sig : (sig >> 1) | 1; shift = 128; }
        else { kept = sig >> shift; rem = sig & ((UInt128.One << shift) - 1); }
        bool inexact = rem != 0;
        bool up = RoundsUp(sign, kept, rem, shift, mode);
        if (up) kept++;
        int eOut = Math.Max(e, emin);
        ulong mant;
        if (e >= emin && kept >> prec != 0) { kept >>= 1; eOut++; }
        mant = (ulong)(kept << (64 - prec));
        if (eOut > emax)
        {
            c.Flags |= X87Flags.Overflow | X87Flags.Precision;
            bool toInfinity = mode == X87Rounding.Nearest || (mode == X87Rounding.Down && sign) || (mode == X87Rounding.Up && !sign);
            c.RoundedUp = toInfinity;
            if (toInfinity) return new Rounded(sign, emax + 1, IntegerBit, true);
            return new Rounded(sign, emax, ulong.MaxValue << (64 - prec), false);
        }
        if (inexact)
        {
            c.Flags |= X87Flags.Precision;
            if (tiny) c.Flags |= X87Flags.Underflow;
            c.RoundedUp = up;
        }
        return new Rounded(sign, eOut, mant, false);
    }

    /// <summary>Whether dropping <paramref name="rem"/> (the low <paramref name="shift"/> bits) rounds the kept part up.</summary>
    private static bool RoundsUp(bool sign, UInt128 kept, UInt128 rem, int shift, X87Rounding mode)
    {
        if (rem == 0) return false;
        switch (mode)
        {
            case X87Rounding.Nearest:
            {
                UInt128 half = UInt128.One << (shift - 1);
                return rem > half || (rem == half && (kept & 1) != 0);
            }
            case X87Rounding.Down: return sign;
            case X87Rounding.Up: return !sign;
            default: return false;
        }
    }

    /// <summary>Rounds sig × 2^(e − 127) to the register format at <paramref name="prec"/> bits.</summary>
    internal static Float80 RoundPack(bool sign, int e, UInt128 sig, int prec, ref X87Context c)
    {
        if (sig == 0) return Zero(sign);
        var r = Round(sign, e, sig, prec, MinExponent, MaxExponent, ref c);
        if (r.IsInfinity) return Infinity(sign);
        if (r.Sig == 0) return Zero(sign);
        int exp = (r.Sig & IntegerBit) != 0 ? r.Exp + Bias : 0;
        return new Float80(r.Sig, (ushort)(exp | (sign ? 0x8000 : 0)));
    }

    /// <summary>A finite non-zero value sig × 2^(e − 63), rounded to <paramref name="prec"/> bits.</summary>
    internal static Float80 FromParts(bool sign, int e, ulong sig, int prec, ref X87Context c) =>
        RoundPack(sign, e, (UInt128)sig << 64, prec, ref c);

    // ---------- conversions ----------

    public static Float80 FromInt64(long v)
    {
        if (v == 0) return Zero(false);
        ulong mag = v < 0 ? (ulong)-v : (ulong)v;
        int lz = BitOperations.LeadingZeroCount(mag);
        return new Float80(mag << lz, (ushort)((Bias + 63 - lz) | (v < 0 ? 0x8000 : 0)));
    }

    /// <summary>
    /// A double as an x87 value: exact; a denormal raises DE. FLD (<paramref name="quietNaN"/>) quiets
    /// an SNaN with IE; arithmetic with a memory operand keeps it signalling for the operation to see.
    /// </summary>
    public static Float80 FromDouble(ulong bits, bool quietNaN, ref X87Context c) => FromBinary(bits, 52, 11, quietNaN, ref c);

    /// <summary>A single as an x87 value, like <see cref="FromDouble"/>.</summary>
    public static Float80 FromSingle(uint bits, bool quietNaN, ref X87Context c) => FromBinary(bits, 23, 8, quietNaN, ref c);

    private static Float80 FromBinary(ulong bits, int fracBits, int expBits, bool quietNaN, ref X87Context c)
    {
        bool sign = (bits >> (fracBits + expBits)) != 0;
        int expMax = (1 << expBits) - 1, bias = expMax >> 1;
        int exp = (int)(bits >> fracBits) & expMax;
        ulong frac = bits & ((1UL << fracBits) - 1);
        ushort s = (ushort)(sign ? 0x8000 : 0);
        if (exp == expMax)
        {
            if (frac == 0) return Infinity(sign);
            ulong m = IntegerBit | (frac << (63 - fracBits));
            if ((m & QuietBit) == 0 && quietNaN) { c.Flags |= X87Flags.Invalid; m |= QuietBit; }
            return new Float80(m, (ushort)(s | 0x7FFF));
        }
        if (exp == 0)
        {
            if (frac == 0) return Zero(sign);
            if (quietNaN) c.Flags |= X87Flags.Denormal;
            else c.DenormalOperand = true;
            int lz = BitOperations.LeadingZeroCount(frac);
            // value = frac × 2^(1 − bias − fracBits); normalised: bit 63 set.
            return new Float80(frac << lz, (ushort)(s | (1 - bias - fracBits + 63 - lz + Bias)));
        }
        return new Float80(IntegerBit | (frac << (63 - fracBits)), (ushort)(s | (exp - bias + Bias)));
    }

    /// <summary>FST m64fp: rounds with RC (PC does not apply) into the double range.</summary>
    public ulong ToDouble(ref X87Context c) => ToBinary(52, 11, ref c);

    /// <summary>FST m32fp: rounds with RC (PC does not apply) into the single range.</summary>
    public uint ToSingle(ref X87Context c) => (uint)ToBinary(23, 8, ref c);

    private ulong ToBinary(int fracBits, int expBits, ref X87Context c)
    {
        int expMax = (1 << expBits) - 1, bias = expMax >> 1;
        ulong signBit = Sign ? 1UL << (fracBits + expBits) : 0;
        ulong fracMask = (1UL << fracBits) - 1;
        if (IsUnsupported)
        {
            c.Flags |= X87Flags.Invalid;
            return (1UL << (fracBits + expBits)) | ((ulong)expMax << fracBits) | (1UL << (fracBits - 1));
        }
        if (IsZero) return signBit;
        if (IsInfinity) return signBit | ((ulong)expMax << fracBits);
        if (IsNaN)
        {
            if (IsSignalingNaN) c.Flags |= X87Flags.Invalid;
            ulong frac = ((Significand << 1) >> (64 - fracBits)) | (1UL << (fracBits - 1));
            return signBit | ((ulong)expMax << fracBits) | frac;
        }
        int e = Unpack(out ulong sig);
        var r = Round(Sign, e, (UInt128)sig << 64, fracBits + 1, 1 - bias, bias, ref c);
        if (r.IsInfinity) return signBit | ((ulong)expMax << fracBits);
        ulong fraction = r.Sig >> (63 - fracBits);
        if ((r.Sig & IntegerBit) != 0) return signBit | ((ulong)(r.Exp + bias) << fracBits) | (fraction & fracMask);
        return signBit | fraction;
    }

    /// <summary>
    /// Rounds a finite non-zero value to an integer with <paramref name="mode"/>: the magnitude, whether
    /// it was inexact, and whether the magnitude went up. Magnitudes of 2^64 and more come back as
    /// <c>UInt128</c> values the callers range-check.
    /// </summary>
    internal static UInt128 RoundToIntegerMagnitude(bool sign, int e, ulong sig, X87Rounding mode, out bool inexact, out bool up)
    {
        // value = sig × 2^(e − 63)
        if (e >= 63)
        {
            inexact = up = false;
            return e - 63 >= 64 ? UInt128.MaxValue : (UInt128)sig << (e - 63);
        }
        UInt128 kept, rem;
        int shift = 63 - e;
        if (shift > 64) { kept = 0; rem = 1; shift = 66; } // far below one half: only the sticky bit is left
        else { kept = (UInt128)sig >> shift; rem = sig & (shift == 64 ? ulong.MaxValue : (1UL << shift) - 1); }
        inexact = rem != 0;
        up = shift == 66 ? mode switch { X87Rounding.Down => sign, X87Rounding.Up => !sign, _ => false } : RoundsUp(sign, kept, rem, shift, mode);
        return up ? kept + 1 : kept;
    }

    /// <summary>FIST/FISTP/FISTTP: converts to a signed integer of <paramref name="bits"/>; out of range or NaN gives IE and the integer indefinite.</summary>
    public long ToInteger(int bits, X87Rounding mode, ref X87Context c)
    {
        long indefinite = bits == 64 ? long.MinValue : -(1L << (bits - 1));
        if (IsUnsupported || IsNaN || IsInfinity) { c.Flags |= X87Flags.Invalid; return indefinite; }
        if (IsZero) return 0;
        int e = Unpack(out ulong sig);
        UInt128 mag = RoundToIntegerMagnitude(Sign, e, sig, mode, out bool inexact, out bool up);
        UInt128 limit = Sign ? UInt128.One << (bits - 1) : (UInt128.One << (bits - 1)) - 1;
        if (mag > limit) { c.Flags |= X87Flags.Invalid; return indefinite; }
        if (inexact) { c.Flags |= X87Flags.Precision; c.RoundedUp = up; }
        return Sign ? -(long)(ulong)mag : (long)(ulong)mag;
    }
}
