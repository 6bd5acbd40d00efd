namespace SharpVM.Cpu;

/// <summary>
/// FSIN, FCOS, FSINCOS, FPTAN, FPATAN, F2XM1, FYL2X and FYL2XP1 through the host's double-precision
/// maths: the operands are rounded to double, the result is exact in the register format, so about 53
/// of its 64 significand bits are right (hardware gets within 1 ulp of 64 bits). Special operands
/// follow the SDM (NaNs propagate, infinities and out-of-domain operands are invalid, log of zero
/// divides by zero, |x| ≥ 2^63 leaves ST(0) alone with C2 = 1 for the trigonometric ones).
/// </summary>
public sealed unsafe partial class EmulatorVcpu
{
    private static double ToHostDouble(Float80 v)
    {
        var c = new X87Context(X87Rounding.Nearest, 64);
        return BitConverter.UInt64BitsToDouble(v.ToDouble(ref c));
    }

    /// <summary>A host result as a register value: IE for a NaN out of non-NaN operands, ZE for an infinity out of finite ones, PE otherwise.</summary>
    private static Float80 FromHostDouble(double d, bool operandsFinite, ref X87Context c)
    {
        if (double.IsNaN(d)) { c.Flags |= X87Flags.Invalid; return Float80.Indefinite; }
        if (double.IsInfinity(d) && operandsFinite) c.Flags |= X87Flags.ZeroDivide;
        var x = new X87Context(X87Rounding.Nearest, 64);
        var r = Float80.FromDouble(BitConverter.DoubleToUInt64Bits(d), true, ref x);
        if (!r.IsZero && !r.IsInfinity) c.Flags |= X87Flags.Precision;
        return r;
    }

    private void X87Transcendental(Iced.Intel.Mnemonic op)
    {
        FpuWaitCheck();
        var c = FpuContext(false);
        bool twoResults = op is Iced.Intel.Mnemonic.Fsincos or Iced.Intel.Mnemonic.Fptan;
        bool binary = op is Iced.Intel.Mnemonic.Fpatan or Iced.Intel.Mnemonic.Fyl2x or Iced.Intel.Mnemonic.Fyl2xp1;
        bool okX = ReadSt(0, out var x, ref c);
        var y = Float80.Zero(false);
        bool okY = !binary || ReadSt(1, out y, ref c);
        Float80 r1, r2 = default;
        if (!okX || !okY) r1 = r2 = Float80.Indefinite;
        else if (x.IsUnsupported || (binary && y.IsUnsupported)) { c.Flags |= X87Flags.Invalid; r1 = r2 = Float80.Indefinite; }
        else if (x.IsNaN || (binary && y.IsNaN)) r1 = r2 = Float80Math.PropagateNaN(x, binary ? y : x, ref c);
        else if (op is Iced.Intel.Mnemonic.Fsin or Iced.Intel.Mnemonic.Fcos or Iced.Intel.Mnemonic.Fsincos or Iced.Intel.Mnemonic.Fptan && x.IsInfinity)
        {
            c.Flags |= X87Flags.Invalid;
            r1 = r2 = Float80.Indefinite;
        }
        else if (op is Iced.Intel.Mnemonic.Fsin or Iced.Intel.Mnemonic.Fcos or Iced.Intel.Mnemonic.Fsincos or Iced.Intel.Mnemonic.Fptan
                 && x.Exponent >= Float80.Bias + 63)
        {
            // Out of range for the argument reduction: C2 = 1, ST(0) unchanged.
            FpuFinish(ref c);
            Fsw |= FswC2;
            return;
        }
        else
        {
            if (x.IsDenormal || (binary && y.IsDenormal)) c.Flags |= X87Flags.Denormal;
            double dx = ToHostDouble(x), dy = ToHostDouble(y);
            bool finite = !x.IsInfinity && (!binary || !y.IsInfinity);
            switch (op)
            {
                case Iced.Intel.Mnemonic.Fsin: r1 = x.IsZero ? x : FromHostDouble(Math.Sin(dx), finite, ref c); break;
                case Iced.Intel.Mnemonic.Fcos: r1 = FromHostDouble(Math.Cos(dx), finite, ref c); break;
                case Iced.Intel.Mnemonic.Fsincos:
                    r1 = x.IsZero ? x : FromHostDouble(Math.Sin(dx), finite, ref c);
                    r2 = FromHostDouble(Math.Cos(dx), finite, ref c);
                    break;
                case Iced.Intel.Mnemonic.Fptan:
                    r1 = x.IsZero ? x : FromHostDouble(Math.Tan(dx), finite, ref c);
                    r2 = Float80.One;
                    break;
                case Iced.Intel.Mnemonic.F2xm1:
                    r1 = x.IsZero ? x : x.IsInfinity ? (x.Sign ? Float80.One.Negate() : x) : FromHostDouble(ExpM1(dx * Math.Log(2)), finite, ref c);
                    break;
                case Iced.Intel.Mnemonic.Fpatan: r1 = FromHostDouble(Math.Atan2(dy, dx), true, ref c); break;
                case Iced.Intel.Mnemonic.Fyl2x:
                    r1 = FromHostDouble(x.Sign && !x.IsZero ? double.NaN : dy * Math.Log2(dx), finite, ref c);
                    break;
                default: r1 = FromHostDouble(dy * Log1P(dx) / Math.Log(2), finite, ref c); break;
            }
        }
        if (binary)
        {
            SetSt(1, r1);
            FpuPop();
        }
        else if (twoResults)
        {
            // FSINCOS: sine replaces ST(0), the cosine is pushed; FPTAN: the tangent, then 1.0 pushed.
            SetSt(0, r1);
            FpuPush(r2, ref c);
        }
        else SetSt(0, r1);
        FpuFinish(ref c);
        // The trigonometric ones report a complete argument reduction; the others leave C2 alone.
        if (op is Iced.Intel.Mnemonic.Fsin or Iced.Intel.Mnemonic.Fcos or Iced.Intel.Mnemonic.Fsincos or Iced.Intel.Mnemonic.Fptan)
            Fsw &= unchecked((ushort)~FswC2);
    }

    /// <summary>e^y − 1 without the cancellation of Exp(y) − 1 near 0 (through tanh(y/2), accurate for small y).</summary>
    private static double ExpM1(double y)
    {
        if (Math.Abs(y) > 0.5) return Math.Exp(y) - 1;
        double t = Math.Tanh(y / 2);
        return 2 * t / (1 - t);
    }

    /// <summary>ln(1 + x) without the cancellation of Log(1 + x) near 0 (Goldberg's correction).</summary>
    private static double Log1P(double x)
    {
        double u = 1 + x;
        return u == 1 ? x : Math.Log(u) * x / (u - 1);
    }

    // ---------- packed BCD (FBLD/FBSTP) ----------

    private Float80 FromBcd(ulong la)
    {
        ulong lo = Read(la, 8);
        ulong hi = Read(la + 8, 2);
        long v = 0;
        for (int k = 17; k >= 0; k--)
        {
            ulong b = k >= 16 ? hi >> ((k - 16) * 4) : lo >> (k * 4);
            v = v * 10 + (long)(b & 0xF);
        }
        var r = Float80.FromInt64(v);
        return (hi & 0x8000) != 0 ? r.Negate() : r;
    }

    private void X87StoreBcd(ref Iced.Intel.Instruction i)
    {
        FpuWaitCheck();
        var c = FpuContext(false);
        ulong la = MemAddr(ref i);
        ulong lo = 0, hi = 0xFFFF;
        bool valid = false;
        if (ReadSt(0, out var v, ref c))
        {
            if (v.IsZero) { valid = true; hi = v.Sign ? 0x8000UL : 0; }
            else if (!v.IsUnsupported && !v.IsNaN && !v.IsInfinity)
            {
                int e = v.Unpack(out ulong sig);
                UInt128 mag = Float80.RoundToIntegerMagnitude(v.Sign, e, sig, c.Rounding, out bool inexact, out bool up);
                if (mag <= 999_999_999_999_999_999UL)
                {
                    valid = true;
                    if (inexact) { c.Flags |= X87Flags.Precision; c.RoundedUp = up; }
                    ulong m = (ulong)mag;
                    hi = v.Sign ? 0x8000UL : 0;
                    for (int k = 0; k < 18; k++)
                    {
                        ulong digit = m % 10;
                        m /= 10;
                        if (k < 16) lo |= digit << (k * 4);
                        else hi |= digit << ((k - 16) * 4);
                    }
                }
            }
        }
        if (!valid)
        {
            if ((c.Flags & X87Flags.StackFault) == 0) c.Flags |= X87Flags.Invalid;
            lo = 0xC000_0000_0000_0000UL; // the packed BCD indefinite: FFFF C000 0000 0000 0000
            hi = 0xFFFF;
        }
        Read(la + 9, 1, NeedW);
        Write(la, 8, lo);
        Write(la + 8, 2, hi);
        FpuPop();
        FpuFinish(ref c);
    }
}
