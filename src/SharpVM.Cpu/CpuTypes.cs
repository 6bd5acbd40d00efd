using System.Runtime.CompilerServices;
using Iced.Intel;

namespace SharpVM.Cpu;

/// <summary>A segment register with its hidden part. <see cref="Attr"/> uses the VMX access-rights layout.</summary>
internal struct Seg
{
    public ulong Base;
    public uint Limit;
    public ushort Sel;
    /// <summary>Bits 0-3 type, 4 S, 5-6 DPL, 7 P, 12 AVL, 13 L, 14 D/B, 15 G, 16 unusable.</summary>
    public uint Attr;

    public readonly int Dpl => (int)(Attr >> 5) & 3;
    public readonly bool Present => (Attr & 0x80) != 0;
    public readonly bool Long => (Attr & 0x2000) != 0;
    public readonly bool Big => (Attr & 0x4000) != 0;
}

/// <summary>A guest exception raised while executing an instruction (thrown and caught inside Run only).</summary>
internal sealed class CpuFault : Exception
{
    public int Vector;
    public uint ErrorCode;
    public bool HasErrorCode;
    public CpuFault() : base("guest fault") { }
}

/// <summary>Raised for an instruction SharpVM.Cpu does not implement; becomes an InternalError exit.</summary>
internal sealed class CpuUnimplemented(string what) : Exception(what);

/// <summary>Triple fault: becomes a Shutdown exit.</summary>
internal sealed class CpuTripleFault() : Exception("triple fault");

internal static class Flags
{
    public const ulong CF = 1, PF = 4, AF = 0x10, ZF = 0x40, SF = 0x80, TF = 0x100, IF = 0x200, DF = 0x400, OF = 0x800;
    public const ulong IOPL = 0x3000, NT = 0x4000, RF = 0x10000, VM = 0x20000, AC = 0x40000, VIF = 0x80000, VIP = 0x100000, ID = 0x200000;
    public const ulong Arith = CF | PF | AF | ZF | SF | OF;
    /// <summary>Bits software can change with POPF at CPL0 (64-bit): everything architectural except VM, VIF, VIP and RF handling.</summary>
    public const ulong Writable = Arith | TF | IF | DF | IOPL | NT | AC | ID;
}

/// <summary>Per-register facts, indexed by Iced's <see cref="Register"/>.</summary>
internal static class RegTable
{
    /// <summary>GPR number 0-15, or -1.</summary>
    public static readonly sbyte[] Index;
    /// <summary>Width in bytes.</summary>
    public static readonly byte[] Size;
    /// <summary>AH/CH/DH/BH.</summary>
    public static readonly bool[] High8;

    static RegTable()
    {
        int n = Enum.GetValues<Register>().Max(r => (int)r) + 1;
        Index = new sbyte[n];
        Size = new byte[n];
        High8 = new bool[n];
        for (int i = 0; i < n; i++)
        {
            var r = (Register)i;
            Index[i] = -1;
            if (r == Register.None) continue;
            Size[i] = (byte)r.GetSize();
            if (r.IsGPR())
            {
                if (r is Register.AH or Register.CH or Register.DH or Register.BH)
                {
                    Index[i] = (sbyte)(r - Register.AH);
                    High8[i] = true;
                }
                else Index[i] = (sbyte)r.GetFullRegister().GetNumber();
            }
            else if (r.IsSegmentRegister()) Index[i] = (sbyte)(r - Register.ES);
            else if (r.IsXMM()) Index[i] = (sbyte)(r - Register.XMM0);
            else if (r.IsCR()) Index[i] = (sbyte)(r - Register.CR0);
            else if (r.IsDR()) Index[i] = (sbyte)(r - Register.DR0);
            else if (r.IsMM()) Index[i] = (sbyte)(r - Register.MM0);
            else if (r.IsST()) Index[i] = (sbyte)(r - Register.ST0);
        }
    }
}

internal static class Bits
{
    public static readonly byte[] ParityTable = MakeParity();

    private static byte[] MakeParity()
    {
        var t = new byte[256];
        for (int i = 0; i < 256; i++) t[i] = (byte)((System.Numerics.BitOperations.PopCount((uint)i) & 1) == 0 ? 4 : 0);
        return t;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Mask(int size) => size == 8 ? ulong.MaxValue : (1UL << (size * 8)) - 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong SignBit(int size) => 1UL << (size * 8 - 1);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long SignExtend(ulong v, int size) => size switch
    {
        1 => (sbyte)v,
        2 => (short)v,
        4 => (int)v,
        _ => (long)v,
    };
}
