using SharpVM.Hypervisor;

namespace SharpVM.Cpu.Tests;

/// <summary>
/// A guest must never crash the VMM: random bytes run as kernel code (system instructions, control-register and
/// MSR writes, descriptor-table loads, wild stores over its own page tables and IDT, port and MMIO accesses...) end in
/// an orderly exit — a halt in an exception handler, a triple fault, an unimplemented instruction reported as an
/// internal error, or the watchdog's interrupt — never in a .NET exception escaping <c>Run</c>.
/// </summary>
public class RandomCodeTests(Xunit.Abstractions.ITestOutputHelper output)
{
    [Fact]
    public void RandomKernelCodeEndsInAnOrderlyExit()
    {
        var seen = new Dictionary<VcpuExitReason, int>();
        for (int seed = 0; seed < 400; seed++)
        {
            using var g = new TestGuest(ramBytes: 64UL << 20);
            var code = new byte[4096];
            new Random(seed).NextBytes(code);
            g.Memory.Write(new SharpVM.Memory.GuestAddress(TestGuest.CodeAddr), code);
            using var watchdog = new Timer(_ => g.Cpu.RequestExit(), null, 200, Timeout.Infinite); // `jmp $` and friends
            VcpuExit exit;
            try { exit = g.Run(); }
            catch (Exception e) { throw new Xunit.Sdk.XunitException($"seed {seed}: Run threw {e}"); }
            Assert.True(exit.Reason is VcpuExitReason.Halt or VcpuExitReason.Shutdown or VcpuExitReason.InternalError or VcpuExitReason.Interrupted,
                $"seed {seed}: unexpected exit {exit.Reason} ({exit.Detail})");
            if (exit.Reason == VcpuExitReason.InternalError) Assert.False(string.IsNullOrWhiteSpace(exit.Detail), $"seed {seed}: internal error without detail");
            _ = g.Cpu.GetRegisters(); // the vCPU is still in a readable state
            seen[exit.Reason] = seen.GetValueOrDefault(exit.Reason) + 1;
        }
        output.WriteLine("exits: " + string.Join(", ", seen.Select(kv => $"{kv.Key}: {kv.Value}")));
        // The corpus reaches the interesting endings, not only one of them.
        Assert.True(seen.GetValueOrDefault(VcpuExitReason.Halt) > 0 && seen.GetValueOrDefault(VcpuExitReason.Shutdown) + seen.GetValueOrDefault(VcpuExitReason.InternalError) > 0,
            string.Join(", ", seen.Select(kv => $"{kv.Key}: {kv.Value}")));
    }
}
