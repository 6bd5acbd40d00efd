using System.Diagnostics;
using Iced.Intel;
using SharpVM.Cpu;
using SharpVM.Devices.Bus;
using SharpVM.Hypervisor;
using SharpVM.Memory;
using static Iced.Intel.AssemblerRegisters;

// CPU-bound guest-loop benchmark: the same 512-byte boot sector (real mode -> long mode -> loop,
// in kernel mode or, with IRETQ, in user mode; then OUT to port 0xF4) runs in SharpVM.Cpu and,
// if qemu-system-x86_64 is installed, in QEMU TCG (isa-debug-exit ends QEMU). Guest instructions
// per second = loop instructions / (time(N) - time(N0)), N0 a short run that measures start-up.
//
// usage: dotnet run -c Release --project bench/cpu/SharpVM.Cpu.Bench [iterations] [--no-qemu]
//        SharpVM.Cpu.Bench jit [rounds] [--loop]: the translator's JIT time per block and per instruction form (JitCost.cs)
//        SHARPVM_BENCH_SPREAD_BLOCKS=N: blocks in the many-block dispatch loop (SpreadDispatch.cs; default 2048)
//        SHARPVM_BENCH_SPREAD_ADDS=N: ADDs per block there (default 1)
// The multiply-accumulate loop (the kernel's RSA inner loop, random limbs) runs N/32 rounds of 32 limbs (QEMU 8x that).
// (QEMU runs 20x the iterations.)

if (args.Length > 0 && args[0] == "jit")
{
    JitCost.Run(args.Length > 1 && int.TryParse(args[1], out int rounds) ? rounds : 21, args.Contains("--loop"));
    return;
}

long iterations = args.Length > 0 && long.TryParse(args[0], out long n) ? n : 20_000_000;
bool qemu = !args.Contains("--no-qemu") && File.Exists("/usr/bin/qemu-system-x86_64");
const long Baseline = 1000;
const int InsnsPerIteration = 8;

// Warm up the JIT (tiered compilation, PGO) so the first measured mode is not penalised.
RunEmu(BootSector.Build(iterations / 2, false), out _);

foreach (bool user in new[] { false, true })
{
    string mode = user ? "user (CPL3)" : "kernel (CPL0)";
    double emu = RunEmu(BootSector.Build(iterations, user), out long retired) - RunEmu(BootSector.Build(Baseline, user), out _);
    double loopInsns = (double)(iterations - Baseline) * InsnsPerIteration;
    Console.WriteLine($"{mode}: SharpVM.Cpu {loopInsns / emu / 1e6:F1} M guest instructions/s ({emu:F2} CPU s for {loopInsns / 1e6:F0} M; {retired / 1e6:F0} M retired in total)");
    if (qemu)
    {
        // QEMU runs 20x the iterations so its start-up (BIOS, ~0.2 s) is small against the loop.
        long qIter = iterations * 20;
        double q = RunQemu(BootSector.Build(qIter, user)) - RunQemu(BootSector.Build(Baseline, user));
        double qInsns = (double)(qIter - Baseline) * InsnsPerIteration;
        double qRate = qInsns / q, eRate = loopInsns / emu;
        Console.WriteLine($"{mode}: QEMU 7.2 TCG   {qRate / 1e6:F1} M guest instructions/s ({q:F2} CPU s for {qInsns / 1e6:F0} M); QEMU is {qRate / eRate:F1}x faster");
    }
}

// Dispatch: four two-instruction blocks per round that jump to one another (no block loops on itself).
{
    double emu = RunEmu(BootSector.Build(iterations, false, dispatch: true), out _) - RunEmu(BootSector.Build(Baseline, false, dispatch: true), out _);
    double entries = (double)(iterations - Baseline) * 4;
    Console.WriteLine($"dispatch (kernel, 2-instruction blocks): SharpVM.Cpu {emu / entries * 1e9:F1} ns per block entry");
    if (qemu)
    {
        long qIter = iterations * 20;
        double q = RunQemu(BootSector.Build(qIter, false, dispatch: true)) - RunQemu(BootSector.Build(Baseline, false, dispatch: true));
        double qNs = q / ((double)(qIter - Baseline) * 4) * 1e9;
        Console.WriteLine($"dispatch (kernel, 2-instruction blocks): QEMU 7.2 TCG {qNs:F1} ns per block entry (chained); SharpVM is {emu / entries * 1e9 / qNs:F1}x slower");
    }
}

// Multiply-accumulate: the RSA inner loop of a Linux boot (see BootSector.Build), 32 limbs per round.
{
    long rounds = Math.Max(Baseline, iterations / 32);
    double emu = RunEmu(BootSector.Build(rounds, false, multiplyAccumulate: true), out long retired)
        - RunEmu(BootSector.Build(Baseline, false, multiplyAccumulate: true), out long baseRetired);
    double insns = retired - baseRetired, perRound = insns / (rounds - Baseline);
    Console.WriteLine($"multiply-accumulate (kernel, Linux's mpihelp_submul_1 loop): SharpVM.Cpu {insns / emu / 1e6:F1} M guest instructions/s ({emu:F2} CPU s for {insns / 1e6:F0} M)");
    if (qemu)
    {
        // 8x the rounds: QEMU's start-up is then small against the loop.
        long qRounds = rounds * 8;
        double q = RunQemu(BootSector.Build(qRounds, false, multiplyAccumulate: true)) - RunQemu(BootSector.Build(Baseline, false, multiplyAccumulate: true));
        double qRate = perRound * (qRounds - Baseline) / q, eRate = insns / emu;
        Console.WriteLine($"multiply-accumulate (kernel, Linux's mpihelp_submul_1 loop): QEMU 7.2 TCG {qRate / 1e6:F1} M guest instructions/s ({q:F2} CPU s); QEMU is {qRate / eRate:F1}x faster");
    }
}

// Dispatch over many blocks on many pages (what a boot's dispatch sees of the caches); no QEMU run: it boots
// from the 512-byte sector, too small for these blocks.
{
    SpreadDispatch.Warm();
    long rounds = Math.Max(20, iterations * 4 / SpreadDispatch.Blocks);
    double run = SpreadDispatch.Run(rounds);
    double translated = SpreadDispatch.TranslatedShare;
    double emu = run - SpreadDispatch.Run(10);
    Console.WriteLine($"dispatch ({SpreadDispatch.Blocks} {SpreadDispatch.Adds + 1}-instruction blocks on {SpreadDispatch.Blocks / 8} pages): SharpVM.Cpu {emu / ((rounds - 10) * (double)SpreadDispatch.Blocks) * 1e9:F1} ns per block entry ({translated:P0} of them translated)");
}

// Exception round trip: UD2 -> #UD handler (skips it) -> IRETQ, in 64-bit kernel mode.
{
    const long Faults = 200_000;
    using var guest = new LongModeGuest();
    const ulong Handler = 0x9000;
    guest.W64(LongModeGuest.Idt + 6 * 16, (Handler & 0xFFFF) | (0x08UL << 16) | (0x8EUL << 40) | ((Handler >> 16) << 48));
    guest.W64(LongModeGuest.Idt + 6 * 16 + 8, 0);
    guest.Put(Handler, a => { a.add(__qword_ptr[rsp], 2); a.iretq(); });
    guest.Put(0x100000, a =>
    {
        var l = a.CreateLabel();
        a.mov(rcx, Faults);
        a.Label(ref l);
        a.ud2();
        a.dec(rcx);
        a.jnz(l);
        a.@out(0xF4, al); // ends the run (HLT would wait for an interrupt: the VM has a local APIC)
    });
    guest.Start(0x100000);
    var cpu = guest.Cpu;
    double t0 = ThreadCpu.Now();
    var exit = cpu.Run(new ExitOnPort(cpu));
    double t = ThreadCpu.Now() - t0;
    Console.WriteLine($"exception round trip (UD2 -> #UD handler -> IRETQ): {t / Faults * 1e6:F2} us each ({exit.Reason}, {cpu.ExceptionsDelivered} delivered)");
}

static double RunEmu(byte[] sector, out long retired)
{
    using var mem = GuestMemory.Create(64 << 20);
    mem.Write(new GuestAddress(0x7C00), sector);
    using var hv = new EmulatorHypervisor();
    using var vm = hv.CreateVm(mem, new PioBus(), new MmioBus(), new VmPlatformOptions());
    var cpu = (EmulatorVcpu)vm.CreateVcpu(0);
    cpu.AttachToCurrentThread();
    var s = cpu.GetSpecialRegisters();
    s.Cs = new Segment { Base = 0, Limit = 0xFFFF, Selector = 0, Type = 0xB, S = true, Present = true };
    cpu.SetSpecialRegisters(s);
    cpu.SetRegisters(new Registers { Rip = 0x7C00, Rsp = 0x7000, Rflags = 2 });
    var io = new ExitOnPort(cpu);
    // CPU time of this thread, not wall time: the machines are shared and often oversubscribed.
    var cpu0 = ThreadCpu.Now();
    while (true)
    {
        var exit = cpu.Run(io);
        if (exit.Reason == VcpuExitReason.Interrupted && io.Done) break;
        if (exit.Reason != VcpuExitReason.Interrupted) throw new InvalidOperationException($"guest stopped: {exit}");
    }
    retired = cpu.InstructionsRetired;
    return ThreadCpu.Now() - cpu0;
}

static double RunQemu(byte[] sector)
{
    string img = Path.Combine(Path.GetTempPath(), $"sharpvm-bench-{Environment.ProcessId}.img");
    var disk = new byte[1 << 20];
    sector.CopyTo(disk, 0);
    File.WriteAllBytes(img, disk);
    var psi = new ProcessStartInfo("/usr/bin/qemu-system-x86_64",
        $"-M pc -accel tcg -m 64 -display none -nographic -no-reboot -monitor none -serial none -device isa-debug-exit,iobase=0xf4,iosize=4 -drive file={img},format=raw,if=ide")
    { RedirectStandardOutput = true, RedirectStandardError = true };
    double before = ThreadCpu.Children();
    using var p = Process.Start(psi)!;
    p.WaitForExit();
    double t = ThreadCpu.Children() - before; // all QEMU threads, user + system
    File.Delete(img);
    return t;
}

static unsafe class ThreadCpu
{
    [System.Runtime.InteropServices.DllImport("libc")]
    private static extern int clock_gettime(int clock, long* ts);

    /// <summary>CPU seconds used by the calling thread (CLOCK_THREAD_CPUTIME_ID).</summary>
    public static double Now()
    {
        long* ts = stackalloc long[2];
        clock_gettime(3, ts);
        return ts[0] + ts[1] / 1e9;
    }

    [System.Runtime.InteropServices.DllImport("libc")]
    private static extern int getrusage(int who, long* usage);

    /// <summary>User + system CPU seconds of terminated, waited-for children (RUSAGE_CHILDREN).</summary>
    public static double Children()
    {
        long* ru = stackalloc long[32];
        getrusage(-1, ru);
        return ru[0] + ru[1] / 1e6 + ru[2] + ru[3] / 1e6;
    }
}

sealed class ListWriter : CodeWriter
{
    public readonly List<byte> Bytes = [];
    public override void WriteByte(byte value) => Bytes.Add(value);
}

sealed class ExitOnPort(EmulatorVcpu cpu) : IVcpuIoHandler
{
    public bool Done;
    public void PioRead(ushort port, Span<byte> data) => data.Fill(0xFF);
    public void PioWrite(ushort port, ReadOnlySpan<byte> data)
    {
        if (port == 0xF4) { Done = true; cpu.RequestExit(); }
    }
    public void MmioRead(ulong address, Span<byte> data) => data.Fill(0xFF);
    public void MmioWrite(ulong address, ReadOnlySpan<byte> data) { }
}

static class BootSector
{
    /// <summary>The 64-bit limbs the multiply-accumulate loop goes over per round (2048-bit numbers, as RSA-2048).</summary>
    public const int Limbs = 32;

    private const ulong Org = 0x7C00, Pm32 = 0x7C20, Lm64 = 0x7C9E, Gdt = 0x7DC8, Gdtr = 0x7DF8;

    /// <param name="dispatch">
    /// Instead of the one self-looping block, the same eight instructions per round as four two-instruction blocks
    /// joined by JMPs (kernel mode): every block entry goes through the dispatcher, which is what this measures.
    /// </param>
    /// <param name="multiplyAccumulate">
    /// Instead of the 8-instruction loop, Linux's mpihelp_submul_1 inner loop as GCC compiles it for the 6.1 kernel
    /// (38 instructions per 64-bit limb: four 32x32 IMULs, CMP/CMOVAE/SETB carries, a load, a SUB from memory, ADC
    /// and a store) over <see cref="Limbs"/> limbs per round (kernel mode): RSA in the kernel's module signature
    /// checks and crypto self-tests, whose loops run about half the guest instructions of a Linux boot.
    /// </param>
    public static byte[] Build(long iterations, bool user, bool dispatch = false, bool multiplyAccumulate = false)
    {
        var sector = new byte[512];
        void Put(ulong at, Action<Assembler> f, int bits, ulong limit = Org + 510)
        {
            var a = new Assembler(bits);
            f(a);
            var w = new Writer();
            a.Assemble(w, at);
            if (at + (ulong)w.Bytes.Count > limit) throw new InvalidOperationException($"code at 0x{at:x} ({w.Bytes.Count} bytes) runs past 0x{limit:x}");
            w.Bytes.ToArray().CopyTo(sector, (int)(at - Org));
        }
        Put(Org, a =>
        {
            a.cli();
            a.xor(ax, ax); a.mov(ds, ax); a.mov(ss, ax); a.mov(sp, 0x7000);
            a.lgdt(__[(long)Gdtr]);
            a.mov(eax, cr0); a.or(al, 1); a.mov(cr0, eax);
            a.db(0x66, 0xEA); a.dd((uint)Pm32); a.dw(0x18);
        }, 16, limit: Pm32);
        Put(Pm32, a =>
        {
            a.mov(ax, 0x10); a.mov(ds, ax); a.mov(es, ax); a.mov(ss, ax);
            // Page tables at 0x10000: PML4 -> PDPT -> PD of 2 MiB user pages.
            a.mov(edi, 0x10000); a.xor(eax, eax); a.mov(ecx, 0x3000 / 4); a.rep.stosd();
            a.mov(__dword_ptr[0x10000], 0x11007);
            a.mov(__dword_ptr[0x11000], 0x12007);
            a.mov(edi, 0x12000); a.mov(eax, 0x87); a.mov(ecx, 64);
            var l = a.CreateLabel();
            a.Label(ref l);
            a.mov(__dword_ptr[edi], eax); a.add(eax, 0x200000); a.add(edi, 8); a.loop(l);
            a.mov(eax, 0x10000); a.mov(cr3, eax);
            a.mov(eax, cr4); a.or(eax, 0x20); a.mov(cr4, eax);
            a.mov(ecx, 0xC0000080); a.rdmsr(); a.or(eax, 0x100); a.wrmsr();
            a.mov(eax, cr0); a.or(eax, 0x80000000); a.mov(cr0, eax);
            a.db(0xEA); a.dd((uint)Lm64); a.dw(0x08);
        }, 32, limit: Lm64);
        Put(Lm64, a =>
        {
            var loop = a.CreateLabel();
            var body = a.CreateLabel();
            if (user)
            {
                a.push(0x23); a.push(0x90000); a.push(0x3002); // IOPL 3 so the final OUT works
                a.push(0x2B); a.lea(rax, __[body]); a.push(rax);
                a.iretq();
            }
            a.Label(ref body);
            a.mov(rcx, iterations);
            a.mov(rdi, 0x200000);
            if (multiplyAccumulate)
            {
                // Pseudo-random limbs (xorshift64) at 2 MiB: RSA's carries are data-dependent, and host code that branches
                // on them pays for mispredictions that all-zero limbs would hide.
                var fill = a.CreateLabel();
                a.mov(edi, 0x200000); a.mov(ecx, 1024); a.mov(eax, 0x7F4A7C15);
                a.Label(ref fill);
                a.mov(rdx, rax); a.shl(rdx, 13); a.xor(rax, rdx); a.mov(rdx, rax); a.shr(rdx, 7); a.xor(rax, rdx);
                a.mov(rdx, rax); a.shl(rdx, 17); a.xor(rax, rdx); a.mov(__qword_ptr[rdi], rax); a.add(edi, 8); a.dec(ecx); a.jnz(fill);
                // Result limbs at 2 MiB (r11), source limbs at 2 MiB + 4 KiB (rbx); the multiplier's halves in r9/r10.
                a.mov(r15, iterations); a.mov(r11, 0x200000); a.mov(rbx, 0x201000); a.mov(r9, 0x89abcdef); a.mov(r10, 0x01234567);
                a.mov(rbp, 0x100000000);
                var outer = a.CreateLabel();
                var inner = a.CreateLabel();
                a.Label(ref outer);
                a.mov(r8, -Limbs); a.mov(r12, r8); a.xor(esi, esi);
                a.Label(ref inner);
                a.movsxd(rax, r8d); a.sub(rax, r12); a.mov(rcx, __qword_ptr[rbx + rax * 8]); a.lea(rdi, __[rax * 8]);
                a.mov(rdx, rcx); a.mov(ecx, ecx); a.shr(rdx, 32); a.mov(rax, rcx); a.imul(rax, r9); a.mov(r13, rdx);
                a.imul(r13, r9); a.imul(rcx, r10); a.imul(rdx, r10); a.mov(r14, rax); a.mov(eax, eax); a.shr(r14, 32);
                a.add(rcx, r13); a.add(rcx, r14); a.mov(r14, rdx); a.add(rdx, rbp); a.cmp(rcx, r13); a.mov(r13, rcx);
                a.cmovae(rdx, r14); a.add(rax, rsi); a.shl(r13, 32); a.add(rax, r13); a.cmp(rax, rsi); a.setb(sil);
                a.add(rdi, r11); a.shr(rcx, 32); a.mov(r13, __qword_ptr[rdi]); a.movzx(esi, sil); a.sub(r13, rax);
                a.adc(rsi, rcx); a.mov(__qword_ptr[rdi], r13); a.add(rsi, rdx); a.add(r8d, 1); a.jne(inner);
                a.dec(r15); // the rounds (the inner loop uses RCX)
                a.jnz(outer);
            }
            else if (dispatch)
            {
                // The blocks are laid out last first and joined by backward JMPs: a block goes on through a forward
                // JMP on its page, which would make the round one block again.
                var b2 = a.CreateLabel();
                var b3 = a.CreateLabel();
                var b4 = a.CreateLabel();
                var done = a.CreateLabel();
                a.jmp(loop);
                a.Label(ref b4); a.dec(rcx); a.jnz(loop); a.jmp(done);
                a.Label(ref b3); a.shr(rdx, 3); a.jmp(b4);
                a.Label(ref b2); a.xor(rdx, rax); a.jmp(b3);
                a.Label(ref loop); a.add(rax, rcx); a.jmp(b2);
                a.Label(ref done);
            }
            else
            {
                a.Label(ref loop);
                a.add(rax, rcx);
                a.xor(rdx, rax);
                a.mov(__qword_ptr[rdi], rdx);
                a.mov(rbx, __qword_ptr[rdi]);
                a.lea(rsi, __[rsi + rbx * 2]);
                a.shr(rdx, 3);
                a.dec(rcx);
                a.jnz(loop);
            }
            a.mov(al, 0); a.@out(0xF4, al);
            var spin = a.CreateLabel();
            a.Label(ref spin);
            a.jmp(spin);
        }, 64, limit: Gdt);
        // GDT: null, 64-bit code, data, 32-bit code, user data (0x20), user code64 (0x28).
        ulong[] gdt = [0, 0x00AF9B000000FFFF, 0x00CF93000000FFFF, 0x00CF9B000000FFFF, 0x00CFF3000000FFFF, 0x00AFFB000000FFFF];
        for (int k = 0; k < gdt.Length; k++) BitConverter.GetBytes(gdt[k]).CopyTo(sector, (int)(Gdt - Org) + k * 8);
        BitConverter.GetBytes((ushort)(gdt.Length * 8 - 1)).CopyTo(sector, (int)(Gdtr - Org));
        BitConverter.GetBytes((uint)Gdt).CopyTo(sector, (int)(Gdtr - Org) + 2);
        sector[510] = 0x55; sector[511] = 0xAA;
        return sector;
    }

    private sealed class Writer : CodeWriter
    {
        public readonly List<byte> Bytes = [];
        public override void WriteByte(byte value) => Bytes.Add(value);
    }
}
