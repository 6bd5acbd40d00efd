using Iced.Intel;

namespace SharpVM.Cpu;

/// <summary>A decoded basic block: straight-line instructions ending at a branch, a page end or a limit.</summary>
internal sealed class Block
{
    public ulong Rip;
    public ulong Phys;
    public int Bitness;
    /// <summary>Guest instructions in the block.</summary>
    public int Count;
    /// <summary>Entries of <see cref="D"/> to dispatch: Count, or Count - 1 when the last two are fused.</summary>
    public int RunCount;
    public Instruction[] Insns = null!;
    /// <summary>The same instructions pre-decoded for the fast path.</summary>
    public DInsn[] D = null!;
    /// <summary>Operand size in bytes of each instruction (see <see cref="Decoding.OperandSize"/>).</summary>
    public byte[] OpSize = null!;
    /// <summary>Address size in bytes of each instruction.</summary>
    public byte[] AddrSize = null!;
    /// <summary>
    /// The instruction bytes, checked against guest memory on every entry (self-modifying code, DMA). Up to
    /// 64 bytes (most blocks) live inside the block object itself, saving the verify a dependent load.
    /// </summary>
    private InlineBytes _inline;
    private byte[]? _bytes;
    private int _byteCount;

    public ReadOnlySpan<byte> ExpectedBytes => _bytes is not null ? _bytes : ((ReadOnlySpan<byte>)_inline)[.._byteCount];

    public void SetBytes(ReadOnlySpan<byte> bytes)
    {
        _byteCount = bytes.Length;
        if (bytes.Length <= InlineBytes.Length) bytes.CopyTo(_inline);
        else _bytes = bytes.ToArray();
    }

    [System.Runtime.CompilerServices.InlineArray(Length)]
    private struct InlineBytes
    {
        public const int Length = 64;
        private byte _first;
    }
    /// <summary>Times the interpreter ran the block (counts up to the translation threshold).</summary>
    public int Runs;
    /// <summary>The block's translation to host code, once <see cref="BlockTranslator"/> has made it.</summary>
    public TranslatedBlock? Translated;
    /// <summary>Set when translating the block failed: it stays interpreted.</summary>
    public bool TranslationFailed;
    public int Len1;
    public int Len2;
    /// <summary>Physical page of the second half of a page-crossing instruction, or ulong.MaxValue.</summary>
    public ulong Ppn2 = ulong.MaxValue;
}

/// <summary>A code reader over a byte array window, reused for every decode.</summary>
internal sealed class BufferReader : CodeReader
{
    public byte[] Buffer = new byte[4096 + 16];
    public int Position;
    public int End;

    public override int ReadByte() => Position < End ? Buffer[Position++] : -1;
}

internal static class Decoding
{
    /// <summary>Address size implied by a LOOP/JCXZ code (0 when the code is not one of them).</summary>
    private static readonly byte[] CounterSize = BuildCounterSizes();

    private static byte[] BuildCounterSizes()
    {
        var codes = Enum.GetValues<Code>();
        var t = new byte[codes.Max(c => (int)c) + 1];
        foreach (var c in codes)
        {
            string n = c.ToString();
            if (n.StartsWith("Loop", StringComparison.Ordinal))
                t[(int)c] = n.EndsWith("_RCX", StringComparison.Ordinal) ? (byte)8 : n.EndsWith("_ECX", StringComparison.Ordinal) ? (byte)4 : (byte)2;
            else if (n.StartsWith("Jcxz", StringComparison.Ordinal)) t[(int)c] = 2;
            else if (n.StartsWith("Jecxz", StringComparison.Ordinal)) t[(int)c] = 4;
            else if (n.StartsWith("Jrcxz", StringComparison.Ordinal)) t[(int)c] = 8;
        }
        return t;
    }

    public static int OperandSize(in Instruction i)
    {
        switch (i.Code)
        {
            case Code.Leavew: case Code.Enterw_imm16_imm8: return 2;
            case Code.Leaved: case Code.Enterd_imm16_imm8: return 4;
            case Code.Leaveq: case Code.Enterq_imm16_imm8: return 8;
        }
        int n = i.OpCount;
        for (int k = 0; k < n && k < 2; k++)
        {
            var kind = i.GetOpKind(k);
            if (kind == OpKind.Register)
            {
                var r = i.GetOpRegister(k);
                if (r.IsGPR()) return r.GetSize();
            }
            else if (kind == OpKind.Memory || (kind >= OpKind.MemorySegSI && kind <= OpKind.MemoryESRDI))
            {
                int s = i.MemorySize.GetSize();
                if (s is 1 or 2 or 4 or 8) return s;
            }
        }
        int inc = i.StackPointerIncrement;
        if (inc != 0) return Math.Abs(inc) is 2 or 4 or 8 ? Math.Abs(inc) : 8;
        return 4;
    }

    public static int AddressSize(in Instruction i, int bitness)
    {
        int c = CounterSize[(int)i.Code];
        if (c != 0) return c;
        if (i.MemoryBase != Register.None) return i.MemoryBase.GetSize();
        if (i.MemoryIndex != Register.None) return i.MemoryIndex.GetSize();
        for (int k = 0; k < i.OpCount; k++)
        {
            switch (i.GetOpKind(k))
            {
                case OpKind.MemorySegSI: case OpKind.MemorySegDI: case OpKind.MemoryESDI: return 2;
                case OpKind.MemorySegESI: case OpKind.MemorySegEDI: case OpKind.MemoryESEDI: return 4;
                case OpKind.MemorySegRSI: case OpKind.MemorySegRDI: case OpKind.MemoryESRDI: return 8;
            }
        }
        int d = i.MemoryDisplSize;
        if (d is 2 or 4 or 8) return d;
        return bitness / 8;
    }
}
