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
