using SharpVM.Hypervisor;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Cpu.Tests;

/// <summary>
/// LOCK ADC/SBB on guest RAM is a load, an ALU step and a compare-and-swap; when another writer changes the memory in
/// between, the CAS fails and the step is redone. The redo must use the carry the instruction started with, not the
/// carry its failed attempt computed: with another writer forcing a retry of every instruction, the memory must end up
/// exactly as if the guest's ADC/SBB and the writer's additions had run one after another.
/// </summary>
public sealed class LockedAdcSbbTests
{
    private const ulong Cell = 0x200000;
    private const int Iterations = 100_000;
    private const long Source = 3; // each guest step adds (or subtracts) Source + CF = 4

    [Theory]
    [InlineData(false, 8)]
    [InlineData(true, 8)]
    [InlineData(false, 4)]
    [InlineData(true, 4)]
    public void RetriedLockAdcSbbUsesTheOriginalCarry(bool sbb, int size)
    {
        // The failed attempt's carry-out is 0 (no step wraps), the carry going in is 1: a retry that took the wrong
        // one would be 1 short per retry.
        using var g = new TestGuest();
        ulong initial = sbb ? 1UL << 30 : 0; // far from wrapping either way
        g.W64(Cell, initial);
        g.Load(TestGuest.CodeAddr, a =>
        {
            var loop = a.CreateLabel();
            a.mov(rdi, Cell);
            a.mov(r8d, Iterations);
            a.mov(rbx, Source);
            a.Label(ref loop);
            a.stc();
            if (size == 8) { if (sbb) a.@lock.sbb(__qword_ptr[rdi], rbx); else a.@lock.adc(__qword_ptr[rdi], rbx); }
            else { if (sbb) a.@lock.sbb(__dword_ptr[rdi], ebx); else a.@lock.adc(__dword_ptr[rdi], ebx); }
            a.setc(r9b);          // the carry of the successful attempt ...
            a.or(r10b, r9b);      // ... must always be 0 here: no step wraps
            a.dec(r8d);
            a.jnz(loop);
            a.hlt();
        });

        // Another CPU's LOCK ADD of 1 lands between the load and the compare-and-swap of every other attempt: each
        // guest instruction's first attempt fails and its retry succeeds. (A real concurrent writer only races when
        // the scheduler runs both threads at once, which a loaded 2-core machine often does not.)
        long hostAdds = 0;
        bool interfere = true;
        g.Cpu.BeforeLockedCompareAndSwap = () =>
        {
            if (interfere)
            {
                ulong v = g.R64(Cell);
                g.W64(Cell, size == 8 ? v + 1 : (v & ~0xFFFFFFFFUL) | (uint)(v + 1));
                hostAdds++;
            }
            interfere = !interfere;
        };
        var exit = g.Run();

        Assert.Equal(VcpuExitReason.Halt, exit.Reason);
        Assert.Equal(0UL, g.Cpu.GetRegisters().R10 & 0xFF);
        Assert.Equal(Iterations, g.Cpu.LockedRmwRetries);
        ulong step = (ulong)(Source + 1) * Iterations;
        ulong expected = (sbb ? initial - step : initial + step) + (ulong)hostAdds;
        ulong mask = size == 8 ? ulong.MaxValue : uint.MaxValue;
        Assert.Equal(expected & mask, g.R64(Cell) & mask);
    }
}
