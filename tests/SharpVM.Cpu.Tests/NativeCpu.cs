using System.Runtime.InteropServices;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Cpu.Tests;

/// <summary>
/// Runs single instructions on the host CPU in user mode: a fixed-address RWX code page holds a
/// prologue that loads GPRs, flags and XMM registers from a state block, the instruction under test,
/// and an epilogue that stores them back. A data page at a fixed low address serves memory operands,
/// so the emulator can use the same addresses.
/// </summary>
internal static unsafe partial class NativeCpu
{
    [LibraryImport("libc", SetLastError = true)]
    private static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, nint offset);

    private const int PROT_READ = 1, PROT_WRITE = 2, PROT_EXEC = 4;
    private const int MAP_PRIVATE = 2, MAP_ANONYMOUS = 0x20, MAP_FIXED_NOREPLACE = 0x100000;

    public const ulong DataAddr = 0x3000_0000, CodeAddr = 0x3100_0000;
    public const int DataSize = 0x2000;
    private const ulong State = CodeAddr + 0x8000;
    private const ulong InRegs = State, InFlags = State + 128, OutRegs = State + 256, OutFlags = State + 384, SavedRsp = State + 512;
    private const ulong InXmm = State + 0x400, OutXmm = State + 0x500;
    private const ulong TestSlot = CodeAddr + 0x1000, Epilogue = CodeAddr + 0x2000;
    // Compatibility-mode (32-bit) harness: entry, test slot and epilogue.
    private const ulong Entry32 = CodeAddr + 0x3000, Pro32 = CodeAddr + 0x3400, TestSlot32 = CodeAddr + 0x4000, Epi32 = CodeAddr + 0x5000, Back64 = CodeAddr + 0x5400;
    private const ulong Stack32 = DataAddr + 0xF000;

    private static readonly object Gate = new();
    private static bool _ready;
    private static string? _error;

    public static bool TryInit(out string? error)
    {
        lock (Gate)
        {
            if (!_ready && _error is null)
            {
                nint c = mmap((nint)CodeAddr, 0x10000, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
                nint d = mmap((nint)DataAddr, 0x10000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
                if (c != (nint)CodeAddr || d != (nint)DataAddr) _error = $"cannot map the fixed test pages (errno {Marshal.GetLastPInvokeError()})";
                else
                {
                    WriteHarness();
                    _ready = true;
                }
            }
            error = _error;
            return _ready;
        }
    }

    public static readonly Register[] Gprs =
    [
        Register.RAX, Register.RCX, Register.RDX, Register.RBX, Register.RSP, Register.RBP, Register.RSI, Register.RDI,
        Register.R8, Register.R9, Register.R10, Register.R11, Register.R12, Register.R13, Register.R14, Register.R15,
    ];

    private static void Emit(Assembler a, ulong at)
    {
        var w = new MemoryCodeWriter();
        a.Assemble(w, at);
        var span = new Span<byte>((void*)at, w.Bytes.Count);
        for (int i = 0; i < w.Bytes.Count; i++) span[i] = w.Bytes[i];
    }

    private static void WriteHarness()
    {
        var a = new Assembler(64);
        a.push(rbx); a.push(rbp); a.push(r12); a.push(r13); a.push(r14); a.push(r15);
        a.mov(__qword_ptr[(long)SavedRsp], rsp);
        for (int k = 0; k < 16; k++) a.movdqu(new AssemblerRegisterXMM(Register.XMM0 + k), __xmmword_ptr[(long)(InXmm + (ulong)k * 16)]);
        a.push(__qword_ptr[(long)InFlags]);
        a.popfq();
        for (int r = 0; r < 16; r++)
        {
            if (r == 4) continue;
            a.mov(new AssemblerRegister64(Gprs[r]), __qword_ptr[(long)(InRegs + (ulong)r * 8)]);
        }
        a.jmp(TestSlot);
        Emit(a, CodeAddr);

        var e = new Assembler(64);
        for (int r = 0; r < 16; r++)
        {
            if (r == 4) continue;
            e.mov(__qword_ptr[(long)(OutRegs + (ulong)r * 8)], new AssemblerRegister64(Gprs[r]));
        }
        e.pushfq();
        e.pop(__qword_ptr[(long)OutFlags]);
        e.cld();
        for (int k = 0; k < 16; k++) e.movdqu(__xmmword_ptr[(long)(OutXmm + (ulong)k * 16)], new AssemblerRegisterXMM(Register.XMM0 + k));
        e.mov(rsp, __qword_ptr[(long)SavedRsp]);
        e.pop(r15); e.pop(r14); e.pop(r13); e.pop(r12); e.pop(rbp); e.pop(rbx);
        e.ret();
        Emit(e, Epilogue);

        // 32-bit: 64-bit entry switches to the compat-mode user code segment (0x23) with a far return.
        var x = new Assembler(64);
        x.push(rbx); x.push(rbp); x.push(r12); x.push(r13); x.push(r14); x.push(r15);
        x.mov(__qword_ptr[(long)SavedRsp], rsp);
        for (int k = 0; k < 8; k++) x.movdqu(new AssemblerRegisterXMM(Register.XMM0 + k), __xmmword_ptr[(long)(InXmm + (ulong)k * 16)]);
        x.mov(rsp, Stack32);
        x.push(0x23);
        x.push((int)Pro32);
        x.db(0x48, 0xCB); // retfq
        Emit(x, Entry32);
        var p32 = new Assembler(32);
        p32.mov(ax, 0x2B); p32.mov(ds, ax); p32.mov(es, ax);
        p32.push(__dword_ptr[(long)InFlags]);
        p32.popfd();
        for (int r = 0; r < 8; r++)
        {
            if (r == 4) continue;
            p32.mov(new AssemblerRegister32(Register.EAX + r), __dword_ptr[(long)(InRegs + (ulong)r * 8)]);
        }
        p32.jmp(TestSlot32);
        Emit(p32, Pro32);
        var e32 = new Assembler(32);
        for (int r = 0; r < 8; r++)
        {
            if (r == 4) continue;
            e32.mov(__dword_ptr[(long)(OutRegs + (ulong)r * 8)], new AssemblerRegister32(Register.EAX + r));
        }
        e32.pushfd();
        e32.pop(__dword_ptr[(long)OutFlags]);
        e32.cld();
        for (int k = 0; k < 8; k++) e32.movdqu(__xmmword_ptr[(long)(OutXmm + (ulong)k * 16)], new AssemblerRegisterXMM(Register.XMM0 + k));
        e32.push(0x33);
        e32.push((int)Back64);
        e32.retf();
        Emit(e32, Epi32);
        var b64 = new Assembler(64);
        b64.xor(eax, eax); b64.mov(ds, ax); b64.mov(es, ax);
        b64.mov(rsp, __qword_ptr[(long)SavedRsp]);
        b64.pop(r15); b64.pop(r14); b64.pop(r13); b64.pop(r12); b64.pop(rbp); b64.pop(rbx);
        b64.ret();
        Emit(b64, Back64);
    }

    /// <summary>Like <see cref="Run"/> in compatibility mode: only the low 32 bits of EAX..EDI and XMM0-7 count.</summary>
    public static void Run32(ReadOnlySpan<byte> code, ulong[] regs, ulong flags, ulong[] xmm, ulong[] outRegs, out ulong outFlags, ulong[] outXmm)
    {
        byte* slot = (byte*)TestSlot32;
        code.CopyTo(new Span<byte>(slot, code.Length));
        ulong next = TestSlot32 + (ulong)code.Length + 5;
        slot[code.Length] = 0xE9;
        *(int*)(slot + code.Length + 1) = (int)(long)(Epi32 - next);
        for (int r = 0; r < 16; r++) ((ulong*)InRegs)[r] = regs[r];
        for (int r = 0; r < 16; r++) ((ulong*)OutRegs)[r] = 0;
        *(ulong*)InFlags = flags;
        for (int k = 0; k < 32; k++) ((ulong*)InXmm)[k] = xmm[k];
        for (int k = 0; k < 32; k++) ((ulong*)OutXmm)[k] = xmm[k];
        ((delegate* unmanaged<void>)Entry32)();
        for (int r = 0; r < 16; r++) outRegs[r] = r < 8 && r != 4 ? (uint)((ulong*)OutRegs)[r] : regs[r];
        outFlags = *(uint*)OutFlags;
        for (int k = 0; k < 32; k++) outXmm[k] = ((ulong*)OutXmm)[k];
    }

    public static Span<byte> Data => new((void*)DataAddr, DataSize);

    /// <summary>Runs <paramref name="code"/> natively with the given state; returns the state after it.</summary>
    public static void Run(ReadOnlySpan<byte> code, ulong[] regs, ulong flags, ulong[] xmm, ulong[] outRegs, out ulong outFlags, ulong[] outXmm)
    {
        byte* slot = (byte*)TestSlot;
        code.CopyTo(new Span<byte>(slot, code.Length));
        // jmp rel32 to the epilogue
        ulong next = TestSlot + (ulong)code.Length + 5;
        slot[code.Length] = 0xE9;
        *(int*)(slot + code.Length + 1) = (int)(long)(Epilogue - next);
        for (int r = 0; r < 16; r++) ((ulong*)InRegs)[r] = regs[r];
        *(ulong*)InFlags = flags;
        for (int k = 0; k < 32; k++) ((ulong*)InXmm)[k] = xmm[k];
        ((delegate* unmanaged<void>)CodeAddr)();
        for (int r = 0; r < 16; r++) outRegs[r] = r == 4 ? regs[4] : ((ulong*)OutRegs)[r];
        outFlags = *(ulong*)OutFlags;
        for (int k = 0; k < 32; k++) outXmm[k] = ((ulong*)OutXmm)[k];
    }
}
