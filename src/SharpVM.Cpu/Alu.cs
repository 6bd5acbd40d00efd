using System.Numerics;
using System.Runtime.CompilerServices;
using Iced.Intel;

namespace SharpVM.Cpu;

public sealed unsafe partial class EmulatorVcpu
{
    internal const int OpAdd = 0, OpOr = 1, OpAdc = 2, OpSbb = 3, OpAnd = 4, OpSub = 5, OpXor = 6, OpCmp = 7, OpTest = 8;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void SetSzp(ulong r, int sz, ulong other)
    {
        ulong f = other;
        r &= Bits.Mask(sz);
        if (r == 0) f |= Flags.ZF;
        if ((r & Bits.SignBit(sz)) != 0) f |= Flags.SF;
        f |= Bits.ParityTable[(byte)r];
        // All arithmetic flags are replaced: no need to materialize a pending lazy state first.
        _flags = (_flags & ~Flags.Arith) | f;
        _lazyOp = LazyNone;
    }

    // Lazy flags: the operands and result of the last flag-setting ADD, SUB/CMP or logic operation (A, B, R), of an
    // INC/DEC (A, the CF it keeps, R), and - set by translated code only - of a 32/64-bit shift by an immediate
    // (A, the count, R) and of ADC/SBB (A, B, R: the carry in follows from them). Every state's R is its result
    // masked to its size, so ZF and SF always come from R.
    private const int LazyNone = 0, LazyAdd = 1, LazySub = 2, LazyLogic = 3, LazyInc = 4, LazyDec = 5,
        LazyShl = 6, LazyShr = 7, LazySar = 8, LazyAdc = 9, LazySbb = 10;

    /// <summary>CF of the pending lazy state (or of RFLAGS) without materializing the rest.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong CarryFlag() => _lazyOp switch
    {
        LazyNone => _flags & Flags.CF,
        LazyAdd => _lazyR < _lazyA ? 1UL : 0,
        LazySub => _lazyA < _lazyB ? 1UL : 0,
        LazyLogic => 0,
        LazyInc or LazyDec => _lazyB,
        _ => LazyCarryOfRareState(),
    };

    /// <summary>CF of the shift and ADC/SBB states (out of line: the interpreter itself never sets them).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong LazyCarryOfRareState()
    {
        ulong a = _lazyA, b = _lazyB, r = _lazyR;
        int bits = _lazySz * 8;
        return _lazyOp switch
        {
            LazyShl => (a >> (bits - (int)b)) & 1,
            LazyShr => (a >> ((int)b - 1)) & 1,
            LazySar => (ulong)(Bits.SignExtend(a, _lazySz) >> ((int)b - 1)) & 1,
            // ADC: r = a + b + c; r == a only when b + c wrapped to 0, which carries exactly when b != 0.
            LazyAdc => r < a || (r == a && b != 0) ? 1UL : 0,
            // SBB: r = a - b - c; a == b borrows exactly when c was 1, i.e. when r != 0.
            LazySbb => a < b || (a == b && r != 0) ? 1UL : 0,
            _ => throw new InvalidOperationException($"lazy flag state {_lazyOp}"),
        };
    }
    private int _lazyOp;
    private int _lazySz;
    private ulong _lazyA, _lazyB, _lazyR;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void SetLazy(int op, ulong a, ulong b, ulong r, int sz)
    {
        _lazyOp = op; _lazyA = a; _lazyB = b; _lazyR = r; _lazySz = sz;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void MaterializeFlags()
    {
        ulong a = _lazyA, b = _lazyB, r = _lazyR;
        int sz = _lazySz;
        ulong sb = Bits.SignBit(sz);
        ulong f = 0;
        switch (_lazyOp)
        {
            case LazyAdd:
                if (r < a) f |= Flags.CF;
                if (((a ^ r) & (b ^ r) & sb) != 0) f |= Flags.OF;
                f |= (a ^ b ^ r) & Flags.AF;
                break;
            case LazySub:
                if (a < b) f |= Flags.CF;
                if (((a ^ b) & (a ^ r) & sb) != 0) f |= Flags.OF;
                f |= (a ^ b ^ r) & Flags.AF;
                break;
            case LazyInc:
            case LazyDec:
                f |= b; // saved CF
                if (_lazyOp == LazyInc ? r == sb : a == sb) f |= Flags.OF;
                f |= (a ^ r ^ 1) & Flags.AF;
                break;
            // Shifts as Shift sets them (AF cleared): SHL's OF is the result's sign XOR CF, SHR's the operand's sign
            // for a count of 1, SAR's 0.
            case LazyShl:
                f |= LazyCarryOfRareState();
                if (((r & sb) != 0) ^ (f != 0)) f |= Flags.OF;
                break;
            case LazyShr:
                f |= LazyCarryOfRareState();
                if (b == 1 && (a & sb) != 0) f |= Flags.OF;
                break;
            case LazySar:
                f |= LazyCarryOfRareState();
                break;
            case LazyAdc:
                f |= LazyCarryOfRareState();
                if (((a ^ r) & (b ^ r) & sb) != 0) f |= Flags.OF;
                f |= (a ^ b ^ r) & Flags.AF;
                break;
            case LazySbb:
                f |= LazyCarryOfRareState();
                if (((a ^ b) & (a ^ r) & sb) != 0) f |= Flags.OF;
                f |= (a ^ b ^ r) & Flags.AF;
                break;
        }
        if (r == 0) f |= Flags.ZF;
        if ((r & sb) != 0) f |= Flags.SF;
        f |= Bits.ParityTable[(byte)r];
        _flags = (_flags & ~Flags.Arith) | f;
        _lazyOp = LazyNone;
    }

    /// <summary>The eight classic ALU operations plus TEST; sets the arithmetic flags exactly.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong Alu(int op, ulong a, ulong b, int sz)
    {
        ulong m = Bits.Mask(sz), sb = Bits.SignBit(sz);
        a &= m; b &= m;
        ulong r, f = 0;
        switch (op)
        {
            case OpAdd:
                r = (a + b) & m;
                SetLazy(LazyAdd, a, b, r, sz);
                return r;
            case OpAdc:
            {
                ulong c = CarryFlag();
                r = (a + b + c) & m;
                if (r < a || (c != 0 && r == a)) f |= Flags.CF;
                if (((a ^ r) & (b ^ r) & sb) != 0) f |= Flags.OF;
                f |= (a ^ b ^ r) & Flags.AF;
                break;
            }
            case OpSub:
            case OpCmp:
                r = (a - b) & m;
                SetLazy(LazySub, a, b, r, sz);
                return r;
            case OpSbb:
            {
                ulong c = CarryFlag();
                r = (a - b - c) & m;
                if (a < b || (c != 0 && a == b)) f |= Flags.CF;
                if (((a ^ b) & (a ^ r) & sb) != 0) f |= Flags.OF;
                f |= (a ^ b ^ r) & Flags.AF;
                break;
            }
            case OpAnd:
            case OpTest:
                r = a & b;
                SetLazy(LazyLogic, a, b, r, sz);
                return r;
            case OpOr:
                r = a | b;
                SetLazy(LazyLogic, a, b, r, sz);
                return r;
            default:
                r = a ^ b;
                SetLazy(LazyLogic, a, b, r, sz);
                return r;
        }
        SetSzp(r, sz, f);
        return r;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong IncDec(ulong a, int sz, bool dec)
    {
        ulong m = Bits.Mask(sz);
        a &= m;
        ulong r = (dec ? a - 1 : a + 1) & m;
        SetLazy(dec ? LazyDec : LazyInc, a, CarryFlag(), r, sz);
        return r;
    }

    private ulong Neg(ulong a, int sz)
    {
        ulong m = Bits.Mask(sz);
        a &= m;
        ulong r = (0 - a) & m;
        ulong f = 0;
        if (a != 0) f |= Flags.CF;
        if (a == Bits.SignBit(sz)) f |= Flags.OF;
        f |= (a ^ r) & Flags.AF;
        SetSzp(r, sz, f);
        return r;
    }

    /// <summary>ROL/ROR/RCL/RCR/SHL/SHR/SAR with the count already read (unmasked).</summary>
    internal ulong Shift(Mnemonic mn, ulong a, ulong countRaw, int sz)
    {
        int bits = sz * 8;
        ulong m = Bits.Mask(sz), sb = Bits.SignBit(sz);
        a &= m;
        int count = (int)(countRaw & (sz == 8 ? 63u : 31u));
        if (count == 0) return a;
        ulong r;
        bool cf, of;
        switch (mn)
        {
            case Mnemonic.Shl:
            case Mnemonic.Sal:
                r = count >= 64 ? 0 : (a << count) & m;
                cf = count <= bits && ((a >> (bits - count)) & 1) != 0;
                of = ((r & sb) != 0) ^ cf;
                SetSzp(r, sz, (cf ? Flags.CF : 0) | (of ? Flags.OF : 0));
                return r;
            case Mnemonic.Shr:
                r = a >> count;
                cf = ((a >> (count - 1)) & 1) != 0;
                of = (a & sb) != 0;
                SetSzp(r, sz, (cf ? Flags.CF : 0) | (of && count == 1 ? Flags.OF : 0));
                return r;
            case Mnemonic.Sar:
            {
                long sa = Bits.SignExtend(a, sz);
                r = (ulong)(sa >> count) & m;
                cf = ((sa >> (count - 1)) & 1) != 0;
                SetSzp(r, sz, cf ? Flags.CF : 0);
                return r;
            }
            case Mnemonic.Rol:
            {
                int c = count % bits;
                r = c == 0 ? a : ((a << c) | (a >> (bits - c))) & m;
                cf = (r & 1) != 0;
                of = ((r & sb) != 0) ^ cf;
                break;
            }
            case Mnemonic.Ror:
            {
                int c = count % bits;
                r = c == 0 ? a : ((a >> c) | (a << (bits - c))) & m;
                cf = (r & sb) != 0;
                of = cf ^ ((r & (sb >> 1)) != 0);
                break;
            }
            case Mnemonic.Rcl:
            {
                int c = sz == 1 ? count % 9 : sz == 2 ? count % 17 : count;
                cf = CarryFlag() != 0;
                r = a;
                for (int k = 0; k < c; k++)
                {
                    bool ncf = (r & sb) != 0;
                    r = ((r << 1) | (cf ? 1UL : 0)) & m;
                    cf = ncf;
                }
                of = ((r & sb) != 0) ^ cf;
                break;
            }
            case Mnemonic.Rcr:
            {
                int c = sz == 1 ? count % 9 : sz == 2 ? count % 17 : count;
                cf = CarryFlag() != 0;
                of = ((a & sb) != 0) ^ cf;
                r = a;
                for (int k = 0; k < c; k++)
                {
                    bool ncf = (r & 1) != 0;
                    r = (r >> 1) | (cf ? sb : 0);
                    cf = ncf;
                }
                break;
            }
            default:
                throw UD();
        }
        ulong f = Rflags & ~(Flags.CF | Flags.OF);
        if (cf) f |= Flags.CF;
        if (of) f |= Flags.OF;
        Rflags = f;
        return r;
    }

    internal ulong DoubleShift(bool left, ulong dst, ulong src, ulong countRaw, int sz)
    {
        int bits = sz * 8;
        ulong m = Bits.Mask(sz), sb = Bits.SignBit(sz);
        dst &= m; src &= m;
        int count = (int)(countRaw & (sz == 8 ? 63u : 31u));
        if (count == 0) return dst;
        ulong r;
        bool cf;
        if (sz == 2 && count > 16)
        {
            // Intel: the 16-bit forms shift the 48-bit dst:src:dst (or its mirror) - emulate that.
            UInt128 wide = left ? ((UInt128)dst << 32) | ((UInt128)src << 16) | dst : ((UInt128)dst << 32) | ((UInt128)src << 16) | dst;
            if (left)
            {
                r = (ulong)((wide << count) >> 32) & m;
                cf = ((wide >> (48 - count)) & 1) != 0;
            }
            else
            {
                UInt128 w2 = ((UInt128)dst << 32) | ((UInt128)src << 16) | dst;
                w2 = ((UInt128)dst) | ((UInt128)src << 16) | ((UInt128)dst << 32);
                r = (ulong)(w2 >> count) & m;
                cf = ((w2 >> (count - 1)) & 1) != 0;
            }
        }
        else if (left)
        {
            r = ((dst << count) | (count >= bits ? src << (count - bits) : src >> (bits - count))) & m;
            cf = count <= bits ? ((dst >> (bits - count)) & 1) != 0 : ((src >> (2 * bits - count)) & 1) != 0;
        }
        else
        {
            r = ((dst >> count) | (count >= bits ? src >> (count - bits) : src << (bits - count))) & m;
            cf = count <= bits ? ((dst >> (count - 1)) & 1) != 0 : ((src >> (count - bits - 1)) & 1) != 0;
        }
        bool of = ((r ^ dst) & sb) != 0;
        SetSzp(r, sz, (cf ? Flags.CF : 0) | (of ? Flags.OF : 0));
        return r;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool Cond(ConditionCode cc)
    {
        // Common compare-and-branch pairs straight from the lazy state.
        int lop = _lazyOp;
        if (lop == LazySub)
        {
            ulong a = _lazyA, b = _lazyB;
            switch (cc)
            {
                case ConditionCode.e: return a == b;
                case ConditionCode.ne: return a != b;
                case ConditionCode.b: return a < b;
                case ConditionCode.ae: return a >= b;
                case ConditionCode.be: return a <= b;
                case ConditionCode.a: return a > b;
                case ConditionCode.l: return Bits.SignExtend(a, _lazySz) < Bits.SignExtend(b, _lazySz);
                case ConditionCode.ge: return Bits.SignExtend(a, _lazySz) >= Bits.SignExtend(b, _lazySz);
                case ConditionCode.le: return Bits.SignExtend(a, _lazySz) <= Bits.SignExtend(b, _lazySz);
                case ConditionCode.g: return Bits.SignExtend(a, _lazySz) > Bits.SignExtend(b, _lazySz);
            }
        }
        else if (lop == LazyAdd)
        {
            // Carries out of ADD (multi-precision arithmetic: ADD then SETB/JB/ADC) need no materialized RFLAGS.
            ulong r = _lazyR;
            switch (cc)
            {
                case ConditionCode.e: return r == 0;
                case ConditionCode.ne: return r != 0;
                case ConditionCode.b: return r < _lazyA;
                case ConditionCode.ae: return r >= _lazyA;
                case ConditionCode.s: return (r & Bits.SignBit(_lazySz)) != 0;
                case ConditionCode.ns: return (r & Bits.SignBit(_lazySz)) == 0;
            }
        }
        else if (lop >= LazyInc)
        {
            ulong r = _lazyR;
            switch (cc)
            {
                case ConditionCode.e: return r == 0;
                case ConditionCode.ne: return r != 0;
                case ConditionCode.s: return (r & Bits.SignBit(_lazySz)) != 0;
                case ConditionCode.ns: return (r & Bits.SignBit(_lazySz)) == 0;
            }
        }
        else if (lop == LazyLogic)
        {
            ulong r = _lazyR;
            switch (cc)
            {
                case ConditionCode.e: return r == 0;
                case ConditionCode.ne: return r != 0;
                case ConditionCode.s: case ConditionCode.l: return (r & Bits.SignBit(_lazySz)) != 0;
                case ConditionCode.ns: case ConditionCode.ge: return (r & Bits.SignBit(_lazySz)) == 0;
            }
        }
        ulong f = Rflags;
        return cc switch
        {
            ConditionCode.o => (f & Flags.OF) != 0,
            ConditionCode.no => (f & Flags.OF) == 0,
            ConditionCode.b => (f & Flags.CF) != 0,
            ConditionCode.ae => (f & Flags.CF) == 0,
            ConditionCode.e => (f & Flags.ZF) != 0,
            ConditionCode.ne => (f & Flags.ZF) == 0,
            ConditionCode.be => (f & (Flags.CF | Flags.ZF)) != 0,
            ConditionCode.a => (f & (Flags.CF | Flags.ZF)) == 0,
            ConditionCode.s => (f & Flags.SF) != 0,
            ConditionCode.ns => (f & Flags.SF) == 0,
            ConditionCode.p => (f & Flags.PF) != 0,
            ConditionCode.np => (f & Flags.PF) == 0,
            ConditionCode.l => ((f >> 7) & 1) != ((f >> 11) & 1),
            ConditionCode.ge => ((f >> 7) & 1) == ((f >> 11) & 1),
            ConditionCode.le => (f & Flags.ZF) != 0 || ((f >> 7) & 1) != ((f >> 11) & 1),
            ConditionCode.g => (f & Flags.ZF) == 0 && ((f >> 7) & 1) == ((f >> 11) & 1),
            _ => true,
        };
    }

    private void MulOp(ulong src, int sz, bool signed)
    {
        ulong lo, hi;
        bool overflow;
        switch (sz)
        {
            case 1:
            {
                ulong a = Gpr[0] & 0xFF;
                ulong p = signed ? (ulong)(ushort)(short)((sbyte)a * (sbyte)src) : a * (src & 0xFF);
                Gpr[0] = (Gpr[0] & ~0xFFFFUL) | (p & 0xFFFF);
                lo = p & 0xFF; hi = (p >> 8) & 0xFF;
                overflow = signed ? (short)p != (sbyte)p : hi != 0;
                SetSzp(lo, 1, overflow ? Flags.CF | Flags.OF : 0);
                return;
            }
            case 2:
            {
                ulong a = Gpr[0] & 0xFFFF;
                ulong p = signed ? (ulong)(uint)((short)a * (short)src) : a * (src & 0xFFFF);
                lo = p & 0xFFFF; hi = (p >> 16) & 0xFFFF;
                Gpr[0] = (Gpr[0] & ~0xFFFFUL) | lo;
                Gpr[2] = (Gpr[2] & ~0xFFFFUL) | hi;
                overflow = signed ? (int)(uint)p != (short)p : hi != 0;
                break;
            }
            case 4:
            {
                ulong a = Gpr[0] & 0xFFFFFFFF;
                ulong p = signed ? (ulong)((long)(int)a * (int)src) : a * (src & 0xFFFFFFFF);
                lo = p & 0xFFFFFFFF; hi = p >> 32;
                Gpr[0] = lo; Gpr[2] = hi;
                overflow = signed ? (long)p != (int)p : hi != 0;
                break;
            }
            default:
            {
                if (signed)
                {
                    long h = Math.BigMul((long)Gpr[0], (long)src, out long l);
                    lo = (ulong)l; hi = (ulong)h;
                    overflow = h != (l >> 63);
                }
                else
                {
                    hi = Math.BigMul(Gpr[0], src, out lo);
                    overflow = hi != 0;
                }
                Gpr[0] = lo; Gpr[2] = hi;
                break;
            }
        }
        SetSzp(lo, sz, overflow ? Flags.CF | Flags.OF : 0);
    }

    /// <summary>Two/three-operand IMUL: returns the truncated product and sets CF/OF.</summary>
    private ulong Imul2(ulong a, ulong b, int sz)
    {
        long sa = Bits.SignExtend(a, sz), sbv = Bits.SignExtend(b, sz);
        ulong r;
        bool overflow;
        if (sz == 8)
        {
            long h = Math.BigMul(sa, sbv, out long l);
            r = (ulong)l;
            overflow = h != (l >> 63);
        }
        else
        {
            long p = sa * sbv;
            r = (ulong)p & Bits.Mask(sz);
            overflow = Bits.SignExtend(r, sz) != p;
        }
        SetSzp(r, sz, overflow ? Flags.CF | Flags.OF : 0);
        return r;
    }

    private void DivOp(ulong src, int sz, bool signed)
    {
        src &= Bits.Mask(sz);
        if (src == 0) throw Fault(0);
        switch (sz)
        {
            case 1:
            {
                ulong n = Gpr[0] & 0xFFFF;
                ulong q, rem;
                if (signed)
                {
                    int d = (sbyte)src, nn = (short)n;
                    int qq = nn / d, rr = nn % d;
                    if (qq is > 127 or < -128) throw Fault(0);
                    q = (byte)qq; rem = (byte)rr;
                }
                else
                {
                    q = n / src; rem = n % src;
                    if (q > 0xFF) throw Fault(0);
                }
                Gpr[0] = (Gpr[0] & ~0xFFFFUL) | (rem << 8) | q;
                return;
            }
            case 2:
            {
                ulong n = ((Gpr[2] & 0xFFFF) << 16) | (Gpr[0] & 0xFFFF);
                ulong q, rem;
                if (signed)
                {
                    long d = (short)src, nn = (int)n;
                    long qq = nn / d, rr = nn % d;
                    if (qq is > short.MaxValue or < short.MinValue) throw Fault(0);
                    q = (ushort)qq; rem = (ushort)rr;
                }
                else
                {
                    q = n / src; rem = n % src;
                    if (q > 0xFFFF) throw Fault(0);
                }
                Gpr[0] = (Gpr[0] & ~0xFFFFUL) | q;
                Gpr[2] = (Gpr[2] & ~0xFFFFUL) | rem;
                return;
            }
            case 4:
            {
                ulong n = ((Gpr[2] & 0xFFFFFFFF) << 32) | (Gpr[0] & 0xFFFFFFFF);
                if (signed)
                {
                    long d = (int)src, nn = (long)n;
                    if (d == -1)
                    {
                        if (nn == long.MinValue) throw Fault(0);
                        long qq1 = -nn;
                        if (qq1 is > int.MaxValue or < int.MinValue) throw Fault(0);
                        Gpr[0] = (uint)qq1; Gpr[2] = 0;
                        return;
                    }
                    long qq = nn / d, rr = nn % d;
                    if (qq is > int.MaxValue or < int.MinValue) throw Fault(0);
                    Gpr[0] = (uint)qq; Gpr[2] = (uint)rr;
                }
                else
                {
                    ulong q = n / src;
                    if (q > 0xFFFFFFFF) throw Fault(0);
                    Gpr[0] = q; Gpr[2] = n % src;
                }
                return;
            }
            default:
            {
                if (signed)
                {
                    Int128 n = (Int128)(((UInt128)Gpr[2] << 64) | Gpr[0]);
                    long d = (long)src;
                    if (d == -1)
                    {
                        if (n == Int128.MinValue) throw Fault(0);
                        Int128 qn = -n;
                        if (qn > long.MaxValue || qn < long.MinValue) throw Fault(0);
                        Gpr[0] = (ulong)(long)qn; Gpr[2] = 0;
                        return;
                    }
                    Int128 q = n / d, r = n % d;
                    if (q > long.MaxValue || q < long.MinValue) throw Fault(0);
                    Gpr[0] = (ulong)(long)q; Gpr[2] = (ulong)(long)r;
                }
                else
                {
                    if (Gpr[2] >= src) throw Fault(0);
                    UInt128 n = ((UInt128)Gpr[2] << 64) | Gpr[0];
                    Gpr[0] = (ulong)(n / src); Gpr[2] = (ulong)(n % src);
                }
                return;
            }
        }
    }

    private static int Popcount(ulong v) => BitOperations.PopCount(v);
}
