using Iced.Intel;
using SharpVM.Cpu;
using static Iced.Intel.AssemblerRegisters;

/// <summary>
/// What the block translator costs per block and per instruction form (`SharpVM.Cpu.Bench jit`): synthetic blocks of
/// <see cref="Copies"/> copies of one form (then a JMP that ends the block) are translated and JIT-compiled on this
/// thread; a form's cost is its block's time less that of the JMP alone, divided by the copies. Times are thread CPU
/// time (the machine is shared), medians over rounds that visit every form in turn. The translation phase (IL and
/// the DynamicMethod's delegate) and the JIT (the first call) are timed apart.
/// </summary>
static class JitCost
{
    private const int Copies = 8;
    private const ulong Rip = 0x40_0000;

    /// <summary>The forms measured: each emits one instance. "flags live" forms are followed by a load, which may fault, so their flags stay observable.</summary>
    private static readonly (string Name, Action<Assembler> Emit)[] Forms =
    [
        ("Jcc", a => a.je(Rip + 0x10_0000)),
        ("MovRR64", a => a.mov(rax, rbx)),
        ("MovRI64", a => a.mov(rax, 0x1234_5678_9abcUL)),
        ("MovRM64", a => a.mov(rax, __qword_ptr[rbx + 8])),
        ("MovMR64", a => a.mov(__qword_ptr[rbx + 8], rax)),
        ("MovRM32", a => a.mov(eax, __dword_ptr[rbx + 8])),
        ("MovMR32", a => a.mov(__dword_ptr[rbx + 8], eax)),
        ("Lea64", a => a.lea(rax, __qword_ptr[rbx + rcx * 4 + 8])),
        ("AluRR64 (dead)", a => a.add(rax, rbx)),
        ("AluRR64+load", a => { a.add(rax, rbx); a.mov(rcx, __qword_ptr[rsp]); }),
        ("AluRR32+load", a => { a.add(eax, ebx); a.mov(rcx, __qword_ptr[rsp]); }),
        ("AluRI64+load", a => { a.and(rax, 0x70); a.mov(rcx, __qword_ptr[rsp]); }),
        ("AluRI32+load", a => { a.sub(eax, 0x70); a.mov(rcx, __qword_ptr[rsp]); }),
        ("load (MovRM64 rsp)", a => a.mov(rcx, __qword_ptr[rsp])),
        ("AluRM64", a => a.add(rax, __qword_ptr[rbx + 8])),
        ("AluRM (32)", a => a.add(eax, __dword_ptr[rbx + 8])),
        ("AluRM (8)", a => a.add(al, __byte_ptr[rbx + 8])),
        ("AluRR (8)", a => a.add(al, bl)),
        ("AluRR (16)", a => a.add(ax, bx)),
        ("AluRI (8)", a => a.and(al, 0x70)),
        ("AluMR (32)", a => a.add(__dword_ptr[rbx + 8], eax)),
        ("AluMI (32)", a => a.add(__dword_ptr[rbx + 8], 1)),
        ("AluMI cmp (8)", a => a.cmp(__byte_ptr[rbx + 8], 1)),
        ("MovMI (32)", a => a.mov(__dword_ptr[rbx + 8], 1)),
        ("MovRR (8)", a => a.mov(al, bl)),
        ("MovRM (8)", a => a.mov(al, __byte_ptr[rbx + 8])),
        ("MovMR (16)", a => a.mov(__word_ptr[rbx + 8], ax)),
        ("IncR64", a => a.inc(rax)),
        ("DecR32", a => a.dec(eax)),
        ("ShiftRI64+load", a => { a.shl(rax, 3); a.mov(rcx, __qword_ptr[rsp]); }),
        ("ShiftRI32+load", a => { a.shr(eax, 3); a.mov(rcx, __qword_ptr[rsp]); }),
        ("RotRI64", a => a.rol(rax, 3)),
        ("MovzxRRWide", a => a.movzx(eax, bl)),
        ("MovzxRMWide", a => a.movzx(eax, __byte_ptr[rbx + 8])),
        ("MovzxRMWide (gs:)", a => a.movzx(eax, __byte_ptr.gs[rbx + 8])),
        ("MovRM64 (gs:)", a => a.mov(rax, __qword_ptr.gs[rbx + 8])),
        ("Ret", a => a.ret()),
        ("MovsxRM", a => a.movsx(eax, __byte_ptr[rbx + 8])),
        ("SetccR (e)", a => a.sete(al)),
        ("SetccR (s)", a => a.sets(al)),
        ("CmovRR64", a => a.cmovne(rax, rbx)),
        ("MovsxdRR", a => a.movsxd(rax, ebx)),
        ("MovsxdRM", a => a.movsxd(rax, __dword_ptr[rbx + 8])),
        ("Push", a => a.push(rax)),
        ("Pop", a => a.pop(rax)),
        ("ImulRR64+load", a => { a.imul(rax, rbx); a.mov(rcx, __qword_ptr[rsp]); }),
        ("TestJcc (fused, l)", a => { a.test(eax, eax); a.jl(Rip + 0x10_0000); }),
        ("CmpJcc64 (fused, b)", a => { a.cmp(rax, rbx); a.jb(Rip + 0x10_0000); }),
        ("interpreted (cpuid)", a => a.cpuid()),
    ];

    /// <param name="selfLooping">End each block with a JMP to its own start instead of away: the translator then inlines
    /// the TLB fast path and a few other helpers (such blocks run many rounds per entry).</param>
    public static void Run(int rounds, bool selfLooping)
    {
        ulong exit = selfLooping ? Rip : Rip + 0x20_0000;
        var baseline = Block(_ => { }, exit);
        var blocks = Forms.Select(f => Block(a => { for (int k = 0; k < Copies; k++) f.Emit(a); }, exit)).ToArray();
        // Warm up the translator's own code (and the JIT's first-use costs) before measuring.
        for (int r = 0; r < 3; r++) { Time(baseline()); foreach (var b in blocks) Time(b()); }

        var baseTimes = new List<(double Emit, double Jit)>();
        var times = blocks.Select(_ => new List<(double Emit, double Jit)>()).ToArray();
        for (int r = 0; r < rounds; r++)
        {
            baseTimes.Add(Time(baseline()));
            for (int f = 0; f < blocks.Length; f++) times[f].Add(Time(blocks[f]()));
        }
        double baseEmit = Median(baseTimes.Select(t => t.Emit)), baseJit = Median(baseTimes.Select(t => t.Jit));
        Console.WriteLine($"{(selfLooping ? "Self-looping blocks. " : "")}JIT cost per block (a lone JMP; median of {rounds}): translate {baseEmit:F1} us + JIT {baseJit:F1} us = {baseEmit + baseJit:F1} us");
        Console.WriteLine($"{"form",-22} {"us/copy",8} {"(emit",7} {"jit)",7}   block of {Copies} + JMP, us");
        for (int f = 0; f < blocks.Length; f++)
        {
            double emit = Median(times[f].Select(t => t.Emit)), jit = Median(times[f].Select(t => t.Jit));
            double per = (emit + jit - baseEmit - baseJit) / Copies;
            Console.WriteLine($"{Forms[f].Name,-22} {per,8:F1} {(emit - baseEmit) / Copies,7:F1} {(jit - baseJit) / Copies,7:F1}   {emit + jit,8:F1}");
        }
    }

    private static (double Emit, double Jit) Time(Block b)
    {
        double t0 = ThreadCpu.Now();
        var code = BlockTranslator.Translate(b);
        double t1 = ThreadCpu.Now();
        ulong dummy = 0;
        code(null, ref dummy); // JIT-compiles it, as BlockTranslator.TranslateNow does
        double t2 = ThreadCpu.Now();
        return ((t1 - t0) * 1e6, (t2 - t1) * 1e6);
    }

    private static double Median(IEnumerable<double> xs)
    {
        var s = xs.Order().ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }

    /// <summary>A factory of fresh blocks (each translation gets its own DynamicMethod anyway): the body, then a JMP to <paramref name="exit"/>.</summary>
    private static Func<Block> Block(Action<Assembler> body, ulong exit)
    {
        var a = new Assembler(64);
        body(a);
        a.jmp(exit);
        var w = new ListWriter();
        a.Assemble(w, Rip);
        byte[] bytes = w.Bytes.ToArray();
        return () => Decode(bytes);
    }

    /// <summary>Decodes a block as the vCPU's decoder does (Run.cs Decode): predecoded entries, the closing compare-and-branch fused.</summary>
    private static Block Decode(byte[] bytes)
    {
        var dec = Decoder.Create(64, new ByteArrayCodeReader(bytes), Rip);
        var insns = new List<Instruction>();
        while (dec.IP < Rip + (ulong)bytes.Length) insns.Add(dec.Decode());
        int n = insns.Count;
        var b = new Block
        {
            Rip = Rip, Phys = Rip, Bitness = 64, Count = n, Insns = insns.ToArray(),
            OpSize = new byte[n], AddrSize = new byte[n], D = new DInsn[n], Len1 = bytes.Length,
        };
        b.SetBytes(bytes);
        for (int k = 0; k < n; k++)
        {
            b.OpSize[k] = (byte)Decoding.OperandSize(in b.Insns[k]);
            b.AddrSize[k] = (byte)Decoding.AddressSize(in b.Insns[k], 64);
            b.D[k] = EmulatorVcpu.Predecode(in b.Insns[k], b.OpSize[k], b.AddrSize[k], 64);
        }
        b.RunCount = EmulatorVcpu.FuseCompareAndBranch(b.D, n);
        return b;
    }
}
