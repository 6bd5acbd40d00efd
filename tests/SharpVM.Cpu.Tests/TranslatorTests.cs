using Iced.Intel;
using SharpVM.Hypervisor;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Cpu.Tests;

/// <summary>
/// The block translator (guest blocks compiled to host code through IL): the same guests as the
/// interpreter's tests give the same results with every block translated before it runs.
/// </summary>
[Collection(NativeCpuCollection.Name)]
public sealed class TranslatorTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TightLoopGivesTheInterpretersResult(bool translated)
    {
        using var g = new TestGuest(translated: translated);
        g.Load(TestGuest.CodeAddr, a =>
        {
            var top = a.CreateLabel();
            a.mov(rcx, 1000);
            a.xor(eax, eax);
            a.mov(rbx, 0x200000);
            a.Label(ref top);
            a.add(rax, rcx);
            a.xor(rdx, rax);
            a.mov(__qword_ptr[rbx], rdx);
            a.mov(rsi, __qword_ptr[rbx]);
            a.lea(rdi, __qword_ptr[rsi + rax * 2 + 8]);
            a.shl(rdi, 3);
            a.dec(rcx);
            a.jnz(top);
            a.hlt();
        });
        var exit = g.Run();
        Assert.Equal(VcpuExitReason.Halt, exit.Reason);
        var r = g.Cpu.GetRegisters();
        Assert.Equal(0UL, r.Rcx);
        Assert.Equal(500500UL, r.Rax);
        Assert.Equal(3 + 1000 * 8 + 1, g.Cpu.InstructionsRetired);
        if (translated)
        {
            // The loop block branches to itself: it goes round inside its translation, up to 64 times per entry.
            Assert.InRange(g.Cpu.TranslatedBlockRuns, 1000 / 64, 1000 / 64 + 4);
        }
        else Assert.Equal(0, g.Cpu.TranslatedBlockRuns);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ExceptionsInALoopAreDeliveredAndResumed(bool translated)
    {
        using var g = new TestGuest();
        g.Cpu.Translation = translated ? new EmulatorTranslation(64, true) : EmulatorTranslation.Off;
        const ulong handler = TestGuest.HandlerBase + 6 * 16;
        g.Load(handler, a => { a.add(__qword_ptr[rsp], 2); a.iretq(); });
        g.Load(TestGuest.CodeAddr, a =>
        {
            var top = a.CreateLabel();
            a.mov(rcx, 200000);
            a.Label(ref top);
            a.ud2();
            a.dec(rcx);
            a.jnz(top);
            a.hlt();
        });
        // A watchdog, so that a hang fails the test instead of stalling the run.
        using var done = new ManualResetEventSlim();
        var t = new Thread(() => { if (!done.Wait(20000)) g.Cpu.RequestExit(); }) { IsBackground = true };
        t.Start();
        var exit = g.Run();
        done.Set();
        t.Join();
        Assert.Equal(VcpuExitReason.Halt, exit.Reason);
        Assert.Equal(0UL, g.Cpu.GetRegisters().Rcx);
    }

    /// <summary>
    /// A self-looping block keeps the guest registers in locals: a page fault in its 11th round (the pointer walks off
    /// the identity-mapped first GiB) must see the ADD before it (written back before the load), and the handler's
    /// change of the pointer register must be what the loop uses after IRETQ (reloaded when the block is entered again).
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void APageFaultInsideASelfLoopingBlockSeesAndKeepsItsRegisters(bool translated)
    {
        using var g = new TestGuest(translated: translated);
        g.Memory.Write(new SharpVM.Memory.GuestAddress(0x200000), 7UL);
        // #PF: drop the error code, point RBX at mapped memory, retry the load.
        g.Load(TestGuest.HandlerBase + 14 * 16, a => { a.add(rsp, 8); a.mov(ebx, 0x200000); a.iretq(); });
        g.Load(TestGuest.CodeAddr, a =>
        {
            var top = a.CreateLabel();
            a.mov(ecx, 100); a.xor(eax, eax); a.xor(esi, esi);
            a.mov(rbx, 0x4000_0000 - 10 * 8); // ten rounds before the end of the identity-mapped first GiB
            a.Label(ref top);
            a.add(rax, rcx);
            a.mov(rdx, __qword_ptr[rbx]);
            a.add(rsi, rdx);
            a.lea(rdi, __qword_ptr[rax + rsi]);
            a.add(rbx, 8);
            a.dec(rcx);
            a.jnz(top);
            // Still the loop's block: an interpreted XCHG, then an ADD that must read what it left (reloaded).
            a.xchg(rax, rsi);
            a.add(rdi, rax);
            a.hlt();
        });
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        var r = g.Cpu.GetRegisters();
        Assert.Equal(7UL, r.Rax); // the first load after the fault, from 2 MiB
        Assert.Equal(5050UL, r.Rsi);
        Assert.Equal(5050UL + 7 + 7, r.Rdi);
        Assert.Equal(0x200000UL + 90 * 8, r.Rbx);
        Assert.Equal(0UL, r.Rcx);
        Assert.Equal(0x4000_0000UL, g.Cpu.GetSpecialRegisters().Cr2);
        Assert.Equal(1, g.Cpu.ExceptionsDelivered);
    }

    /// <summary>
    /// Flag producers whose flags a later producer replaces are translated without their flags (FlagsLiveness); the
    /// flags that do survive (into ADC, SETcc, CMOVcc, the block's end, a #PF handler's frame) must still be exact.
    /// </summary>
    [Fact]
    public void DeadFlagsAreSkippedButLiveOnesAreExact()
    {
        (Registers, long) Run(bool translated)
        {
            using var g = new TestGuest(translated: translated);
            g.Load(TestGuest.CodeAddr, a =>
            {
                var top = a.CreateLabel();
                a.mov(rax, 0x7FFF_FFFF_FFFF_FFF0L); a.mov(rbx, 0x35); a.mov(rcx, -3L); a.mov(rdx, 0x1234_5678_9ABCL);
                a.mov(rsi, 0x8000_0000_0000_0001UL); a.mov(r8, 40); a.xor(r15d, r15d);
                a.Label(ref top);
                a.add(rax, rbx);        // dead: IMUL replaces the flags
                a.imul(rcx, rdx);       // dead: SHL replaces them
                a.shl(rsi, 3);          // dead: CMP replaces them
                a.cmp(rax, rcx);        // live: CMOVB reads them
                a.cmovb(rdi, rdx);
                a.sub(rdx, rbx);        // dead: XOR replaces them
                a.xor(r9, rax);         // dead
                a.add(r10, rcx);        // live: ADC reads CF
                a.adc(r11, rbx);
                a.test(r9, r9);         // live: SETS reads SF
                a.sets(r12b);
                a.add(r15, r12);
                a.add(r13, rdx);        // live: the loop's DEC keeps CF, and CF reaches the block's end
                a.dec(r8);
                a.jnz(top);
                a.pushfq();
                a.pop(r14);
                a.hlt();
            });
            Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
            return (g.Cpu.GetRegisters(), g.Cpu.InstructionsRetired);
        }
        var interpreted = Run(false);
        var translated = Run(true);
        Assert.Equal(interpreted, translated);
    }

    /// <summary>
    /// Shifts by CL (every count from 130 down, so masked counts 0 and 1 too) and by immediates, ADC/SBB, NEG/NOT of
    /// registers and memory, INC/DEC of memory and BSWAP, translated to their own IL (shifts by an immediate and ADC/SBB
    /// leave lazy flag states): each result and the RFLAGS it leaves (read with PUSHFQ) match the interpreter's.
    /// </summary>
    [Fact]
    public void ShiftsCarryArithmeticUnaryOperationsAndByteSwapsGiveTheInterpretersFlags()
    {
        (Registers, long, ulong) Run(bool translated)
        {
            using var g = new TestGuest(translated: translated);
            g.Load(TestGuest.CodeAddr, a =>
            {
                var top = a.CreateLabel();
                a.mov(ecx, 130); a.mov(r8, unchecked((long)0x8000_0000_8000_0001UL)); a.mov(rbx, 0x200000);
                a.mov(__qword_ptr[rbx], r8);
                a.Label(ref top);
                void Fold(AssemblerRegister64 into) { a.pushfq(); a.pop(rdx); a.xor(into, rdx); a.add(into, rax); }
                a.mov(rax, r8); a.shr(rax, cl); Fold(r9);
                a.mov(eax, r8d); a.shr(eax, cl); Fold(r9);
                a.mov(eax, r8d); a.shl(eax, cl); Fold(r10);
                a.mov(rax, r8); a.shl(rax, cl); Fold(r10);
                a.mov(rax, r8); a.sar(rax, cl); Fold(r11);
                a.mov(eax, r8d); a.sar(eax, cl); Fold(r11);
                a.mov(rax, r8); a.shr(rax, 1); Fold(r9);   // by an immediate: the flags as a lazy shift state
                a.mov(eax, r8d); a.shr(eax, 13); Fold(r9);
                a.mov(eax, r8d); a.shl(eax, 1); Fold(r10);
                a.mov(rax, r8); a.shl(rax, 63); Fold(r10);
                a.mov(rax, r8); a.sar(rax, 1); Fold(r11);
                a.mov(eax, r8d); a.sar(eax, 31); Fold(r11);
                a.mov(rax, r8); a.add(rax, rcx); a.adc(rax, r8); Fold(r15); // ADC/SBB: a lazy state too
                a.mov(eax, r8d); a.sub(eax, ecx); a.sbb(eax, r8d); Fold(r15);
                a.stc(); a.mov(eax, r8d); a.sbb(eax, r8d); Fold(r15); // equal operands: the borrow in decides CF
                a.clc(); a.mov(rax, r8); a.sbb(rax, r8); Fold(r15);
                a.stc(); a.mov(rax, r8); a.mov(rdx, -1); a.adc(rax, rdx); Fold(r15); // b + carry wraps to 0: CF set
                a.mov(rax, r8); a.neg(rax); Fold(r12);
                a.mov(eax, r8d); a.neg(eax); Fold(r12);
                a.mov(rax, r8); a.not(eax); a.bswap(rax); Fold(r13);
                a.mov(rax, r8); a.bswap(eax); Fold(r13);
                a.neg(__qword_ptr[rbx]); a.mov(rax, __qword_ptr[rbx]); Fold(r14);
                a.inc(__dword_ptr[rbx]); a.mov(rax, __qword_ptr[rbx]); Fold(r14);
                a.dec(__word_ptr[rbx + 2]); a.mov(rax, __qword_ptr[rbx]); Fold(r14);
                a.not(__qword_ptr[rbx]); a.mov(rax, __qword_ptr[rbx]); Fold(r14);
                a.rol(r8, 13); a.add(r8, rcx); // other operands each round, with sign bits set and clear
                a.dec(ecx);
                a.jnz(top);
                a.hlt();
            });
            Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
            return (g.Cpu.GetRegisters(), g.Cpu.InstructionsRetired, g.Memory.Read<ulong>(new SharpVM.Memory.GuestAddress(0x200000)));
        }
        var interpreted = Run(false);
        var translated = Run(true);
        Assert.Equal(interpreted, translated);
    }

    /// <summary>
    /// A block runs on past conditional branches: a forward one to an instruction of the same block jumps inside the
    /// translation (the skipped instructions do not retire), one out of the block leaves it, one back to its start
    /// loops; results, retired counts and a #PF taken after a skip match the interpreter.
    /// </summary>
    [Fact]
    public void ConditionalBranchesInsideABlockMatchTheInterpreter()
    {
        (Registers, long, long) Run(bool translated)
        {
            using var g = new TestGuest(translated: translated);
            g.Load(TestGuest.CodeAddr, a =>
            {
                var top = a.CreateLabel(); var skip = a.CreateLabel(); var skip2 = a.CreateLabel(); var outside = a.CreateLabel();
                a.mov(rcx, 300); a.xor(eax, eax); a.xor(ebx, ebx); a.mov(rdi, 0x200000);
                a.Label(ref top);
                a.test(cl, 1);
                a.jz(skip);             // forward, inside the block: odd rounds add, even rounds skip
                a.add(rax, rcx);
                a.inc(rbx);
                a.Label(ref skip);
                a.cmp(rcx, 7);
                a.je(outside);          // leaves the block once, at rcx == 7
                a.test(cl, 2);
                a.jnz(skip2);
                a.mov(__qword_ptr[rdi + rcx * 8], rax);
                a.Label(ref skip2);
                a.dec(rcx);
                a.jnz(top);             // back to the block's start
                a.hlt();
                a.Label(ref outside);
                a.mov(rdx, __qword_ptr[0x4000_0000]); // unmapped: #PF, the handler stub halts
                a.hlt();
            });
            g.Run();
            return (g.Cpu.GetRegisters(), g.Cpu.InstructionsRetired, g.Cpu.GetSpecialRegisters().Cr2 == 0x4000_0000 ? 1 : 0);
        }
        var interpreted = Run(false);
        var translated = Run(true);
        Assert.Equal(1, interpreted.Item3);
        Assert.Equal(interpreted, translated);
    }

    /// <summary>
    /// A condition (or INC/DEC's kept CF) right after an ALU operation or a shift is computed from that instruction's
    /// operands, unless a branch inside the block lands on it: then the flags may come from another producer (here the
    /// CMP, whose B holds, where the ADD or SHL before the target leaves CF clear). Each variant reads them differently.
    /// </summary>
    [Theory]
    [InlineData("add", "jb")]
    [InlineData("add", "setb")]
    [InlineData("add", "cmovb")]
    [InlineData("add", "adc")]
    [InlineData("add", "inc+setb")]
    [InlineData("shl", "jb")]
    [InlineData("shl", "inc+setb")]
    [InlineData("shl", "dec+cmovb")]
    public void AConditionAtABranchTargetReadsTheFlagsOfThePathTaken(string producer, string consumer)
    {
        (Registers, long) Run(bool translated)
        {
            using var g = new TestGuest(translated: translated);
            g.Load(TestGuest.CodeAddr, a =>
            {
                var target = a.CreateLabel(); var taken = a.CreateLabel();
                a.mov(eax, 5); a.mov(ebx, 7); a.mov(ecx, 1); a.mov(edx, 1); a.mov(esi, 0x55); a.xor(r8d, r8d); a.xor(r9d, r9d);
                a.cmp(rax, rbx);        // 5 - 7: CF set
                a.jne(target);          // taken, forward inside the block: skips the producer
                if (producer == "add") a.add(rcx, rdx); // 1 + 1: CF clear
                else a.shl(rcx, 1);     // bit 63 of 1: CF clear
                a.Label(ref target);
                switch (consumer)
                {
                    case "jb": a.jb(taken); break;
                    case "setb": a.setb(r8b); break;
                    case "cmovb": a.cmovb(r8, rsi); break;
                    case "adc": a.adc(r8, 0); break;
                    case "inc+setb": a.inc(r10); a.setb(r8b); break; // INC keeps CF
                    default: a.dec(r10); a.cmovb(r8, rsi); break;
                }
                a.mov(r9d, 1);
                a.hlt();
                a.Label(ref taken);
                a.mov(r9d, 2);
                a.hlt();
            });
            var exit = g.Run();
            Assert.Equal(VcpuExitReason.Halt, exit.Reason);
            return (g.Cpu.GetRegisters(), g.Cpu.InstructionsRetired);
        }
        var interpreted = Run(false);
        var translated = Run(true);
        // The CMP's carry reached the consumer: JB taken, SETB/ADC 1, CMOVB moved.
        Assert.Equal(consumer == "jb" ? 2UL : 1UL, interpreted.Item1.R9);
        Assert.Equal(consumer switch { "jb" => 0UL, "cmovb" or "dec+cmovb" => 0x55UL, _ => 1UL }, interpreted.Item1.R8);
        Assert.Equal(interpreted, translated);
    }

    [Fact]
    public void FlagsLivenessFindsTheDeadProducers()
    {
        var a = new Assembler(64);
        var top = a.CreateLabel();
        a.Label(ref top);
        a.add(rax, rbx);             // 0 dead (IMUL replaces)
        a.imul(rcx, rdx);            // 1 dead (SHL replaces)
        a.shl(rsi, 3);               // 2 dead (CMP replaces)
        a.cmp(rax, rcx);             // 3 live (CMOVB reads)
        a.cmovb(rdi, rdx);           // 4
        a.sub(rdx, rbx);             // 5 dead (XOR replaces, past a dead ROL and a MOV)
        a.rol(r14, 3);               // 6 dead (XOR replaces)
        a.mov(r8, r9);               // 7
        a.xor(r9, rax);              // 8 live (the load after it may fault)
        a.mov(r10, __qword_ptr[rbx]); // 9
        a.add(r10, rcx);             // 10 live (ROR keeps all but CF and OF, and its own flags are live)
        a.ror(r12, 5);               // 11 live (ADC reads CF)
        a.adc(r11, rbx);             // 12 dead (ADD replaces)
        a.add(r13, rdx);             // 13 live (DEC keeps CF)
        a.dec(r8);                   // 14
        a.jnz(top);                  // 15
        var w = new MemoryCodeWriter();
        a.Assemble(w, 0x1000);
        var bytes = w.Bytes.ToArray();
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(bytes), 0x1000);
        var d = new List<DInsn>();
        while (decoder.IP < 0x1000 + (ulong)bytes.Length)
        {
            decoder.Decode(out var i);
            d.Add(EmulatorVcpu.Predecode(i, Decoding.OperandSize(i), Decoding.AddressSize(i, 64), 64));
        }
        bool[] dead = FlagsLiveness.DeadFlagOutputs([.. d], d.Count);
        int[] expectedDead = [0, 1, 2, 5, 6, 12];
        Assert.Equal(expectedDead, Enumerable.Range(0, d.Count).Where(k => dead[k]).ToArray());
    }
}
