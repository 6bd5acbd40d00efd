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
}
