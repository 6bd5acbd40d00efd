using System.Buffers.Binary;
using System.Text;
using Iced.Intel;
using SharpVM.Hypervisor;
using SharpVM.Memory;
using Xunit.Abstractions;

namespace SharpVM.Cpu.Tests;

/// <summary>
/// Differential tests for x87 and MMX: every encoding of the implemented instructions runs on the host
/// CPU and in SharpVM.Cpu from the same FPU state, loaded by FXRSTOR64 from a random image (stack depth,
/// TOP, PC, RC, edge values in every register: zeros, denormals, pseudo-denormals, infinities, NaNs,
/// unsupported encodings, huge and tiny exponents, rounding ties) and stored afterwards by FXSAVE64.
/// The whole data page (the FXSAVE image with ST registers as 80-bit bytes, FCW, FSW with C0-C3, TOP and
/// exception flags, the tag byte, plus every memory operand), the GPRs and the flags must match. Only
/// the instruction/data pointers and FOP (not tracked by the emulator) and MXCSR_MASK are left out.
/// </summary>
[Collection(NativeCpuCollection.Name)]
public sealed class X87DifferentialTests(ITestOutputHelper output)
{
    private static readonly Mnemonic[] X87Mnemonics =
    [
        Mnemonic.Fld, Mnemonic.Fst, Mnemonic.Fstp, Mnemonic.Fstpnce, Mnemonic.Fild, Mnemonic.Fist, Mnemonic.Fistp, Mnemonic.Fisttp,
        Mnemonic.Fbld, Mnemonic.Fbstp, Mnemonic.Fld1, Mnemonic.Fldz, Mnemonic.Fldpi, Mnemonic.Fldl2e, Mnemonic.Fldl2t,
        Mnemonic.Fldlg2, Mnemonic.Fldln2, Mnemonic.Fxch, Mnemonic.Fadd, Mnemonic.Faddp, Mnemonic.Fiadd, Mnemonic.Fsub,
        Mnemonic.Fsubp, Mnemonic.Fisub, Mnemonic.Fsubr, Mnemonic.Fsubrp, Mnemonic.Fisubr, Mnemonic.Fmul, Mnemonic.Fmulp,
        Mnemonic.Fimul, Mnemonic.Fdiv, Mnemonic.Fdivp, Mnemonic.Fidiv, Mnemonic.Fdivr, Mnemonic.Fdivrp, Mnemonic.Fidivr,
        Mnemonic.Fchs, Mnemonic.Fabs, Mnemonic.Fsqrt, Mnemonic.Frndint, Mnemonic.Fscale, Mnemonic.Fxtract, Mnemonic.Fprem,
        Mnemonic.Fprem1, Mnemonic.Fcom, Mnemonic.Fcomp, Mnemonic.Fcompp, Mnemonic.Fucom, Mnemonic.Fucomp, Mnemonic.Fucompp,
        Mnemonic.Fcomi, Mnemonic.Fcomip, Mnemonic.Fucomi, Mnemonic.Fucomip, Mnemonic.Ficom, Mnemonic.Ficomp, Mnemonic.Ftst,
        Mnemonic.Fxam, Mnemonic.Fcmovb, Mnemonic.Fcmove, Mnemonic.Fcmovbe, Mnemonic.Fcmovu, Mnemonic.Fcmovnb, Mnemonic.Fcmovne,
        Mnemonic.Fcmovnbe, Mnemonic.Fcmovnu, Mnemonic.Ffree, Mnemonic.Ffreep, Mnemonic.Fincstp, Mnemonic.Fdecstp, Mnemonic.Fnop,
        Mnemonic.Wait, Mnemonic.Fnstsw, Mnemonic.Fstsw, Mnemonic.Fnstcw, Mnemonic.Fstcw, Mnemonic.Fnclex, Mnemonic.Fninit,
        Mnemonic.Fnstenv, Mnemonic.Fnsave, Mnemonic.Fldcw, Mnemonic.Fldenv, Mnemonic.Frstor,
    ];

    private static readonly Mnemonic[] MmxMnemonics =
    [
        Mnemonic.Movd, Mnemonic.Movq, Mnemonic.Movntq, Mnemonic.Emms, Mnemonic.Paddb, Mnemonic.Paddw, Mnemonic.Paddd, Mnemonic.Paddq,
        Mnemonic.Psubb, Mnemonic.Psubw, Mnemonic.Psubd, Mnemonic.Psubq, Mnemonic.Paddsb, Mnemonic.Paddsw, Mnemonic.Paddusb,
        Mnemonic.Paddusw, Mnemonic.Psubsb, Mnemonic.Psubsw, Mnemonic.Psubusb, Mnemonic.Psubusw, Mnemonic.Pmullw, Mnemonic.Pmulhw,
        Mnemonic.Pmulhuw, Mnemonic.Pmuludq, Mnemonic.Pmaddwd, Mnemonic.Pand, Mnemonic.Pandn, Mnemonic.Por, Mnemonic.Pxor,
        Mnemonic.Pcmpeqb, Mnemonic.Pcmpeqw, Mnemonic.Pcmpeqd, Mnemonic.Pcmpgtb, Mnemonic.Pcmpgtw, Mnemonic.Pcmpgtd,
        Mnemonic.Psllw, Mnemonic.Pslld, Mnemonic.Psllq, Mnemonic.Psrlw, Mnemonic.Psrld, Mnemonic.Psrlq, Mnemonic.Psraw, Mnemonic.Psrad,
        Mnemonic.Packsswb, Mnemonic.Packssdw, Mnemonic.Packuswb, Mnemonic.Punpcklbw, Mnemonic.Punpcklwd, Mnemonic.Punpckldq,
        Mnemonic.Punpckhbw, Mnemonic.Punpckhwd, Mnemonic.Punpckhdq, Mnemonic.Pavgb, Mnemonic.Pavgw, Mnemonic.Pminub, Mnemonic.Pmaxub,
        Mnemonic.Pminsw, Mnemonic.Pmaxsw, Mnemonic.Psadbw, Mnemonic.Pshufw, Mnemonic.Pextrw, Mnemonic.Pinsrw, Mnemonic.Pmovmskb,
        Mnemonic.Maskmovq, Mnemonic.Movq2dq, Mnemonic.Movdq2q, Mnemonic.Cvtpi2ps, Mnemonic.Cvtpi2pd, Mnemonic.Cvtps2pi,
        Mnemonic.Cvttps2pi, Mnemonic.Cvtpd2pi, Mnemonic.Cvttpd2pi,
    ];

    /// <summary>The transcendentals go through double precision: compared within a tolerance in their own test.</summary>
    private static readonly Mnemonic[] Transcendentals =
        [Mnemonic.Fsin, Mnemonic.Fcos, Mnemonic.Fsincos, Mnemonic.Fptan, Mnemonic.Fpatan, Mnemonic.F2xm1, Mnemonic.Fyl2x, Mnemonic.Fyl2xp1];

    private const ulong FxIn = NativeCpu.DataAddr + 0x1800, FxOut = NativeCpu.DataAddr + 0x1A00, MemBase = NativeCpu.DataAddr + 0x800;

    private sealed record Form(Code Code, bool Memory);

    private static List<Form> EnumerateForms(IEnumerable<Mnemonic> mnemonics, bool mmx)
    {
        var wanted = new HashSet<Mnemonic>(mnemonics);
        var forms = new List<Form>();
        foreach (var code in Enum.GetValues<Code>())
        {
            if (code == Code.INVALID) continue;
            var op = code.ToOpCode();
            if (!op.IsInstruction || op.Encoding != EncodingKind.Legacy || !op.Mode64 || !wanted.Contains(op.Mnemonic)) continue;
            bool hasMm = false, hasRm = false, ok = true;
            for (int n = 0; n < op.OpCount; n++)
            {
                var k = op.GetOpKind(n);
                if (k is OpCodeOperandKind.mm_reg or OpCodeOperandKind.mm_rm or OpCodeOperandKind.mm_or_mem) hasMm = true;
                if (k is OpCodeOperandKind.mm_or_mem or OpCodeOperandKind.r32_or_mem or OpCodeOperandKind.r64_or_mem or OpCodeOperandKind.xmm_or_mem) hasRm = true;
                if (k is not (OpCodeOperandKind.st0 or OpCodeOperandKind.sti_opcode or OpCodeOperandKind.mem or OpCodeOperandKind.mm_reg
                    or OpCodeOperandKind.mm_rm or OpCodeOperandKind.mm_or_mem or OpCodeOperandKind.r32_or_mem or OpCodeOperandKind.r64_or_mem
                    or OpCodeOperandKind.r32_reg or OpCodeOperandKind.r64_reg or OpCodeOperandKind.xmm_or_mem or OpCodeOperandKind.xmm_reg
                    or OpCodeOperandKind.xmm_rm or OpCodeOperandKind.imm8 or OpCodeOperandKind.ax or OpCodeOperandKind.seg_rDI
                    or OpCodeOperandKind.r32_rm or OpCodeOperandKind.r64_rm or OpCodeOperandKind.r16_or_mem))
                    ok = false;
            }
            if (!ok) continue;
            // MOVD/MOVQ and friends also have SSE forms; keep the ones on MMX registers.
            if (mmx && !hasMm && op.Mnemonic is not (Mnemonic.Emms or Mnemonic.Cvtpi2ps or Mnemonic.Cvtpi2pd)) continue;
            if (hasRm) { forms.Add(new Form(code, false)); forms.Add(new Form(code, true)); }
            else forms.Add(new Form(code, Enumerable.Range(0, op.OpCount).Any(n => op.GetOpKind(n) == OpCodeOperandKind.mem)));
        }
        return forms;
    }

    // ---------- edge values ----------

    private static (ulong Sig, ushort Se) RandomFloat80(Random rng)
    {
        ushort sign = (ushort)(rng.Next(2) << 15);
        ulong frac = (ulong)rng.NextInt64() | ((ulong)rng.Next(2) << 63);
        ulong normal = frac | (1UL << 63);
        switch (rng.Next(24))
        {
            case 0: return (0, sign);
            case 1: return (1UL << 63, (ushort)(sign | 0x7FFF));                                   // infinity
            case 2: return (normal | (1UL << 62), (ushort)(sign | 0x7FFF));                        // QNaN
            case 3: return ((normal & ~(1UL << 62)) | 1, (ushort)(sign | 0x7FFF));                 // SNaN
            case 4: return (0xC000_0000_0000_0000, 0xFFFF);                                         // indefinite
            case 5: return (frac >> rng.Next(1, 64) & ~(1UL << 63) | 1, sign);                     // denormal
            case 6: return (normal, sign);                                                          // pseudo-denormal
            case 7: return (rng.Next(8) == 0 ? frac & ~(1UL << 63) : normal, (ushort)(sign | (rng.Next(8) == 0 ? rng.Next(1, 0x7FFF) : 1)));  // tiny / unnormal
            case 8: return (rng.Next(2) == 0 ? ulong.MaxValue : normal, (ushort)(sign | 0x7FFE));   // huge
            case 9: return (1UL << 63, (ushort)(sign | (16383 + rng.Next(-2, 3))));                 // powers of two around 1
            case 10: return (normal & ~0x7FFUL | 0x400, (ushort)(sign | (16383 + rng.Next(-3, 70))));  // a double rounding tie
            case 11: return (normal & ~0xFF_FFFF_FFFFUL | 0x80_0000_0000, (ushort)(sign | (16383 + rng.Next(-3, 40))));  // a single rounding tie
            case 12: return (normal, (ushort)(sign | (16383 + rng.Next(-1023 - 70, -1020))));     // double denormal range
            case 13: return (normal, (ushort)(sign | (16383 + rng.Next(1020, 1026))));            // double overflow edge
            case 14: return (normal, (ushort)(sign | (16383 + rng.Next(-152, -124))));             // single denormal range
            case 15: return (normal, (ushort)(sign | (16383 + rng.Next(125, 130))));               // single overflow edge
            case 16: return (normal, (ushort)(sign | (16383 + rng.Next(13, 66))));                  // integer range edges
            case 17:
            {
                // an integer or integer + 1/2
                long v = rng.Next(-5000, 5000);
                ulong m = (ulong)Math.Abs(v) * 2 + (ulong)rng.Next(2);
                if (m == 0) return (0, sign);
                int lz = System.Numerics.BitOperations.LeadingZeroCount(m);
                return (m << lz, (ushort)((v < 0 ? 0x8000 : 0) | (16383 + 63 - lz - 1)));
            }
            case 18: return (rng.Next(2) == 0 ? 0x8000_0000_0000_0000 : 0x4000_0000_0000_0000, (ushort)(sign | 0x7FFF)); // inf / pseudo-NaN
            case 19: return (normal, (ushort)(sign | (16383 + rng.Next(-16382, 16383))));        // anywhere
            case 20: return (normal, (ushort)(sign | rng.Next(1, 64)));                            // near the denormal edge
            case 21: return (normal, (ushort)(sign | (0x7FFE - rng.Next(64))));                     // near overflow
            default: return (normal, (ushort)(sign | (16383 + rng.Next(-8, 8))));
        }
    }

    private static ulong RandomDoubleBits(Random rng)
    {
        ulong sign = (ulong)rng.Next(2) << 63, frac = (ulong)rng.NextInt64() & ((1UL << 52) - 1);
        return rng.Next(10) switch
        {
            0 => sign,
            1 => sign | (0x7FFUL << 52),
            2 => sign | (0x7FFUL << 52) | (1UL << 51) | frac,
            3 => sign | (0x7FFUL << 52) | (frac & ~(1UL << 51)) | 1,
            4 => sign | (frac >> rng.Next(0, 52)) | 1,
            5 => sign | ((ulong)rng.Next(1020, 1028) << 52) | frac,
            _ => sign | ((ulong)rng.Next(1, 0x7FF) << 52) | frac,
        };
    }

    private static uint RandomSingleBits(Random rng)
    {
        uint sign = (uint)rng.Next(2) << 31, frac = (uint)rng.Next() & 0x7FFFFF;
        return rng.Next(10) switch
        {
            0 => sign,
            1 => sign | 0x7F80_0000,
            2 => sign | 0x7FC0_0000 | frac,
            3 => sign | 0x7F80_0000 | (frac & 0x3FFFFF) | 1,
            4 => sign | (frac >> rng.Next(0, 23)) | 1,
            5 => sign | ((uint)rng.Next(120, 136) << 23) | frac,
            _ => sign | ((uint)rng.Next(1, 0xFF) << 23) | frac,
        };
    }

    private static ulong RandomInteger(Random rng) => rng.Next(6) switch
    {
        0 => 0,
        1 => 0x8000,
        2 => 0x8000_0000,
        3 => 0x8000_0000_0000_0000,
        4 => (ulong)rng.Next(-100, 100),
        _ => (ulong)rng.NextInt64() >> rng.Next(64),
    };

    private static void WriteBcd(Span<byte> at, Random rng)
    {
        for (int k = 0; k < 9; k++) at[k] = (byte)(rng.Next(10) | (rng.Next(10) << 4));
        at[9] = (byte)(rng.Next(2) << 7);
    }

    // ---------- one case ----------

    private sealed class Case
    {
        public Instruction Ins;
        public byte[] Code = [];
        public ulong[] Regs = new ulong[16];
        public ulong Flags;
        public byte[] Data = new byte[NativeCpu.DataSize];
        /// <summary>Byte ranges of the data page not compared (pointers the emulator does not track).</summary>
        public List<(int Start, int Length)> Ignore = [];
    }

    private static byte[] FxInstruction(byte reg, ulong addr)
    {
        // FXRSTOR64/FXSAVE64 [disp32] (absolute, SIB without base): the same address on the host and in the emulator.
        var b = new byte[] { 0x48, 0x0F, 0xAE, (byte)(0x04 | (reg << 3)), 0x25, 0, 0, 0, 0 };
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(5), (uint)addr);
        return b;
    }

    private static Case? Build(Form form, Random rng, bool mmx)
    {
        var op = form.Code.ToOpCode();
        var c = new Case();
        for (int r = 0; r < 16; r++) c.Regs[r] = rng.Next(3) == 0 ? RandomInteger(rng) : (ulong)rng.NextInt64();
        c.Regs[3] = MemBase; // RBX: base of every memory operand
        c.Flags = 2 | ((ulong)rng.Next(0x1000) & 0x8D5);
        rng.NextBytes(c.Data);
        // Memory operands: edge values of the operand's type around the base.
        var ins = new Instruction { Code = form.Code };
        int disp = rng.Next(-4, 4) * 16;
        for (int n = 0; n < op.OpCount; n++)
        {
            var k = op.GetOpKind(n);
            switch (k)
            {
                case OpCodeOperandKind.st0: ins.SetOpKind(n, OpKind.Register); ins.SetOpRegister(n, Register.ST0); break;
                case OpCodeOperandKind.sti_opcode: ins.SetOpKind(n, OpKind.Register); ins.SetOpRegister(n, Register.ST0 + rng.Next(8)); break;
                case OpCodeOperandKind.mm_reg or OpCodeOperandKind.mm_rm: ins.SetOpKind(n, OpKind.Register); ins.SetOpRegister(n, Register.MM0 + rng.Next(8)); break;
                case OpCodeOperandKind.xmm_reg or OpCodeOperandKind.xmm_rm: ins.SetOpKind(n, OpKind.Register); ins.SetOpRegister(n, Register.XMM0 + rng.Next(16)); break;
                case OpCodeOperandKind.r32_reg or OpCodeOperandKind.r32_rm: ins.SetOpKind(n, OpKind.Register); ins.SetOpRegister(n, Register.EAX + PickGpr(rng)); break;
                case OpCodeOperandKind.r64_reg or OpCodeOperandKind.r64_rm: ins.SetOpKind(n, OpKind.Register); ins.SetOpRegister(n, NativeCpu.Gprs[PickGpr(rng)]); break;
                case OpCodeOperandKind.ax: ins.SetOpKind(n, OpKind.Register); ins.SetOpRegister(n, Register.AX); break;
                case OpCodeOperandKind.imm8: ins.SetOpKind(n, OpKind.Immediate8); ins.SetImmediate(n, rng.Next(4) == 0 ? rng.Next(256) : rng.Next(70)); break;
                case OpCodeOperandKind.seg_rDI:
                    ins.SetOpKind(n, OpKind.MemorySegRDI);
                    c.Regs[7] = MemBase + (ulong)rng.Next(-64, 64);
                    break;
                case OpCodeOperandKind.mem or OpCodeOperandKind.mm_or_mem or OpCodeOperandKind.r32_or_mem or OpCodeOperandKind.r64_or_mem
                    or OpCodeOperandKind.xmm_or_mem or OpCodeOperandKind.r16_or_mem:
                    if (form.Memory)
                    {
                        ins.SetOpKind(n, OpKind.Memory);
                        ins.MemoryBase = Register.RBX;
                        ins.MemoryIndex = Register.None;
                        ins.MemoryDisplacement64 = (ulong)(long)disp;
                        ins.MemoryDisplSize = 1;
                    }
                    else if (k == OpCodeOperandKind.mm_or_mem) { ins.SetOpKind(n, OpKind.Register); ins.SetOpRegister(n, Register.MM0 + rng.Next(8)); }
                    else if (k == OpCodeOperandKind.xmm_or_mem) { ins.SetOpKind(n, OpKind.Register); ins.SetOpRegister(n, Register.XMM0 + rng.Next(16)); }
                    else if (k == OpCodeOperandKind.r64_or_mem) { ins.SetOpKind(n, OpKind.Register); ins.SetOpRegister(n, NativeCpu.Gprs[PickGpr(rng)]); }
                    else if (k == OpCodeOperandKind.r16_or_mem) { ins.SetOpKind(n, OpKind.Register); ins.SetOpRegister(n, Register.AX + PickGpr(rng)); }
                    else { ins.SetOpKind(n, OpKind.Register); ins.SetOpRegister(n, Register.EAX + PickGpr(rng)); }
                    break;
                default: return null;
            }
        }
        var w = new MemoryCodeWriter();
        if (!Iced.Intel.Encoder.Create(64, w).TryEncode(ins, NativeCpu.CodeAddr + 0x1000, out _, out _)) return null;
        byte[] insBytes = [.. w.Bytes];
        var dec = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(insBytes), 0x100000);
        dec.Decode(out c.Ins);
        if (c.Ins.IsInvalid || c.Ins.Length != insBytes.Length) return null;

        int at = 0x800 + disp;
        if (c.Ins.Op0Kind == OpKind.Memory || (c.Ins.OpCount > 1 && c.Ins.Op1Kind == OpKind.Memory) || c.Ins.OpCount > 2 && c.Ins.Op2Kind == OpKind.Memory)
        {
            var span = c.Data.AsSpan(at);
            switch (c.Ins.MemorySize)
            {
                case MemorySize.Float32: BinaryPrimitives.WriteUInt32LittleEndian(span, RandomSingleBits(rng)); break;
                case MemorySize.Float64: BinaryPrimitives.WriteUInt64LittleEndian(span, RandomDoubleBits(rng)); break;
                case MemorySize.Float80:
                {
                    var (sig, se) = RandomFloat80(rng);
                    BinaryPrimitives.WriteUInt64LittleEndian(span, sig);
                    BinaryPrimitives.WriteUInt16LittleEndian(span[8..], se);
                    break;
                }
                case MemorySize.Int16 or MemorySize.Int32 or MemorySize.Int64: BinaryPrimitives.WriteUInt64LittleEndian(span, RandomInteger(rng)); break;
                case MemorySize.Bcd: WriteBcd(span, rng); break;
            }
            if (c.Ins.Mnemonic == Mnemonic.Fnstenv) c.Ignore.Add((at + 12, 16));
            if (c.Ins.Mnemonic == Mnemonic.Fnsave) c.Ignore.Add((at + 12, 16));
        }
        WriteFxImage(c.Data.AsSpan(0x1800, 512), rng, mmx);
        // The output image: FOP/FIP/FDP, MXCSR and MXCSR_MASK are not compared.
        c.Ignore.Add((0x1A00 + 6, 18));
        c.Ignore.Add((0x1A00 + 24, 8)); // MXCSR too: the emulator does not raise SSE exception flags (see Sse.cs)
        c.Code = [.. FxInstruction(1, FxIn), .. insBytes, .. FxInstruction(0, FxOut), 0xDB, 0xE3]; // ...; FNINIT
        return c;
    }

    private static int PickGpr(Random rng)
    {
        while (true)
        {
            int r = rng.Next(16);
            if (r is not (3 or 4 or 7)) return r;
        }
    }

    private static void WriteFxImage(Span<byte> fx, Random rng, bool mmx)
    {
        fx.Clear();
        int[] pcs = [0, 2, 3, 3];
        ushort fcw = (ushort)(0x7F | (pcs[rng.Next(4)] << 8) | (rng.Next(4) << 10));
        int top = rng.Next(8);
        int depth = rng.Next(10) switch { 0 => 0, 1 => 8, 2 => 7, _ => rng.Next(1, 7) };
        ushort fsw = (ushort)((top << 11) | (rng.Next(16) switch { var b => ((b & 1) << 8) | ((b & 2) << 8) | ((b & 4) << 8) | ((b & 8) << 11) }));
        if (rng.Next(4) == 0) fsw |= (ushort)(rng.Next(0x40) & 0x3F);
        byte tags = 0;
        for (int k = 0; k < depth; k++) tags |= (byte)(1 << ((top + k) & 7));
        if (mmx && rng.Next(2) == 0) tags = (byte)rng.Next(256);
        BinaryPrimitives.WriteUInt16LittleEndian(fx, fcw);
        BinaryPrimitives.WriteUInt16LittleEndian(fx[2..], fsw);
        fx[4] = tags;
        BinaryPrimitives.WriteUInt32LittleEndian(fx[24..], 0x1F80);
        for (int k = 0; k < 8; k++)
        {
            var (sig, se) = mmx && rng.Next(2) == 0 ? ((ulong)rng.NextInt64() ^ ((ulong)rng.Next() << 40), (ushort)rng.Next(0x10000)) : RandomFloat80(rng);
            BinaryPrimitives.WriteUInt64LittleEndian(fx[(32 + 16 * k)..], sig);
            BinaryPrimitives.WriteUInt16LittleEndian(fx[(40 + 16 * k)..], se);
        }
        for (int k = 0; k < 32; k++)
            BinaryPrimitives.WriteUInt64LittleEndian(fx[(160 + 8 * k)..], (ulong)rng.NextInt64() ^ ((ulong)rng.Next() << 33));
    }

    // ---------- running ----------

    private sealed class Outcome
    {
        public ulong[] Regs = new ulong[16];
        public ulong Flags;
        public byte[] Data = [];
        public string? Error;
    }

    private static Outcome RunEmulator(TestGuest g, Case c)
    {
        g.EnterLongMode();
        g.Memory.Write(new GuestAddress(NativeCpu.DataAddr), c.Data);
        var code = c.Code.Append((byte)0xF4).ToArray();
        g.Memory.Write(new GuestAddress(TestGuest.CodeAddr), code);
        g.Cpu.SetRegisters(new Registers
        {
            Rax = c.Regs[0], Rcx = c.Regs[1], Rdx = c.Regs[2], Rbx = c.Regs[3], Rsp = TestGuest.StackTop, Rbp = c.Regs[5],
            Rsi = c.Regs[6], Rdi = c.Regs[7], R8 = c.Regs[8], R9 = c.Regs[9], R10 = c.Regs[10], R11 = c.Regs[11],
            R12 = c.Regs[12], R13 = c.Regs[13], R14 = c.Regs[14], R15 = c.Regs[15], Rip = TestGuest.CodeAddr, Rflags = c.Flags,
        });
        var exit = g.Run();
        var er = g.Cpu.GetRegisters();
        var o = new Outcome
        {
            Regs = [er.Rax, er.Rcx, er.Rdx, er.Rbx, er.Rsp, er.Rbp, er.Rsi, er.Rdi, er.R8, er.R9, er.R10, er.R11, er.R12, er.R13, er.R14, er.R15],
            Flags = er.Rflags,
            Data = g.Memory.GetSpan(new GuestAddress(NativeCpu.DataAddr), NativeCpu.DataSize).ToArray(),
        };
        if (exit.Reason != VcpuExitReason.Halt || er.Rip != TestGuest.CodeAddr + (ulong)code.Length)
            o.Error = $"emulator exit {exit.Reason} {exit.Detail} rip={er.Rip:x} vector={g.Vector}";
        return o;
    }

    private static Outcome RunNative(Case c)
    {
        c.Data.CopyTo(NativeCpu.Data);
        var o = new Outcome();
        NativeCpu.Run(c.Code, c.Regs, c.Flags, new ulong[32], o.Regs, out o.Flags, new ulong[32]);
        o.Data = NativeCpu.Data.ToArray();
        return o;
    }

    private static string Describe(Case c, Outcome emu, Outcome host)
    {
        var diffs = new List<string>();
        if (emu.Error is not null) return emu.Error;
        for (int k = 0; k < 16; k++)
            if (k != 4 && emu.Regs[k] != host.Regs[k]) diffs.Add($"{NativeCpu.Gprs[k]} emu={emu.Regs[k]:x} host={host.Regs[k]:x}");
        if ((emu.Flags & 0x8D5) != (host.Flags & 0x8D5)) diffs.Add($"flags emu={emu.Flags & 0x8D5:x} host={host.Flags & 0x8D5:x}");
        var ignored = new bool[NativeCpu.DataSize];
        foreach (var (s, l) in c.Ignore) for (int k = s; k < s + l; k++) ignored[k] = true;
        for (int k = 0; k < NativeCpu.DataSize; k++)
        {
            if (ignored[k] || emu.Data[k] == host.Data[k]) continue;
            diffs.Add(k >= 0x1A00 && k < 0x1C00 ? DescribeFx(emu.Data, host.Data, c.Data) : $"memory +0x{k:x}: emu={emu.Data[k]:x2} host={host.Data[k]:x2}");
            break;
        }
        return string.Join("; ", diffs);
    }

    private static string DescribeFx(byte[] emu, byte[] host, byte[] input)
    {
        static string Image(byte[] d, int o)
        {
            var sb = new StringBuilder();
            sb.Append($"fcw={BinaryPrimitives.ReadUInt16LittleEndian(d.AsSpan(o)):x4} fsw={BinaryPrimitives.ReadUInt16LittleEndian(d.AsSpan(o + 2)):x4} tag={d[o + 4]:x2}");
            for (int k = 0; k < 8; k++)
                sb.Append($" st{k}={BinaryPrimitives.ReadUInt16LittleEndian(d.AsSpan(o + 40 + 16 * k)):X4}:{BinaryPrimitives.ReadUInt64LittleEndian(d.AsSpan(o + 32 + 16 * k)):X16}");
            return sb.ToString();
        }
        return $"\n    in   {Image(input, 0x1800)}\n    emu  {Image(emu, 0x1A00)}\n    host {Image(host, 0x1A00)}";
    }

    private int RunForms(List<Form> forms, int perForm, int seed, bool mmx, string label)
    {
        if (!NativeCpu.TryInit(out string? err)) Assert.Fail($"the native test harness is unavailable: {err}");
        using var g = new TestGuest();
        var rng = new Random(seed);
        int cases = 0, mismatches = 0;
        var covered = new HashSet<Code>();
        var failed = new HashSet<Code>();
        var report = new StringBuilder();
        foreach (var form in forms)
        {
            int ok = 0, formMismatches = 0;
            for (int t = 0; t < perForm; t++)
            {
                var c = Build(form, rng, mmx);
                if (c is null) continue;
                var emu = RunEmulator(g, c);
                var host = RunNative(c);
                cases++;
                string d = Describe(c, emu, host);
                if (d.Length == 0) { ok++; continue; }
                mismatches++;
                failed.Add(form.Code);
                if (++formMismatches <= 2 && report.Length < 60000) report.AppendLine($"{c.Ins} [{form.Code}] bytes {Convert.ToHexString(c.Code)}: {d}");
            }
            if (ok > 0 && !failed.Contains(form.Code)) covered.Add(form.Code);
        }
        output.WriteLine("mismatching forms: " + string.Join(' ', failed));
        var never = forms.Select(f => f.Code).Distinct().Where(code => !covered.Contains(code) && !failed.Contains(code)).ToList();
        output.WriteLine($"{label}: {forms.Count} generated forms, {covered.Count} distinct instruction forms fully matching the host, {cases} comparisons, {mismatches} mismatches in {failed.Count} forms; never built: {string.Join(' ', never)}");
        Console.WriteLine($"[SharpVM.Cpu {label}] forms covered: {covered.Count}; cases: {cases}; mismatches: {mismatches}");
        if (mismatches > 0) output.WriteLine(report.ToString());
        Assert.True(mismatches == 0, $"{mismatches} mismatches in {failed.Count} forms:\n{report}");
        Assert.NotEmpty(covered);
        return covered.Count;
    }

    /// <summary>
    /// Random sequences of 2-6 x87 and MMX instructions (so TOP wraps, pushes meet pops, condition codes
    /// and flags left by one instruction meet the next, and code moves between x87 and MMX and back
    /// through EMMS), from the same random FXRSTOR image on both sides.
    /// </summary>
    [Fact]
    public void X87AndMmxSequencesMatchTheHostCpu()
    {
        if (!NativeCpu.TryInit(out string? err)) Assert.Fail($"the native test harness is unavailable: {err}");
        var (scale, seedOffset) = Soak();
        // Not here: the loads of control words (a random one could unmask an exception, and the next waiting
        // instruction would raise SIGFPE in the test process), the environment stores (pointer fields at
        // varying places) and MASKMOVQ (its RDI belongs to the first instruction's registers).
        var x87 = EnumerateForms(X87Mnemonics, false).Where(f => f.Code.ToOpCode().Mnemonic is not (Mnemonic.Fnsave or Mnemonic.Fnstenv
            or Mnemonic.Frstor or Mnemonic.Fldenv or Mnemonic.Fldcw)).ToList();
        var mmx = EnumerateForms(MmxMnemonics, true).Where(f => f.Code.ToOpCode().Mnemonic != Mnemonic.Maskmovq).ToList();
        using var g = new TestGuest();
        var rng = new Random(1987 + seedOffset);
        int cases = 0, mismatches = 0;
        var report = new StringBuilder();
        for (int t = 0; t < 1500 * scale && mismatches < 20; t++)
        {
            int n = rng.Next(2, 7);
            bool withMmx = rng.Next(4) == 0;
            var parts = new List<Case>();
            while (parts.Count < n)
            {
                var pool = withMmx && rng.Next(3) == 0 ? mmx : x87;
                var c = Build(pool[rng.Next(pool.Count)], rng, false);
                if (c is not null) parts.Add(c);
            }
            var first = parts[0];
            var seq = new Case { Regs = first.Regs, Flags = first.Flags, Data = first.Data, Ignore = [.. first.Ignore] };
            var body = new List<byte>();
            foreach (var p in parts)
            {
                // Each part's instruction bytes sit between its FXRSTOR (9 bytes) and FXSAVE/FNINIT (11 bytes).
                body.AddRange(p.Code[9..^11]);
                if (p != first) Array.Copy(p.Data, 0x7C0, seq.Data, 0x7C0, 0x90); // its memory operand's edge value
            }
            seq.Code = [.. FxInstruction(1, FxIn), .. body, .. FxInstruction(0, FxOut), 0xDB, 0xE3];
            var emu = RunEmulator(g, seq);
            var host = RunNative(seq);
            cases++;
            string d = Describe(seq, emu, host);
            if (d.Length == 0) continue;
            mismatches++;
            report.AppendLine($"{string.Join(" ; ", parts.Select(p => p.Ins.ToString()))} bytes {Convert.ToHexString(seq.Code)}: {d}");
        }
        output.WriteLine($"x87/MMX sequences: {cases} compared with the host, {mismatches} mismatches");
        Console.WriteLine($"[SharpVM.Cpu x87/MMX sequences] cases: {cases}; mismatches: {mismatches}");
        Assert.True(mismatches == 0, report.ToString());
    }

    /// <summary>
    /// SHARPVM_X87_SOAK=n multiplies the cases per form and picks a fresh seed (printed), for a longer
    /// search than the suite's fixed run.
    /// </summary>
    private static (int Scale, int SeedOffset) Soak()
    {
        int n = int.TryParse(Environment.GetEnvironmentVariable("SHARPVM_X87_SOAK"), out int v) && v > 0 ? v : 1;
        return (n, n == 1 ? 0 : Environment.TickCount);
    }

    [Fact]
    public void X87InstructionsMatchTheHostCpu()
    {
        var (scale, seed) = Soak();
        output.WriteLine($"seed offset {seed}");
        RunForms(EnumerateForms(X87Mnemonics, false), 150 * scale, 8087 + seed, false, "x87 differential");
    }

    [Fact]
    public void MmxInstructionsMatchTheHostCpu()
    {
        var (scale, seed) = Soak();
        RunForms(EnumerateForms(MmxMnemonics, true), 40 * scale, 6502 + seed, true, "MMX differential");
    }

    /// <summary>
    /// FSIN/FCOS/FSINCOS/FPTAN/FPATAN/F2XM1/FYL2X/FYL2XP1 on in-domain operands: they go through double
    /// precision, so results must agree with the host to 2^-50 relative (about 3 ulps of a double), and
    /// TOP, tags and the exception flags other than PE (and C1, the round-up bit) must match exactly.
    /// </summary>
    [Fact]
    public void X87TranscendentalsMatchTheHostWithinDoublePrecision()
    {
        if (!NativeCpu.TryInit(out string? err)) Assert.Fail($"the native test harness is unavailable: {err}");
        using var g = new TestGuest();
        var rng = new Random(2718);
        int cases = 0, mismatches = 0;
        var report = new StringBuilder();
        foreach (var mn in Transcendentals)
        {
            var code = Enum.GetValues<Code>().Single(k => k.ToOpCode().Mnemonic == mn && k.ToOpCode().Mode64);
            for (int t = 0; t < 200; t++)
            {
                var c = Build(new Form(code, false), rng, false)!;
                var fx = c.Data.AsSpan(0x1800, 512);
                BinaryPrimitives.WriteUInt16LittleEndian(fx, 0x037F);
                int top = (BinaryPrimitives.ReadUInt16LittleEndian(fx[2..]) >> 11) & 7;
                int depth = rng.Next(2, 7);
                byte tags = 0;
                for (int k = 0; k < depth; k++) tags |= (byte)(1 << ((top + k) & 7));
                fx[4] = tags;
                double x = mn switch
                {
                    Mnemonic.F2xm1 => rng.NextDouble() * 2 - 1,
                    Mnemonic.Fyl2xp1 => (rng.NextDouble() * 2 - 1) * 0.29,
                    Mnemonic.Fyl2x => Math.Exp(rng.NextDouble() * 20 - 10),
                    _ => (rng.NextDouble() * 2 - 1) * Math.Pow(10, rng.Next(-3, 3)),
                };
                double y = (rng.NextDouble() * 2 - 1) * Math.Pow(10, rng.Next(-2, 3));
                WriteSt(fx, 0, x);
                WriteSt(fx, 1, y);
                var emu = RunEmulator(g, c);
                var host = RunNative(c);
                cases++;
                string d = emu.Error ?? CompareApproximately(emu.Data, host.Data);
                if (d.Length == 0) continue;
                mismatches++;
                if (mismatches < 20) report.AppendLine($"{mn} x={x:R} y={y:R}: {d}");
            }
        }
        output.WriteLine($"x87 transcendentals: {Transcendentals.Length} instructions, {cases} comparisons, {mismatches} mismatches");
        Console.WriteLine($"[SharpVM.Cpu x87 transcendentals] cases: {cases}; mismatches: {mismatches}");
        Assert.True(mismatches == 0, report.ToString());
    }

    private static void WriteSt(Span<byte> fx, int st, double v)
    {
        // Exact: a double widened to the register format.
        ulong bits = BitConverter.DoubleToUInt64Bits(v);
        int e = (int)(bits >> 52) & 0x7FF;
        ulong sig = (1UL << 63) | ((bits & ((1UL << 52) - 1)) << 11);
        ushort se = (ushort)((e - 1023 + 16383) | (v < 0 ? 0x8000 : 0));
        BinaryPrimitives.WriteUInt64LittleEndian(fx[(32 + 16 * st)..], sig);
        BinaryPrimitives.WriteUInt16LittleEndian(fx[(40 + 16 * st)..], se);
    }

    private static double ReadSt(ReadOnlySpan<byte> fx, int st)
    {
        ulong sig = BinaryPrimitives.ReadUInt64LittleEndian(fx[(32 + 16 * st)..]);
        ushort se = BinaryPrimitives.ReadUInt16LittleEndian(fx[(40 + 16 * st)..]);
        if ((se & 0x7FFF) == 0 && sig == 0) return (se & 0x8000) != 0 ? -0.0 : 0.0;
        double m = sig / Math.Pow(2, 63);
        double v = Math.ScaleB(m, (se & 0x7FFF) - 16383);
        return (se & 0x8000) != 0 ? -v : v;
    }

    private static string CompareApproximately(byte[] emu, byte[] host)
    {
        var e = emu.AsSpan(0x1A00, 512);
        var h = host.AsSpan(0x1A00, 512);
        ushort ew = BinaryPrimitives.ReadUInt16LittleEndian(e[2..]), hw = BinaryPrimitives.ReadUInt16LittleEndian(h[2..]);
        const ushort exact = 0xFFFF & ~0x0220; // all but PE and C1
        if ((ew & exact) != (hw & exact) || e[4] != h[4]) return $"fsw emu={ew:x4} host={hw:x4} tags emu={e[4]:x2} host={h[4]:x2}";
        int top = (hw >> 11) & 7;
        for (int st = 0; st < 8; st++)
        {
            if ((h[4] & (1 << ((top + st) & 7))) == 0) continue;
            double a = ReadSt(e, st), b = ReadSt(h, st);
            if (a == b) continue;
            if (Math.Sign(a) != Math.Sign(b) || Math.Abs(a - b) > Math.Abs(b) * Math.Pow(2, -50))
                return $"st{st} emu={a:R} host={b:R}";
        }
        return "";
    }
}
