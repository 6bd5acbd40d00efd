using Iced.Intel;

namespace SharpVM.Cpu;

/// <summary>
/// The x87 FPU: the register stack (physical registers R0-R7 in <see cref="FpuSignificand"/> /
/// <see cref="FpuSignExponent"/>, ST(i) = R[(TOP + i) mod 8]), the abridged tag byte <see cref="Ftw"/>
/// (bit k set = R[k] holds a value, as FXSAVE stores it), and every x87 instruction. Arithmetic is
/// exact in software (<see cref="Float80Math"/>) and honours PC and RC; exceptions get their masked
/// responses. An exception the control word leaves unmasked sets ES/B, and the next waiting x87
/// instruction raises #MF (when CR0.NE is set); the result is still the masked response (hardware
/// would leave the destination unchanged for some of them). FIP/FDP/FOP are not tracked (stored as 0).
/// FSIN/FCOS/FSINCOS/FPTAN/FPATAN/F2XM1/FYL2X/FYL2XP1 go through the host's double precision maths,
/// so their results carry about 53 correct bits, not 64.
/// </summary>
public sealed unsafe partial class EmulatorVcpu
{
    private const ushort FswC0 = 0x100, FswC1 = 0x200, FswC2 = 0x400, FswC3 = 0x4000, FswConditions = FswC0 | FswC1 | FswC2 | FswC3;
    private const ushort FswErrorSummary = 0x80, FswBusy = 0x8000;
    private const ulong Cr0Ne = 0x20;

    private int FpuTop => (Fsw >> 11) & 7;

    private void SetFpuTop(int top) => Fsw = (ushort)((Fsw & ~0x3800) | ((top & 7) << 11));

    private int FpuPhysical(int st) => (FpuTop + st) & 7;

    private bool StEmpty(int st) => (Ftw & (1 << FpuPhysical(st))) == 0;

    private Float80 StRaw(int st)
    {
        int p = FpuPhysical(st);
        return new Float80(FpuSignificand[p], FpuSignExponent[p]);
    }

    private void SetSt(int st, Float80 v)
    {
        int p = FpuPhysical(st);
        FpuSignificand[p] = v.Significand;
        FpuSignExponent[p] = v.SignExponent;
        Ftw |= (byte)(1 << p);
    }

    private void FpuPop()
    {
        Ftw &= (byte)~(1 << FpuTop);
        SetFpuTop(FpuTop + 1);
    }

    /// <summary>Pushes; a full register is a stack overflow (IE, SF, C1 = 1) and gets the indefinite.</summary>
    private void FpuPush(Float80 v, ref X87Context c)
    {
        int p = (FpuTop - 1) & 7;
        if ((Ftw & (1 << p)) != 0) StackOverflow(ref c, out v);
        SetFpuTop(p);
        SetSt(0, v);
    }

    private static void StackOverflow(ref X87Context c, out Float80 v)
    {
        // C1 = 1 for an overflow, unless the same instruction already underflowed (FLD ST(i) from an
        // empty register onto a full one): then C1 stays 0, as on the host CPU.
        if ((c.Flags & X87Flags.StackFault) == 0) c.RoundedUp = true;
        c.Flags |= X87Flags.Invalid | X87Flags.StackFault;
        v = Float80.Indefinite;
    }

    /// <summary>Reads ST(i) as an operand; an empty register is a stack underflow (IE, SF, C1 = 0).</summary>
    private bool ReadSt(int st, out Float80 v, ref X87Context c)
    {
        if (StEmpty(st))
        {
            c.Flags |= X87Flags.Invalid | X87Flags.StackFault;
            c.RoundedUp = false;
            v = Float80.Indefinite;
            return false;
        }
        v = StRaw(st);
        return true;
    }

    private X87Context FpuContext(bool precisionControl)
    {
        int pc = (Fcw >> 8) & 3;
        int bits = !precisionControl ? 64 : pc switch { 0 => 24, 2 => 53, _ => 64 };
        return new X87Context((X87Rounding)((Fcw >> 10) & 3), bits);
    }

    /// <summary>Merges an operation's exceptions into FSW, sets C1 (round-up or stack fault direction) and ES/B.</summary>
    private void FpuFinish(ref X87Context c, bool setC1 = true)
    {
        int f = c.Flags;
        ushort sw = (ushort)(Fsw | (f & 0x7F));
        if (setC1) sw = (ushort)(c.RoundedUp && ((f & (X87Flags.Precision | X87Flags.StackFault)) != 0) ? sw | FswC1 : sw & ~FswC1);
        Fsw = sw;
        UpdateErrorSummary();
    }

    private void UpdateErrorSummary()
    {
        if ((Fsw & 0x3F & ~Fcw) != 0) Fsw |= FswErrorSummary | FswBusy;
        else Fsw &= unchecked((ushort)~(FswErrorSummary | FswBusy));
    }

    private void SetConditions(bool c3, bool c2, bool c1, bool c0)
    {
        int v = (c3 ? FswC3 : 0) | (c2 ? FswC2 : 0) | (c1 ? FswC1 : 0) | (c0 ? FswC0 : 0);
        Fsw = (ushort)((Fsw & ~FswConditions) | v);
    }

    /// <summary>Checks for a waiting x87 instruction: #NM when CR0.EM/TS say so, #MF for a pending unmasked exception.</summary>
    private void FpuWaitCheck()
    {
        CheckFpu();
        if ((Fsw & FswErrorSummary) != 0 && (Cr0 & Cr0Ne) != 0) throw Fault(16);
    }

    private static int StIndex(Register r) => r - Register.ST0;

    /// <summary>Reads an x87 memory operand as a register value.</summary>
    private Float80 ReadFpMemory(ref Instruction i, bool quietNaN, ref X87Context c)
    {
        ulong la = MemAddr(ref i);
        switch (i.MemorySize)
        {
            case MemorySize.Float32: return Float80.FromSingle((uint)Read(la, 4), quietNaN, ref c);
            case MemorySize.Float64: return Float80.FromDouble(Read(la, 8), quietNaN, ref c);
            case MemorySize.Float80:
            {
                ulong sig = Read(la, 8);
                return new Float80(sig, (ushort)Read(la + 8, 2));
            }
            case MemorySize.Int16: return Float80.FromInt64((short)Read(la, 2));
            case MemorySize.Int32: return Float80.FromInt64((int)Read(la, 4));
            case MemorySize.Int64: return Float80.FromInt64((long)Read(la, 8));
            case MemorySize.Bcd: return FromBcd(la);
            default: throw new CpuUnimplemented($"x87 memory operand {i.MemorySize} in {i}");
        }
    }

    private void WriteFloat80(ulong la, Float80 v)
    {
        Read(la + 9, 1, NeedW); // both parts writable before either is written
        Write(la, 8, v.Significand);
        Write(la + 8, 2, v.SignExponent);
    }

    /// <summary>Executes an x87 instruction; false when <paramref name="i"/> is not one.</summary>
    private bool TryExecX87(ref Instruction i)
    {
        switch (i.Mnemonic)
        {
            // ----- control: FN* forms do not wait for pending exceptions -----
            case Mnemonic.Fninit: CheckFpu(); FpuInit(); return true;
            case Mnemonic.Finit: FpuWaitCheck(); FpuInit(); return true;
            case Mnemonic.Fnclex: CheckFpu(); Fsw &= 0x7F00; return true;
            case Mnemonic.Fclex: FpuWaitCheck(); Fsw &= 0x7F00; return true;
            case Mnemonic.Fstcw: FpuWaitCheck(); Write(MemAddr(ref i), 2, Fcw); return true;
            case Mnemonic.Fnstcw: CheckFpu(); Write(MemAddr(ref i), 2, Fcw); return true;
            case Mnemonic.Fldcw:
                FpuWaitCheck();
                LoadControlWord((ushort)Read(MemAddr(ref i), 2));
                UpdateErrorSummary();
                return true;
            case Mnemonic.Fstsw: FpuWaitCheck(); StoreStatusWord(ref i); return true;
            case Mnemonic.Fnstsw: CheckFpu(); StoreStatusWord(ref i); return true;
            case Mnemonic.Fstenv: FpuWaitCheck(); StoreEnvironment(MemAddr(ref i), i.MemorySize == MemorySize.FpuEnv14); Fcw |= 0x3F; return true;
            case Mnemonic.Fnstenv: CheckFpu(); StoreEnvironment(MemAddr(ref i), i.MemorySize == MemorySize.FpuEnv14); Fcw |= 0x3F; return true;
            case Mnemonic.Fldenv: FpuWaitCheck(); LoadEnvironment(MemAddr(ref i), i.MemorySize == MemorySize.FpuEnv14); return true;
            case Mnemonic.Fsave: FpuWaitCheck(); SaveState(MemAddr(ref i), i.MemorySize == MemorySize.FpuState94); return true;
            case Mnemonic.Fnsave: CheckFpu(); SaveState(MemAddr(ref i), i.MemorySize == MemorySize.FpuState94); return true;
            case Mnemonic.Frstor: FpuWaitCheck(); RestoreState(MemAddr(ref i), i.MemorySize == MemorySize.FpuState94); return true;
            case Mnemonic.Wait:
                if ((Cr0 & (Cr0Mp | Cr0Ts)) == (Cr0Mp | Cr0Ts)) throw Fault(7);
                if ((Fsw & FswErrorSummary) != 0 && (Cr0 & Cr0Ne) != 0) throw Fault(16);
                return true;
            case Mnemonic.Fnop: FpuWaitCheck(); return true;
            case Mnemonic.Fdecstp: FpuWaitCheck(); SetFpuTop(FpuTop - 1); Fsw &= unchecked((ushort)~FswC1); return true;
            case Mnemonic.Fincstp: FpuWaitCheck(); SetFpuTop(FpuTop + 1); Fsw &= unchecked((ushort)~FswC1); return true;
            case Mnemonic.Ffree:
            case Mnemonic.Ffreep:
                FpuWaitCheck();
                Ftw &= (byte)~(1 << FpuPhysical(StIndex(i.Op0Register)));
                if (i.Mnemonic == Mnemonic.Ffreep) FpuPop();
                Fsw &= unchecked((ushort)~FswC1);
                return true;

            // ----- loads and stores -----
            case Mnemonic.Fld: case Mnemonic.Fild: case Mnemonic.Fbld: X87Load(ref i); return true;
            case Mnemonic.Fld1: X87LoadConstant(Float80.One, false); return true;
            case Mnemonic.Fldz: X87LoadConstant(Float80.Zero(false), false); return true;
            case Mnemonic.Fldpi: X87LoadConstant(new Float80(0xC90FDAA22168C234, 0x4000), true); return true;
            case Mnemonic.Fldl2e: X87LoadConstant(new Float80(0xB8AA3B295C17F0BB, 0x3FFF), true); return true;
            case Mnemonic.Fldl2t: X87LoadConstant(new Float80(0xD49A784BCD1B8AFE, 0x4000), false); return true;
            case Mnemonic.Fldlg2: X87LoadConstant(new Float80(0x9A209A84FBCFF798, 0x3FFD), true); return true;
            case Mnemonic.Fldln2: X87LoadConstant(new Float80(0xB17217F7D1CF79AB, 0x3FFE), true); return true;
            case Mnemonic.Fst: case Mnemonic.Fstp: case Mnemonic.Fstpnce: X87Store(ref i); return true;
            case Mnemonic.Fist: case Mnemonic.Fistp: case Mnemonic.Fisttp: X87StoreInteger(ref i); return true;
            case Mnemonic.Fbstp: X87StoreBcd(ref i); return true;
            case Mnemonic.Fxch: X87Exchange(ref i); return true;
            case Mnemonic.Fcmovb: case Mnemonic.Fcmove: case Mnemonic.Fcmovbe: case Mnemonic.Fcmovu:
            case Mnemonic.Fcmovnb: case Mnemonic.Fcmovne: case Mnemonic.Fcmovnbe: case Mnemonic.Fcmovnu:
                X87ConditionalMove(ref i);
                return true;

            // ----- arithmetic -----
            case Mnemonic.Fadd: case Mnemonic.Fiadd: X87Arith(ref i, Mnemonic.Fadd, false); return true;
            case Mnemonic.Faddp: X87Arith(ref i, Mnemonic.Fadd, true); return true;
            case Mnemonic.Fsub: case Mnemonic.Fisub: X87Arith(ref i, Mnemonic.Fsub, false); return true;
            case Mnemonic.Fsubp: X87Arith(ref i, Mnemonic.Fsub, true); return true;
            case Mnemonic.Fsubr: case Mnemonic.Fisubr: X87Arith(ref i, Mnemonic.Fsubr, false); return true;
            case Mnemonic.Fsubrp: X87Arith(ref i, Mnemonic.Fsubr, true); return true;
            case Mnemonic.Fmul: case Mnemonic.Fimul: X87Arith(ref i, Mnemonic.Fmul, false); return true;
            case Mnemonic.Fmulp: X87Arith(ref i, Mnemonic.Fmul, true); return true;
            case Mnemonic.Fdiv: case Mnemonic.Fidiv: X87Arith(ref i, Mnemonic.Fdiv, false); return true;
            case Mnemonic.Fdivp: X87Arith(ref i, Mnemonic.Fdiv, true); return true;
            case Mnemonic.Fdivr: case Mnemonic.Fidivr: X87Arith(ref i, Mnemonic.Fdivr, false); return true;
            case Mnemonic.Fdivrp: X87Arith(ref i, Mnemonic.Fdivr, true); return true;
            case Mnemonic.Fchs: case Mnemonic.Fabs: case Mnemonic.Fsqrt: case Mnemonic.Frndint:
                X87Unary(i.Mnemonic);
                return true;
            case Mnemonic.Fscale: X87Scale(); return true;
            case Mnemonic.Fxtract: X87Extract(); return true;
            case Mnemonic.Fprem: X87Remainder(false); return true;
            case Mnemonic.Fprem1: X87Remainder(true); return true;

            // ----- comparisons and classification -----
            case Mnemonic.Fcom: case Mnemonic.Fcomp: case Mnemonic.Fcompp: case Mnemonic.Fucom: case Mnemonic.Fucomp:
            case Mnemonic.Fucompp: case Mnemonic.Ficom: case Mnemonic.Ficomp: case Mnemonic.Ftst:
            case Mnemonic.Fcomi: case Mnemonic.Fcomip: case Mnemonic.Fucomi: case Mnemonic.Fucomip:
                X87Compare(ref i);
                return true;
            case Mnemonic.Fxam: X87Examine(); return true;

            // ----- transcendentals (through double precision) -----
            case Mnemonic.Fsin: case Mnemonic.Fcos: case Mnemonic.Fsincos: case Mnemonic.Fptan:
            case Mnemonic.Fpatan: case Mnemonic.F2xm1: case Mnemonic.Fyl2x: case Mnemonic.Fyl2xp1:
                X87Transcendental(i.Mnemonic);
                return true;
            default:
                return false;
        }
    }

    /// <summary>The reserved control-word bits read back fixed, as on the host CPU: bit 6 as 1, bits 7 and 13-15 as 0.</summary>
    private void LoadControlWord(ushort cw) => Fcw = (ushort)((cw & 0x1F3F) | 0x40);

    private void FpuInit()
    {
        Fcw = 0x37F;
        Fsw = 0;
        Ftw = 0;
    }

    private void StoreStatusWord(ref Instruction i)
    {
        if (i.Op0Kind == OpKind.Register) SetGpr(0, 2, Fsw);
        else Write(MemAddr(ref i), 2, Fsw);
    }

    /// <summary>The full tag word (2 bits per physical register) FNSTENV/FNSAVE store.</summary>
    private ushort FullTagWord()
    {
        int tag = 0;
        for (int p = 0; p < 8; p++)
        {
            int t = (Ftw & (1 << p)) == 0 ? 3 : new Float80(FpuSignificand[p], FpuSignExponent[p]).TagClass;
            tag |= t << (2 * p);
        }
        return (ushort)tag;
    }

    /// <summary>FNSTENV: the protected-mode layout, 28 bytes (14 with a 16-bit operand size); pointers are stored as 0.</summary>
    private void StoreEnvironment(ulong la, bool small)
    {
        int step = small ? 2 : 4;
        Read(la + (ulong)(7 * step - 1), 1, NeedW);
        Write(la, step, Fcw | (small ? 0 : 0xFFFF0000u));
        Write(la + (ulong)step, step, Fsw | (small ? 0 : 0xFFFF0000u));
        Write(la + (ulong)(2 * step), step, FullTagWord() | (small ? 0 : 0xFFFF0000u));
        for (int k = 3; k < 7; k++) Write(la + (ulong)(k * step), step, 0);
    }

    private void LoadEnvironment(ulong la, bool small)
    {
        int step = small ? 2 : 4;
        ushort cw = (ushort)Read(la, 2), sw = (ushort)Read(la + (ulong)step, 2), tag = (ushort)Read(la + (ulong)(2 * step), 2);
        LoadControlWord(cw);
        Fsw = sw;
        byte abridged = 0;
        for (int p = 0; p < 8; p++) if (((tag >> (2 * p)) & 3) != 3) abridged |= (byte)(1 << p);
        Ftw = abridged;
        UpdateErrorSummary();
    }

    /// <summary>FNSAVE: the environment, then ST(0)..ST(7) as 10-byte values; then the FPU is initialised.</summary>
    private void SaveState(ulong la, bool small)
    {
        ulong regs = la + (small ? 14UL : 28UL);
        Read(regs + 79, 1, NeedW);
        StoreEnvironment(la, small);
        for (int k = 0; k < 8; k++)
        {
            var v = StRaw(k);
            Write(regs + (ulong)k * 10, 8, v.Significand);
            Write(regs + (ulong)k * 10 + 8, 2, v.SignExponent);
        }
        FpuInit();
    }

    private void RestoreState(ulong la, bool small)
    {
        ulong regs = la + (small ? 14UL : 28UL);
        Span<ulong> sig = stackalloc ulong[8];
        Span<ushort> se = stackalloc ushort[8];
        for (int k = 0; k < 8; k++)
        {
            sig[k] = Read(regs + (ulong)k * 10, 8);
            se[k] = (ushort)Read(regs + (ulong)k * 10 + 8, 2);
        }
        LoadEnvironment(la, small);
        for (int k = 0; k < 8; k++)
        {
            int p = FpuPhysical(k);
            FpuSignificand[p] = sig[k];
            FpuSignExponent[p] = se[k];
        }
    }

    private void X87Load(ref Instruction i)
    {
        FpuWaitCheck();
        var c = FpuContext(false);
        Float80 v;
        // The conversion's exceptions (DE, IE for an SNaN) are dropped when the push overflows the stack.
        var conversion = FpuContext(false);
        if (i.Op0Kind == OpKind.Memory) v = ReadFpMemory(ref i, true, ref conversion);
        else ReadSt(StIndex(i.Op0Register), out v, ref c);
        FpuPush(v, ref c);
        if ((c.Flags & X87Flags.StackFault) == 0) c.Flags |= conversion.Flags;
        FpuFinish(ref c);
    }

    /// <summary>
    /// FLD1/FLDZ/FLDPI...: the constants are the 64-bit truncations of the exact values; RC decides
    /// whether they round up (<paramref name="nearestRoundsUp"/> says what round-to-nearest does).
    /// </summary>
    private void X87LoadConstant(Float80 truncated, bool nearestRoundsUp)
    {
        FpuWaitCheck();
        var c = FpuContext(false);
        bool exact = truncated.Significand == Float80.IntegerBit || truncated.IsZero;
        bool up = !exact && (c.Rounding == X87Rounding.Up || (c.Rounding == X87Rounding.Nearest && nearestRoundsUp));
        FpuPush(up ? new Float80(truncated.Significand + 1, truncated.SignExponent) : truncated, ref c);
        FpuFinish(ref c);
    }

    private void X87Store(ref Instruction i)
    {
        FpuWaitCheck();
        var c = FpuContext(false);
        bool pop = i.Mnemonic != Mnemonic.Fst;
        if (i.Op0Kind == OpKind.Register)
        {
            int dst = StIndex(i.Op0Register);
            // The reserved FSTP1 encoding (D9 D8+i) with an empty ST(0) leaves the destination alone, with
            // no stack fault (as the host does); the others take the stack-underflow response (the
            // destination gets the indefinite).
            if (i.Mnemonic == Mnemonic.Fstpnce && StEmpty(0)) { }
            else
            {
                ReadSt(0, out var v, ref c);
                SetSt(dst, v);
            }
        }
        else
        {
            bool ok = ReadSt(0, out var v, ref c);
            ulong la = MemAddr(ref i);
            switch (i.MemorySize)
            {
                case MemorySize.Float32: Write(la, 4, ok ? v.ToSingle(ref c) : 0xFFC0_0000u); break;
                case MemorySize.Float64: Write(la, 8, ok ? v.ToDouble(ref c) : 0xFFF8_0000_0000_0000UL); break;
                default: WriteFloat80(la, v); break;
            }
        }
        if (pop) FpuPop();
        FpuFinish(ref c);
    }

    private void X87StoreInteger(ref Instruction i)
    {
        FpuWaitCheck();
        var c = FpuContext(false);
        int size = i.MemorySize.GetSize();
        bool truncate = i.Mnemonic == Mnemonic.Fisttp;
        long value = ReadSt(0, out var v, ref c)
            ? v.ToInteger(size * 8, truncate ? X87Rounding.TowardZero : c.Rounding, ref c)
            : size == 8 ? long.MinValue : -(1L << (size * 8 - 1));
        Write(MemAddr(ref i), size, (ulong)value);
        if (i.Mnemonic != Mnemonic.Fist) FpuPop();
        FpuFinish(ref c);
    }

    private void X87Exchange(ref Instruction i)
    {
        FpuWaitCheck();
        var c = FpuContext(false);
        int k = StIndex(i.Op1Kind == OpKind.Register ? i.Op1Register : i.Op0Register);
        ReadSt(0, out var a, ref c);
        ReadSt(k, out var b, ref c);
        SetSt(0, b);
        SetSt(k, a);
        FpuFinish(ref c);
    }

    private void X87ConditionalMove(ref Instruction i)
    {
        FpuWaitCheck();
        var c = FpuContext(false);
        int k = StIndex(i.Op1Register);
        ulong f = Rflags;
        bool cond = i.Mnemonic switch
        {
            Mnemonic.Fcmovb => (f & Flags.CF) != 0,
            Mnemonic.Fcmove => (f & Flags.ZF) != 0,
            Mnemonic.Fcmovbe => (f & (Flags.CF | Flags.ZF)) != 0,
            Mnemonic.Fcmovu => (f & Flags.PF) != 0,
            Mnemonic.Fcmovnb => (f & Flags.CF) == 0,
            Mnemonic.Fcmovne => (f & Flags.ZF) == 0,
            Mnemonic.Fcmovnbe => (f & (Flags.CF | Flags.ZF)) == 0,
            _ => (f & Flags.PF) == 0,
        };
        bool ok0 = ReadSt(0, out _, ref c);
        bool okK = ReadSt(k, out var src, ref c);
        if (!ok0 || !okK) SetSt(0, Float80.Indefinite);
        else if (cond) SetSt(0, src);
        FpuFinish(ref c, setC1: (c.Flags & X87Flags.StackFault) != 0); // C1 only changes on a stack fault
    }

    private void X87Arith(ref Instruction i, Mnemonic op, bool pop)
    {
        FpuWaitCheck();
        var c = FpuContext(true);
        int dst;
        Float80 x, y;
        bool ok;
        if (i.Op0Kind == OpKind.Memory)
        {
            y = ReadFpMemory(ref i, false, ref c);
            dst = 0;
            ok = ReadSt(0, out x, ref c);
        }
        else
        {
            dst = StIndex(i.Op0Register);
            bool okX = ReadSt(dst, out x, ref c);
            bool okY = ReadSt(StIndex(i.Op1Register), out y, ref c);
            ok = okX && okY;
        }
        Float80 r = !ok ? Float80.Indefinite : op switch
        {
            Mnemonic.Fadd => Float80Math.Add(x, y, ref c),
            Mnemonic.Fsub => Float80Math.Sub(x, y, ref c),
            Mnemonic.Fsubr => Float80Math.Sub(y, x, ref c),
            Mnemonic.Fmul => Float80Math.Mul(x, y, ref c),
            Mnemonic.Fdiv => Float80Math.Div(x, y, ref c),
            _ => Float80Math.Div(y, x, ref c),
        };
        SetSt(dst, r);
        if (pop) FpuPop();
        FpuFinish(ref c);
    }

    private void X87Unary(Mnemonic op)
    {
        FpuWaitCheck();
        var c = FpuContext(op == Mnemonic.Fsqrt);
        Float80 r = Float80.Indefinite;
        if (ReadSt(0, out var x, ref c))
        {
            r = op switch
            {
                Mnemonic.Fchs => x.Negate(),
                Mnemonic.Fabs => x.Abs(),
                Mnemonic.Fsqrt => Float80Math.Sqrt(x, ref c),
                _ => Float80Math.RoundToInteger(x, ref c),
            };
        }
        SetSt(0, r);
        FpuFinish(ref c);
    }

    private void X87Scale()
    {
        FpuWaitCheck();
        var c = FpuContext(false);
        bool okA = ReadSt(0, out var a, ref c);
        bool okB = ReadSt(1, out var b, ref c);
        SetSt(0, okA && okB ? Float80Math.Scale(a, b, ref c) : Float80.Indefinite);
        FpuFinish(ref c);
    }

    /// <summary>FXTRACT: ST(0) becomes the exponent, then the significand (exponent 0) is pushed.</summary>
    private void X87Extract()
    {
        FpuWaitCheck();
        var c = FpuContext(false);
        Float80 exponent, significand;
        if ((Ftw & (1 << ((FpuTop - 1) & 7))) != 0)
        {
            // Stack overflow: both results are the indefinite, the operand is not looked at.
            StackOverflow(ref c, out exponent);
            SetSt(0, exponent);
            FpuPush(exponent, ref c);
            FpuFinish(ref c);
            return;
        }
        if (!ReadSt(0, out var x, ref c)) exponent = significand = Float80.Indefinite;
        else if (x.IsUnsupported) { c.Flags |= X87Flags.Invalid; exponent = significand = Float80.Indefinite; }
        else if (x.IsNaN) exponent = significand = Float80Math.PropagateNaN(x, x, ref c);
        else if (x.IsInfinity) { exponent = Float80.Infinity(false); significand = x; }
        else if (x.IsZero)
        {
            c.Flags |= X87Flags.ZeroDivide;
            exponent = Float80.Infinity(true);
            significand = x;
        }
        else
        {
            if (x.IsDenormal) c.Flags |= X87Flags.Denormal;
            int e = x.Unpack(out ulong sig);
            exponent = Float80.FromInt64(e);
            significand = new Float80(sig, (ushort)(Float80.Bias | (x.Sign ? 0x8000 : 0)));
        }
        SetSt(0, exponent);
        FpuPush(significand, ref c);
        FpuFinish(ref c);
    }

    private void X87Remainder(bool ieee)
    {
        FpuWaitCheck();
        var c = FpuContext(false);
        bool okA = ReadSt(0, out var a, ref c);
        bool okB = ReadSt(1, out var b, ref c);
        bool complete = true;
        int q = 0;
        var r = okA && okB ? Float80Math.Remainder(a, b, ieee, ref c, out complete, out q) : Float80.Indefinite;
        SetSt(0, r);
        FpuFinish(ref c);
        // No quotient (NaN, invalid or stack fault): C2 and C1 cleared, C0 and C3 left alone.
        if (!okA || !okB || q < 0) Fsw &= unchecked((ushort)~(FswC2 | FswC1));
        else SetConditions((q & 2) != 0, !complete, (q & 1) != 0, (q & 4) != 0);
    }

    private void X87Compare(ref Instruction i)
    {
        FpuWaitCheck();
        var c = FpuContext(false);
        var mn = i.Mnemonic;
        bool quiet = mn is Mnemonic.Fucom or Mnemonic.Fucomp or Mnemonic.Fucompp or Mnemonic.Fucomi or Mnemonic.Fucomip;
        bool eflags = mn is Mnemonic.Fcomi or Mnemonic.Fcomip or Mnemonic.Fucomi or Mnemonic.Fucomip;
        int pops = mn is Mnemonic.Fcomp or Mnemonic.Fucomp or Mnemonic.Ficomp or Mnemonic.Fcomip or Mnemonic.Fucomip ? 1
            : mn is Mnemonic.Fcompp or Mnemonic.Fucompp ? 2 : 0;
        Float80 b;
        bool okB = true;
        if (mn == Mnemonic.Ftst) b = Float80.Zero(false);
        else if (i.OpCount > 0 && i.GetOpKind(i.OpCount - 1) == OpKind.Memory) b = ReadFpMemory(ref i, false, ref c);
        else if (i.OpCount == 2) okB = ReadSt(StIndex(i.Op1Register), out b, ref c);
        else okB = ReadSt(1, out b, ref c);
        bool okA = ReadSt(0, out var a, ref c);
        var order = okA && okB ? Float80Math.Compare(a, b, quiet, ref c) : Float80Math.Order.Unordered;
        bool lt = order == Float80Math.Order.Less, eq = order == Float80Math.Order.Equal, un = order == Float80Math.Order.Unordered;
        for (int k = 0; k < pops; k++) FpuPop();
        FpuFinish(ref c, setC1: !eflags || (c.Flags & X87Flags.StackFault) != 0); // FCOMI leaves C1 alone unless the stack faults
        if (eflags)
        {
            ulong f = (eq || un ? Flags.ZF : 0) | (un ? Flags.PF : 0) | (lt || un ? Flags.CF : 0);
            Rflags = (Rflags & ~Flags.Arith) | f;
        }
        else
        {
            SetConditions(eq || un, un, (Fsw & FswC1) != 0, lt || un);
        }
    }

    /// <summary>FXAM: classifies ST(0) into C3/C2/C0, with its sign in C1; never raises exceptions.</summary>
    private void X87Examine()
    {
        FpuWaitCheck();
        var v = StRaw(0);
        int cls; // C3 C2 C0
        if (StEmpty(0)) cls = 0b101;
        else if (v.IsUnsupported) cls = 0b000;
        else if (v.IsNaN) cls = 0b001;
        else if (v.IsInfinity) cls = 0b011;
        else if (v.IsZero) cls = 0b100;
        else if (v.IsDenormal) cls = 0b110;
        else cls = 0b010;
        SetConditions((cls & 4) != 0, (cls & 2) != 0, v.Sign, (cls & 1) != 0);
    }
}
