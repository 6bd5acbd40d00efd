using System.Text;
using Iced.Intel;
using SharpVM.Hypervisor;
using SharpVM.Memory;
using Xunit.Abstractions;

namespace SharpVM.Cpu.Tests;

/// <summary>
/// Differential tests: every generated instruction runs on the host CPU (user mode) and in SharpVM.Cpu
/// (64-bit kernel mode) from the same registers, flags, XMM registers and memory; GPRs, defined flags,
/// XMM registers and memory must match, and #DE must be raised exactly where the host would. Each test runs
/// twice: interpreted, and with every block translated to host code first (<see cref="BlockTranslator"/>).
/// </summary>
[Collection(NativeCpuCollection.Name)]
public sealed class DifferentialTests(ITestOutputHelper output)
{
    private static readonly Mnemonic[] IntegerMnemonics =
    [
        Mnemonic.Add, Mnemonic.Or, Mnemonic.Adc, Mnemonic.Sbb, Mnemonic.And, Mnemonic.Sub, Mnemonic.Xor, Mnemonic.Cmp, Mnemonic.Test,
        Mnemonic.Inc, Mnemonic.Dec, Mnemonic.Neg, Mnemonic.Not, Mnemonic.Mul, Mnemonic.Imul, Mnemonic.Div, Mnemonic.Idiv,
        Mnemonic.Rol, Mnemonic.Ror, Mnemonic.Rcl, Mnemonic.Rcr, Mnemonic.Shl, Mnemonic.Sal, Mnemonic.Shr, Mnemonic.Sar,
        Mnemonic.Shld, Mnemonic.Shrd, Mnemonic.Bt, Mnemonic.Bts, Mnemonic.Btr, Mnemonic.Btc, Mnemonic.Bsf, Mnemonic.Bsr,
        Mnemonic.Tzcnt, Mnemonic.Lzcnt, Mnemonic.Popcnt, Mnemonic.Mov, Mnemonic.Movsx, Mnemonic.Movsxd, Mnemonic.Movzx,
        Mnemonic.Xchg, Mnemonic.Xadd, Mnemonic.Cmpxchg, Mnemonic.Cmpxchg8b, Mnemonic.Cmpxchg16b, Mnemonic.Bswap,
        Mnemonic.Cbw, Mnemonic.Cwde, Mnemonic.Cdqe, Mnemonic.Cwd, Mnemonic.Cdq, Mnemonic.Cqo, Mnemonic.Lea,
        Mnemonic.Seto, Mnemonic.Setno, Mnemonic.Setb, Mnemonic.Setae, Mnemonic.Sete, Mnemonic.Setne, Mnemonic.Setbe, Mnemonic.Seta,
        Mnemonic.Sets, Mnemonic.Setns, Mnemonic.Setp, Mnemonic.Setnp, Mnemonic.Setl, Mnemonic.Setge, Mnemonic.Setle, Mnemonic.Setg,
        Mnemonic.Cmovo, Mnemonic.Cmovno, Mnemonic.Cmovb, Mnemonic.Cmovae, Mnemonic.Cmove, Mnemonic.Cmovne, Mnemonic.Cmovbe, Mnemonic.Cmova,
        Mnemonic.Cmovs, Mnemonic.Cmovns, Mnemonic.Cmovp, Mnemonic.Cmovnp, Mnemonic.Cmovl, Mnemonic.Cmovge, Mnemonic.Cmovle, Mnemonic.Cmovg,
        Mnemonic.Lahf, Mnemonic.Sahf, Mnemonic.Clc, Mnemonic.Stc, Mnemonic.Cmc, Mnemonic.Nop, Mnemonic.Movbe, Mnemonic.Xlatb,
        Mnemonic.Movsb, Mnemonic.Movsw, Mnemonic.Movsd, Mnemonic.Movsq, Mnemonic.Stosb, Mnemonic.Stosw, Mnemonic.Stosd, Mnemonic.Stosq,
        Mnemonic.Lodsb, Mnemonic.Lodsw, Mnemonic.Lodsd, Mnemonic.Lodsq, Mnemonic.Cmpsb, Mnemonic.Cmpsw, Mnemonic.Cmpsd, Mnemonic.Cmpsq,
        Mnemonic.Scasb, Mnemonic.Scasw, Mnemonic.Scasd, Mnemonic.Scasq,
    ];

    private static readonly Mnemonic[] SseMnemonics =
    [
        Mnemonic.Movaps, Mnemonic.Movups, Mnemonic.Movapd, Mnemonic.Movupd, Mnemonic.Movdqa, Mnemonic.Movdqu, Mnemonic.Movntdq,
        Mnemonic.Movntps, Mnemonic.Movntpd, Mnemonic.Movd, Mnemonic.Movq, Mnemonic.Movss, Mnemonic.Movsd, Mnemonic.Movlps, Mnemonic.Movhps,
        Mnemonic.Movlpd, Mnemonic.Movhpd, Mnemonic.Movhlps, Mnemonic.Movlhps, Mnemonic.Movmskps, Mnemonic.Movmskpd, Mnemonic.Pmovmskb,
        Mnemonic.Pxor, Mnemonic.Por, Mnemonic.Pand, Mnemonic.Pandn, Mnemonic.Xorps, Mnemonic.Xorpd, Mnemonic.Andps, Mnemonic.Andpd,
        Mnemonic.Andnps, Mnemonic.Andnpd, Mnemonic.Orps, Mnemonic.Orpd, Mnemonic.Paddb, Mnemonic.Paddw, Mnemonic.Paddd, Mnemonic.Paddq,
        Mnemonic.Psubb, Mnemonic.Psubw, Mnemonic.Psubd, Mnemonic.Psubq, Mnemonic.Pcmpeqb, Mnemonic.Pcmpeqw, Mnemonic.Pcmpeqd,
        Mnemonic.Pcmpgtb, Mnemonic.Pcmpgtw, Mnemonic.Pcmpgtd, Mnemonic.Pminub, Mnemonic.Pmaxub, Mnemonic.Pminsw, Mnemonic.Pmaxsw,
        Mnemonic.Psubusb, Mnemonic.Psubusw, Mnemonic.Paddusb, Mnemonic.Paddusw, Mnemonic.Psubsb, Mnemonic.Psubsw, Mnemonic.Paddsb,
        Mnemonic.Paddsw, Mnemonic.Pmullw, Mnemonic.Pmulhw, Mnemonic.Pmulhuw, Mnemonic.Pmuludq, Mnemonic.Pmaddwd, Mnemonic.Pavgb,
        Mnemonic.Pavgw, Mnemonic.Psadbw, Mnemonic.Psllw, Mnemonic.Pslld, Mnemonic.Psllq, Mnemonic.Psrlw, Mnemonic.Psrld, Mnemonic.Psrlq,
        Mnemonic.Psraw, Mnemonic.Psrad, Mnemonic.Pslldq, Mnemonic.Psrldq, Mnemonic.Punpcklbw, Mnemonic.Punpcklwd, Mnemonic.Punpckldq,
        Mnemonic.Punpcklqdq, Mnemonic.Punpckhbw, Mnemonic.Punpckhwd, Mnemonic.Punpckhdq, Mnemonic.Punpckhqdq, Mnemonic.Unpcklps,
        Mnemonic.Unpckhps, Mnemonic.Unpcklpd, Mnemonic.Unpckhpd, Mnemonic.Packuswb, Mnemonic.Packsswb, Mnemonic.Packssdw,
        Mnemonic.Pshufd, Mnemonic.Pshuflw, Mnemonic.Pshufhw, Mnemonic.Shufps, Mnemonic.Shufpd, Mnemonic.Pextrw, Mnemonic.Pinsrw,
        Mnemonic.Addsd, Mnemonic.Subsd, Mnemonic.Mulsd, Mnemonic.Divsd, Mnemonic.Minsd, Mnemonic.Maxsd, Mnemonic.Sqrtsd,
        Mnemonic.Addss, Mnemonic.Subss, Mnemonic.Mulss, Mnemonic.Divss, Mnemonic.Minss, Mnemonic.Maxss, Mnemonic.Sqrtss,
        Mnemonic.Addpd, Mnemonic.Subpd, Mnemonic.Mulpd, Mnemonic.Divpd, Mnemonic.Minpd, Mnemonic.Maxpd, Mnemonic.Sqrtpd,
        Mnemonic.Addps, Mnemonic.Subps, Mnemonic.Mulps, Mnemonic.Divps, Mnemonic.Minps, Mnemonic.Maxps, Mnemonic.Sqrtps,
        Mnemonic.Ucomisd, Mnemonic.Comisd, Mnemonic.Ucomiss, Mnemonic.Comiss, Mnemonic.Cvtsi2sd, Mnemonic.Cvtsi2ss, Mnemonic.Cvttsd2si,
        Mnemonic.Cvtsd2si, Mnemonic.Cvttss2si, Mnemonic.Cvtss2si, Mnemonic.Cvtsd2ss, Mnemonic.Cvtss2sd, Mnemonic.Cvtdq2pd,
        Mnemonic.Cvtdq2ps, Mnemonic.Cvttps2dq, Mnemonic.Cvtps2dq, Mnemonic.Cvtps2pd, Mnemonic.Cvtpd2ps, Mnemonic.Cvttpd2dq,
        Mnemonic.Cvtpd2dq, Mnemonic.Cmpps, Mnemonic.Cmppd, Mnemonic.Cmpss, Mnemonic.Cmpsd,
    ];

    private static readonly ulong[] Edge =
    [
        0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x100000000,
        0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFE, 31, 32, 33, 63, 64, 65, 7, 8, 9, 15, 16, 17,
        0x123456789ABCDEF0, 0x00000000FFFFFFFF, 0xFFFFFFFF00000000, 0x8000000080000000, 0x0F0F0F0F0F0F0F0F,
    ];

    private static readonly double[] FpEdge = [0.0, -0.0, 1.0, -1.5, 3.25, 1e300, -1e-300, double.NaN, double.PositiveInfinity, double.NegativeInfinity, 2147483648.0, -9.3e18, 0.5, 2.5];

    private static readonly Register[] BaseRegs = [Register.RBX, Register.RBP, Register.RSI, Register.RDI, Register.R12, Register.R13, Register.R14, Register.R15];

    private sealed record Form(Code Code, bool Memory, bool Lock, int Rep);

    private static bool OperandSupported(OpCodeOperandKind k) => k switch
    {
        OpCodeOperandKind.r8_or_mem or OpCodeOperandKind.r16_or_mem or OpCodeOperandKind.r32_or_mem or OpCodeOperandKind.r64_or_mem
            or OpCodeOperandKind.xmm_or_mem or OpCodeOperandKind.mem
            or OpCodeOperandKind.r8_reg or OpCodeOperandKind.r8_opcode or OpCodeOperandKind.r16_reg or OpCodeOperandKind.r16_opcode
            or OpCodeOperandKind.r16_rm or OpCodeOperandKind.r32_reg or OpCodeOperandKind.r32_opcode or OpCodeOperandKind.r32_rm
            or OpCodeOperandKind.r64_reg or OpCodeOperandKind.r64_opcode or OpCodeOperandKind.r64_rm
            or OpCodeOperandKind.xmm_reg or OpCodeOperandKind.xmm_rm
            or OpCodeOperandKind.al or OpCodeOperandKind.cl or OpCodeOperandKind.ax or OpCodeOperandKind.eax or OpCodeOperandKind.rax
            or OpCodeOperandKind.imm8 or OpCodeOperandKind.imm8_const_1 or OpCodeOperandKind.imm8sex16 or OpCodeOperandKind.imm8sex32
            or OpCodeOperandKind.imm8sex64 or OpCodeOperandKind.imm16 or OpCodeOperandKind.imm32 or OpCodeOperandKind.imm32sex64
            or OpCodeOperandKind.imm64 or OpCodeOperandKind.seg_rSI or OpCodeOperandKind.es_rDI or OpCodeOperandKind.seg_rBX_al => true,
        _ => false,
    };

    private static readonly Register[] BaseRegs32 = [Register.EBX, Register.EBP, Register.ESI, Register.EDI];

    private static bool Is64Only(OpCodeOperandKind k) => k is OpCodeOperandKind.r64_or_mem or OpCodeOperandKind.r64_reg
        or OpCodeOperandKind.r64_opcode or OpCodeOperandKind.r64_rm or OpCodeOperandKind.rax or OpCodeOperandKind.imm64
        or OpCodeOperandKind.imm8sex64 or OpCodeOperandKind.imm32sex64;

    private static List<Form> EnumerateForms(int bits = 64)
    {
        var wanted = new HashSet<Mnemonic>(IntegerMnemonics.Concat(SseMnemonics));
        var forms = new List<Form>();
        foreach (var code in Enum.GetValues<Code>())
        {
            if (code == Code.INVALID) continue;
            var op = code.ToOpCode();
            if (!op.IsInstruction || op.Encoding != EncodingKind.Legacy || (bits == 64 ? !op.Mode64 : !op.Mode32)) continue;
            if (bits == 32 && (op.OperandSize == 64 || Enumerable.Range(0, op.OpCount).Any(n => Is64Only(op.GetOpKind(n))))) continue;
            if (!wanted.Contains(op.Mnemonic)) continue;
            if (code is Code.Bswap_r16) continue; // undefined result
            if (code.ToString().StartsWith("Cmpxchg486", StringComparison.Ordinal)) continue; // 486-only encodings (XSTORE etc. today)
            bool ok = true, hasRm = false, hasMemOnly = false, isString = false;
            for (int n = 0; n < op.OpCount; n++)
            {
                var k = op.GetOpKind(n);
                if (!OperandSupported(k)) { ok = false; break; }
                if (k is OpCodeOperandKind.r8_or_mem or OpCodeOperandKind.r16_or_mem or OpCodeOperandKind.r32_or_mem or OpCodeOperandKind.r64_or_mem or OpCodeOperandKind.xmm_or_mem) hasRm = true;
                if (k == OpCodeOperandKind.mem) hasMemOnly = true;
                if (k is OpCodeOperandKind.seg_rSI or OpCodeOperandKind.es_rDI) isString = true;
            }
            if (!ok) continue;
            if (isString)
            {
                if (op.AddressSize != 0 && op.AddressSize != bits) continue;
                forms.Add(new Form(code, false, false, 0));
                if (op.CanUseRepPrefix) forms.Add(new Form(code, false, false, 1));
                if (op.CanUseRepnePrefix) forms.Add(new Form(code, false, false, 2));
                continue;
            }
            if (hasMemOnly) { forms.Add(new Form(code, true, false, 0)); if (op.CanUseLockPrefix) forms.Add(new Form(code, true, true, 0)); continue; }
            if (hasRm)
            {
                forms.Add(new Form(code, false, false, 0));
                forms.Add(new Form(code, true, false, 0));
                if (op.CanUseLockPrefix) forms.Add(new Form(code, true, true, 0));
            }
            else forms.Add(new Form(code, false, false, 0));
        }
        return forms;
    }

    private static Register Gpr(int size, int idx) => size switch
    {
        8 => NativeCpu.Gprs[idx],
        4 => Register.EAX + idx,
        2 => Register.AX + idx,
        _ => idx < 4 ? Register.AL + idx : Register.SPL + (idx - 4) + 0,
    };

    private static ulong RflagsToX86(RflagsBits b)
    {
        ulong f = 0;
        if ((b & RflagsBits.CF) != 0) f |= 1;
        if ((b & RflagsBits.PF) != 0) f |= 4;
        if ((b & RflagsBits.AF) != 0) f |= 0x10;
        if ((b & RflagsBits.ZF) != 0) f |= 0x40;
        if ((b & RflagsBits.SF) != 0) f |= 0x80;
        if ((b & RflagsBits.OF) != 0) f |= 0x800;
        if ((b & RflagsBits.DF) != 0) f |= 0x400;
        return f;
    }

    private sealed class Case
    {
        public Instruction Ins;
        public byte[] Bytes = [];
        public ulong[] Regs = new ulong[16];
        public ulong Flags;
        public ulong[] Xmm = new ulong[32];
        public byte[] Data = new byte[NativeCpu.DataSize];
        public Register Base = Register.None;
    }

    private static ulong RandEdge(Random rng) => rng.Next(4) == 0 ? (ulong)rng.NextInt64() ^ ((ulong)rng.Next() << 40) : Edge[rng.Next(Edge.Length)];

    private static ulong RandFp(Random rng, bool single)
    {
        if (rng.Next(3) == 0) return RandEdge(rng);
        double d = FpEdge[rng.Next(FpEdge.Length)];
        if (single)
        {
            float f1 = (float)d, f2 = (float)FpEdge[rng.Next(FpEdge.Length)];
            return BitConverter.SingleToUInt32Bits(f1) | ((ulong)BitConverter.SingleToUInt32Bits(f2) << 32);
        }
        return BitConverter.DoubleToUInt64Bits(d);
    }

    private static Case? Build(Form form, Random rng, int bits = 64)
    {
        var op = form.Code.ToOpCode();
        var c = new Case();
        for (int r = 0; r < 16; r++) c.Regs[r] = RandEdge(rng);
        bool single = op.Mnemonic.ToString().EndsWith("ss", StringComparison.Ordinal) || op.Mnemonic.ToString().EndsWith("ps", StringComparison.Ordinal);
        for (int k = 0; k < 32; k++) c.Xmm[k] = RandFp(rng, single);
        rng.NextBytes(c.Data);
        // Sprinkle edge values into the data around the memory operand.
        for (int k = 0; k < 40; k++)
        {
            int at = 0x7C0 + rng.Next(0x80) & ~7;
            BitConverter.TryWriteBytes(c.Data.AsSpan(at), rng.Next(2) == 0 ? RandEdge(rng) : RandFp(rng, single));
        }
        c.Flags = 2 | ((ulong)rng.Next(0x1000) & 0x8D5);
        var ins = new Instruction { Code = form.Code };
        bool isString = false;
        var used = new HashSet<int> { 4 };
        Register baseReg = Register.None;
        bool sse = SseMnemonics.Contains(op.Mnemonic) && op.Mnemonic is not (Mnemonic.Movsd or Mnemonic.Cmpsd) || form.Code.ToString().Contains("xmm", StringComparison.Ordinal);
        bool needAlign = sse || op.Mnemonic == Mnemonic.Cmpxchg16b;
        // Locked accesses that cross a cache line are split locks: the host kernel throttles them (ms each).
        bool lockAlign = form.Lock || op.Mnemonic == Mnemonic.Xchg;
        var baseRegs = bits == 64 ? BaseRegs : BaseRegs32;
        if (form.Memory)
        {
            baseReg = baseRegs[rng.Next(baseRegs.Length)];
            used.Add(RegTable.Index[(int)baseReg]);
        }
        int PickReg()
        {
            while (true)
            {
                int r = rng.Next(bits == 64 ? 16 : 8);
                if (!used.Contains(r)) return r;
            }
        }
        for (int n = 0; n < op.OpCount; n++)
        {
            var k = op.GetOpKind(n);
            switch (k)
            {
                case OpCodeOperandKind.r8_or_mem or OpCodeOperandKind.r16_or_mem or OpCodeOperandKind.r32_or_mem or OpCodeOperandKind.r64_or_mem or OpCodeOperandKind.xmm_or_mem or OpCodeOperandKind.mem:
                    if (form.Memory || k == OpCodeOperandKind.mem)
                    {
                        if (baseReg == Register.None)
                        {
                            baseReg = baseRegs[rng.Next(baseRegs.Length)];
                            used.Add(RegTable.Index[(int)baseReg]);
                        }
                        ins.SetOpKind(n, OpKind.Memory);
                        ins.MemoryBase = baseReg;
                        ins.MemoryIndex = Register.None;
                        int disp = needAlign ? rng.Next(-4, 4) * 16 : lockAlign ? rng.Next(-8, 8) * 8 : rng.Next(-64, 64);
                        ins.MemoryDisplacement64 = (ulong)(long)disp;
                        ins.MemoryDisplSize = 1;
                        c.Regs[RegTable.Index[(int)baseReg]] = NativeCpu.DataAddr + 0x800;
                        c.Base = baseReg;
                    }
                    else if (k == OpCodeOperandKind.xmm_or_mem) { ins.SetOpKind(n, OpKind.Register); ins.SetOpRegister(n, Register.XMM0 + rng.Next(bits == 64 ? 16 : 8)); }
                    else
                    {
                        int size = k switch { OpCodeOperandKind.r8_or_mem => 1, OpCodeOperandKind.r16_or_mem => 2, OpCodeOperandKind.r32_or_mem => 4, _ => 8 };
                        int r = PickReg();
                        if (bits == 32 && size == 1 && r >= 4) return null;
                        used.Add(r);
                        ins.SetOpKind(n, OpKind.Register);
                        ins.SetOpRegister(n, size == 1 && r < 4 && rng.Next(3) == 0 ? Register.AH + r : Gpr(size, r));
                    }
                    break;
                case OpCodeOperandKind.r8_reg or OpCodeOperandKind.r8_opcode or OpCodeOperandKind.r16_reg or OpCodeOperandKind.r16_opcode or OpCodeOperandKind.r16_rm
                    or OpCodeOperandKind.r32_reg or OpCodeOperandKind.r32_opcode or OpCodeOperandKind.r32_rm or OpCodeOperandKind.r64_reg
                    or OpCodeOperandKind.r64_opcode or OpCodeOperandKind.r64_rm:
                {
                    int size = k switch
                    {
                        OpCodeOperandKind.r8_reg or OpCodeOperandKind.r8_opcode => 1,
                        OpCodeOperandKind.r16_reg or OpCodeOperandKind.r16_opcode or OpCodeOperandKind.r16_rm => 2,
                        OpCodeOperandKind.r32_reg or OpCodeOperandKind.r32_opcode or OpCodeOperandKind.r32_rm => 4,
                        _ => 8,
                    };
                    int r = PickReg();
                    if (bits == 32 && size == 1 && r >= 4) return null;
                    used.Add(r);
                    ins.SetOpKind(n, OpKind.Register);
                    ins.SetOpRegister(n, size == 1 && r < 4 && rng.Next(3) == 0 ? Register.AH + r : Gpr(size, r));
                    break;
                }
                case OpCodeOperandKind.xmm_reg or OpCodeOperandKind.xmm_rm:
                    ins.SetOpKind(n, OpKind.Register);
                    ins.SetOpRegister(n, Register.XMM0 + rng.Next(bits == 64 ? 16 : 8));
                    break;
                case OpCodeOperandKind.al: ins.SetOpKind(n, OpKind.Register); ins.SetOpRegister(n, Register.AL); break;
                case OpCodeOperandKind.cl: ins.SetOpKind(n, OpKind.Register); ins.SetOpRegister(n, Register.CL); break;
                case OpCodeOperandKind.ax: ins.SetOpKind(n, OpKind.Register); ins.SetOpRegister(n, Register.AX); break;
                case OpCodeOperandKind.eax: ins.SetOpKind(n, OpKind.Register); ins.SetOpRegister(n, Register.EAX); break;
                case OpCodeOperandKind.rax: ins.SetOpKind(n, OpKind.Register); ins.SetOpRegister(n, Register.RAX); break;
                case OpCodeOperandKind.imm8_const_1: ins.SetOpKind(n, OpKind.Immediate8); ins.SetImmediate(n, 1); break;
                case OpCodeOperandKind.imm8: ins.SetOpKind(n, OpKind.Immediate8); ins.SetImmediate(n, (long)(byte)RandEdge(rng)); break;
                case OpCodeOperandKind.imm8sex16: ins.SetOpKind(n, OpKind.Immediate8to16); ins.SetImmediate(n, (sbyte)RandEdge(rng)); break;
                case OpCodeOperandKind.imm8sex32: ins.SetOpKind(n, OpKind.Immediate8to32); ins.SetImmediate(n, (sbyte)RandEdge(rng)); break;
                case OpCodeOperandKind.imm8sex64: ins.SetOpKind(n, OpKind.Immediate8to64); ins.SetImmediate(n, (sbyte)RandEdge(rng)); break;
                case OpCodeOperandKind.imm16: ins.SetOpKind(n, OpKind.Immediate16); ins.SetImmediate(n, (long)(ushort)RandEdge(rng)); break;
                case OpCodeOperandKind.imm32: ins.SetOpKind(n, OpKind.Immediate32); ins.SetImmediate(n, (long)(uint)RandEdge(rng)); break;
                case OpCodeOperandKind.imm32sex64: ins.SetOpKind(n, OpKind.Immediate32to64); ins.SetImmediate(n, (int)RandEdge(rng)); break;
                case OpCodeOperandKind.imm64: ins.SetOpKind(n, OpKind.Immediate64); ins.SetImmediate(n, (long)RandEdge(rng)); break;
                case OpCodeOperandKind.seg_rSI: ins.SetOpKind(n, bits == 64 ? OpKind.MemorySegRSI : OpKind.MemorySegESI); isString = true; break;
                case OpCodeOperandKind.es_rDI: ins.SetOpKind(n, bits == 64 ? OpKind.MemoryESRDI : OpKind.MemoryESEDI); isString = true; break;
                case OpCodeOperandKind.seg_rBX_al:
                    ins.SetOpKind(n, OpKind.Memory);
                    ins.MemoryBase = bits == 64 ? Register.RBX : Register.EBX;
                    ins.MemoryIndex = Register.AL;
                    ins.MemoryIndexScale = 1;
                    c.Regs[3] = NativeCpu.DataAddr + 0x700;
                    break;
                default:
                    return null;
            }
        }
        if (op.Mnemonic is Mnemonic.Bt or Mnemonic.Bts or Mnemonic.Btr or Mnemonic.Btc && form.Memory && ins.Op1Kind == OpKind.Register)
            c.Regs[RegTable.Index[(int)ins.Op1Register]] = (ulong)(long)rng.Next(-300, 300);
        if (isString)
        {
            c.Regs[6] = NativeCpu.DataAddr + 0x400 + (ulong)rng.Next(64);
            c.Regs[7] = NativeCpu.DataAddr + 0xC00 + (ulong)rng.Next(64);
            c.Regs[1] = (ulong)rng.Next(0, 12);
            if (rng.Next(3) == 0) c.Flags |= 0x400; // DF
            if (form.Rep == 1) ins.HasRepPrefix = true;
            if (form.Rep == 2) ins.HasRepnePrefix = true;
            // Make matching runs likely for REPE/REPNE compares.
            if (rng.Next(2) == 0) Array.Copy(c.Data, 0x400, c.Data, 0xC00, 0x100);
        }
        if (form.Lock) ins.HasLockPrefix = true;
        var w = new MemoryCodeWriter();
        var enc = Iced.Intel.Encoder.Create(bits, w);
        if (!enc.TryEncode(ins, NativeCpu.CodeAddr + 0x1000, out _, out _)) return null;
        c.Bytes = [.. w.Bytes];
        // Decode back so the instruction has everything Iced computes (flags info, memory size).
        var dec = Iced.Intel.Decoder.Create(bits, new ByteArrayCodeReader(c.Bytes), 0x100000);
        dec.Decode(out c.Ins);
        if (c.Ins.IsInvalid || c.Ins.Length != c.Bytes.Length) return null;
        return c;
    }

    /// <summary>Predicts #DE for DIV/IDIV (the host would raise SIGFPE, so these run only in the emulator).</summary>
    private static bool PredictsDivideError(Case c)
    {
        var i = c.Ins;
        if (i.Mnemonic is not (Mnemonic.Div or Mnemonic.Idiv)) return false;
        int sz;
        ulong divisor;
        if (i.Op0Kind == OpKind.Register)
        {
            sz = i.Op0Register.GetSize();
            var r = i.Op0Register;
            ulong full = c.Regs[RegTable.Index[(int)r]];
            divisor = RegTable.High8[(int)r] ? (full >> 8) & 0xFF : full & Mask(sz);
        }
        else
        {
            sz = i.MemorySize.GetSize();
            ulong addr = c.Regs[RegTable.Index[(int)i.MemoryBase]] + i.MemoryDisplacement64 - NativeCpu.DataAddr;
            divisor = BitConverter.ToUInt64(c.Data, (int)addr) & Mask(sz);
        }
        if (divisor == 0) return true;
        ulong a = c.Regs[0], d = c.Regs[2];
        bool signed = i.Mnemonic == Mnemonic.Idiv;
        switch (sz)
        {
            case 1:
            {
                ulong n = a & 0xFFFF;
                if (signed) { long q = (short)n / (long)(sbyte)divisor; return q is > 127 or < -128; }
                return n / divisor > 0xFF;
            }
            case 2:
            {
                ulong n = ((d & 0xFFFF) << 16) | (a & 0xFFFF);
                if (signed) { long q = (int)n / (long)(short)divisor; return q is > short.MaxValue or < short.MinValue; }
                return n / divisor > 0xFFFF;
            }
            case 4:
            {
                ulong n = ((d & 0xFFFFFFFF) << 32) | (a & 0xFFFFFFFF);
                if (signed)
                {
                    Int128 q = (Int128)(long)n / (int)divisor;
                    return q > int.MaxValue || q < int.MinValue;
                }
                return n / divisor > 0xFFFFFFFF;
            }
            default:
            {
                if (signed)
                {
                    Int128 n = (Int128)(((UInt128)d << 64) | a);
                    if ((long)divisor == -1) return n == Int128.MinValue || -n > long.MaxValue || -n < long.MinValue;
                    Int128 q = n / (long)divisor;
                    return q > long.MaxValue || q < long.MinValue;
                }
                return d >= divisor;
            }
        }
    }

    private static ulong Mask(int sz) => sz == 8 ? ulong.MaxValue : (1UL << (sz * 8)) - 1;

    /// <summary>Flags the architecture leaves undefined for this instance, beyond what Iced reports per form.</summary>
    private static ulong ExtraUndefined(Case c, out bool destUndefined)
    {
        destUndefined = false;
        var i = c.Ins;
        ulong und = 0;
        switch (i.Mnemonic)
        {
            case Mnemonic.Rol: case Mnemonic.Ror: case Mnemonic.Rcl: case Mnemonic.Rcr:
            case Mnemonic.Shl: case Mnemonic.Sal: case Mnemonic.Shr: case Mnemonic.Sar:
            case Mnemonic.Shld: case Mnemonic.Shrd:
            {
                int sz = i.Op0Kind == OpKind.Register ? i.Op0Register.GetSize() : i.MemorySize.GetSize();
                ulong count = i.Mnemonic is Mnemonic.Shld or Mnemonic.Shrd
                    ? (i.Op2Kind == OpKind.Register ? c.Regs[1] : i.Immediate8)
                    : (i.Op1Kind == OpKind.Register ? c.Regs[1] : i.Immediate8);
                count &= sz == 8 ? 63u : 31u;
                if (count != 1) und |= 0x800;
                if (i.Mnemonic is Mnemonic.Shl or Mnemonic.Sal or Mnemonic.Shr && count >= (ulong)(sz * 8)) und |= 1;
                if (i.Mnemonic is Mnemonic.Shld or Mnemonic.Shrd && count > (ulong)(sz * 8))
                {
                    destUndefined = true;
                    und |= 0x8D5;
                }
                break;
            }
            case Mnemonic.Bsf: case Mnemonic.Bsr:
            {
                ulong src = i.Op1Kind == OpKind.Register ? c.Regs[RegTable.Index[(int)i.Op1Register]] & Mask(i.Op1Register.GetSize()) : 1;
                if (i.Op1Kind == OpKind.Memory)
                {
                    ulong addr = c.Regs[RegTable.Index[(int)i.MemoryBase]] + i.MemoryDisplacement64 - NativeCpu.DataAddr;
                    src = BitConverter.ToUInt64(c.Data, (int)addr) & Mask(i.MemorySize.GetSize());
                }
                if (src == 0) destUndefined = true;
                break;
            }
        }
        return und;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void InstructionsMatchTheHostCpu(bool translated)
    {
        // The host comparison is the point of these tests: without the native harness they fail, never pass quietly.
        if (!NativeCpu.TryInit(out string? err)) Assert.Fail($"the native test harness is unavailable: {err}");
        var forms = EnumerateForms();
        using var g = new TestGuest(translated: translated);
        var rng = new Random(12345);
        int cases = 0, deCases = 0, mismatches = 0;
        var covered = new HashSet<Code>();
        var failedForms = new HashSet<Code>();
        var report = new StringBuilder();
        var outRegs = new ulong[16];
        var outXmm = new ulong[32];
        const int PerForm = 60;
        var kernelSregs = g.Cpu.GetSpecialRegisters();
        var userSregs = kernelSregs;
        userSregs.Cs = Segment.Flat(TestGuest.UCode | 3, 0xB, longMode: true, code: true);
        userSregs.Cs.Dpl = 3;
        userSregs.Ss = Segment.Flat(TestGuest.UData | 3, 0x3, longMode: true, code: false);
        userSregs.Ss.Dpl = 3;
        int userCases = 0;
        var swBuild = new System.Diagnostics.Stopwatch();
        var swEmu = new System.Diagnostics.Stopwatch();
        var swNative = new System.Diagnostics.Stopwatch();
        var swAll = System.Diagnostics.Stopwatch.StartNew();
        foreach (var form in forms)
        {
            int ok = 0;
            for (int t = 0; t < PerForm; t++)
            {
                swBuild.Start();
                var c = Build(form, rng);
                swBuild.Stop();
                if (c is null) continue;
                bool de = PredictsDivideError(c);
                // Emulator run.
                g.Memory.Write(new GuestAddress(NativeCpu.DataAddr), c.Data);
                // Every third case runs at CPL3 and ends with INT3 (HLT is privileged there).
                bool user = t % 3 == 2;
                g.Cpu.SetSpecialRegisters(user ? userSregs : kernelSregs);
                var code = c.Bytes.Append(user ? (byte)0xCC : (byte)0xF4).ToArray();
                g.Memory.Write(new GuestAddress(TestGuest.CodeAddr), code);
                var r = new Registers
                {
                    Rax = c.Regs[0], Rcx = c.Regs[1], Rdx = c.Regs[2], Rbx = c.Regs[3], Rsp = TestGuest.StackTop, Rbp = c.Regs[5],
                    Rsi = c.Regs[6], Rdi = c.Regs[7], R8 = c.Regs[8], R9 = c.Regs[9], R10 = c.Regs[10], R11 = c.Regs[11],
                    R12 = c.Regs[12], R13 = c.Regs[13], R14 = c.Regs[14], R15 = c.Regs[15], Rip = TestGuest.CodeAddr, Rflags = c.Flags,
                };
                g.Cpu.SetRegisters(r);
                Array.Copy(c.Xmm, g.Cpu.Xmm, 32);
                swEmu.Start();
                var exit = g.Run();
                swEmu.Stop();
                var er = g.Cpu.GetRegisters();
                string name = $"{c.Ins} [{form.Code}{(form.Lock ? " lock" : "")}] bytes {Convert.ToHexString(c.Bytes)}";
                if (de)
                {
                    deCases++;
                    if (exit.Reason != VcpuExitReason.Halt || g.Vector != 0)
                    {
                        mismatches++; failedForms.Add(form.Code);
                        if (mismatches < 40) report.AppendLine($"{name}: expected #DE, got {exit.Reason} {exit.Detail} rip={er.Rip:x}");
                    }
                    else ok++;
                    continue;
                }
                bool finished = user
                    ? exit.Reason == VcpuExitReason.Halt && g.Vector == 3 && g.R64(er.Rsp) == TestGuest.CodeAddr + (ulong)code.Length
                    : exit.Reason == VcpuExitReason.Halt && er.Rip == TestGuest.CodeAddr + (ulong)code.Length;
                if (user && finished) userCases++;
                if (!finished)
                {
                    mismatches++; failedForms.Add(form.Code);
                    if (mismatches < 40) report.AppendLine($"{name}: emulator exit {exit.Reason} {exit.Detail} rip={er.Rip:x} vector={g.Vector}");
                    continue;
                }
                // Native run.
                c.Data.CopyTo(NativeCpu.Data);
                swNative.Start();
                NativeCpu.Run(c.Bytes, c.Regs, c.Flags, c.Xmm, outRegs, out ulong nflags, outXmm);
                swNative.Stop();
                cases++;
                ulong und = RflagsToX86(c.Ins.RflagsUndefined) | ExtraUndefined(c, out bool destUndef);
                ulong fmask = 0x8D5 | 0x400;
                fmask &= ~und;
                var emuRegs = new[] { er.Rax, er.Rcx, er.Rdx, er.Rbx, er.Rsp, er.Rbp, er.Rsi, er.Rdi, er.R8, er.R9, er.R10, er.R11, er.R12, er.R13, er.R14, er.R15 };
                var diffs = new List<string>();
                for (int k = 0; k < 16; k++)
                {
                    if (k == 4) continue;
                    if (destUndef && c.Ins.Op0Kind == OpKind.Register && RegTable.Index[(int)c.Ins.Op0Register] == k) continue;
                    if (emuRegs[k] != outRegs[k]) diffs.Add($"{NativeCpu.Gprs[k]} emu={emuRegs[k]:x} host={outRegs[k]:x} in={c.Regs[k]:x}");
                }
                if ((er.Rflags & fmask) != (nflags & fmask)) diffs.Add($"flags emu={er.Rflags & fmask:x} host={nflags & fmask:x} in={c.Flags:x} mask={fmask:x}");
                for (int k = 0; k < 32; k++)
                    if (g.Cpu.Xmm[k] != outXmm[k]) { diffs.Add($"xmm{k / 2}.{k % 2} emu={g.Cpu.Xmm[k]:x} host={outXmm[k]:x}"); break; }
                var emuData = g.Memory.GetSpan(new GuestAddress(NativeCpu.DataAddr), NativeCpu.DataSize);
                if (!destUndef && !emuData.SequenceEqual(NativeCpu.Data))
                {
                    int at = 0;
                    while (emuData[at] == NativeCpu.Data[at]) at++;
                    diffs.Add($"memory differs at +0x{at:x}: emu={emuData[at]:x2} host={NativeCpu.Data[at]:x2}");
                }
                if (diffs.Count > 0)
                {
                    mismatches++; failedForms.Add(form.Code);
                    if (mismatches < 40) report.AppendLine($"{name}: {string.Join("; ", diffs)}");
                }
                else ok++;
            }
            if (ok > 0 && !failedForms.Contains(form.Code)) covered.Add(form.Code);
        }
        output.WriteLine($"Differential: {forms.Count} generated forms (encodings x reg/mem/lock/rep), {covered.Count} distinct instruction forms (Iced Code values) fully matching the host, {cases} native comparisons ({userCases} of them run at CPL3 in the emulator), {deCases} #DE cases, {mismatches} mismatches in {failedForms.Count} forms.");
        Console.WriteLine($"[SharpVM.Cpu differential] forms covered: {covered.Count}; cases: {cases}; #DE cases: {deCases}; mismatches: {mismatches}");
        output.WriteLine($"time: total {swAll.ElapsedMilliseconds} ms, build {swBuild.ElapsedMilliseconds} ms, emulator {swEmu.ElapsedMilliseconds} ms, native {swNative.ElapsedMilliseconds} ms");
        if (mismatches > 0) output.WriteLine(report.ToString());
        Assert.True(mismatches == 0, $"{mismatches} mismatches in {failedForms.Count} forms:\n{report}");
    }

    /// <summary>
    /// Pairs of instructions (a flag producer, then any register-only instruction) check the lazy-flag
    /// paths: condition codes, ADC/SBB, RCL/RCR and INC/DEC reading flags left pending by the first.
    /// A quarter of the second instructions are a Jcc over a LEA (the fused compare-and-branch).
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void InstructionPairsMatchTheHostCpu(bool translated)
    {
        // The host comparison is the point of these tests: without the native harness they fail, never pass quietly.
        if (!NativeCpu.TryInit(out string? err)) Assert.Fail($"the native test harness is unavailable: {err}");
        var forms = EnumerateForms().Where(f => f.Rep == 0).ToList();
        bool Usable(Form f)
        {
            var m = f.Code.ToOpCode().Mnemonic;
            if (m is Mnemonic.Div or Mnemonic.Idiv) return false;
            for (int n = 0; n < f.Code.ToOpCode().OpCount; n++)
                if (f.Code.ToOpCode().GetOpKind(n) is OpCodeOperandKind.seg_rSI or OpCodeOperandKind.es_rDI or OpCodeOperandKind.seg_rBX_al) return false;
            return true;
        }
        var first = forms.Where(Usable).ToList();
        var second = forms.Where(f => Usable(f) && !f.Memory && Enumerable.Range(0, f.Code.ToOpCode().OpCount).All(n => f.Code.ToOpCode().GetOpKind(n) != OpCodeOperandKind.mem)).ToList();
        // Bias towards flag producers followed by flag consumers, the paths lazy flags short-cut.
        var producers = first.Where(f => f.Code.ToOpCode().Mnemonic is Mnemonic.Add or Mnemonic.Sub or Mnemonic.Cmp or Mnemonic.And
            or Mnemonic.Or or Mnemonic.Xor or Mnemonic.Test or Mnemonic.Inc or Mnemonic.Dec or Mnemonic.Neg).ToList();
        var consumers = second.Where(f => f.Code.ToOpCode().Mnemonic.ToString() is var m && (m.StartsWith("Set", StringComparison.Ordinal)
            || m.StartsWith("Cmov", StringComparison.Ordinal) || m is "Adc" or "Sbb" or "Rcl" or "Rcr" or "Inc" or "Dec" or "Cmc" or "Lahf")).ToList();
        using var g = new TestGuest(translated: translated);
        var rng = new Random(777);
        var outRegs = new ulong[16];
        var outXmm = new ulong[32];
        int cases = 0, mismatches = 0;
        var report = new StringBuilder();
        for (int t = 0; t < 30000 && mismatches < 30; t++)
        {
            bool biased = rng.Next(10) < 7;
            var a = Build(biased ? producers[rng.Next(producers.Count)] : first[rng.Next(first.Count)], rng);
            if (a is null) continue;
            if (RflagsToX86(a.Ins.RflagsUndefined) != 0 || ExtraUndefined(a, out bool du) != 0 || du) continue;
            var bForm = biased ? consumers[rng.Next(consumers.Count)] : second[rng.Next(second.Count)];
            var bc = rng.Next(4) == 0 ? BuildJccOverLea(rng) : Build(bForm, rng);
            if (bc is null) continue;
            // The second instruction runs on the state the first leaves; it only names registers.
            var b = bc.Ins;
            if (a.Base != Register.None && b.OpCount > 0 && Enumerable.Range(0, b.OpCount).Any(n => b.GetOpKind(n) == OpKind.Register && b.GetOpRegister(n).IsGPR() && RegTable.Index[(int)b.GetOpRegister(n)] == RegTable.Index[(int)a.Base]))
                continue;
            var code = a.Bytes.Concat(bc.Bytes).ToArray();
            var full = code.Append((byte)0xF4).ToArray();
            g.EnterLongMode();
            g.Memory.Write(new GuestAddress(NativeCpu.DataAddr), a.Data);
            g.Memory.Write(new GuestAddress(TestGuest.CodeAddr), full);
            g.Cpu.SetRegisters(new Registers
            {
                Rax = a.Regs[0], Rcx = a.Regs[1], Rdx = a.Regs[2], Rbx = a.Regs[3], Rsp = TestGuest.StackTop, Rbp = a.Regs[5],
                Rsi = a.Regs[6], Rdi = a.Regs[7], R8 = a.Regs[8], R9 = a.Regs[9], R10 = a.Regs[10], R11 = a.Regs[11],
                R12 = a.Regs[12], R13 = a.Regs[13], R14 = a.Regs[14], R15 = a.Regs[15], Rip = TestGuest.CodeAddr, Rflags = a.Flags,
            });
            Array.Copy(a.Xmm, g.Cpu.Xmm, 32);
            var exit = g.Run();
            var er = g.Cpu.GetRegisters();
            string name = $"{a.Ins} ; {b} bytes {Convert.ToHexString(code)}";
            if (exit.Reason != VcpuExitReason.Halt || er.Rip != TestGuest.CodeAddr + (ulong)full.Length)
            {
                mismatches++;
                report.AppendLine($"{name}: emulator exit {exit.Reason} {exit.Detail} rip={er.Rip:x} vector={g.Vector}");
                continue;
            }
            a.Data.CopyTo(NativeCpu.Data);
            NativeCpu.Run(code, a.Regs, a.Flags, a.Xmm, outRegs, out ulong nflags, outXmm);
            cases++;
            // Undefined flags of the second instruction (its own Iced data; shift counts come from the live state).
            var bcase = new Case { Ins = b, Regs = outRegs.ToArray(), Data = a.Data };
            ulong und = RflagsToX86(b.RflagsUndefined) | ExtraUndefined(bcase, out bool destUndef);
            ulong fmask = (0x8D5UL | 0x400) & ~und;
            var emuRegs = new[] { er.Rax, er.Rcx, er.Rdx, er.Rbx, er.Rsp, er.Rbp, er.Rsi, er.Rdi, er.R8, er.R9, er.R10, er.R11, er.R12, er.R13, er.R14, er.R15 };
            var diffs = new List<string>();
            for (int k = 0; k < 16; k++)
            {
                if (k == 4) continue;
                if (destUndef && b.Op0Kind == OpKind.Register && RegTable.Index[(int)b.Op0Register] == k) continue;
                if (emuRegs[k] != outRegs[k]) diffs.Add($"{NativeCpu.Gprs[k]} emu={emuRegs[k]:x} host={outRegs[k]:x}");
            }
            if ((er.Rflags & fmask) != (nflags & fmask)) diffs.Add($"flags emu={er.Rflags & fmask:x} host={nflags & fmask:x} mask={fmask:x}");
            for (int k = 0; k < 32; k++)
                if (g.Cpu.Xmm[k] != outXmm[k]) { diffs.Add($"xmm{k / 2}.{k % 2} emu={g.Cpu.Xmm[k]:x} host={outXmm[k]:x}"); break; }
            if (!g.Memory.GetSpan(new GuestAddress(NativeCpu.DataAddr), NativeCpu.DataSize).SequenceEqual(NativeCpu.Data)) diffs.Add("memory differs");
            if (diffs.Count > 0)
            {
                mismatches++;
                report.AppendLine($"{name}: {string.Join("; ", diffs)}");
            }
        }
        output.WriteLine($"Instruction pairs: {cases} compared with the host, {mismatches} mismatches.");
        Console.WriteLine($"[SharpVM.Cpu differential] instruction pairs: {cases}; mismatches: {mismatches}");
        Assert.True(mismatches == 0, report.ToString());
    }

    /// <summary>
    /// A Jcc (random condition) jumping over LEA R15,[R15+1], so R15 tells whether it was taken: after a
    /// register ALU/CMP/TEST the emulator runs the pair as one fused compare-and-branch.
    /// </summary>
    private static Case BuildJccOverLea(Random rng)
    {
        byte[] lea = [0x4D, 0x8D, 0x7F, 0x01];
        byte[] bytes = [(byte)(0x70 + rng.Next(16)), (byte)lea.Length, .. lea];
        var decoder = Iced.Intel.Decoder.Create(64, new ByteArrayCodeReader(bytes));
        decoder.IP = 0;
        return new Case { Ins = decoder.Decode(), Bytes = bytes };
    }

    /// <summary>
    /// The same generator for 32-bit forms: natively in compatibility mode (a far return to the 32-bit
    /// user code segment), in the emulator in compatibility mode at CPL0. Low 32 bits of EAX..EDI,
    /// defined flags, XMM0-7 and memory must match.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Instructions32BitMatchTheHostCpu(bool translated)
    {
        // The host comparison is the point of these tests: without the native harness they fail, never pass quietly.
        if (!NativeCpu.TryInit(out string? err)) Assert.Fail($"the native test harness is unavailable: {err}");
        var forms = EnumerateForms(32);
        using var g = new TestGuest(translated: translated);
        var sregs = g.Cpu.GetSpecialRegisters();
        sregs.Cs = new Segment { Base = 0, Limit = 0xFFFFFFFF, Selector = TestGuest.KCode32, Type = 0xB, S = true, Present = true, Db = true, G = true };
        var rng = new Random(4242);
        var outRegs = new ulong[16];
        var outXmm = new ulong[32];
        int cases = 0, deCases = 0, mismatches = 0;
        var covered = new HashSet<Code>();
        var failed = new HashSet<Code>();
        var report = new StringBuilder();
        foreach (var form in forms)
        {
            int ok = 0;
            for (int t = 0; t < 30; t++)
            {
                var c = Build(form, rng, 32);
                if (c is null) continue;
                bool de = PredictsDivideError(c);
                g.Memory.Write(new GuestAddress(NativeCpu.DataAddr), c.Data);
                var code = c.Bytes.Append((byte)0xF4).ToArray();
                g.Memory.Write(new GuestAddress(TestGuest.CodeAddr), code);
                g.Cpu.SetSpecialRegisters(sregs);
                g.Cpu.SetRegisters(new Registers
                {
                    Rax = c.Regs[0], Rcx = c.Regs[1], Rdx = c.Regs[2], Rbx = c.Regs[3], Rsp = TestGuest.StackTop, Rbp = c.Regs[5],
                    Rsi = c.Regs[6], Rdi = c.Regs[7], Rip = TestGuest.CodeAddr, Rflags = c.Flags,
                });
                Array.Copy(c.Xmm, g.Cpu.Xmm, 32);
                var exit = g.Run();
                var er = g.Cpu.GetRegisters();
                string name = $"{c.Ins} [{form.Code}{(form.Lock ? " lock" : "")}] bytes {Convert.ToHexString(c.Bytes)}";
                if (de)
                {
                    deCases++;
                    if (exit.Reason != VcpuExitReason.Halt || g.Vector != 0) { mismatches++; failed.Add(form.Code); if (mismatches < 40) report.AppendLine($"{name}: expected #DE, got {exit.Reason} {exit.Detail}"); }
                    else ok++;
                    continue;
                }
                if (exit.Reason != VcpuExitReason.Halt || er.Rip != TestGuest.CodeAddr + (ulong)code.Length)
                {
                    mismatches++; failed.Add(form.Code);
                    if (mismatches < 40) report.AppendLine($"{name}: emulator exit {exit.Reason} {exit.Detail} rip={er.Rip:x} vector={g.Vector}");
                    continue;
                }
                c.Data.CopyTo(NativeCpu.Data);
                NativeCpu.Run32(c.Bytes, c.Regs, c.Flags, c.Xmm, outRegs, out ulong nflags, outXmm);
                cases++;
                ulong und = RflagsToX86(c.Ins.RflagsUndefined) | ExtraUndefined(c, out bool destUndef);
                ulong fmask = (0x8D5UL | 0x400) & ~und;
                var emuRegs = new[] { er.Rax, er.Rcx, er.Rdx, er.Rbx, er.Rsp, er.Rbp, er.Rsi, er.Rdi };
                var diffs = new List<string>();
                for (int k = 0; k < 8; k++)
                {
                    if (k == 4) continue;
                    if (destUndef && c.Ins.Op0Kind == OpKind.Register && RegTable.Index[(int)c.Ins.Op0Register] == k) continue;
                    if ((uint)emuRegs[k] != (uint)outRegs[k]) diffs.Add($"E{NativeCpu.Gprs[k]} emu={(uint)emuRegs[k]:x} host={(uint)outRegs[k]:x} in={c.Regs[k]:x}");
                }
                if ((er.Rflags & fmask) != (nflags & fmask)) diffs.Add($"flags emu={er.Rflags & fmask:x} host={nflags & fmask:x} in={c.Flags:x} mask={fmask:x}");
                for (int k = 0; k < 16; k++)
                    if (g.Cpu.Xmm[k] != outXmm[k]) { diffs.Add($"xmm{k / 2}.{k % 2} emu={g.Cpu.Xmm[k]:x} host={outXmm[k]:x}"); break; }
                var emuData = g.Memory.GetSpan(new GuestAddress(NativeCpu.DataAddr), NativeCpu.DataSize);
                if (!destUndef && !emuData.SequenceEqual(NativeCpu.Data)) diffs.Add("memory differs");
                if (diffs.Count > 0)
                {
                    mismatches++; failed.Add(form.Code);
                    if (mismatches < 40) report.AppendLine($"{name}: {string.Join("; ", diffs)}");
                }
                else ok++;
            }
            if (ok > 0 && !failed.Contains(form.Code)) covered.Add(form.Code);
        }
        output.WriteLine($"Differential (32-bit, compatibility mode): {forms.Count} generated forms, {covered.Count} distinct instruction forms fully matching the host, {cases} native comparisons, {deCases} #DE cases, {mismatches} mismatches in {failed.Count} forms.");
        Console.WriteLine($"[SharpVM.Cpu differential] 32-bit forms covered: {covered.Count}; cases: {cases}; mismatches: {mismatches}");
        if (mismatches > 0) output.WriteLine(report.ToString());
        Assert.True(mismatches == 0, $"{mismatches} mismatches in {failed.Count} forms:\n{report}");
    }
}
