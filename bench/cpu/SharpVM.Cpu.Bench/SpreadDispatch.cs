using Iced.Intel;
using SharpVM.Cpu;
using SharpVM.Hypervisor;
using static Iced.Intel.AssemblerRegisters;

/// <summary>
/// Dispatch over many blocks: the boot sector's dispatch loop has four blocks, whose cache slots, <c>Block</c> objects,
/// delegates and TLB entries all stay in the L1 cache; a Linux boot enters ~2,500 hot blocks on hundreds of pages.
/// Here a round runs <see cref="Blocks"/> two-instruction blocks (<c>add rax, rcx; jmp next</c>), 8 to a page,
/// each jumping back to the one below it (a forward JMP on the page would merge them into one block), in 64-bit
/// kernel mode; the last one counts the rounds down. Every block is translated before the measured run (a first
/// VM runs them past the translation threshold; translations are shared by address).
/// </summary>
internal static class SpreadDispatch
{
    /// <summary>Blocks per round: 2048, or SHARPVM_BENCH_SPREAD_BLOCKS (to see where the caches stop holding them).</summary>
    public static readonly int Blocks = int.TryParse(Environment.GetEnvironmentVariable("SHARPVM_BENCH_SPREAD_BLOCKS"), out int n) && n >= 2 ? n : 2048;
    /// <summary>
    /// ADDs per block before its JMP: 1, or SHARPVM_BENCH_SPREAD_ADDS (up to 100): longer blocks, like the ~14-instruction
    /// blocks a boot interprets, whose decoded entries span more cache lines.
    /// </summary>
    public static readonly int Adds = int.TryParse(Environment.GetEnvironmentVariable("SHARPVM_BENCH_SPREAD_ADDS"), out int adds) && adds is >= 1 and <= 100 ? adds : 1;
    private const ulong CodeBase = 0x100000, Stride = 0x200;

    /// <summary>Runs the blocks past the translation threshold and waits until the translator thread has caught up.</summary>
    public static void Warm()
    {
        Run(1200);
        long seen = -1;
        for (int quiet = 0; quiet < 5; )
        {
            Thread.Sleep(100);
            long now = BlockTranslator.BlocksTranslated;
            quiet = now == seen ? quiet + 1 : 0;
            seen = now;
        }
    }

    /// <summary>CPU seconds of the vCPU's thread to run <paramref name="rounds"/> rounds.</summary>
    public static double Run(long rounds)
    {
        using var guest = new LongModeGuest();
        // Block k lives at Entry(k), below block k - 1: every JMP goes backward.
        static ulong Entry(int k) => CodeBase + (ulong)(Blocks - 1 - k) * Stride;
        for (int k = 0; k < Blocks - 1; k++)
        {
            ulong next = Entry(k + 1);
            guest.Put(Entry(k), a => { for (int i = 0; i < Adds; i++) a.add(rax, rcx); a.jmp(next); });
        }
        ulong first = Entry(0);
        guest.Put(Entry(Blocks - 1), a =>
        {
            a.dec(rcx);
            a.jnz(first);
            a.@out(0xF4, al); // ends the run (HLT would wait for an interrupt), at the end of this block
            var self = a.CreateLabel();
            a.Label(ref self);
            a.jmp(self);
        });
        guest.Start(first, (ulong)rounds);
        var cpu = guest.Cpu;
        var io = new ExitOnPort(cpu);
        double t0 = ThreadCpu.Now();
        while (true)
        {
            var exit = cpu.Run(io);
            if (exit.Reason == VcpuExitReason.Interrupted && io.Done) break;
            if (exit.Reason != VcpuExitReason.Interrupted) throw new InvalidOperationException($"guest stopped: {exit}");
        }
        double t = ThreadCpu.Now() - t0;
        // Each round retires Adds + 1 instructions per block and two in the last (DEC, JNZ); the last round adds the OUT and
        // the JMP that ends its block.
        long expected = rounds * ((Adds + 1L) * (Blocks - 1) + 2) + 2;
        if (cpu.InstructionsRetired != expected)
            throw new InvalidOperationException($"spread dispatch: {cpu.InstructionsRetired} instructions retired, expected {expected}");
        TranslatedShare = (double)cpu.TranslatedBlockRuns / (rounds * (double)Blocks);
        return t;
    }

    /// <summary>Of the last run's block entries, the share that ran translated.</summary>
    public static double TranslatedShare { get; private set; }
}
