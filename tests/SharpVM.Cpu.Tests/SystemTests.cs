using System.Diagnostics;
using Iced.Intel;
using SharpVM.Devices.Interrupts;
using SharpVM.Hypervisor;
using SharpVM.Memory;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Cpu.Tests;

internal sealed class FakeInterruptSource : IVcpuInterruptSource
{
    private volatile int _pending = -1;
    private volatile bool _nmi;
    public int Acknowledged;
    public bool HasPendingInterrupt => _pending >= 0;

    public int AcknowledgeInterrupt()
    {
        int v = _pending;
        _pending = -1;
        Acknowledged++;
        return v;
    }

    public bool TakePendingNmi()
    {
        bool n = _nmi;
        _nmi = false;
        return n;
    }

    public Action? WakeUp { get; set; }

    public void Raise(int vector)
    {
        _pending = vector;
        WakeUp?.Invoke();
    }

    /// <summary>Makes <paramref name="vector"/> pending without waking the CPU: only its periodic poll can see it.</summary>
    public void RaiseWithoutWakeUp(int vector) => _pending = vector;

    public void RaiseNmi()
    {
        _nmi = true;
        WakeUp?.Invoke();
    }
}

/// <summary>
/// Tiny guests run in the emulator alone: mode switches, paging, exceptions, privilege changes, I/O, HLT, RequestExit,
/// SMC. Every test runs twice: interpreted (<see cref="SystemTestsInterpreted"/>) and with every block translated to
/// host code before it runs (<see cref="SystemTestsTranslated"/>).
/// </summary>
public abstract class SystemTests(bool translated)
{
    private static Assembler A64() => new(64);

    /// <summary>Points IDT vector <paramref name="v"/> at <paramref name="handler"/> (64-bit interrupt gate, DPL3, optional IST).</summary>
    private static void SetGate(TestGuest g, int v, ulong handler, int ist = 0, bool present = true)
    {
        ulong lo = (handler & 0xFFFF) | ((ulong)TestGuest.KCode << 16) | ((ulong)ist << 32) | ((present ? 0xEEUL : 0x6EUL) << 40) | ((handler >> 16 & 0xFFFF) << 48);
        g.W64(TestGuest.IdtAddr + (ulong)v * 16, lo);
        g.W64(TestGuest.IdtAddr + (ulong)v * 16 + 8, handler >> 32);
    }

    [Fact]
    public void RealModeToProtectedToLongMode()
    {
        using var g = new TestGuest(longMode: false, translated: translated);
        // Real mode at 0000:8000.
        var s = g.Cpu.GetSpecialRegisters();
        s.Cs = new Segment { Base = 0, Limit = 0xFFFF, Selector = 0, Type = 0xB, S = true, Present = true };
        g.Cpu.SetSpecialRegisters(s);
        g.Cpu.SetRegisters(new Registers { Rip = 0x8000, Rsp = 0x7000, Rflags = 2 });
        // GDTR image at 0x7800.
        g.W16(0x7800, 0x57);
        g.W32(0x7802, (uint)TestGuest.GdtAddr);
        g.Load(0x8000, a =>
        {
            a.cli();
            a.xor(ax, ax);
            a.mov(ds, ax);
            a.lgdt(__[0x7800]);
            a.mov(eax, cr0);
            a.or(al, 1);
            a.mov(cr0, eax);
            a.db(0x66, 0xEA); a.dd(0x8100); a.dw(TestGuest.KCode32); // jmp dword 0x18:0x8100
        }, 16);
        g.Load(0x8100, a =>
        {
            a.mov(ax, TestGuest.KData);
            a.mov(ds, ax); a.mov(es, ax); a.mov(ss, ax);
            a.mov(esp, 0x7000);
            a.mov(eax, cr4); a.or(eax, 0x20); a.mov(cr4, eax);
            a.mov(eax, (uint)TestGuest.Pml4); a.mov(cr3, eax);
            a.mov(ecx, 0xC0000080); a.rdmsr(); a.or(eax, 0x100); a.wrmsr();
            a.mov(eax, cr0); a.or(eax, 0x80000000); a.mov(cr0, eax);
            a.db(0xEA); a.dd(0x8200); a.dw(TestGuest.KCode); // jmp 0x08:0x8200
        }, 32);
        g.Load(0x8200, a =>
        {
            a.mov(rax, 0x1122334455667788);
            a.mov(dx, 0xE9);
            a.mov(al, (byte)'L');
            a.@out(dx, al);
            a.mov(rax, 0x1122334455667788);
            a.hlt();
        });
        var exit = g.Run();
        Assert.Equal(VcpuExitReason.Halt, exit.Reason);
        var r = g.Cpu.GetRegisters();
        var sr = g.Cpu.GetSpecialRegisters();
        Assert.Equal(0x1122334455667788UL, r.Rax);
        Assert.Equal(TestGuest.KCode, sr.Cs.Selector);
        Assert.True(sr.Cs.L);
        Assert.NotEqual(0UL, sr.Efer & 0x400); // LMA
        Assert.Contains(g.Io.PioWrites, w => w.Port == 0xE9 && w.Value == 'L');
    }

    [Fact]
    public void RealModeSoftwareInterruptUsesTheIvt()
    {
        using var g = new TestGuest(longMode: false, translated: translated);
        var s = g.Cpu.GetSpecialRegisters();
        s.Cs = new Segment { Base = 0, Limit = 0xFFFF, Selector = 0, Type = 0xB, S = true, Present = true };
        s.Idt = new DescriptorTable { Base = 0, Limit = 0x3FF };
        g.Cpu.SetSpecialRegisters(s);
        g.Cpu.SetRegisters(new Registers { Rip = 0x8000, Rsp = 0x7000, Rflags = 0x202 });
        g.W32(0x10 * 4, 0x0000_9000); // INT 10h -> 0000:9000
        g.Load(0x8000, a => { a.mov(bx, 5); a.@int(0x10); a.add(bx, ax); a.hlt(); }, 16);
        g.Load(0x9000, a => { a.mov(ax, 37); a.iret(); }, 16);
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        Assert.Equal(42UL, g.Cpu.GetRegisters().Rbx & 0xFFFF);
        Assert.Equal(0x7000UL, g.Cpu.GetRegisters().Rsp & 0xFFFF);
    }

    [Fact]
    public void PageFaultsReportErrorCodeAndCr2ToTheGuestHandler()
    {
        using var g = new TestGuest(translated: translated);
        // Map 0x4000_0000.. with a 4 KiB page table: page 0 not present, page 1 read-only, page 2 supervisor-only, page 3 NX.
        const ulong Pd1 = 0x20000, Pt = 0x21000;
        g.W64(TestGuest.Pdpt + 8, Pd1 | 7);
        g.W64(Pd1, Pt | 7);
        g.W64(Pt + 0 * 8, 0);
        g.W64(Pt + 1 * 8, 0x600000 | 0x5);                   // present, user, read-only
        g.W64(Pt + 2 * 8, 0x601000 | 0x3);                   // present, writable, supervisor
        g.W64(Pt + 3 * 8, 0x602000 | 0x7 | (1UL << 63));     // NX
        g.W8(0x602000, 0xC3);
        // #PF handler: record CR2 and the error code, then HLT.
        g.Load(0xA000, a => { a.mov(rax, cr2); a.mov(rbx, __qword_ptr[rsp]); a.hlt(); });
        SetGate(g, 14, 0xA000);

        (ulong cr2, ulong err) Fault(Action<Assembler> body)
        {
            g.EnterLongMode();
            g.Load(TestGuest.CodeAddr, a => { body(a); a.mov(rax, 0xBAD); a.hlt(); });
            Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
            var r = g.Cpu.GetRegisters();
            Assert.Equal(0xA008UL, r.Rip); // just after the handler's hlt
            Assert.Equal(g.Cpu.GetSpecialRegisters().Cr2, r.Rax);
            return (r.Rax, r.Rbx);
        }
        Assert.Equal((0x4000_0010UL, 0UL), Fault(a => { a.mov(rcx, 0x4000_0010UL); a.mov(rdx, __qword_ptr[rcx]); }));
        Assert.Equal((0x4000_1008UL, 3UL), Fault(a => { a.mov(rcx, 0x4000_1008UL); a.mov(__qword_ptr[rcx], rdx); }));
        Assert.Equal((0x4000_3000UL, 0x11UL), Fault(a => { a.mov(rcx, 0x4000_3000UL); a.call(rcx); }));
        // A/D bits: the read-only page was read by the walk above? Read it now and check Accessed.
        g.EnterLongMode();
        g.Load(TestGuest.CodeAddr, a => { a.mov(rcx, 0x4000_2000UL); a.mov(__qword_ptr[rcx], rcx); a.hlt(); });
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        Assert.Equal(0x60UL, g.R64(Pt + 2 * 8) & 0x60); // accessed + dirty
        Assert.Equal(0x4000_2000UL, g.R64(0x601000));
        Assert.Equal(0x601000UL, g.Cpu.Translate(0x4000_2000UL));
        Assert.Null(g.Cpu.Translate(0x4000_0000UL));
    }

    [Fact]
    public void PageFaultHandlerCanMapThePageAndResume()
    {
        using var g = new TestGuest(translated: translated);
        const ulong Pd1 = 0x20000, Pt = 0x21000;
        g.W64(TestGuest.Pdpt + 8, Pd1 | 7);
        g.W64(Pd1, Pt | 7);
        g.W64(0x700000, 0x5555);
        // Handler: map the faulting page to 0x700000, pop the error code, iretq.
        g.Load(0xA000, a =>
        {
            a.inc(r15);
            a.mov(rax, (ulong)Pt);
            a.mov(__qword_ptr[rax], 0x700000 | 3);
            a.add(rsp, 8);
            a.iretq();
        });
        SetGate(g, 14, 0xA000);
        g.Load(TestGuest.CodeAddr, a => { a.mov(rcx, 0x4000_0000UL); a.mov(rdx, __qword_ptr[rcx]); a.hlt(); });
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        var r = g.Cpu.GetRegisters();
        Assert.Equal(0x5555UL, r.Rdx);
        Assert.Equal(1UL, r.R15);
        Assert.Equal(TestGuest.StackTop, r.Rsp);
    }

    [Fact]
    public void GeneralProtectionUndefinedOpcodeAndDivideErrors()
    {
        using var g = new TestGuest(translated: translated);
        void Expect(int vector, ulong? err, Action<Assembler> body)
        {
            g.EnterLongMode();
            g.Load(TestGuest.CodeAddr, a => { body(a); a.hlt(); });
            Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
            Assert.Equal(vector, g.Vector);
            var r = g.Cpu.GetRegisters();
            if (err is ulong e) Assert.Equal(e, g.R64(r.Rsp));
            ulong frameRip = g.R64(r.Rsp + (err is null ? 0UL : 8UL));
            Assert.Equal(TestGuest.CodeAddr, frameRip & ~0xFFUL);
        }
        Expect(13, 0x98, a => { a.mov(ax, 0x98); a.mov(ds, ax); });                  // selector beyond the GDT limit
        Expect(13, 0, a => { a.mov(rax, 0x8000_0000_0000_0000UL); a.mov(rax, __qword_ptr[rax]); }); // non-canonical
        Expect(13, 0, a => { a.mov(ecx, 0x12345678); a.rdmsr(); });                 // unknown MSR
        Expect(6, null, a => a.ud2());
        Expect(0, null, a => { a.xor(ecx, ecx); a.div(ecx); });
        Expect(3, null, a => a.int3());
    }

    [Fact]
    public void FaultWhileDeliveringBecomesDoubleFaultThenTripleFault()
    {
        using var g = new TestGuest(translated: translated);
        SetGate(g, 14, 0xA000, present: false);
        g.Load(TestGuest.CodeAddr, a => { a.mov(rcx, 0x5000_0000UL); a.mov(rax, __qword_ptr[rcx]); a.hlt(); });
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        Assert.Equal(8, g.Vector);
        Assert.Equal(0UL, g.R64(g.Cpu.GetRegisters().Rsp)); // #DF error code is 0
        // Now with an unusable IDT: triple fault -> Shutdown.
        g.EnterLongMode();
        var s = g.Cpu.GetSpecialRegisters();
        s.Idt.Limit = 0;
        g.Cpu.SetSpecialRegisters(s);
        g.Load(TestGuest.CodeAddr, a => a.ud2());
        Assert.Equal(VcpuExitReason.Shutdown, g.Run().Reason);
    }

    [Fact]
    public void UserModeThroughIretqThenSyscallSysretAndPrivilegeFault()
    {
        using var g = new TestGuest(translated: translated);
        const ulong UserCode = 0x200000, UserStack = 0x240000, SyscallEntry = 0xB000;
        g.Cpu.SetMsr(0xC0000081, ((ulong)0x20 << 48) | ((ulong)TestGuest.KCode << 32)); // STAR
        g.Cpu.SetMsr(0xC0000082, SyscallEntry);                                        // LSTAR
        g.Cpu.SetMsr(0xC0000084, 0x200);                                               // SFMASK: IF
        g.Cpu.SetMsr(0xC0000102, 0x300000);                                            // KERNEL_GS_BASE
        g.W64(0x300000, 0x77);
        // Kernel: build an IRET frame to user mode.
        g.Load(TestGuest.CodeAddr, a =>
        {
            a.push((int)(TestGuest.UData | 3));
            a.push((int)UserStack);
            a.push(0x202);
            a.push((int)(TestGuest.UCode | 3));
            a.push((int)UserCode);
            a.iretq();
        });
        // Syscall entry: swapgs, read gs:[0], return rax+1 to user.
        g.Load(SyscallEntry, a =>
        {
            a.swapgs();
            a.db(0x65, 0x4C, 0x8B, 0x24, 0x25, 0, 0, 0, 0); // mov r12, gs:[0]
            a.swapgs();
            a.mov(r13, r11);
            a.inc(rax);
            a.sysretq();
        });
        g.Load(UserCode, a =>
        {
            a.mov(rax, 41);
            a.syscall();
            a.mov(rbx, rax);
            a.mov(r14, 0x1234);
            a.hlt(); // #GP at CPL3
        });
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        Assert.Equal(13, g.Vector);
        var r = g.Cpu.GetRegisters();
        Assert.Equal(42UL, r.Rbx);
        Assert.Equal(0x77UL, r.R12);
        Assert.Equal(0x202UL, r.R13 & 0x202);
        Assert.Equal(0x1234UL, r.R14);
        // The #GP frame is on the TSS RSP0 stack and shows the user CS/SS.
        Assert.Equal(TestGuest.Rsp0 - 48, r.Rsp);
        Assert.Equal((ulong)(TestGuest.UCode | 3), g.R64(r.Rsp + 16));
        Assert.Equal(UserStack, g.R64(r.Rsp + 32));
        Assert.Equal((ulong)(TestGuest.UData | 3), g.R64(r.Rsp + 40));
        Assert.Equal(0UL, g.Cpu.GetSpecialRegisters().Cs.Selector & 3UL);
    }

    [Fact]
    public void UserModeCannotTouchSupervisorPages()
    {
        using var g = new TestGuest(translated: translated);
        const ulong UserCode = 0x200000;
        // Make the 2 MiB page at 0x400000 supervisor-only.
        g.W64(TestGuest.Pd + 2 * 8, 0x400000 | 0x83);
        g.Load(0xA000, a => { a.mov(rax, cr2); a.mov(rbx, __qword_ptr[rsp]); a.hlt(); });
        SetGate(g, 14, 0xA000);
        g.Load(TestGuest.CodeAddr, a =>
        {
            a.push((int)(TestGuest.UData | 3)); a.push(0x240000); a.push(0x2);
            a.push((int)(TestGuest.UCode | 3)); a.push((int)UserCode); a.iretq();
        });
        g.Load(UserCode, a => { a.mov(rcx, 0x400010); a.mov(__dword_ptr[rcx], ecx); a.hlt(); });
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        var r = g.Cpu.GetRegisters();
        Assert.Equal(0x400010UL, r.Rax);
        Assert.Equal(7UL, r.Rbx); // present | write | user
    }

    [Fact]
    public void PortAndMmioAccessesGoToTheIoHandler()
    {
        using var g = new TestGuest(translated: translated);
        g.W64(TestGuest.Pdpt + 3 * 8, 0xC0000000UL | 0x83); // 1 GiB page over the MMIO hole
        g.Io.MmioValues[0xC000_1000] = 0xAABBCCDD;
        g.W32(0x5000_0, 0x64636261);
        g.Load(TestGuest.CodeAddr, a =>
        {
            a.mov(al, 0x5A); a.@out(0x80, al);
            a.mov(dx, 0x3F8); a.mov(ax, 0x1234); a.@out(dx, ax);
            a.@in(eax, 0x60); a.mov(r8, rax);
            a.mov(rcx, 0xC000_1000UL);
            a.mov(r9d, __dword_ptr[rcx]);
            a.mov(__dword_ptr[rcx + 8], r9d);
            a.mov(rsi, 0x50000); a.mov(ecx, 4); a.mov(dx, 0xE9); a.rep.outsb();
            a.hlt();
        });
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        var r = g.Cpu.GetRegisters();
        Assert.Equal(0x12345678UL, r.R8);
        Assert.Equal(0xAABBCCDDUL, r.R9);
        Assert.Contains((0xC000_1008UL, 0xAABBCCDDUL, 4), g.Io.MmioWrites);
        Assert.Contains(((ushort)0x80, 0x5Au, 1), g.Io.PioWrites);
        Assert.Contains(((ushort)0x3F8, 0x1234u, 2), g.Io.PioWrites);
        Assert.Equal("abcd", new string(g.Io.PioWrites.Where(w => w.Port == 0xE9).Select(w => (char)w.Value).ToArray()));
    }

    [Fact]
    public void HaltExitsWithoutInterruptSourceAndWaitsForInterruptsWithOne()
    {
        using var g = new TestGuest(translated: translated);
        g.Load(TestGuest.CodeAddr, a => { a.hlt(); a.mov(eax, 1); a.hlt(); });
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        Assert.Equal(TestGuest.CodeAddr + 1, g.Cpu.GetRegisters().Rip);

        // With an interrupt source: HLT sleeps until vector 0x40 arrives.
        var src = new FakeInterruptSource();
        g.Cpu.AttachInterruptSource(src);
        g.EnterLongMode();
        g.Load(0xC000, a => { a.mov(r10, 0x40); a.iretq(); });
        SetGate(g, 0x40, 0xC000);
        g.Load(TestGuest.CodeAddr, a => { a.sti(); a.hlt(); a.mov(r11, 7); a.cli(); a.hlt(); a.jmp(TestGuest.CodeAddr + 100); });
        var t = new Thread(() => { Thread.Sleep(100); src.Raise(0x40); Thread.Sleep(300); g.Cpu.RequestExit(); });
        t.Start();
        var exit = g.Run();
        t.Join();
        Assert.Equal(VcpuExitReason.Interrupted, exit.Reason);
        var r = g.Cpu.GetRegisters();
        Assert.Equal(0x40UL, r.R10);
        Assert.Equal(7UL, r.R11);
        Assert.Equal(1, src.Acknowledged);
    }

    [Fact]
    public void ExternalInterruptIsDeliveredWhileSpinning()
    {
        using var g = new TestGuest(translated: translated);
        var src = new FakeInterruptSource();
        g.Cpu.AttachInterruptSource(src);
        g.Load(0xC000, a => { a.mov(r10, 0x41); a.add(rsp, 40); a.hlt(); });
        SetGate(g, 0x41, 0xC000);
        g.Load(TestGuest.CodeAddr, a => { var l = a.CreateLabel(); a.sti(); a.Label(ref l); a.inc(rax); a.jmp(l); });
        // Raise only once the guest spins (JIT and a loaded machine can delay its start past a fixed sleep).
        var t = new Thread(() => { while (g.Cpu.InstructionsRetired < 10_000) Thread.Sleep(5); src.Raise(0x41); Thread.Sleep(300); g.Cpu.RequestExit(); });
        t.Start();
        var exit = g.Run();
        t.Join();
        Assert.Equal(0x41UL, g.Cpu.GetRegisters().R10);
        Assert.True(exit.Reason is VcpuExitReason.Interrupted or VcpuExitReason.Halt);
    }

    [Fact]
    public void InterruptPendingWithoutAWakeUpIsDeliveredByThePeriodicPoll()
    {
        // The vCPU runs a few hundred blocks between looks at its interrupt source unless a wake-up asks it to look
        // sooner; an interrupt that became deliverable without one must still arrive.
        using var g = new TestGuest(translated: translated);
        var src = new FakeInterruptSource();
        g.Cpu.AttachInterruptSource(src);
        g.Load(0xC000, a => { a.mov(r10, 0x42); a.add(rsp, 40); a.hlt(); });
        SetGate(g, 0x42, 0xC000);
        g.Load(TestGuest.CodeAddr, a => { var l = a.CreateLabel(); a.sti(); a.Label(ref l); a.inc(rax); a.jmp(l); });
        var t = new Thread(() => { while (g.Cpu.InstructionsRetired < 10_000) Thread.Sleep(5); src.RaiseWithoutWakeUp(0x42); Thread.Sleep(300); g.Cpu.RequestExit(); });
        t.Start();
        var exit = g.Run();
        t.Join();
        Assert.Equal(0x42UL, g.Cpu.GetRegisters().R10);
        Assert.Equal(1, src.Acknowledged);
        Assert.True(exit.Reason is VcpuExitReason.Interrupted or VcpuExitReason.Halt);
    }

    [Fact]
    public void RequestExitStopsASpinningGuestPromptly()
    {
        using var g = new TestGuest(translated: translated);
        g.Load(TestGuest.CodeAddr, a => { var l = a.CreateLabel(); a.Label(ref l); a.inc(rax); a.jmp(l); });
        for (int round = 0; round < 2; round++)
        {
            var sw = Stopwatch.StartNew();
            var t = new Thread(() => { Thread.Sleep(100); g.Cpu.RequestExit(); });
            t.Start();
            var exit = g.Run();
            t.Join();
            Assert.Equal(VcpuExitReason.Interrupted, exit.Reason);
            Assert.True(sw.ElapsedMilliseconds < 2000, $"took {sw.ElapsedMilliseconds} ms");
        }
        Assert.True(g.Cpu.GetRegisters().Rax > 1000);
        // A long REP string operation is interruptible too.
        g.EnterLongMode();
        g.Load(TestGuest.CodeAddr, a => { a.mov(rdi, 0x1000000); a.mov(rcx, 1L << 40); a.xor(eax, eax); a.rep.stosb(); a.hlt(); });
        var t2 = new Thread(() => { Thread.Sleep(100); g.Cpu.RequestExit(); });
        t2.Start();
        // RDI walks past RAM and faults long before 2^40 bytes: either way Run must return.
        var e2 = g.Run();
        t2.Join();
        Assert.True(e2.Reason is VcpuExitReason.Interrupted or VcpuExitReason.Halt);
    }

    [Fact]
    public void SelfModifyingCodeIsSeen()
    {
        using var g = new TestGuest(translated: translated);
        // Patch an instruction later in the same block, and re-run a block after patching it.
        const ulong Loop = TestGuest.CodeAddr + 0x100, Imm = Loop + 9;
        g.Load(TestGuest.CodeAddr, a => { a.xor(ebx, ebx); a.mov(r8d, 2); a.jmp(Loop); });
        int len = g.Load(Loop, a =>
        {
            a.mov(__byte_ptr[(long)Imm], 0x22); // 8 bytes: patch the immediate of the next instruction (same block)
            a.mov(eax, 0x11);                  // at Loop + 8, immediate at Loop + 9
            a.add(ebx, eax);
            a.mov(__byte_ptr[(long)Imm], 0x33); // patch again: the block is stale for the next iteration
            a.dec(r8d);
            a.jnz(Loop);
            a.hlt();
        });
        Assert.Equal(0xB8, g.R8(Loop + 8));
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        Assert.Equal(0x44UL, g.Cpu.GetRegisters().Rbx); // 0x22 twice: every execution saw the patch
        // Writes by the VMM (DMA) between runs are seen too.
        g.EnterLongMode();
        g.Load(TestGuest.CodeAddr, a => { a.mov(eax, 1); a.hlt(); });
        g.Run();
        g.EnterLongMode();
        g.Load(TestGuest.CodeAddr, a => { a.mov(eax, 2); a.hlt(); });
        g.Run();
        Assert.Equal(2UL, g.Cpu.GetRegisters().Rax);
    }

    [Fact]
    public void CpuidAdvertisesHypervisorAndTscFrequency()
    {
        using var g = new TestGuest(translated: translated);
        g.Load(TestGuest.CodeAddr, a =>
        {
            a.mov(eax, 0x40000000); a.cpuid(); a.mov(r8d, ebx); a.mov(r9d, ecx); a.mov(r10d, edx);
            a.mov(eax, 0x40000010); a.cpuid(); a.mov(r11d, eax);
            a.mov(eax, 1); a.cpuid(); a.mov(r12d, edx); a.mov(r13d, ecx);
            a.rdtsc(); a.shl(rdx, 32); a.or(rax, rdx); a.mov(r14, rax);
            a.hlt();
        });
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        var r = g.Cpu.GetRegisters();
        string sig = string.Concat(new[] { r.R8, r.R9, r.R10 }.Select(v => System.Text.Encoding.ASCII.GetString(BitConverter.GetBytes((uint)v))));
        Assert.Equal("SharpVMSharp", sig);
        Assert.Equal((ulong)(EmulatorCpuid.TscHz / 1000), r.R11);
        Assert.NotEqual(0UL, r.R12 & (1 << 26)); // SSE2
        Assert.NotEqual(0UL, r.R13 & (1UL << 31)); // hypervisor
        Assert.NotEqual(0UL, r.R14);
    }

    [Fact]
    public void SpeculationControlsAreAdvertisedAndTheirMsrsWork()
    {
        // What Linux reads to choose enhanced IBRS and BHI_DIS_S over retpolines, return thunks and the BHB-clearing loop.
        using var g = new TestGuest(translated: translated);
        g.Load(TestGuest.CodeAddr, a =>
        {
            a.mov(eax, 7); a.xor(ecx, ecx); a.cpuid(); a.mov(r8d, eax); a.mov(r9d, edx);
            a.mov(eax, 7); a.mov(ecx, 2); a.cpuid(); a.mov(r10d, edx);
            a.mov(ecx, 0x10A); a.rdmsr(); a.shl(rdx, 32); a.or(rax, rdx); a.mov(r11, rax);
            a.mov(ecx, 0x48); a.mov(eax, 0x401); a.xor(edx, edx); a.wrmsr();   // SPEC_CTRL = IBRS | BHI_DIS_S
            a.mov(ecx, 0x49); a.mov(eax, 1); a.wrmsr();                        // PRED_CMD: IBPB
            a.mov(ecx, 0x48); a.rdmsr(); a.mov(r12d, eax);
            a.hlt();
        });
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        var r = g.Cpu.GetRegisters();
        Assert.Equal(2UL, r.R8);                          // leaf 7's last subleaf
        Assert.NotEqual(0UL, r.R9 & (1UL << 26));         // IBRS/IBPB
        Assert.NotEqual(0UL, r.R9 & (1UL << 29));         // IA32_ARCH_CAPABILITIES
        Assert.NotEqual(0UL, r.R10 & (1UL << 4));         // BHI_CTRL
        Assert.NotEqual(0UL, r.R11 & (1UL << 1));         // IBRS_ALL (enhanced IBRS)
        Assert.NotEqual(0UL, r.R11 & (1UL << 62));        // ITS_NO
        Assert.Equal(0UL, r.R11 & (1UL << 2));            // not RSBA
        Assert.Equal(0x401UL, r.R12);

        // A SPEC_CTRL bit this CPU lacks (STIBP) and a PRED_CMD bit past IBPB are #GP, as on hardware without them.
        foreach (var (msr, value) in new[] { (0x48u, 2u), (0x49u, 2u) })
        {
            g.EnterLongMode();
            g.Load(TestGuest.CodeAddr, a => { a.mov(ecx, msr); a.mov(eax, value); a.xor(edx, edx); a.wrmsr(); a.hlt(); });
            Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
            Assert.Equal(13, g.Vector);
        }
    }

    [Fact]
    public void FxsaveFxrstorRoundTripAndDirtyLog()
    {
        using var g = new TestGuest(translated: translated);
        g.Vm.EnableDirtyLogging();
        g.Vm.TakeDirtyLog();
        g.Load(TestGuest.CodeAddr, a =>
        {
            a.mov(rax, 0x0123456789ABCDEFUL); a.movq(xmm3, rax);
            a.mov(rcx, 0x800000UL);
            a.fxsave(__[rcx]);
            a.pxor(xmm3, xmm3);
            a.fxrstor(__[rcx]);
            a.movq(rbx, xmm3);
            a.hlt();
        });
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        Assert.Equal(0x0123456789ABCDEFUL, g.Cpu.GetRegisters().Rbx);
        Assert.Equal(0x1F80u, g.R32(0x800000 + 24));
        var log = g.Vm.TakeDirtyLog();
        Assert.True(log[0].IsDirty(0x800));
    }

    [Fact]
    public void InterruptLinesRecordUntilConnected()
    {
        using var g = new TestGuest(translated: translated);
        var line = g.Vm.GetInterruptLine(4);
        line.SetLevel(true);
        var seen = new List<(int, bool)>();
        g.Vm.ConnectInterruptLines(gsi => new RecordingLine(gsi, seen));
        line.SetLevel(false);
        Assert.Equal([(4, true), (4, false)], seen);
    }

    private sealed class RecordingLine(int gsi, List<(int, bool)> log) : SharpVM.Devices.IInterruptLine
    {
        public void SetLevel(bool asserted) => log.Add((gsi, asserted));
    }

    [Fact]
    public void UnimplementedInstructionIsAnInternalErrorWithDetail()
    {
        using var g = new TestGuest(translated: translated);
        // HADDPS (SSE3) is not implemented (and not advertised).
        g.Load(TestGuest.CodeAddr, a => { a.nop(); a.haddps(xmm0, xmm1); });
        var exit = g.Run();
        Assert.Equal(VcpuExitReason.InternalError, exit.Reason);
        Assert.Contains("RIP 0x100001", exit.Detail);
        Assert.Contains("f2 0f 7c c1", exit.Detail);
    }

    [Fact]
    public void TlbNeedsInvlpgOrCr3ReloadAndGlobalPagesSurviveCr3Reload()
    {
        using var g = new TestGuest(translated: translated);
        const ulong Pd1 = 0x20000, Pt = 0x21000, Va = 0x4000_0000, Va2 = 0x4000_1000;
        g.W64(TestGuest.Pdpt + 8, Pd1 | 7);
        g.W64(Pd1, Pt | 7);
        g.W64(Pt, 0x600000 | 3);
        g.W64(Pt + 8, 0x700000 | 3 | 0x100); // global
        g.W64(0x600000, 1); g.W64(0x601000, 2); g.W64(0x700000, 3); g.W64(0x701000, 4);
        g.Load(TestGuest.CodeAddr, a =>
        {
            a.mov(rcx, Va); a.mov(rsi, Va2); a.mov(rdi, (ulong)Pt);
            a.mov(r8, __qword_ptr[rcx]);                  // 1, now cached
            a.mov(r12, __qword_ptr[rsi]);                 // 3, cached (global)
            a.mov(__qword_ptr[rdi], 0x601000 | 3);        // remap Va -> 0x601000
            a.mov(__qword_ptr[rdi + 8], 0x701000 | 3 | 0x100);
            a.mov(r9, __qword_ptr[rcx]);                  // stale: still 1
            a.invlpg(__[rcx]);
            a.mov(r10, __qword_ptr[rcx]);                 // 2
            a.mov(rax, cr3); a.mov(cr3, rax);
            a.mov(r13, __qword_ptr[rsi]);                 // global survives CR3 reload: still 3
            a.mov(rax, cr4); a.and(eax, ~0x80); a.mov(cr4, rax); a.or(eax, 0x80); a.mov(cr4, rax);
            a.mov(r14, __qword_ptr[rsi]);                 // flushed by CR4.PGE toggle: 4
            a.hlt();
        });
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        var r = g.Cpu.GetRegisters();
        Assert.Equal((1UL, 1UL, 2UL), (r.R8, r.R9, r.R10));
        Assert.Equal((3UL, 3UL, 4UL), (r.R12, r.R13, r.R14));
    }

    [Fact]
    public void LockedReadModifyWriteIsAtomicAcrossVcpus()
    {
        using var g = new TestGuest(translated: translated);
        var cpu2 = g.Vm.CreateEmulatorVcpu(1);
        const ulong Counter = 0x900000, Code2 = 0x110000;
        const int N = 200_000;
        g.Load(TestGuest.CodeAddr, a =>
        {
            var l = a.CreateLabel();
            a.mov(rdi, Counter); a.mov(ecx, N);
            a.Label(ref l);
            a.@lock.inc(__qword_ptr[rdi]);
            a.mov(edx, 1);
            a.@lock.xadd(__dword_ptr[rdi + 8], edx);
            a.mov(eax, __dword_ptr[rdi + 16]);
            var retry = a.CreateLabel();
            a.Label(ref retry);
            a.lea(ebx, __[rax + 1]);
            a.@lock.cmpxchg(__dword_ptr[rdi + 16], ebx);
            a.jnz(retry);
            a.dec(ecx);
            a.jnz(l);
            a.hlt();
        });
        g.Memory.Write(new GuestAddress(Code2), g.Memory.GetSpan(new GuestAddress(TestGuest.CodeAddr), 64).ToArray());
        var regs = new Registers { Rip = TestGuest.CodeAddr, Rsp = TestGuest.StackTop, Rflags = 2, Rdx = 1 };
        g.Cpu.SetRegisters(regs);
        var sregs = g.Cpu.GetSpecialRegisters();
        VcpuExit e2 = default;
        var t = new Thread(() =>
        {
            cpu2.AttachToCurrentThread();
            cpu2.SetSpecialRegisters(sregs);
            cpu2.SetRegisters(new Registers { Rip = Code2, Rsp = TestGuest.StackTop - 0x1000, Rflags = 2, Rdx = 1 });
            e2 = cpu2.Run(new FakeIo());
        });
        t.Start();
        var e1 = g.Run();
        t.Join();
        Assert.True(e1.Reason == VcpuExitReason.Halt, $"{e1} / {e2} counter={g.R64(Counter)} rip1={g.Cpu.GetRegisters().Rip:x} rip2={cpu2.GetRegisters().Rip:x} rcx1={g.Cpu.GetRegisters().Rcx} rcx2={cpu2.GetRegisters().Rcx}");
        Assert.Equal(VcpuExitReason.Halt, e2.Reason);
        Assert.Equal(2UL * N, g.R64(Counter));
        Assert.Equal(2U * N, g.R32(Counter + 8));
        Assert.Equal(2U * N, g.R32(Counter + 16));
    }

    [Fact]
    public void CodePatchedByAnotherVcpuIsSeenByTheVcpuRunningIt()
    {
        using var g = new TestGuest(translated: translated);
        var cpu2 = g.Vm.CreateEmulatorVcpu(1);
        const ulong Function = 0x120000, Patcher = 0x110000, Rounds = 0x900000;
        // vCPU 0 calls a function that returns 1 until it returns 2 (or gives up after many rounds), counting rounds;
        // vCPU 1 patches the function's immediate once vCPU 0 has run it a thousand times (decoded, translated).
        g.Load(Function, a => { a.mov(eax, 1); a.ret(); });
        g.Load(TestGuest.CodeAddr, a =>
        {
            var again = a.CreateLabel();
            var done = a.CreateLabel();
            a.mov(rcx, 50_000_000);
            a.mov(rbx, Rounds);
            a.Label(ref again);
            a.inc(__qword_ptr[rbx]);
            a.mov(rax, Function);
            a.call(rax);
            a.cmp(eax, 2);
            a.je(done);
            a.dec(rcx);
            a.jnz(again);
            a.Label(ref done);
            a.hlt();
        });
        g.Load(Patcher, a =>
        {
            var wait = a.CreateLabel();
            a.mov(rbx, Rounds);
            a.Label(ref wait);
            a.cmp(__qword_ptr[rbx], 1000);
            a.jb(wait);
            a.mov(rdi, Function + 1); // the imm32 of `mov eax, 1`
            a.mov(__dword_ptr[rdi], 2);
            a.hlt();
        });
        var sregs = g.Cpu.GetSpecialRegisters();
        VcpuExit e2 = default;
        var t = new Thread(() =>
        {
            cpu2.AttachToCurrentThread();
            cpu2.SetSpecialRegisters(sregs);
            cpu2.SetRegisters(new Registers { Rip = Patcher, Rsp = TestGuest.StackTop - 0x1000, Rflags = 2 });
            e2 = cpu2.Run(new FakeIo());
        });
        t.Start();
        var e1 = g.Run();
        t.Join();
        Assert.Equal(VcpuExitReason.Halt, e1.Reason);
        Assert.Equal(VcpuExitReason.Halt, e2.Reason);
        var r = g.Cpu.GetRegisters();
        Assert.True(r.Rax == 2, $"vCPU 0 never saw the patched function (rax={r.Rax}, rounds left {r.Rcx})");
    }

    [Fact]
    public void NmiIsDeliveredAndBlockedUntilIret()
    {
        using var g = new TestGuest(translated: translated);
        var src = new FakeInterruptSource();
        g.Cpu.AttachInterruptSource(src);
        g.Load(0xC000, a => { a.inc(r10); a.iretq(); });
        SetGate(g, 2, 0xC000);
        g.Load(TestGuest.CodeAddr, a => { var l = a.CreateLabel(); a.cli(); a.Label(ref l); a.cmp(r10, 2); a.jne(l); a.hlt(); });
        var t = new Thread(() => { Thread.Sleep(30); src.RaiseNmi(); Thread.Sleep(30); src.RaiseNmi(); Thread.Sleep(2000); g.Cpu.RequestExit(); });
        t.Start();
        var exit = g.Run();
        Assert.Equal(2UL, g.Cpu.GetRegisters().R10);
        Assert.True(exit.Reason is VcpuExitReason.Interrupted or VcpuExitReason.Halt);
        g.Cpu.RequestExit();
        t.Join();
    }

    [Fact]
    public void ProtectedMode32BitPagingFaultsAndIdt()
    {
        using var g = new TestGuest(longMode: false, translated: translated);
        const ulong PageDir = 0x30000, PageTable = 0x31000, Idt = 0x40000, Stubs = 0x41000;
        // 4 MiB PSE pages for the first 16 MiB; 16..20 MiB through a page table whose first page is not present.
        for (ulong k = 0; k < 4; k++) g.W32(PageDir + k * 4, (uint)((k << 22) | 0x87));
        g.W32(PageDir + 4 * 4, (uint)(PageTable | 7));
        g.W32(PageTable + 4, 0x500000 | 3);
        g.W32(0x500000 + 8, 0xCAFE);
        for (ulong v = 0; v < 32; v++)
        {
            ulong h = Stubs + v * 16;
            g.W64(Idt + v * 8, (h & 0xFFFF) | ((ulong)TestGuest.KCode32 << 16) | (0x8EUL << 40) | ((h >> 16) << 48));
            g.W8(h, 0xF4);
        }
        // #PF handler: CR2 and the error code into EBX/ECX.
        g.Load(0x42000, a => { a.mov(ebx, cr2); a.mov(ecx, __dword_ptr[esp]); a.hlt(); }, 32);
        g.W64(Idt + 14 * 8, (0x42000UL & 0xFFFF) | ((ulong)TestGuest.KCode32 << 16) | (0x8EUL << 40) | ((0x42000UL >> 16) << 48));
        var s = g.Cpu.GetSpecialRegisters();
        s.Cr0 = 0x80000011; s.Cr3 = PageDir; s.Cr4 = 0x10; s.Efer = 0;
        s.Cs = new Segment { Base = 0, Limit = 0xFFFFFFFF, Selector = TestGuest.KCode32, Type = 0xB, S = true, Present = true, Db = true, G = true };
        var d = new Segment { Base = 0, Limit = 0xFFFFFFFF, Selector = TestGuest.KData, Type = 0x3, S = true, Present = true, Db = true, G = true };
        s.Ds = s.Es = s.Ss = s.Fs = s.Gs = d;
        s.Gdt = new DescriptorTable { Base = TestGuest.GdtAddr, Limit = 0x57 };
        s.Idt = new DescriptorTable { Base = Idt, Limit = 32 * 8 - 1 };
        g.Cpu.SetSpecialRegisters(s);
        g.Cpu.SetRegisters(new Registers { Rip = 0x100000, Rsp = 0x90000, Rflags = 2 });
        g.Load(0x100000, a => { a.mov(esi, __dword_ptr[0x1001008]); a.mov(eax, __dword_ptr[0x1000010]); a.hlt(); }, 32);
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        var r = g.Cpu.GetRegisters();
        Assert.Equal(0xCAFEUL, r.Rsi);
        Assert.Equal(0x1000010UL, r.Rbx);
        Assert.Equal(0UL, r.Rcx);
        Assert.Equal(0x90000UL - 16, r.Rsp); // error code, EIP, CS, EFLAGS (no privilege change)
        Assert.Equal(0x100006UL, g.R32(0x90000 - 12)); // the faulting instruction
        // #GP with a selector error code, through the 32-bit IDT.
        g.Cpu.SetSpecialRegisters(s);
        g.Cpu.SetRegisters(new Registers { Rip = 0x100000, Rsp = 0x90000, Rflags = 2 });
        g.Load(0x100000, a => { a.mov(ax, 0x99); a.mov(ds, ax); a.hlt(); }, 32);
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        Assert.Equal(Stubs + 13 * 16 + 1, g.Cpu.GetRegisters().Rip);
        Assert.Equal(0x98u, g.R32(g.Cpu.GetRegisters().Rsp));
    }

    [Fact]
    public void BcdAdjustInstructionsIn32BitMode()
    {
        using var g = new TestGuest(longMode: false, translated: translated);
        var s = g.Cpu.GetSpecialRegisters();
        s.Cr0 = 0x11;
        s.Cs = new Segment { Base = 0, Limit = 0xFFFFFFFF, Selector = TestGuest.KCode32, Type = 0xB, S = true, Present = true, Db = true, G = true };
        var d = new Segment { Base = 0, Limit = 0xFFFFFFFF, Selector = TestGuest.KData, Type = 0x3, S = true, Present = true, Db = true, G = true };
        s.Ds = s.Es = s.Ss = d;
        s.Gdt = new DescriptorTable { Base = TestGuest.GdtAddr, Limit = 0x57 };
        g.Cpu.SetSpecialRegisters(s);
        g.Cpu.SetRegisters(new Registers { Rip = 0x100000, Rsp = 0x90000, Rflags = 2 });
        g.Load(0x100000, a =>
        {
            a.mov(al, 0x79); a.add(al, 0x35); a.daa(); a.mov(bl, al); a.setc(bh);    // 79 + 35 = 114 (BCD)
            a.mov(al, 0x35); a.sub(al, 0x47); a.das(); a.mov(cl, al); a.setc(ch);    // 35 - 47 = -12 -> 88, CF
            a.mov(ax, 0x0009); a.add(al, 8); a.aaa(); a.mov(dx, ax);                // 9 + 8 = 17 unpacked -> AX 0107
            a.mov(al, 63); a.aam(10); a.mov(si, ax);                                    // 63 -> AH 6, AL 3
            a.mov(ax, 0x0603); a.aad(10); a.mov(di, ax);                                // -> 63
            a.hlt();
        }, 32);
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        var r = g.Cpu.GetRegisters();
        Assert.Equal(0x0114UL, r.Rbx & 0xFFFF);
        Assert.Equal(0x0188UL, r.Rcx & 0xFFFF);
        Assert.Equal(0x0107UL, r.Rdx & 0xFFFF);
        Assert.Equal(0x0603UL, r.Rsi & 0xFFFF);
        Assert.Equal(63UL, r.Rdi & 0xFFFF);
    }

    [Fact]
    public void ApplicationProcessorWaitsForInitSipi()
    {
        using var g = new TestGuest(translated: translated);
        var ap = g.Vm.CreateEmulatorVcpu(1);
        Assert.True(ap.WaitingForStartup);
        // Trampoline at 0x9A000 (vector 0x9A): real mode, writes a marker and halts.
        g.Load(0x9A000, a => { a.mov(ax, 0x1234); a.mov(__word_ptr[0x100], ax); a.hlt(); }, 16);
        VcpuExit exit = default;
        var t = new Thread(() => { ap.AttachToCurrentThread(); exit = ap.Run(new FakeIo()); });
        t.Start();
        Thread.Sleep(50);
        Assert.True(ap.WaitingForStartup);
        ap.Init();
        ap.Startup(0x9A);
        Assert.True(t.Join(5000));
        Assert.Equal(VcpuExitReason.Halt, exit.Reason);
        Assert.Equal(0x9A00UL, (ulong)ap.GetSpecialRegisters().Cs.Selector);
        Assert.Equal((ushort)0x1234, g.Memory.Read<ushort>(new GuestAddress(0x100))); // DS = 0 after INIT
    }

    [Fact]
    public void X87ControlAndEnvironmentInstructions()
    {
        using var g = new TestGuest(translated: translated);
        g.Load(TestGuest.CodeAddr, a =>
        {
            a.mov(rdi, 0x800000UL);
            a.fninit();
            a.fnstcw(__word_ptr[rdi]);            // 0x037F
            a.mov(__word_ptr[rdi + 2], 0x0C7F);
            a.fldcw(__word_ptr[rdi + 2]);
            a.fnstenv(__[rdi + 16]);              // FCW 0x0C7F, tags all empty (0xFFFF)
            a.fnstcw(__word_ptr[rdi + 4]);        // FNSTENV masked exceptions: 0x0C7F | 0x3F
            a.fldenv(__[rdi + 16]);
            a.fnstcw(__word_ptr[rdi + 6]);        // back to 0x0C7F
            a.fnstsw(ax);
            a.hlt();
        });
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        Assert.Equal(0x037Fu, (uint)g.Memory.Read<ushort>(new GuestAddress(0x800000)));
        // The 28-byte image's unused upper halves read as ones, as the host CPU stores them (X87DifferentialTests).
        Assert.Equal(0xFFFF_0C7Fu, g.R32(0x800000 + 16));
        Assert.Equal(0xFFFF_FFFFu, g.R32(0x800000 + 24));
        Assert.Equal(0x0C7Fu, (uint)g.Memory.Read<ushort>(new GuestAddress(0x800006)));
    }
}

public sealed class SystemTestsInterpreted() : SystemTests(translated: false);

public sealed class SystemTestsTranslated() : SystemTests(translated: true);
