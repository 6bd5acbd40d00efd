using Iced.Intel;
using SharpVM.Hypervisor;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Cpu.Tests;

/// <summary>
/// Random self-looping blocks made mostly of the forms the translator has templates for (with a few that call back
/// into the interpreter, stores into the code's own page on every third seed, and wild addresses that fault) run
/// interpreted and translated: registers, RFLAGS, the retired count, CR2 and the memory they touch must be the same.
/// A regression net for new templates: a template that differs from ExecHot shows up here as a seed and a register.
/// </summary>
[Collection(NativeCpuCollection.Name)]
public sealed class TranslatorRandomLoopTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly AssemblerRegister64[] R64 = [rax, rcx, rdx, rsi, rdi, rbp, r8, r9, r10, r11, r12, r13, r14];
    private static readonly AssemblerRegister32[] R32 = [eax, ecx, edx, esi, edi, ebp, r8d, r9d, r10d, r11d, r12d, r13d, r14d];
    private static readonly AssemblerRegister16[] R16 = [ax, cx, dx, si, di, bp, r8w, r9w, r10w, r11w, r12w, r13w, r14w];
    private static readonly AssemblerRegister8[] R8L = [al, cl, dl, bl, ah, ch, dh, bh];

    private static void Gen(Assembler a, Random rnd, bool codeData)
    {
        var top = a.CreateLabel();
        for (int k = 0; k < R64.Length; k++) a.mov(R64[k], (long)rnd.NextInt64() >> rnd.Next(64));
        a.mov(rbx, codeData ? (long)TestGuest.CodeAddr + 0x800 : 0x300000);
        a.mov(r15, rnd.Next(1, 80));
        a.Label(ref top);
        int n = rnd.Next(1, 25);
        int pushes = 0;
        for (int k = 0; k < n; k++)
        {
            var x = R64[rnd.Next(R64.Length)]; var y = R64[rnd.Next(R64.Length)];
            var x32 = R32[rnd.Next(R32.Length)]; var y32 = R32[rnd.Next(R32.Length)];
            int disp = rnd.Next(0, 0x100) * 8 - (codeData ? 0x400 : 0);
            var mem = rnd.Next(20) == 0 ? __qword_ptr[y + disp] : __qword_ptr[rbx + disp];
            var mem32 = rnd.Next(20) == 0 ? __dword_ptr[y + disp] : __dword_ptr[rbx + disp];
            int imm = rnd.Next(4) == 0 ? rnd.Next() : rnd.Next(-100, 100);
            var z = R64[rnd.Next(R64.Length)]; var w = R64[rnd.Next(R64.Length)];
            switch (rnd.Next(44))
            {
                case 0: a.mov(x, y); break;
                case 1: a.mov(x, rnd.NextInt64()); break;
                case 2: a.mov(x, mem); break;
                case 3: a.mov(mem, x); break;
                case 4: a.mov(x32, y32); break;
                case 5: a.mov(x32, mem32); break;
                case 6: a.mov(mem32, x32); break;
                case 7: a.add(x, y); break;
                case 8: a.sub(x, imm); break;
                case 9: a.adc(x, y); break;
                case 10: a.sbb(x32, y32); break;
                case 11: a.xor(x32, imm); break;
                case 12: a.and(x, mem); break;
                case 13: a.cmp(x, mem); break;
                case 14: a.test(x, y); break;
                case 15: a.inc(x); break;
                case 16: a.dec(x32); break;
                case 17: a.shl(x, (byte)rnd.Next(64)); break;
                case 18: a.sar(x, (byte)rnd.Next(64)); break;
                case 19: a.shr(x, (byte)rnd.Next(64)); break;
                case 20: { var r8 = R8L[rnd.Next(R8L.Length)]; a.movzx(r8 == ah || r8 == ch || r8 == dh || r8 == bh ? R32[rnd.Next(6)] : x32, r8); break; }
                case 21: a.movzx(x, __word_ptr[rbx + disp]); break;
                case 22: { var r8 = R8L[rnd.Next(R8L.Length)]; if (r8 == bl || r8 == bh) r8 = al; a.sete(r8); a.setl(cl); break; }
                case 23: a.cmovb(x, y); break;
                case 24: a.cmovg(x, mem); break;
                case 25: a.movsxd(x, y32); break;
                case 26: a.movsxd(x, mem32); break;
                case 27: a.lea(x, __qword_ptr[y + x * 4 + disp]); break;
                case 28: a.lea(x, __qword_ptr[y32 + disp]); break;
                case 29: if (pushes < 4) { a.push(x); pushes++; } else { a.pop(x); pushes--; } break;
                case 30: a.imul(x, y); break;                     // interpreted
                case 31: a.add(__qword_ptr[rbx + disp], x); break; // interpreted store
                case 32: a.or(x32, mem32); break;
                case 33: a.cmp(x32, y32); var l = a.CreateLabel(); a.jb(l); a.inc(r14); a.Label(ref l); break;
                case 34: a.adc(x, mem); break;
                case 35: a.sbb(x, imm); break;
                case 36: a.adc(R16[rnd.Next(R16.Length)], R16[rnd.Next(R16.Length)]); break;
                // A condition or a carry read with an instruction that leaves the flags alone in between.
                case 37: a.cmp(x, y); a.mov(z, w); a.cmovae(w, x); break;
                case 38: a.sub(x, y); a.lea(z, __qword_ptr[w + 8]); a.adc(w, x); break;
                case 39:
                    if (rnd.Next(2) == 0) a.mov(cl, (byte)rnd.Next(0, 3)); // counts 0 (no flag changes) and 1 (OF defined)
                    switch (rnd.Next(4))
                    {
                        case 0: a.shl(x, cl); break;
                        case 1: a.shr(x32, cl); break;
                        case 2: a.sar(x, cl); break;
                        default: a.sar(x32, cl); break;
                    }
                    if (rnd.Next(2) == 0) { a.pushfq(); a.pop(z); } // every flag, as the shift left them
                    break;
                case 40:
                    switch (rnd.Next(3))
                    {
                        case 0: a.neg(x); break;
                        case 1: a.not(x32); break;
                        default: a.neg(R8L[rnd.Next(R8L.Length)]); break;
                    }
                    break;
                case 41:
                    switch (rnd.Next(4))
                    {
                        case 0: a.inc(mem); break;
                        case 1: a.dec(mem32); break;
                        case 2: a.neg(__qword_ptr[rbx + disp]); break;
                        default: a.not(__word_ptr[rbx + disp]); break;
                    }
                    break;
                case 42: if (rnd.Next(2) == 0) a.bswap(x); else a.bswap(x32); break;
                case 43:
                    // Rotates after an ADD: their flags dead when an XOR follows, else live (kept SF/ZF, new CF/OF).
                    a.add(x, y);
                    if (rnd.Next(2) == 0) a.rol(z, (byte)rnd.Next(1, 64)); else a.ror(R32[rnd.Next(R32.Length)], (byte)rnd.Next(1, 32));
                    if (rnd.Next(2) == 0) a.xor(w, x);
                    break;
            }
        }
        while (pushes-- > 0) a.pop(R64[rnd.Next(R64.Length)]);
        a.dec(r15);
        a.jnz(top);
        a.hlt();
    }

    private const ulong DataBase32 = 0x10000; // DS/ES/SS base of the 32-bit runs: every data access adds it

    /// <summary>The 32-bit counterpart of <see cref="Gen"/> (flat CS, based data segments, no paging).</summary>
    private static void Gen32(Assembler a, Random rnd, bool codeData)
    {
        AssemblerRegister32[] regs = [eax, ecx, edx, esi, edi];
        AssemblerRegister8[] bytes = [al, cl, dl, ah, ch, dh];
        var top = a.CreateLabel();
        foreach (var r in regs) a.mov(r, rnd.Next(4) == 0 ? rnd.Next() : rnd.Next(0, 0x1000));
        a.mov(ebx, (int)((codeData ? TestGuest.CodeAddr + 0x800 : 0x300000) - DataBase32));
        a.mov(ebp, rnd.Next(1, 80));
        a.Label(ref top);
        int n = rnd.Next(1, 25);
        for (int k = 0; k < n; k++)
        {
            var x = regs[rnd.Next(regs.Length)]; var y = regs[rnd.Next(regs.Length)];
            int disp = rnd.Next(0, 0x100) * 4 - (codeData ? 0x400 : 0);
            var mem = rnd.Next(20) == 0 ? __dword_ptr[y + disp] : __dword_ptr[ebx + disp];
            int imm = rnd.Next(4) == 0 ? rnd.Next() : rnd.Next(-100, 100);
            switch (rnd.Next(20))
            {
                case 0: a.mov(x, y); break;
                case 1: a.mov(x, imm); break;
                case 2: a.mov(x, mem); break;
                case 3: a.mov(mem, x); break;
                case 4: a.add(x, y); break;
                case 5: a.sub(x, imm); break;
                case 6: a.adc(x, y); break;
                case 7: a.sbb(x, imm); break;
                case 8: a.xor(x, mem); break;                      // interpreted (32-bit ALU from memory)
                case 9: a.cmp(x, y); break;
                case 10: a.inc(x); break;
                case 11: a.dec(x); break;
                case 12: a.movzx(x, bytes[rnd.Next(bytes.Length)]); break;
                case 13: a.movzx(x, __word_ptr[ebx + disp]); break;
                case 14: a.setg(bytes[rnd.Next(bytes.Length)]); break;
                case 15: a.shl(x, (byte)rnd.Next(32)); break;      // interpreted
                case 16: a.mov(__dword_ptr.ss[ebx + disp], x); break;
                case 17: a.and(x, imm); break;
                case 18: a.test(x, y); break;
                case 19: { var l = a.CreateLabel(); a.cmp(x, y); a.jae(l); a.inc(edi); a.Label(ref l); break; }
            }
        }
        a.dec(ebp);
        a.jnz(top);
        a.hlt();
    }

    private static void Enter32BitMode(TestGuest g)
    {
        var s = g.Cpu.GetSpecialRegisters();
        s.Cr0 = 0x11;
        s.Cs = new Segment { Base = 0, Limit = 0xFFFFFFFF, Selector = TestGuest.KCode32, Type = 0xB, S = true, Present = true, Db = true, G = true };
        var d = new Segment { Base = DataBase32, Limit = 0xFFFFFFFF, Selector = TestGuest.KData, Type = 0x3, S = true, Present = true, Db = true, G = true };
        s.Ds = s.Es = s.Ss = s.Fs = s.Gs = d;
        s.Gdt = new DescriptorTable { Base = TestGuest.GdtAddr, Limit = 0x57 };
        g.Cpu.SetSpecialRegisters(s);
        g.Cpu.SetRegisters(new Registers { Rip = TestGuest.CodeAddr, Rsp = 0x90000, Rflags = 2 });
    }

    [Theory]
    [InlineData(64)]
    [InlineData(32)]
    public void RandomLoopsEndAsTheInterpretersDo(int bitness)
    {
        int diffs = 0, completed = 0;
        for (int seed = 0; seed < 200; seed++)
        {
            (VcpuExit, Registers, long, ulong, byte[]) Once(bool tr)
            {
                using var g = new TestGuest(ramBytes: 64UL << 20, longMode: bitness == 64, translated: tr);
                if (bitness == 64) g.Load(TestGuest.CodeAddr, a => Gen(a, new Random(seed), seed % 3 == 0));
                else
                {
                    Enter32BitMode(g);
                    g.Load(TestGuest.CodeAddr, a => Gen32(a, new Random(seed), seed % 3 == 0), 32);
                }
                using var watchdog = new Timer(_ => g.Cpu.RequestExit(), null, 10_000, Timeout.Infinite); // only against a hang
                var e = g.Run();
                var data = g.Memory.GetSpan(new SharpVM.Memory.GuestAddress(0x300000), 0x800).ToArray()
                    .Concat(g.Memory.GetSpan(new SharpVM.Memory.GuestAddress(TestGuest.CodeAddr), 0x1000).ToArray())
                    .Concat(g.Memory.GetSpan(new SharpVM.Memory.GuestAddress(TestGuest.StackTop - 0x200), 0x200).ToArray()).ToArray();
                return (e, g.Cpu.GetRegisters(), g.Cpu.InstructionsRetired, g.Cpu.GetSpecialRegisters().Cr2, data);
            }
            var a = Once(false); var b = Once(true);
            if (a.Item2.Rip >= TestGuest.CodeAddr) completed++; // else it faulted into a handler stub
            Assert.True(a.Item1.Reason == VcpuExitReason.Halt, $"seed {seed}: {a.Item1.Reason} {a.Item1.Detail}"); // ends or faults into a HLT handler
            bool same = a.Item1.Reason == b.Item1.Reason && a.Item3 == b.Item3 && a.Item2.Equals(b.Item2) && a.Item4 == b.Item4 && a.Item5.AsSpan().SequenceEqual(b.Item5);
            if (!same)
            {
                diffs++;
                output.WriteLine($"seed {seed}: {a.Item1.Reason}/{b.Item1.Reason} retired {a.Item3}/{b.Item3} rip {a.Item2.Rip:x}/{b.Item2.Rip:x} cr2 {a.Item4:x}/{b.Item4:x} mem {a.Item5.AsSpan().SequenceEqual(b.Item5)} {a.Item1.Detail} // {b.Item1.Detail}");
                foreach (var f in typeof(Registers).GetFields())
                    if (!Equals(f.GetValue(a.Item2), f.GetValue(b.Item2))) output.WriteLine($"   {f.Name}: {f.GetValue(a.Item2):x} vs {f.GetValue(b.Item2):x}");
            }
        }
        output.WriteLine($"{diffs} of 200 seeds differ; {completed} ran all their rounds");
        Assert.True(completed >= 50, $"only {completed} seeds ran to the end: the loops barely run");
        Assert.Equal(0, diffs);
    }
}
