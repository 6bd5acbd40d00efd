using Iced.Intel;
using SharpVM.Hypervisor;
using SharpVM.Memory;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Cpu.Tests;

/// <summary>
/// Decoded and translated blocks stay valid while their code page keeps its version (SharpVM.Memory's
/// CodePageVersions): writes from outside the vCPU (a loader, a device) replace the code the vCPU runs next, and
/// writes of data that shares a page with code do not throw the code's blocks away.
/// </summary>
[Collection(NativeCpuCollection.Name)]
public sealed class CodePageVersionTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void CodeRewrittenFromOutsideTheGuestRunsOnItsNextEntry(bool translated)
    {
        using var g = new TestGuest(translated: translated);
        for (uint value = 1; value <= 3; value++)
        {
            // The same length each time, so only the bytes say the block changed.
            uint v = value;
            g.Load(TestGuest.CodeAddr, a => { a.mov(eax, v); a.add(eax, 0x100); a.hlt(); });
            g.Cpu.SetRegisters(new Registers { Rsp = TestGuest.StackTop, Rip = TestGuest.CodeAddr, Rflags = 2 });
            for (int run = 0; run < 3; run++)
            {
                g.Cpu.SetRegisters(new Registers { Rsp = TestGuest.StackTop, Rip = TestGuest.CodeAddr, Rflags = 2 });
                Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
                Assert.Equal(value + 0x100, g.Cpu.GetRegisters().Rax);
            }
        }
    }

    [Fact]
    public void AGuestStoringDataOnItsCodePageKeepsItsTranslatedLoop()
    {
        using var g = new TestGuest();
        g.Cpu.Translation = new EmulatorTranslation(Threshold: 20, Background: false);
        ulong counter = TestGuest.CodeAddr + 0x800; // the same 4 KiB page as the code
        g.Load(TestGuest.CodeAddr, a =>
        {
            var top = a.CreateLabel();
            a.mov(ecx, 500);
            a.mov(rbx, counter);
            a.Label(ref top);
            a.add(__qword_ptr[rbx], 3);
            // A call makes each round several block entries, each checking the page's version.
            var sub = a.CreateLabel();
            a.call(sub);
            a.dec(ecx);
            a.jnz(top);
            a.hlt();
            a.Label(ref sub);
            a.inc(rdx);
            a.ret();
        });
        g.W64(counter, 0);
        Assert.Equal(VcpuExitReason.Halt, g.Run().Reason);
        Assert.Equal(1500UL, g.R64(counter));
        Assert.Equal(500UL, g.Cpu.GetRegisters().Rdx);
        // Every round wrote the code page; had that discarded the blocks, none would have reached the threshold.
        Assert.True(g.Cpu.TranslatedBlockRuns > 400, $"translated block entries: {g.Cpu.TranslatedBlockRuns}");
    }
}
