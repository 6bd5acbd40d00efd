using System.Text;
using Iced.Intel;
using SharpVM.Hypervisor;
using SharpVM.Memory;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Cpu.Tests;

/// <summary>
/// Adversarial checks of the block loop's inlined hot handlers and fused compare-and-branch: precise
/// exceptions from their memory operands, prefixes (FS/GS base, 0x67, high-byte registers), flags seen by
/// later readers, the retired-instruction count, and the block bytes check against self-modifying code. Every test
/// runs interpreted and with every block translated to host code first (the translator keeps the same contract).
/// </summary>
public abstract class HotDispatchTests(bool translated)
{
    private const ulong Pd1 = 0x20000, Pt = 0x21000, Unmapped = 0x4000_0000, Backing = 0x700000, Handler = 0xA000;

    /// <summary>
    /// Maps 0x4000_0000 through a not-present PTE; the #PF handler records the frame's RIP (R9) and RFLAGS
    /// (R10), RAX at entry (R11) and the error code (R14), counts itself in R15, maps the page to 0x700000 and returns.
    /// </summary>
    private TestGuest PageFaultGuest()
    {
        var g = new TestGuest(translated: translated);
        g.W64(TestGuest.Pdpt + 8, Pd1 | 7);
        g.W64(Pd1, Pt | 7);
        g.Load(Handler, a =>
        {
            a.inc(r15);
            a.mov(r9, __qword_ptr[rsp + 8]);
            a.mov(r10, __qword_ptr[rsp + 24]);
            a.mov(r11, rax);
            a.mov(r14, __qword_ptr[rsp]);
            a.mov(rbx, Pt);
            a.mov(__qword_ptr[rbx], (int)(Backing | 3));
            a.add(rsp, 8);
            a.iretq();
        });
        // IST 1, so that the frame can be pushed while RSP itself points into the unmapped page.
        ulong lo = (Handler & 0xFFFF) | ((ulong)TestGuest.KCode << 16) | (1UL << 32) | (0x8EUL << 40) | ((Handler >> 16 & 0xFFFF) << 48);
        g.W64(TestGuest.IdtAddr + 14 * 16, lo);
        g.W64(TestGuest.IdtAddr + 14 * 16 + 8, 0);
        return g;
    }

    public static TheoryData<string> FaultingForms() => ["cmp-jcc", "add-jcc", "sub-jcc", "mov", "add", "cmov", "movsxd", "movzx", "pop", "ret"];

    /// <summary>
    /// A #PF from the memory operand of a hot or fused form is taken at that instruction, with the
    /// registers and the (lazily held) flags of before it; after the handler maps the page, the
    /// instruction re-runs and completes.
    /// </summary>
    [Theory]
    [MemberData(nameof(FaultingForms))]
    public void PageFaultInAHotFormIsPrecise(string form)
    {
        using var g = PageFaultGuest();
        g.W64(Backing, 5);
        // RAX = 5, RCX -> the unmapped page; RDX = -1 + 1 leaves CF, PF, AF and ZF pending in the lazy state.
        int pro = g.Load(TestGuest.CodeAddr, a =>
        {
            a.mov(rax, 5);
            a.mov(rcx, Unmapped);
            a.mov(rdx, -1);
            a.add(rdx, 1);
        });
        ulong at = TestGuest.CodeAddr + (ulong)pro;
        g.Load(at, a =>
        {
            var taken = a.CreateLabel();
            switch (form)
            {
                case "cmp-jcc": a.cmp(rax, __qword_ptr[rcx]); a.jne(taken); break;
                case "add-jcc": a.add(rax, __qword_ptr[rcx]); a.jc(taken); break;
                case "sub-jcc": a.sub(rax, __qword_ptr[rcx]); a.jne(taken); break;
                case "mov": a.mov(rax, __qword_ptr[rcx]); break;
                case "add": a.add(rax, __qword_ptr[rcx]); break;
                case "cmov": a.cmove(rax, __qword_ptr[rcx]); break;
                case "movsxd": a.movsxd(rax, __dword_ptr[rcx]); break;
                case "movzx": a.movzx(eax, __word_ptr[rcx]); break;
                case "pop": a.mov(rsp, rcx); a.pop(rax); a.mov(rsp, TestGuest.StackTop); break;
                case "ret": a.mov(rsp, rcx); a.ret(); break;
            }
            a.pushfq();
            a.pop(r12);
            a.hlt();
            a.Label(ref taken);
            a.mov(r13, 0xBAD);
            a.hlt();
        });
        // ret jumps to the value it loads: put a HLT there.
        if (form == "ret") { g.W64(Backing, 0x200000); g.W8(0x200000, 0xF4); }
        if (form is "pop" or "ret") at += 3; // mov rsp, rcx comes first
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        var r = g.Cpu.GetRegisters();
        Assert.Equal(1UL, r.R15);           // exactly one fault
        Assert.Equal(at, r.R9);             // RIP of the faulting instruction
        Assert.Equal(0x57UL, r.R10 & 0x8D7); // CF PF AF ZF from ADD RDX, 1 (bit 1 always set), OF SF clear
        Assert.Equal(5UL, r.R11);           // RAX untouched by the faulting attempt
        Assert.Equal(0UL, r.R14);           // a read of a not-present page
        Assert.Equal(0UL, r.R13);
        switch (form)
        {
            case "cmp-jcc": Assert.Equal(5UL, r.Rax); Assert.Equal(0x46UL, r.R12 & 0x8D5 | 2); break;
            case "add-jcc": Assert.Equal(10UL, r.Rax); Assert.Equal(0x06UL, r.R12 & 0x8D5 | 2); break;
            case "sub-jcc": Assert.Equal(0UL, r.Rax); Assert.Equal(0x46UL, r.R12 & 0x8D5 | 2); break;
            case "add": Assert.Equal(10UL, r.Rax); break;
            case "ret": Assert.Equal(0x200001UL, r.Rip); Assert.Equal(Unmapped + 8, r.Rsp); break;
            default: Assert.Equal(5UL, r.Rax); break;
        }
    }

    public static TheoryData<string> ReadModifyWriteForms() => ["adc-mr", "sbb-mr", "add-mi", "or-mi", "adc-interp", "inc", "neg", "rcl", "shl"];

    /// <summary>
    /// A read-modify-write instruction whose write faults (a present, read-only page: copy-on-write) must
    /// leave RFLAGS as before it: the handler sees the old flags, and the re-run after the handler made
    /// the page writable reads CF as it was (ADC/SBB/RCL would otherwise compute from their own first try).
    /// </summary>
    [Theory]
    [MemberData(nameof(ReadModifyWriteForms))]
    public void FaultingWriteOfAReadModifyWriteLeavesFlagsAsBefore(string form)
    {
        using var g = PageFaultGuest();
        g.W64(Pt, Backing | 1); // present, read-only (CR0.WP is set)
        g.W64(Backing, 5);
        int pro = g.Load(TestGuest.CodeAddr, a =>
        {
            a.mov(rcx, Unmapped);
            a.xor(eax, eax); // ZF PF
            a.stc();         // CF
            a.mov(eax, 1);
        });
        ulong at = TestGuest.CodeAddr + (ulong)pro;
        g.Load(at, a =>
        {
            switch (form)
            {
                case "adc-mr": a.adc(__qword_ptr[rcx], rax); break;
                case "sbb-mr": a.sbb(__qword_ptr[rcx], rax); break;
                case "add-mi": a.add(__qword_ptr[rcx], 3); break;
                case "or-mi": a.or(__dword_ptr[rcx], 0x30); break;
                case "adc-interp": a.adc(__word_ptr[rcx], 0x1000); break;
                case "inc": a.inc(__qword_ptr[rcx]); break;
                case "neg": a.neg(__qword_ptr[rcx]); break;
                case "rcl": a.rcl(__qword_ptr[rcx], 1); break;
                case "shl": a.shl(__qword_ptr[rcx], 2); break;
            }
            a.hlt();
        });
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        var r = g.Cpu.GetRegisters();
        Assert.Equal(1UL, r.R15);                // one fault, then the re-run completed
        Assert.Equal(at, r.R9);                  // at the read-modify-write instruction
        Assert.Equal(0x47UL, r.R10 & 0x8D7);     // CF ZF PF as the prologue left them
        Assert.Equal(3UL, r.R14);                // present | write, as hardware reports a read-modify-write
        ulong expected = form switch
        {
            "adc-mr" => 7, "sbb-mr" => 3, "add-mi" => 8, "or-mi" => 0x35, "adc-interp" => 0x1006,
            "inc" => 6, "neg" => unchecked((ulong)-5L), "rcl" => 11, _ => 20,
        };
        Assert.Equal(expected, g.R64(Backing));
    }

    /// <summary>
    /// FS/GS bases, a 0x67 address-size prefix (the 32-bit effective address wraps before the segment
    /// base is added) and high-byte registers with and without REX reach the right bytes in the hot forms.
    /// </summary>
    [Fact]
    public void HotFormsHonourSegmentBasesAddressSizeAndByteRegisters()
    {
        using var g = new TestGuest(translated: translated);
        const ulong FsBase = 0x200000, GsBase = 0x300000;
        g.W64(FsBase + 0x10, 0x1111_2222_3333_4444);
        g.W64(GsBase + 0x10, 0x8765_4321_9ABC_DEF0);
        g.W64(0x10, 0xDEAD); // what a hot form ignoring the base would read
        g.W64(0x400010, 0x0BAD_0BAD);
        g.W64(0x410, 0x5A5A_5A5A);
        g.Load(TestGuest.CodeAddr, a =>
        {
            var bad = a.CreateLabel();
            a.mov(ecx, 0xC0000100); a.mov(eax, (uint)FsBase); a.xor(edx, edx); a.wrmsr();
            a.mov(ecx, 0xC0000101); a.mov(eax, (uint)GsBase); a.wrmsr();
            a.mov(ebx, 0x10);
            a.mov(rax, __qword_ptr.fs[rbx]);           // MovRM64
            a.mov(rsi, __qword_ptr.gs[rbx]);           // MovRM64
            a.add(rax, __qword_ptr.gs[rbx]);           // AluRM64
            a.mov(__qword_ptr.fs[rbx + 8], rsi);       // MovMR64
            a.mov(edi, __dword_ptr.fs[rbx]);           // MovRM32
            a.movzx(r8d, __word_ptr.gs[rbx]);          // MovzxRMWide
            a.movsxd(r9, __dword_ptr.gs[rbx]);         // MovsxdRM
            a.mov(ecx, 0xFFFFFFF0);
            a.mov(edx, 0x400020);
            a.mov(r10, __qword_ptr[ecx + edx]);        // 0x67: 0x1_0040_0010 wraps to 0x40_0010
            a.lea(r11, __qword_ptr[ecx + edx]);        // 0x67 LEA: 0x40_0010 zero-extended
            a.mov(r12, __qword_ptr.fs[ecx + edx - 0x400000]); // 0x67 then FS base: 0x20_0010
            a.mov(ebx, 0x1234);                        // BH = 0x12
            a.cmp(bh, 0x12);                           // fused 8-bit high-byte compare
            a.jne(bad);
            a.cmp(rsi, __qword_ptr.gs[rdx - 0x400010]);          // fused 64-bit compare with a GS memory source
            a.jne(bad);
            a.hlt();
            a.Label(ref bad);
            a.mov(r14, 0xBAD);
            a.hlt();
        });
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        var r = g.Cpu.GetRegisters();
        Assert.Equal(0UL, r.R14);
        Assert.Equal(0x1111_2222_3333_4444UL + 0x8765_4321_9ABC_DEF0UL, r.Rax);
        Assert.Equal(0x8765_4321_9ABC_DEF0UL, r.Rsi);
        Assert.Equal(0x8765_4321_9ABC_DEF0UL, g.R64(FsBase + 0x18));
        Assert.Equal(0x3333_4444UL, r.Rdi);
        Assert.Equal(0xDEF0UL, r.R8);
        Assert.Equal(0xFFFF_FFFF_9ABC_DEF0UL, r.R9);
        Assert.Equal(0x0BAD_0BADUL, r.R10);
        Assert.Equal(0x400010UL, r.R11);
        Assert.Equal(0x1111_2222_3333_4444UL, r.R12);

        // SETcc into AH..BH (no REX) and into SPL..DIL's neighbours SIL/DIL (REX): different registers.
        g.EnterLongMode();
        g.Load(TestGuest.CodeAddr, a =>
        {
            a.mov(rsi, 0x0000); a.mov(rdi, 0x0000); a.mov(rax, 0); a.mov(rbx, 0);
            a.mov(ecx, 1);
            a.cmp(ecx, 1);
            a.sete(ah);   // 0x88 /0 without REX: AH
            a.sete(bh);   // BH
            a.sete(sil);  // with REX: SIL, not DH
            a.sete(dil);  // with REX: DIL, not BH
            a.setne(dl);
            a.hlt();
        });
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        r = g.Cpu.GetRegisters();
        Assert.Equal(0x100UL, r.Rax);
        Assert.Equal(0x100UL, r.Rbx);
        Assert.Equal(1UL, r.Rsi);
        Assert.Equal(1UL, r.Rdi);
        Assert.Equal(0UL, r.Rdx & 0xFF);
    }

    /// <summary>
    /// The retired count covers exactly the instructions that completed: a fused compare-and-branch
    /// counts as two, and an instruction that faults (and the rest of its block) does not count.
    /// </summary>
    [Fact]
    public void InstructionsRetiredCountsExactlyTheCompletedInstructions()
    {
        using (var g = new TestGuest(translated: translated))
        {
            g.Load(TestGuest.CodeAddr, a =>
            {
                var loop = a.CreateLabel();
                a.mov(ecx, 10);   // block 1: mov, dec, add, cmp+jne (5)
                a.Label(ref loop);
                a.dec(ecx);       // then 9 times: dec, add, cmp+jne (4)
                a.add(eax, 1);
                a.cmp(ecx, 0);
                a.jne(loop);
                a.hlt();          // 1
            });
            Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
            Assert.Equal(5 + 9 * 4 + 1, g.Cpu.InstructionsRetired);
        }
        using (var g = PageFaultGuest())
        {
            g.Load(TestGuest.CodeAddr, a =>
            {
                a.mov(rcx, Unmapped);          // 1
                a.mov(rdx, __qword_ptr[rcx]);  // faults (not retired), then re-runs after the handler (1)
                a.nop();                       // 1
                a.hlt();                       // 1
            });
            Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
            Assert.Equal(1UL, g.Cpu.GetRegisters().R15);
            Assert.Equal(1 + 9 + 1 + 1 + 1, g.Cpu.InstructionsRetired); // the handler runs 9
        }
    }

    /// <summary>
    /// A block goes on through a JMP forward on its page: the jumped-over code never runs, a conditional branch
    /// before the JMP can land after it, the retired count covers exactly what ran (the JMP included), and a fault
    /// after the JMP is delivered at the faulting instruction with the count right.
    /// </summary>
    [Fact]
    public void BlocksGoOnThroughForwardJumps()
    {
        using (var g = new TestGuest(translated: translated))
        {
            g.Load(TestGuest.CodeAddr, a =>
            {
                var over = a.CreateLabel();
                var skip = a.CreateLabel();
                var loop = a.CreateLabel();
                a.mov(ecx, 20);                 // 1
                a.Label(ref loop);
                a.test(ecx, 1);                 // each round: test, jnz, [add, jmp | ], add r8, inc, dec+jnz
                a.jnz(skip);
                a.add(eax, 1);                  // even rounds only
                a.jmp(over);
                a.mov(eax, 0xDEAD);             // jumped over
                a.ud2();
                a.Label(ref skip);
                a.add(ebx, 1);                  // odd rounds only: the branch lands between the JMP and its target
                a.Label(ref over);
                a.add(r8, 2);
                a.inc(r9);
                a.dec(ecx);
                a.jnz(loop);
                a.hlt();                        // 1
            });
            Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
            var r = g.Cpu.GetRegisters();
            Assert.Equal((10UL, 10UL, 40UL, 20UL), (r.Rax, r.Rbx, r.R8, r.R9));
            // even rounds: test, jnz, add, jmp, add, inc, dec, jnz = 8; odd rounds: test, jnz, add ebx, add, inc, dec, jnz = 7
            Assert.Equal(1 + 10 * 8 + 10 * 7 + 1, g.Cpu.InstructionsRetired);
        }
        using (var g = PageFaultGuest())
        {
            g.Load(TestGuest.CodeAddr, a =>
            {
                var over = a.CreateLabel();
                a.mov(rcx, Unmapped);           // 1
                a.jmp(over);                    // 1
                a.ud2();
                a.Label(ref over);
                a.add(rdx, 5);                  // 1
                a.mov(rsi, __qword_ptr[rcx]);   // faults (not retired), then re-runs after the handler (1)
                a.hlt();                        // 1
            });
            Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
            var r = g.Cpu.GetRegisters();
            Assert.Equal(1UL, r.R15);
            Assert.Equal(5UL, r.Rdx); // the ADD before the fault ran once: the block re-ran from the faulting MOV
            ulong faultRip = r.R9;
            Assert.Equal(TestGuest.CodeAddr + 10 + 2 + 2 + 4, faultRip); // mov rcx,imm64 (10), jmp rel8 (2), ud2 (2), add rdx,5 (4)
            Assert.Equal(1 + 1 + 1 + 1 + 1 + 9, g.Cpu.InstructionsRetired); // the handler runs 9
        }
    }

    /// <summary>
    /// A block is re-checked against guest memory on every entry: patches by other code to a block
    /// longer than 64 bytes (past its 64th byte), to a short one, and to the second page of an
    /// instruction that crosses a page boundary are all seen.
    /// </summary>
    [Theory]
    [InlineData(0x100, 10)]   // long block: ten 10-byte MOVs, the patched MOV at byte 100
    [InlineData(0x200, 0)]    // short block: the patched MOV first
    [InlineData(0x1FFD, 0)]   // the patched MOV crosses into the next page, its immediate there
    public void PatchedBlocksAreSeenOnTheirNextEntry(int offset, int padding)
    {
        using var g = new TestGuest(translated: translated);
        ulong block = TestGuest.CodeAddr + 0x10000 + (ulong)offset;
        int len = g.Load(block, a =>
        {
            for (int k = 0; k < padding; k++) a.mov(rax, 0x1122334455667788UL + (ulong)k);
            a.mov(r8, 0x0101010101010101UL);
            a.ret();
        });
        ulong imm = block + (ulong)padding * 10 + 2;
        Assert.Equal(0x01, g.R8(imm));
        g.Load(TestGuest.CodeAddr, a =>
        {
            a.mov(rbx, block);
            a.call(rbx);
            a.mov(r9, r8);
            a.mov(rcx, imm);
            a.mov(__byte_ptr[rcx], 0x22);       // patch the low byte of the immediate
            a.call(rbx);
            a.mov(r10, r8);
            a.mov(__byte_ptr[rcx + 7], 0x33);   // and its high byte
            a.call(rbx);
            a.mov(r11, r8);
            a.hlt();
        });
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        var r = g.Cpu.GetRegisters();
        Assert.Equal(0x0101010101010101UL, r.R9);
        Assert.Equal(0x0101010101010122UL, r.R10);
        Assert.Equal(0x3301010101010122UL, r.R11);
        Assert.True(len > 0);
    }

    /// <summary>
    /// Flags after a fused ALU/CMP/TEST + Jcc (taken or not) read in the next block by PUSHF, SETcc of
    /// every condition, LAHF and ADC match the host CPU, for every ALU operation and operand width.
    /// </summary>
    [Fact]
    public void FlagsAfterAFusedPairMatchTheHostCpu()
    {
        if (!NativeCpu.TryInit(out _)) return;
        ulong[] edge = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF, 0x123456789ABCDEF0];
        string[] ops = ["add", "or", "adc", "sbb", "and", "sub", "xor", "cmp", "test"];
        // (destination, source) pairs per width; AH/BH exercise the high-byte path.
        (Register Dst, Register Src)[] pairs = [(Register.RSI, Register.RDI), (Register.ESI, Register.EDI), (Register.SI, Register.DI), (Register.SIL, Register.DIL), (Register.AH, Register.BH)];
        using var g = new TestGuest(translated: translated);
        var rng = new Random(2026);
        var outRegs = new ulong[16];
        var outXmm = new ulong[32];
        var xmm = new ulong[32];
        var report = new StringBuilder();
        int cases = 0, mismatches = 0;
        foreach (var op in ops)
        foreach (var (dst, src) in pairs)
        foreach (bool imm in new[] { false, true })
        for (int cc = 0; cc < 16; cc++)
        for (int t = 0; t < 3; t++)
        {
            var asm = new Assembler(64);
            var skip = asm.CreateLabel();
            EmitAlu(asm, op, dst, src, imm, (int)(edge[rng.Next(edge.Length)] & 0x7F));
            EmitJcc(asm, cc, skip);
            asm.lea(rbp, __qword_ptr[rbp + 1]); // RBP tells whether the branch was taken
            asm.Label(ref skip);
            asm.pushfq(); asm.pop(r8);
            asm.seto(r9b); asm.setb(r10b); asm.sete(r11b); asm.setbe(r12b); asm.sets(r13b); asm.setp(r14b); asm.setl(r15b); asm.setle(cl);
            asm.lahf();
            asm.adc(rdx, rdx);
            var w = new MemoryCodeWriter();
            asm.Assemble(w, TestGuest.CodeAddr);
            var code = w.Bytes.ToArray();
            var regs = new ulong[16];
            for (int k = 0; k < 16; k++) regs[k] = edge[rng.Next(edge.Length)] ^ (rng.Next(4) == 0 ? (ulong)rng.NextInt64() : 0);
            regs[4] = TestGuest.StackTop;
            ulong flags = 2 | (ulong)rng.Next(2); // CF in for ADC/SBB
            g.EnterLongMode();
            g.Memory.Write(new GuestAddress(TestGuest.CodeAddr), [.. code, 0xF4]);
            g.Cpu.SetRegisters(new Registers
            {
                Rax = regs[0], Rcx = regs[1], Rdx = regs[2], Rbx = regs[3], Rsp = regs[4], Rbp = regs[5], Rsi = regs[6], Rdi = regs[7],
                R8 = regs[8], R9 = regs[9], R10 = regs[10], R11 = regs[11], R12 = regs[12], R13 = regs[13], R14 = regs[14], R15 = regs[15],
                Rip = TestGuest.CodeAddr, Rflags = flags,
            });
            var exit = g.Run();
            var er = g.Cpu.GetRegisters();
            NativeCpu.Run(code, regs, flags, xmm, outRegs, out ulong nflags, outXmm);
            cases++;
            // AF is undefined after the logic operations; PUSHF saw it in R8 and LAHF in AH.
            bool logic = op is "or" or "and" or "xor" or "test";
            ulong af = logic ? 0x10UL : 0;
            var emu = new[] { er.Rax, er.Rcx, er.Rdx, er.Rbx, er.Rsp, er.Rbp, er.Rsi, er.Rdi, er.R8, er.R9, er.R10, er.R11, er.R12, er.R13, er.R14, er.R15 };
            var diffs = new List<string>();
            if (exit.Reason != VcpuExitReason.Halt) diffs.Add($"exit {exit.Reason} {exit.Detail}");
            for (int k = 0; k < 16; k++)
            {
                if (k == 4) continue;
                ulong mask = k == 8 ? 0x8D5UL & ~af : k == 0 ? ~(af << 8) : ulong.MaxValue;
                if ((emu[k] & mask) != (outRegs[k] & mask)) diffs.Add($"{NativeCpu.Gprs[k]} emu={emu[k]:x} host={outRegs[k]:x}");
            }
            if ((er.Rflags & 0x8D5) != (nflags & 0x8D5)) diffs.Add($"flags emu={er.Rflags & 0x8D5:x} host={nflags & 0x8D5:x}");
            if (diffs.Count > 0 && ++mismatches < 30) report.AppendLine($"{op} {dst},{(imm ? "imm" : src.ToString())}; j{cc:x}: {string.Join("; ", diffs)}");
        }
        Assert.True(cases > 1000);
        Assert.True(mismatches == 0, $"{mismatches} of {cases} mismatched:\n{report}");
    }

    private static void EmitAlu(Assembler a, string op, Register dst, Register src, bool imm, int value) =>
        a.AddInstruction(BuildAlu(op, dst, src, imm, value));

    private static Instruction BuildAlu(string op, Register dst, Register src, bool imm, int value)
    {
        int size = dst.GetSize();
        string sz = size switch { 8 => "64", 4 => "32", 2 => "16", _ => "8" };
        string name = char.ToUpperInvariant(op[0]) + op[1..];
        if (imm)
        {
            // The r/m, imm8 (sign-extended) or imm8 forms exist for every operation but TEST, which takes a full immediate.
            string form = op == "test" ? (size == 1 ? "rm8_imm8" : $"rm{sz}_imm{(size == 8 ? "32" : sz)}") : size == 1 ? "rm8_imm8" : $"rm{sz}_imm8";
            var c = Enum.Parse<Code>($"{name}_{form}");
            return Instruction.Create(c, dst, value);
        }
        var rr = Enum.Parse<Code>($"{name}_rm{sz}_r{sz}");
        return Instruction.Create(rr, dst, src);
    }

    private static void EmitJcc(Assembler a, int cc, Label target)
    {
        switch (cc)
        {
            case 0: a.jo(target); break;
            case 1: a.jno(target); break;
            case 2: a.jb(target); break;
            case 3: a.jae(target); break;
            case 4: a.je(target); break;
            case 5: a.jne(target); break;
            case 6: a.jbe(target); break;
            case 7: a.ja(target); break;
            case 8: a.js(target); break;
            case 9: a.jns(target); break;
            case 10: a.jp(target); break;
            case 11: a.jnp(target); break;
            case 12: a.jl(target); break;
            case 13: a.jge(target); break;
            case 14: a.jle(target); break;
            default: a.jg(target); break;
        }
    }
}

[Collection(NativeCpuCollection.Name)]
public sealed class HotDispatchTestsInterpreted() : HotDispatchTests(translated: false);

[Collection(NativeCpuCollection.Name)]
public sealed class HotDispatchTestsTranslated() : HotDispatchTests(translated: true);
