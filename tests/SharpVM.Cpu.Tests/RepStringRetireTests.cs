using SharpVM.Hypervisor;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Cpu.Tests;

/// <summary>
/// A long REP string instruction steps aside every few thousand iterations when an exit or interrupt is pending, and
/// is resumed later from where it stopped (RCX/RSI/RDI hold its progress). On hardware it still retires once, when it
/// completes: the retired count must not grow with the number of times it was resumed.
/// </summary>
public sealed class RepStringRetireTests
{
    /// <summary>Asks the vCPU to exit from inside its own port writes, every <c>every</c> bytes: deterministic interruptions.</summary>
    private sealed class ExitRequestingPort(TestGuest guest, int every) : IVcpuIoHandler
    {
        public int Writes;
        public void PioWrite(ushort port, ReadOnlySpan<byte> data)
        {
            if (++Writes % every == 0) guest.Cpu.RequestExit();
        }
        public void PioRead(ushort port, Span<byte> data) => data.Clear();
        public void MmioRead(ulong address, Span<byte> data) => data.Clear();
        public void MmioWrite(ulong address, ReadOnlySpan<byte> data) { }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AResumedRepInstructionRetiresOnce(bool translated)
    {
        const int Count = 42_000, Every = 5_000; // the last request lands before the end: every interruption is mid-REP
        using var g = new TestGuest(translated: translated);
        g.Load(TestGuest.CodeAddr, a =>
        {
            a.mov(esi, 0x200000);  // 1
            a.mov(ecx, Count);     // 1
            a.mov(edx, 0x3F8);     // 1
            a.rep.outsb();         // 1, however often it is resumed
            a.hlt();               // 1
        });
        var io = new ExitRequestingPort(g, Every);
        int interruptions = 0;
        VcpuExit exit;
        while ((exit = g.Cpu.Run(io)).Reason == VcpuExitReason.Interrupted)
        {
            interruptions++;
            Assert.True(interruptions <= Count / Every, "the guest did not make progress");
            var r = g.Cpu.GetRegisters();
            Assert.True(r.Rcx is > 0 and < Count, $"interrupted outside the REP instruction (RCX {r.Rcx})");
            Assert.Equal(3, g.Cpu.InstructionsRetired); // the three MOVs; the REP has not completed
        }

        Assert.Equal(VcpuExitReason.Halt, exit.Reason);
        Assert.True(interruptions >= 5, $"only {interruptions} interruptions: the test did not exercise resumption");
        Assert.Equal(Count, io.Writes);
        Assert.Equal(0UL, g.Cpu.GetRegisters().Rcx);
        Assert.Equal(5, g.Cpu.InstructionsRetired);
    }
}
