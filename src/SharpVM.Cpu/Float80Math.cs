namespace SharpVM.Cpu;

/// <summary>
/// Exact x87 arithmetic on <see cref="Float80"/>: every operation computes enough bits (a 128-bit
/// intermediate with a sticky bit) to round exactly as the FPU does, and applies the x87 rules for
/// special operands: NaN propagation (SDM Vol. 1 table 4-7), the invalid operations that give the
/// default QNaN (indefinite), division by zero, denormal operands (DE) and unsupported encodings.
/// </summary>
internal static class Float80Math
{
    /// <summary>
    /// The NaN an operation with a NaN operand returns: an SNaN raises IE; of two NaNs a QNaN beats an
    /// SNaN, otherwise the larger significand wins; the result is always quiet.
    /// </summary>
    public static Float80 PropagateNaN(Float80 a, Float80 b, ref X87Context c)
    {
        if (a.IsSignalingNaN || b.IsSignalingNaN) c.Flags |= X87Flags.Invalid;
        if (a.IsNaN && b.IsNaN)
        {
            if (a.IsSignalingNaN != b.IsSignalingNaN) return a.IsSignalingNaN ? b : a;
            if (a.Significand != b.Significand) return (a.Significand > b.Significand ? a : b).Quieted();
            return (a.Sign ? b : a).Quieted();
        }
        return (a.IsNaN ? a : b).Quieted();
    }

    /// <summary>Handles NaN and unsupported operands of a two-operand operation; true when <paramref name="r"/> is the result.</summary>
    private static bool Invalids(Float80 a, Float80 b, ref X87Context c, out Float80 r)
    {
        if (a.IsUnsupported || b.IsUnsupported)
        {
            c.Flags |= X87Flags.Invalid;
            r = Float80.Indefinite;
            return true;
        }
        if (a.IsNaN || b.IsNaN)
        {
            r = PropagateNaN(a, b, ref c);
            return true;
        }
        r = default;
        return false;
    }

    private static void CheckDenormal(Float80 a, Float80 b, ref X87Context c)
    {
        if (a.IsDenormal || b.IsDenormal || c.DenormalOperand) c.Flags |= X87Flags.Denormal;
    }

    private static Float80 Invalid(ref X87Context c)
    {
        c.Flags |= X87Flags.Invalid;
        return Float80.Indefinite;
    }

    public static Float80 Add(Float80 a, Float80 b, ref X87Context c) => AddCore(a, b, false, ref c);

    public static Float80 Sub(Float80 a, Float80 b, ref X87Context c) => AddCore(a, b, true, ref c);

    private static Float80 AddCore(Float80 a, Float80 b0, bool subtract, ref X87Context c)
    {
        if (Invalids(a, b0, ref c, out var r)) return r;
        var b = subtract ? b0.Negate() : b0;
        CheckDenormal(a, b, ref c);
        if (a.IsInfinity || b.IsInfinity)
        {
            if (a.IsInfinity && b.IsInfinity && a.Sign != b.Sign) return Invalid(ref c);
            return a.IsInfinity ? a : b;
        }
        if (a.IsZero && b.IsZero)
            return Float80.Zero(a.Sign == b.Sign ? a.Sign : c.Rounding == X87Rounding.Down);
        if (a.IsZero || b.IsZero)
        {
            var x = a.IsZero ? b : a;
            int ex = x.Unpack(out ulong mx);
            return Float80.FromParts(x.Sign, ex, mx, c.Precision, ref c);
        }
        int ea = a.Unpack(out ulong ma), eb = b.Unpack(out ulong mb);
        bool sa = a.Sign, sb = b.Sign;
        if (eb > ea || (eb == ea && mb > ma))
        {
            (ea, eb) = (eb, ea);
            (ma, mb) = (mb, ma);
            (sa, sb) = (sb, sa);
        }
        // Two spare bits on top for the carry; 62 guard bits below the significand.
        UInt128 x1 = (UInt128)ma << 62, y1 = (UInt128)mb << 62;
        int d = ea - eb;
        if (d >= 126) y1 = 1;
        else if (d > 0)
        {
            bool sticky = (y1 & ((UInt128.One << d) - 1)) != 0;
            y1 = (y1 >> d) | (sticky ? UInt128.One : 0);
        }
        UInt128 sum = sa == sb ? x1 + y1 : x1 - y1;
        if (sum == 0) return Float80.Zero(c.Rounding == X87Rounding.Down);
        return Float80.RoundPack(sa, ea + 2, sum, c.Precision, ref c);
    }

    public static Float80 Mul(Float80 a, Float80 b, ref X87Context c)
    {
        if (Invalids(a, b, ref c, out var r)) return r;
        bool sign = a.Sign != b.Sign;
        if ((a.IsInfinity && b.IsZero) || (a.IsZero && b.IsInfinity)) return Invalid(ref c);
        CheckDenormal(a, b, ref c);
        if (a.IsInfinity || b.IsInfinity) return Float80.Infinity(sign);
        if (a.IsZero || b.IsZero) return Float80.Zero(sign);
        int ea = a.Unpack(out ulong ma), eb = b.Unpack(out ulong mb);
        return Float80.RoundPack(sign, ea + eb + 1, (UInt128)ma * mb, c.Precision, ref c);
    }

    public static Float80 Div(Float80 a, Float80 b, ref X87Context c)
    {
        if (Invalids(a, b, ref c, out var r)) return r;
        bool sign = a.Sign != b.Sign;
        if ((a.IsInfinity && b.IsInfinity) || (a.IsZero && b.IsZero)) return Invalid(ref c);
        if (b.IsZero && !a.IsInfinity)
        {
            c.Flags |= X87Flags.ZeroDivide;
            return Float80.Infinity(sign);
        }
        CheckDenormal(a, b, ref c);
        if (a.IsInfinity) return Float80.Infinity(sign);
        if (b.IsInfinity || a.IsZero) return Float80.Zero(sign);
        int ea = a.Unpack(out ulong ma), eb = b.Unpack(out ulong mb);
        // Two 64-bit quotient digits: ma·2^63 / mb (< 2^64 since ma < 2mb), then the remainder's.
        UInt128 n1 = (UInt128)ma << 63;
        ulong q1 = (ulong)(n1 / mb), r1 = (ulong)(n1 % mb);
        UInt128 n2 = (UInt128)r1 << 64;
        ulong q2 = (ulong)(n2 / mb), r2 = (ulong)(n2 % mb);
        UInt128 q = ((UInt128)q1 << 64) | q2 | (r2 != 0 ? UInt128.One : 0);
        return Float80.RoundPack(sign, ea - eb, q, c.Precision, ref c);
    }

    public static Float80 Sqrt(Float80 a, ref X87Context c)
    {
        if (a.IsUnsupported) return Invalid(ref c);
        if (a.IsNaN) return PropagateNaN(a, a, ref c);
        if (a.IsZero) return a;
        if (a.Sign) return Invalid(ref c);
        if (a.IsInfinity) return a;
        if (a.IsDenormal) c.Flags |= X87Flags.Denormal;
        int e = a.Unpack(out ulong m);
        // value = M × 2^k with k even; root = isqrt(M·2^(2s)) × 2^(k/2 − s).
        int k = e - 63;
        UInt128 bigM = m;
        if ((k & 1) != 0) { bigM <<= 1; k--; }
        const int S = 70;
        UInt128 rem = 0, root = 0;
        for (int p = (65 + 2 * S) / 2; p >= 0; p--)
        {
            int j = 2 * p - 2 * S;
            ulong digit = j >= 0 ? (ulong)(bigM >> j) & 3 : 0;
            rem = (rem << 2) | digit;
            UInt128 t = (root << 2) | 1;
            if (rem >= t) { rem -= t; root = (root << 1) | 1; }
            else root <<= 1;
        }
        if (rem != 0) root |= 1;
        return Float80.RoundPack(false, k / 2 - S + 127, root, c.Precision, ref c);
    }

    /// <summary>Comparison result: less, equal, greater or unordered (a NaN or unsupported operand).</summary>
    public enum Order { Less, Equal, Greater, Unordered }

    /// <summary>
    /// FCOM/FUCOM/FCOMI/FTST: <paramref name="quiet"/> (the U forms) raises IE only for SNaNs and
    /// unsupported operands, the others for any NaN. Denormal operands raise DE.
    /// </summary>
    public static Order Compare(Float80 a, Float80 b, bool quiet, ref X87Context c)
    {
        if (a.IsUnsupported || b.IsUnsupported)
        {
            c.Flags |= X87Flags.Invalid;
            return Order.Unordered;
        }
        if (a.IsNaN || b.IsNaN)
        {
            if (!quiet || a.IsSignalingNaN || b.IsSignalingNaN) c.Flags |= X87Flags.Invalid;
            return Order.Unordered;
        }
        CheckDenormal(a, b, ref c);
        int ka = Key(a, out ulong ma), kb = Key(b, out ulong mb);
        if (a.IsZero && b.IsZero) return Order.Equal;
        int cmp = ka != kb ? ka.CompareTo(kb) : ma.CompareTo(mb);
        if (a.Sign != b.Sign) return a.Sign ? Order.Less : Order.Greater;
        if (cmp == 0) return Order.Equal;
        bool less = (cmp < 0) != a.Sign;
        return less ? Order.Less : Order.Greater;
    }

    /// <summary>An ordering key for magnitudes: the (normalised) exponent, then the significand.</summary>
    private static int Key(Float80 v, out ulong sig)
    {
        if (v.IsZero) { sig = 0; return int.MinValue; }
        if (v.IsInfinity) { sig = 0; return int.MaxValue; }
        return v.Unpack(out sig);
    }

    /// <summary>FRNDINT: rounds to an integer with RC (PC does not apply).</summary>
    public static Float80 RoundToInteger(Float80 a, ref X87Context c)
    {
        if (a.IsUnsupported) return Invalid(ref c);
        if (a.IsNaN) return PropagateNaN(a, a, ref c);
        if (a.IsZero || a.IsInfinity) return a;
        if (a.IsDenormal) c.Flags |= X87Flags.Denormal;
        int e = a.Unpack(out ulong m);
        if (e >= 63) return a;
        UInt128 mag = Float80.RoundToIntegerMagnitude(a.Sign, e, m, c.Rounding, out bool inexact, out bool up);
        if (inexact) { c.Flags |= X87Flags.Precision; c.RoundedUp = up; }
        if (mag == 0) return Float80.Zero(a.Sign);
        var x = new X87Context(c.Rounding, 64);
        return Float80.RoundPack(a.Sign, 127, mag, 64, ref x);
    }

    /// <summary>FSCALE: ST0 × 2^trunc(ST1), rounded to 64 bits (PC does not apply).</summary>
    public static Float80 Scale(Float80 a, Float80 b, ref X87Context c)
    {
        if (Invalids(a, b, ref c, out var r)) return r;
        CheckDenormal(a, b, ref c);
        if (b.IsInfinity)
        {
            if (b.Sign) return a.IsInfinity ? Invalid(ref c) : a.IsZero ? a : Float80.Zero(a.Sign);
            return a.IsZero ? Invalid(ref c) : Float80.Infinity(a.Sign);
        }
        if (a.IsZero || a.IsInfinity) return a;
        long n = 0;
        if (!b.IsZero)
        {
            int eb = b.Unpack(out ulong mb);
            if (eb >= 20) n = 1 << 20;
            else if (eb >= 0) n = (long)(mb >> (63 - eb));
            if (b.Sign) n = -n;
        }
        int ea = a.Unpack(out ulong ma);
        return Float80.FromParts(a.Sign, (int)(ea + n), ma, 64, ref c);
    }

    /// <summary>
    /// FPREM (truncating quotient) and FPREM1 (IEEE, round-to-nearest quotient). When the exponents
    /// differ by 64 or more only a partial remainder is computed (the exponent drops by 32 to 63, as
    /// AMD documents: N = 32 + (d mod 32)) and <paramref name="complete"/> is false (C2 = 1).
    /// <paramref name="quotient"/> has the low three quotient bits for C0/C3/C1, or −1 when there is no
    /// quotient (a NaN or invalid operand).
    /// </summary>
    public static Float80 Remainder(Float80 a, Float80 b, bool ieee, ref X87Context c, out bool complete, out int quotient)
    {
        complete = true;
        quotient = -1;
        if (Invalids(a, b, ref c, out var r)) return r;
        if (a.IsInfinity || b.IsZero) return Invalid(ref c);
        quotient = 0;
        CheckDenormal(a, b, ref c);
        if (a.IsZero) return a;
        int ea = a.Unpack(out ulong ma);
        // An unchanged operand comes back re-encoded (a pseudo-denormal becomes normal), as on hardware.
        if (b.IsInfinity) return Float80.FromParts(a.Sign, ea, ma, 64, ref c);
        int eb = b.Unpack(out ulong mb);
        int d = ea - eb;
        if (d >= 64)
        {
            // Partial: divide by b·2^(d − n), truncating, so the exponent difference falls by d − n.
            int n = 32 + (d & 31);
            complete = false;
            // a / (b·2^(d − n)) = ma·2^n / mb; the remainder is in units of 2^(ea − n − 63).
            UInt128 num = (UInt128)ma << n;
            UInt128 q0 = num / mb, rem0 = num - q0 * mb;
            quotient = 0; // the quotient bits of a partial remainder read as 0 on hardware
            if (rem0 == 0) return Float80.Zero(a.Sign);
            var x = new X87Context(c.Rounding, 64);
            var res = Float80.RoundPack(a.Sign, ea - n - 63 + 127, rem0, 64, ref x);
            c.Flags |= x.Flags & X87Flags.Underflow;
            return res;
        }
        // Align both in units of 2^(min(ea,eb) − 63).
        UInt128 bigA, bigB;
        int unitExp;
        if (d >= 0) { bigA = (UInt128)ma << d; bigB = mb; unitExp = eb - 63; }
        else if (d >= -1) { bigA = ma; bigB = (UInt128)mb << -d; unitExp = ea - 63; }
        else
        {
            // |a| < |b| / 2: the quotient is 0 either way.
            return Float80.FromParts(a.Sign, ea, ma, 64, ref c);
        }
        UInt128 q = bigA / bigB, rm = bigA - q * bigB;
        bool sign = a.Sign;
        if (ieee && (rm << 1 > bigB || (rm << 1 == bigB && (q & 1) != 0)))
        {
            rm = bigB - rm;
            q++;
            sign = !sign;
        }
        quotient = (int)(q & 7);
        if (rm == 0) return Float80.Zero(a.Sign);
        var xc = new X87Context(c.Rounding, 64);
        var result = Float80.RoundPack(sign, unitExp + 127, rm, 64, ref xc);
        c.Flags |= xc.Flags & X87Flags.Underflow;
        return result;
    }
}
