using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using SharpVM.Hypervisor;
using SharpVM.Memory;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Cpu.Tests;

/// <summary>
/// LOCK ADC/SBB on guest RAM is a load, an ALU step and a compare-and-swap; when another writer changes the memory in
/// between, the CAS fails and the step is redone. The redo must use the carry the instruction started with, not the
/// carry its failed attempt computed: with a concurrent writer forcing retries, the memory must end up exactly as if
/// the guest's ADC/SBB and the writer's additions had run one after another.
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
        // one would be 1 short per retry. Contention is up to the host scheduler, so rounds repeat until one retried.
        long retries = 0;
        for (int round = 0; round < 10 && retries == 0; round++)
            retries = RunOneRound(sbb, size);
        Assert.True(retries > 0, "the concurrent writer never forced a retry in 10 rounds");
    }

    /// <summary>Runs the guest loop against a concurrent writer, checks the exact result and returns the retry count.</summary>
    private static unsafe long RunOneRound(bool sbb, int size)
    {
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

        // The writer adds 1 at a time to the same cell, atomically, as another CPU's LOCK ADD would.
        Span<byte> cellBytes = g.Memory.GetSpan(new GuestAddress(Cell), 8);
        long* cell = (long*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(cellBytes));
        long hostAdds = 0;
        var guestDone = new ManualResetEventSlim();
        var writer = new Thread(() =>
        {
            while (!guestDone.IsSet)
            {
                if (size == 8) Interlocked.Increment(ref *cell); else Interlocked.Increment(ref *(int*)cell);
                hostAdds++;
            }
        });
        writer.Start();
        long retriesBefore = g.Cpu.LockedRmwRetries;
        VcpuExit exit;
        try { exit = g.Run(); }
        finally { guestDone.Set(); writer.Join(); }

        Assert.Equal(VcpuExitReason.Halt, exit.Reason);
        Assert.Equal(0UL, g.Cpu.GetRegisters().R10 & 0xFF);
        ulong step = (ulong)(Source + 1) * Iterations;
        ulong expected = (sbb ? initial - step : initial + step) + (ulong)hostAdds;
        ulong mask = size == 8 ? ulong.MaxValue : uint.MaxValue;
        Assert.Equal(expected & mask, g.R64(Cell) & mask);
        return g.Cpu.LockedRmwRetries - retriesBefore;
    }
}
