using System.Diagnostics;
using Iced.Intel;
using SharpVM.Hypervisor;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Cpu.Tests;

/// <summary>
/// An adversarial review of the block translator: each guest runs once interpreted and once with every block
/// translated before its first run, and the two must end in the same state (registers, RFLAGS, retired count,
/// the exception frame, memory) — which is also checked against hand-computed values where they are known.
/// Covers precise exceptions (faults in every faulting template, in a later round of a self-loop), self-modifying
/// code (templated, interpreted and REP stores into the running block, a page-crossing block, host writes while a
/// self-loop runs), self-loops (RequestExit, interrupt shadows, 32-bit code, CR3 writes in the body) and operand
/// forms (32-bit zero-extension, 0x67 wrap, FS/GS bases, RIP-relative, high-byte registers).
/// </summary>
[Collection(NativeCpuCollection.Name)]
public sealed class TranslatorReviewTests
{
    private const ulong Unmapped = 0x4000_0000; // the first address past the test guest's identity-mapped GiB
    private const ulong PfHandler = 0xA000;
    private const ulong FrameTop = TestGuest.Ist1; // #PF is delivered on IST1, so a bad RSP still gets a frame

    /// <summary>The state a run ends in: registers, the retired count, and the #PF frame (if one was pushed).</summary>
    private sealed record Outcome(VcpuExitReason Exit, Registers Regs, long Retired, ulong FrameRip, ulong FrameRflags, ulong FrameRsp, ulong Cr2, ulong Probe);

    private static TestGuest NewGuest(bool translated)
    {
        var g = new TestGuest(translated: translated);
        // #PF -> IST1 handler that halts at once (the frame stays at FrameTop - 48).
        g.Load(PfHandler, a => a.hlt());
        ulong h = PfHandler;
        g.W64(TestGuest.IdtAddr + 14 * 16, (h & 0xFFFF) | ((ulong)TestGuest.KCode << 16) | (1UL << 32) | (0x8EUL << 40) | ((h >> 16 & 0xFFFF) << 48));
        g.W64(TestGuest.IdtAddr + 14 * 16 + 8, 0);
        return g;
    }

    private static Outcome Finish(TestGuest g, VcpuExit exit, ulong probe = 0) => new(
        exit.Reason, g.Cpu.GetRegisters(), g.Cpu.InstructionsRetired,
        g.R64(FrameTop - 40), g.R64(FrameTop - 24), g.R64(FrameTop - 16), g.Cpu.GetSpecialRegisters().Cr2, probe == 0 ? 0 : g.R64(probe));

    /// <summary>Runs <paramref name="build"/> interpreted and translated; asserts both end alike and returns the translated outcome.</summary>
    private static Outcome RunBoth(Action<Assembler> build, ulong probe = 0, Action<TestGuest>? setup = null)
    {
        (Outcome, long TranslatedRuns) Once(bool translated)
        {
            using var g = NewGuest(translated);
            setup?.Invoke(g);
            g.Load(TestGuest.CodeAddr, build);
            var outcome = Finish(g, g.Run(), probe);
            return (outcome, g.Cpu.TranslatedBlockRuns);
        }
        var (interpreted, _) = Once(false);
        long failedBefore = BlockTranslator.BlocksFailed;
        var (translated, translatedRuns) = Once(true);
        // The translated run really ran translations (a block the translator gave up on would run interpreted).
        Assert.True(translatedRuns > 0, "no block ran translated");
        Assert.True(BlockTranslator.BlocksFailed == failedBefore, BlockTranslator.LastError);
        Assert.Equal(interpreted, translated);
        return translated;
    }

    private static void Prologue(Assembler a)
    {
        // Lazy flags from an ADD that carries and overflows, and registers with known values.
        a.mov(rax, 0x7FFF_FFFF_FFFF_FFFFL); a.mov(rbx, 0x8000_0000_0000_0001UL); a.add(rax, rbx);
        a.mov(rcx, 0x1111); a.mov(rdx, 0x2222); a.mov(rsi, 0x3333); a.mov(rdi, 0x4444);
        a.mov(r8, (long)Unmapped + 0x10);
    }

    public static IEnumerable<object[]> FaultingForms() =>
        new[] { "MovRM64", "MovRM32", "MovMR64", "MovMR32", "AluRM64", "AluJccRM64", "MovzxRM", "MovsxdRM", "CmovRM64", "Push", "Pop", "Call", "Ret",
                "CallR", "CallM", "JmpM", "Interpreted" }
            .Select(f => new object[] { f });

    /// <summary>How many bytes <paramref name="build"/> assembles to at the test guest's code address.</summary>
    private static ulong Size(Action<Assembler> build)
    {
        var a = new Assembler(64);
        build(a);
        var w = new MemoryCodeWriter();
        a.Assemble(w, TestGuest.CodeAddr);
        return (ulong)w.Bytes.Count;
    }

    private static void Faulting(Assembler a, string form)
    {
        switch (form)
        {
            case "MovRM64": a.mov(rdx, __qword_ptr[r8]); break;
            case "MovRM32": a.mov(edx, __dword_ptr[r8]); break;
            case "MovMR64": a.mov(__qword_ptr[r8], rdx); break;
            case "MovMR32": a.mov(__dword_ptr[r8], edx); break;
            case "AluRM64": a.sub(rdx, __qword_ptr[r8]); break;
            case "AluJccRM64": { var l = a.CreateLabel(); a.cmp(rdx, __qword_ptr[r8]); a.je(l); a.Label(ref l); break; }
            case "MovzxRM": a.movzx(edx, __word_ptr[r8]); break;
            case "MovsxdRM": a.movsxd(rdx, __dword_ptr[r8]); break;
            case "CmovRM64": a.cmovc(rdx, __qword_ptr[r8]); break;
            case "Push": a.mov(rsp, r8); a.push(rdx); break;
            case "Pop": a.mov(rsp, r8); a.pop(rdx); break;
            case "Call": { var l = a.CreateLabel(); a.mov(rsp, r8); a.call(l); a.Label(ref l); break; }
            case "Ret": a.mov(rsp, r8); a.ret(); break;
            case "CallR": a.mov(rsp, r8); a.call(rbx); break; // the return address's store faults
            case "CallM": a.call(__qword_ptr[r8]); break;      // the target's load faults
            case "JmpM": a.jmp(__qword_ptr[r8]); break;
            case "Interpreted": a.xadd(__qword_ptr[r8], rdx); break;
            default: throw new ArgumentException(form);
        }
    }

    [Theory]
    [MemberData(nameof(FaultingForms))]
    public void AFaultMidBlockIsPreciseInEveryFaultingTemplate(string form)
    {
        // One block: work before the fault, the faulting instruction, work after it that must not happen.
        ulong faultAt = TestGuest.CodeAddr + Size(a => { Prologue(a); a.inc(rsi); });
        if (form is "Push" or "Pop" or "Call" or "Ret" or "CallR") faultAt += 3; // after mov rsp, r8
        var o = RunBoth(a =>
        {
            Prologue(a);
            a.inc(rsi);
            Faulting(a, form);
            a.mov(rdi, 0xBAD); a.inc(rcx); a.hlt();
        });
        Assert.Equal(VcpuExitReason.Halt, o.Exit);
        Assert.Equal(PfHandler + 1, o.Regs.Rip);
        Assert.Equal(faultAt, o.FrameRip);
        Assert.Equal(0x2222UL, o.Regs.Rdx);
        Assert.Equal(0x4444UL, o.Regs.Rdi);
        Assert.Equal(0x1111UL, o.Regs.Rcx);
        Assert.Equal(0x3334UL, o.Regs.Rsi);
        // RFLAGS as the INC before the fault left them (CF from the ADD kept, OF clear, ZF clear).
        Assert.Equal(Flags.CF, o.FrameRflags & (Flags.CF | Flags.ZF | Flags.OF));
        Assert.Equal(Unmapped, o.Cr2 & ~0xFFFUL);
        if (form is "Push" or "Pop" or "Call" or "Ret" or "CallR") Assert.Equal(Unmapped + 0x10, o.FrameRsp); // RSP not moved by the faulting stack access
    }

    [Fact]
    public void IndirectCallsAndJumpsGoWhereTheirRegisterOrMemorySays()
    {
        // CALL r64, CALL [m64], JMP r64 and JMP [m64], each ending its block: RCX counts the calls (1 each) and the jumps
        // (0x10 each); the return addresses and RSP come back as the calls left them.
        const ulong Table = 0x60000;
        var o = RunBoth(a =>
        {
            var f = a.CreateLabel(); var g = a.CreateLabel(); var done = a.CreateLabel(); var back = a.CreateLabel();
            a.xor(ecx, ecx);
            a.mov(rsp, (long)TestGuest.StackTop);
            a.mov(rbx, (long)Table);
            a.lea(rax, __[f]); a.mov(__qword_ptr[rbx], rax);
            a.lea(rax, __[done]); a.mov(__qword_ptr[rbx + 8], rax);
            a.lea(rax, __[f]); a.call(rax);
            a.call(__qword_ptr[rbx]);
            a.Label(ref back); a.lea(r11, __[back]);
            a.mov(r9, rsp);
            a.lea(rax, __[g]); a.jmp(rax);
            a.Label(ref f); a.inc(rcx); a.mov(r10, __qword_ptr[rsp]); a.ret();
            a.Label(ref g); a.add(rcx, 0x10); a.jmp(__qword_ptr[rbx + 8]);
            a.Label(ref done); a.add(rcx, 0x10); a.hlt();
        });
        Assert.Equal(VcpuExitReason.Halt, o.Exit);
        Assert.Equal(0x22UL, o.Regs.Rcx);
        Assert.Equal(TestGuest.StackTop, o.Regs.R9);
        Assert.Equal(TestGuest.StackTop, o.Regs.Rsp);
        Assert.Equal(o.Regs.R11, o.Regs.R10); // the second call's return address: the instruction after it
    }

    [Fact]
    public void AFaultInALaterRoundOfASelfLoopCountsExactly()
    {
        // R8 walks towards unmapped memory 64 KiB a round: the 17th round's load faults.
        static void Start(Assembler a) { a.mov(r8, (long)Unmapped - 16 * 0x10000); a.xor(ecx, ecx); }
        ulong top = TestGuest.CodeAddr + Size(Start);
        var o = RunBoth(a =>
        {
            Start(a);
            var l = a.CreateLabel();
            a.Label(ref l);
            a.inc(rcx);
            a.add(rdx, __qword_ptr[r8]);
            a.add(r8, 0x10000);
            a.jmp(l);
        });
        Assert.Equal(VcpuExitReason.Halt, o.Exit);
        Assert.Equal(17UL, o.Regs.Rcx);
        Assert.Equal(Unmapped, o.Regs.R8);
        Assert.Equal(top + 3, o.FrameRip); // the ADD from memory, after INC RCX
        // 2 + 16 rounds of 4 + the INC of round 17 + the handler's HLT.
        Assert.Equal(2 + 16 * 4 + 1 + 1, o.Retired);
    }

    [Theory]
    [InlineData("templated")]
    [InlineData("interpreted")]
    [InlineData("repstos")]
    public void ASelfLoopThatPatchesItsOwnNextRoundSeesThePatch(string store)
    {
        // Round i runs "mov eax, IMM" with IMM = what round i-1 stored there (0 first): RDX = 0 + 1 + ... + 9.
        const ulong Top = TestGuest.CodeAddr + 0x40;
        const ulong Imm = Top + 1;
        var o = RunBoth(a => { a.xor(ecx, ecx); a.xor(edx, edx); a.mov(rbx, (long)Imm); a.jmp(Top); }, setup: g => g.Load(Top, a =>
        {
            var top = a.CreateLabel();
            a.Label(ref top);
            a.db(0xB8); a.dd(0);        // mov eax, imm32: the immediate is at Top + 1
            a.add(rdx, rax);
            a.inc(ecx);
            switch (store)
            {
                case "templated": a.mov(__dword_ptr[rbx], ecx); break;
                case "interpreted": a.mov(__byte_ptr[rbx], cl); break;
                default: a.mov(rdi, rbx); a.push(rcx); a.mov(eax, ecx); a.mov(ecx, 1); a.rep.stosb(); a.pop(rcx); break;
            }
            a.cmp(ecx, 10);
            a.jne(top);
            a.hlt();
        }));
        Assert.Equal(VcpuExitReason.Halt, o.Exit);
        Assert.Equal(45UL, o.Regs.Rdx);
        Assert.Equal(10UL, o.Regs.Rcx);
    }

    [Fact]
    public void AStoreIntoTheSecondPageOfAPageCrossingBlockIsSeen()
    {
        // "add rax, imm32" straddles a page boundary with its immediate in the second page; the loop rewrites that
        // immediate each round (round i adds i - 1).
        const ulong Page2 = TestGuest.CodeAddr + 0x1000;
        const ulong Add = Page2 - 2;       // 48 05 | imm32 (2 bytes before the boundary, 4 after)
        var o = RunBoth(a => { a.xor(eax, eax); a.xor(ecx, ecx); a.mov(rbx, (long)Page2); a.jmp(Add); }, setup: g =>
        {
            g.Load(Add, a =>
            {
                var top = a.CreateLabel();
                a.Label(ref top);
                a.db(0x48, 0x05); a.dd(0);  // add rax, imm32
                a.inc(ecx);
                a.mov(__dword_ptr[rbx], ecx);
                a.cmp(ecx, 10);
                a.jne(top);
                a.hlt();
            });
        });
        Assert.Equal(VcpuExitReason.Halt, o.Exit);
        Assert.Equal(45UL, o.Regs.Rax);
    }

    [Fact]
    public void AHostWriteIntoASelfLoopsCodeIsSeenPromptly()
    {
        foreach (bool translated in new[] { false, true })
        {
            using var g = NewGuest(translated);
            // An endless self-loop; the host overwrites its INC with HLT (F4 FF C1 = hlt, then garbage never reached).
            g.Load(TestGuest.CodeAddr, a => { var l = a.CreateLabel(); a.Label(ref l); a.inc(rcx); a.add(rdx, 3); a.jmp(l); });
            using var done = new ManualResetEventSlim();
            var t = new Thread(() =>
            {
                while (g.Cpu.InstructionsRetired < 100_000) Thread.Sleep(1);
                g.W8(TestGuest.CodeAddr, 0xF4);
                if (!done.Wait(5000)) g.Cpu.RequestExit(); // the write went unseen: stop the guest, the asserts fail
            });
            var sw = Stopwatch.StartNew();
            t.Start();
            var exit = g.Run();
            done.Set();
            t.Join();
            Assert.Equal(VcpuExitReason.Halt, exit.Reason);
            Assert.True(sw.ElapsedMilliseconds < 4000, $"translated={translated}: {sw.ElapsedMilliseconds} ms");
            var r = g.Cpu.GetRegisters();
            Assert.Equal(TestGuest.CodeAddr + 1, r.Rip);
            Assert.Equal(3 * r.Rcx, r.Rdx);
            Assert.Equal((long)(3 * r.Rcx) + 1, g.Cpu.InstructionsRetired);
        }
    }

    [Fact]
    public void RequestExitLeavesASelfLoopBetweenRoundsWithExactCounts()
    {
        foreach (bool translated in new[] { false, true })
        {
            using var g = NewGuest(translated);
            g.Load(TestGuest.CodeAddr, a => { a.xor(ecx, ecx); var l = a.CreateLabel(); a.Label(ref l); a.inc(rcx); a.add(rdx, 3); a.jmp(l); });
            var t = new Thread(() => { while (g.Cpu.InstructionsRetired < 300_000) Thread.Sleep(1); g.Cpu.RequestExit(); });
            var sw = Stopwatch.StartNew();
            t.Start();
            var exit = g.Run();
            t.Join();
            Assert.Equal(VcpuExitReason.Interrupted, exit.Reason);
            var r = g.Cpu.GetRegisters();
            Assert.Equal(TestGuest.CodeAddr + 2, r.Rip);
            Assert.Equal(3 * r.Rcx, r.Rdx);
            Assert.Equal(1 + 3 * (long)r.Rcx, g.Cpu.InstructionsRetired);
        }
    }

    [Theory]
    [InlineData("sti")]
    [InlineData("movss")]
    public void APendingInterruptWaitsOutTheShadowThenStopsASelfLoop(string shadow)
    {
        // The interrupt is pending from the start: it is taken at the same instruction both ways, and it stops the
        // self-loop that follows the shadowing instruction.
        Outcome Once(bool translated)
        {
            using var g = NewGuest(translated);
            var src = new FakeInterruptSource();
            g.Cpu.AttachInterruptSource(src);
            const ulong Handler = 0xC000;
            g.Load(Handler, a => { a.mov(r10, rax); a.mov(r11, rcx); a.hlt(); });
            g.W64(TestGuest.IdtAddr + 0x41 * 16, (Handler & 0xFFFF) | ((ulong)TestGuest.KCode << 16) | (0x8EUL << 40));
            g.W64(TestGuest.IdtAddr + 0x41 * 16 + 8, 0);
            g.Load(TestGuest.CodeAddr, a =>
            {
                a.mov(ecx, 100);
                var l1 = a.CreateLabel();
                a.Label(ref l1);
                a.inc(rax); a.dec(ecx); a.jnz(l1);     // a self-loop with IF = 0: no interrupt
                a.mov(ebx, 0);
                if (shadow == "sti") a.sti(); else { a.mov(edx, ss); a.sti(); a.mov(ss, edx); }
                var l2 = a.CreateLabel();
                a.Label(ref l2);
                a.inc(rcx); a.jmp(l2);                  // must be left for the interrupt
            });
            src.Raise(0x41);
            // The handler's HLT waits for another interrupt: end the run once it got there (or after 10 s).
            var t = new Thread(() =>
            {
                var sw = Stopwatch.StartNew();
                while (g.Cpu.GetRegisters().Rip != Handler + 7 && sw.ElapsedMilliseconds < 10_000) Thread.Sleep(1);
                g.Cpu.RequestExit();
            }) { IsBackground = true };
            t.Start();
            var exit = g.Run();
            t.Join();
            return Finish(g, exit);
        }
        var interpreted = Once(false);
        var translated = Once(true);
        Assert.Equal(VcpuExitReason.Interrupted, translated.Exit); // HLT with an interrupt source waits: the test ends it
        Assert.Equal(interpreted, translated);
        Assert.Equal(0xC000UL + 7, translated.Regs.Rip);
    }

    [Fact]
    public void SelfLoopsIn32BitCodeAndCr3WritesInALoopBody()
    {
        Outcome Once(bool translated)
        {
            using var g = new TestGuest(longMode: false, translated: translated);
            var s = g.Cpu.GetSpecialRegisters();
            s.Cr0 = 0x11;
            s.Cs = new Segment { Base = 0, Limit = 0xFFFFFFFF, Selector = TestGuest.KCode32, Type = 0xB, S = true, Present = true, Db = true, G = true };
            var d = new Segment { Base = 0, Limit = 0xFFFFFFFF, Selector = TestGuest.KData, Type = 0x3, S = true, Present = true, Db = true, G = true };
            s.Ds = s.Es = s.Ss = s.Fs = s.Gs = d;
            s.Fs.Base = 0x10000; // FS-relative accesses in 32-bit code add the base and wrap at 4 GiB
            s.Gs.Base = 0xFFFF_0000;
            s.Gdt = new DescriptorTable { Base = TestGuest.GdtAddr, Limit = 0x57 };
            g.Cpu.SetSpecialRegisters(s);
            g.Cpu.SetRegisters(new Registers { Rip = 0x100000, Rsp = 0x90000, Rflags = 2 });
            g.Load(0x100000, a =>
            {
                a.mov(ecx, 1000); a.xor(eax, eax); a.mov(ebx, 0x200000);
                var l = a.CreateLabel();
                a.Label(ref l);
                a.add(eax, ecx); a.mov(__dword_ptr[ebx], eax); a.mov(edx, __dword_ptr[ebx]); a.dec(ecx); a.jnz(l);
                a.mov(__dword_ptr.fs[0x100], eax);               // linear 0x10100
                a.mov(__dword_ptr.gs[0x30000], 0x5A5A);          // linear 0x20000 (wraps)
                a.mov(esi, __dword_ptr.gs[0x30000]);
                a.mov(ecx, 5);
                var m = a.CreateLabel();
                a.Label(ref m);
                a.mov(edi, cr3); a.mov(cr3, edi); a.inc(ebp); a.dec(ecx); a.jnz(m); // interpreted body: no self-loop
                a.hlt();
            }, 32);
            return Finish(g, g.Run(), 0x10100);
        }
        var interpreted = Once(false);
        var translated = Once(true);
        Assert.Equal(interpreted, translated);
        Assert.Equal(VcpuExitReason.Halt, translated.Exit);
        Assert.Equal(500500UL, translated.Regs.Rax);
        Assert.Equal(500500UL, translated.Probe);
        Assert.Equal(0x5A5AUL, translated.Regs.Rsi);
        Assert.Equal(5UL, translated.Regs.Rbp);
        Assert.Equal(3 + 5 * 1000 + 3 + 1 + 5 * 5 + 1, translated.Retired);
    }

    [Fact]
    public void OperandFormsMatchTheInterpreter()
    {
        const ulong Data = 0x300000;
        var o = RunBoth(a =>
        {
            var data = a.CreateLabel();
            a.mov(rax, -1L); a.mov(rbx, -1L); a.mov(rcx, -1L); a.mov(rdx, -1L);
            a.mov(eax, 0x1234_5678);                                      // MovRI32 zero-extends
            a.add(ebx, 2);                                                // AluRI32 zero-extends (RBX = 1)
            a.inc(ecx);                                                   // IncR32 (RCX = 0)
            a.mov(edx, edx);                                              // MovRR32 zero-extends
            a.mov(r8, (long)Data); a.mov(r9, 0xFFFF_FFF0);
            a.mov(__qword_ptr[r8], rax);
            a.mov(esi, __dword_ptr[r8]);                                  // MovRM32
            a.lea(rdi, __qword_ptr[r9d + 0x20]);                          // Lea64 with ASize 4: wraps to 0x10
            a.mov(r10, 0x7000_0000_0000_0010L);
            a.mov(r11d, unchecked((int)0xFFFF_FFF0)); a.mov(r12d, (int)Data + 0x10);
            a.mov(r13, __qword_ptr[r11d + r12d]);                         // 0x67: EA wraps to Data
            a.mov(__qword_ptr[data], r13);                                // RIP-relative store and load
            a.mov(r14, __qword_ptr[data]);
            a.mov(r15, 0x8000_0000_0000_0000UL); a.shl(r15, 1); a.setc(ah); a.seto(bh); a.movzx(ebp, ah);
            a.sar(r10, 63); a.cmovz(r9, r10); a.movsxd(r12, r11d);
            a.mov(__qword_ptr.gs[8], rax);                                // GS base below
            a.mov(rsp, 0x80000); a.push(rsp); a.pop(rsp);                 // PUSH RSP pushes the old value; POP RSP loads it
            a.hlt();
            a.Label(ref data);
            a.dd(0); a.dd(0);
        }, probe: Data + 0x1008, setup: g =>
        {
            var s = g.Cpu.GetSpecialRegisters();
            s.Gs.Base = Data + 0x1000;
            g.Cpu.SetSpecialRegisters(s);
        });
        Assert.Equal(VcpuExitReason.Halt, o.Exit);
        Assert.Equal(0x1234_0078UL, o.Regs.Rax & 0xFFFF_FFFF_FFFF_00FF);
        Assert.Equal(1UL, o.Regs.Rbx & 0xFFFF_FFFF_FFFF_00FF);
        Assert.Equal(0UL, o.Regs.Rcx);
        Assert.Equal(0xFFFF_FFFFUL, o.Regs.Rdx);
        Assert.Equal(0x1234_5678UL, o.Regs.Rsi);
        Assert.Equal(0x10UL, o.Regs.Rdi);
        Assert.Equal(0x1234_5678UL, o.Regs.R13);
        Assert.Equal(o.Regs.R13, o.Regs.R14);
        Assert.Equal(1UL, o.Regs.Rbp);
        Assert.Equal(0x80000UL, o.Regs.Rsp);
        Assert.Equal(o.Regs.Rax, o.Probe);
    }

    [Fact]
    public void RepStosOverTheRestOfItsOwnBlockEndsTheBlock()
    {
        var o = RunBoth(a =>
        {
            var after = a.CreateLabel();
            a.lea(rdi, __[after]); a.mov(ecx, 10); a.mov(al, 0x90);
            a.rep.stosb();                                   // 10 NOPs over the two MOVs below
            a.Label(ref after);
            a.mov(esi, 0x1111_1111); a.mov(edx, 0x2222_2222);
            a.hlt();
        });
        Assert.Equal(VcpuExitReason.Halt, o.Exit);
        Assert.Equal(0UL, o.Regs.Rsi);
        Assert.Equal(0UL, o.Regs.Rdx);
        Assert.Equal(4 + 10 + 1, o.Retired);
    }

    [Fact]
    public void RealMode16BitSelfLoopWithSegmentBasesAndAddressWrap()
    {
        Outcome Once(bool translated)
        {
            using var g = new TestGuest(longMode: false, translated: translated);
            var s = g.Cpu.GetSpecialRegisters();
            Segment Real(ushort sel, byte type) => new() { Base = (ulong)sel << 4, Limit = 0xFFFF, Selector = sel, Type = type, S = true, Present = true };
            s.Cs = Real(0x1000, 0xB);
            s.Ds = Real(0x2000, 0x3);
            s.Ss = Real(0x3000, 0x3);
            g.Cpu.SetSpecialRegisters(s);
            g.Cpu.SetRegisters(new Registers { Rip = 0x100, Rsp = 0x1000, Rflags = 2 });
            g.W32(0x20008, 0xCAFE_BABE);
            g.Load(0x10100, a =>
            {
                a.mov(ecx, 1000); a.xor(eax, eax); a.mov(bx, 0x10); a.mov(si, unchecked((short)0xFFF8));
                var l = a.CreateLabel();
                a.Label(ref l);
                a.add(eax, ecx);
                a.mov(__dword_ptr[bx], eax);                  // DS:0x10 = 0x20010
                a.mov(edx, __dword_ptr[bx + si]);             // BX + SI wraps to 0x0008: 0x20008
                a.dec(ecx);
                a.jnz(l);
                a.mov(__dword_ptr[bp + 4], eax);              // SS by default: 0x30004
                a.hlt();
            }, 16);
            var exit = g.Run();
            Assert.Equal(500500U, g.R32(0x20010));
            Assert.Equal(500500U, g.R32(0x30004));
            return Finish(g, exit);
        }
        var interpreted = Once(false);
        var translated = Once(true);
        Assert.Equal(interpreted, translated);
        Assert.Equal(VcpuExitReason.Halt, translated.Exit);
        Assert.Equal(500500UL, translated.Regs.Rax);
        Assert.Equal(0xCAFE_BABEUL, translated.Regs.Rdx);
        Assert.Equal(4 + 5 * 1000 + 2, translated.Retired);
    }

    [Fact]
    public void AnotherVcpusStoreIntoASelfLoopsCodeIsSeen()
    {
        foreach (bool translated in new[] { false, true })
        {
            using var g = NewGuest(translated);
            var cpu2 = g.Vm.CreateEmulatorVcpu(1);
            cpu2.Translation = g.Cpu.Translation;
            const ulong Code2 = 0x110000;
            // vCPU 1 spins a while, then turns vCPU 2's INC into HLT (cross-modifying code); vCPU 2 self-loops.
            g.Load(TestGuest.CodeAddr, a =>
            {
                var l = a.CreateLabel();
                a.mov(ecx, 200_000);
                a.Label(ref l);
                a.dec(ecx); a.jnz(l);
                a.mov(__byte_ptr[Code2], 0xF4);
                a.hlt();
            });
            g.Load(Code2, a => { var l = a.CreateLabel(); a.Label(ref l); a.inc(rcx); a.add(rdx, 3); a.jmp(l); });
            var sregs = g.Cpu.GetSpecialRegisters();
            VcpuExit e2 = default;
            var t = new Thread(() =>
            {
                cpu2.AttachToCurrentThread();
                cpu2.SetSpecialRegisters(sregs);
                cpu2.SetRegisters(new Registers { Rip = Code2, Rsp = TestGuest.StackTop - 0x1000, Rflags = 2 });
                e2 = cpu2.Run(new FakeIo());
            });
            using var done = new ManualResetEventSlim();
            var watchdog = new Thread(() => { if (!done.Wait(15_000)) cpu2.RequestExit(); });
            t.Start();
            watchdog.Start();
            Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
            t.Join();
            done.Set();
            watchdog.Join();
            Assert.Equal(VcpuExitReason.Halt, e2.Reason);
            var r = cpu2.GetRegisters();
            Assert.Equal(Code2 + 1, r.Rip);
            Assert.Equal(3 * r.Rcx, r.Rdx);
            Assert.Equal(3 * (long)r.Rcx + 1, cpu2.InstructionsRetired);
        }
    }

    [Fact]
    public void BackgroundTranslationOfBlocksMadeStaleBySelfModifyingCodeIsNeverRun()
    {
        // With a threshold of 2 the background translator is handed block after block that the loop then rewrites
        // (each round patches the immediate the next round loads): a stale translation, published late, would add
        // an old immediate. Round i adds i - 1, so RDX = N (N - 1) / 2 exactly; rounds also hammer a
        // never-patched hot loop so translations do get published while the patching goes on.
        const int N = 20_000;
        const ulong Top = TestGuest.CodeAddr + 0x40, Imm = Top + 1;
        using var g = NewGuest(translated: false);
        g.Cpu.Translation = new EmulatorTranslation(2, Background: true);
        g.Load(TestGuest.CodeAddr, a => { a.xor(ecx, ecx); a.xor(edx, edx); a.mov(rbx, (long)Imm); a.jmp(Top); });
        g.Load(Top, a =>
        {
            var top = a.CreateLabel();
            var spin = a.CreateLabel();
            a.Label(ref top);
            a.db(0xB8); a.dd(0);        // mov eax, imm32 (patched every round)
            a.add(rdx, rax);
            a.inc(ecx);
            a.mov(__dword_ptr[rbx], ecx);
            a.mov(esi, 20);
            a.Label(ref spin);
            a.dec(esi);
            a.jnz(spin);
            a.cmp(ecx, N);
            a.jne(top);
            a.hlt();
        });
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        Assert.Equal((ulong)N * (N - 1) / 2, g.Cpu.GetRegisters().Rdx);
        Assert.Equal(2 + 1 + N * (4 + 1 + 20 * 2 + 2) + 1 + 1, g.Cpu.InstructionsRetired);
    }
}
