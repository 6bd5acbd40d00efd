using System.Runtime.CompilerServices;
using Iced.Intel;

namespace SharpVM.Cpu;

public sealed partial class EmulatorVcpu
{
    /// <summary>
    /// The building blocks of translated code (<see cref="BlockTranslator"/>). Each is the body of one
    /// <see cref="ExecHot"/> case with the instruction's fields (register numbers, ALU operation, immediate,
    /// condition) as parameters instead of loads from a <see cref="DInsn"/>. The translator emits a call per
    /// guest instruction with those fields as IL constants; the JIT inlines the call (AggressiveInlining),
    /// propagates the constants and folds away every switch, leaving straight-line code specialised to the
    /// instruction. Semantics are those of the interpreter's handlers by construction: the same helpers
    /// (Alu64, SetLazy, Read/Write through the TLB, Cond) do the work.
    /// </summary>
    /// <summary>
    /// How translated code reaches guest memory, chosen per block as a generic argument of the memory templates (the
    /// JIT specialises them for each): through calls (<see cref="CalledMemory"/>) or with the TLB fast path inlined
    /// (<see cref="InlinedMemory"/>).
    /// </summary>
    internal interface IGuestMemoryAccess
    {
        static abstract ulong Load(EmulatorVcpu c, ulong la, int size);
        static abstract ulong LoadForWrite(EmulatorVcpu c, ulong la, int size);
        static abstract void Store(EmulatorVcpu c, ulong la, int size, ulong v);
    }

    /// <summary>
    /// Loads and stores as calls: inlining the TLB fast path into every access tripled the JIT time of a block
    /// (~1.3 ms -> ~0.5 ms for six instructions), which most blocks never repay. AggressiveOptimization: translated
    /// code binds to these at once, and a tier-0 version would run until tiering caught up.
    /// </summary>
    internal readonly struct CalledMemory : IGuestMemoryAccess
    {
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        public static ulong Load(EmulatorVcpu c, ulong la, int size) => c.Read(la, size);

        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        public static ulong LoadForWrite(EmulatorVcpu c, ulong la, int size) => c.ReadForWrite(la, size);

        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        public static void Store(EmulatorVcpu c, ulong la, int size, ulong v) => c.Write(la, size, v);
    }

    /// <summary>
    /// Loads and stores with the TLB fast path inlined, for blocks that loop on themselves: they run many rounds per
    /// entry, so the extra JIT time pays (the CPU loop benchmark: ~15% faster).
    /// </summary>
    internal readonly struct InlinedMemory : IGuestMemoryAccess
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static ulong Load(EmulatorVcpu c, ulong la, int size) => c.Read(la, size);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static ulong LoadForWrite(EmulatorVcpu c, ulong la, int size) => c.ReadForWrite(la, size);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Store(EmulatorVcpu c, ulong la, int size, ulong v) => c.Write(la, size, v);
    }

    /// <summary>
    /// The vCPU state that translated code reads and writes with IL of its own (ldfld/stfld) rather than through an
    /// inlined template: each inlined call costs the JIT several microseconds even when it folds to one store.
    /// </summary>
    internal static class TranslatedFields
    {
        public static readonly System.Reflection.FieldInfo Rip = Field(nameof(EmulatorVcpu.Rip));
        public static readonly System.Reflection.FieldInfo FaultRip = Field(nameof(EmulatorVcpu.FaultRip));
        public static readonly System.Reflection.FieldInfo EndBlock = Field(nameof(_endBlock));
        public static readonly System.Reflection.FieldInfo InstructionsRetired = Field(nameof(_instructionsRetired));
        public static readonly System.Reflection.FieldInfo LazyOp = Field(nameof(_lazyOp));
        public static readonly System.Reflection.FieldInfo LazyA = Field(nameof(_lazyA));
        public static readonly System.Reflection.FieldInfo LazyB = Field(nameof(_lazyB));
        public static readonly System.Reflection.FieldInfo LazyR = Field(nameof(_lazyR));
        public static readonly System.Reflection.FieldInfo LazySz = Field(nameof(_lazySz));

        /// <summary>RFLAGS as stored: the arithmetic flags are only current when there is no lazy state (see Rflags).</summary>
        public static readonly System.Reflection.FieldInfo RflagsBits = Field(nameof(_flags));
        public static readonly System.Reflection.MethodInfo MaterializeFlags = typeof(EmulatorVcpu).GetMethod(nameof(EmulatorVcpu.MaterializeFlags),
            System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic)!;

        /// <summary>The lazy-flag states (see SetLazy) that translated code records.</summary>
        public const int LazyNoneState = LazyNone, LazyAddState = LazyAdd, LazySubState = LazySub, LazyLogicState = LazyLogic,
            LazyIncState = LazyInc, LazyDecState = LazyDec;

        private static System.Reflection.FieldInfo Field(string name) => typeof(EmulatorVcpu).GetField(name,
            System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.NonPublic)!;
    }

    internal static class TranslatedOps
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static ulong EffectiveAddress(ref ulong regs, int bas, int idx, int scale, ulong disp, int asize)
        {
            ulong a = disp;
            if (bas >= 0) a += Reg(ref regs, bas);
            if (idx >= 0) a += Reg(ref regs, idx) << scale;
            if (asize != 8) a = asize == 4 ? (uint)a : (ushort)a;
            return a;
        }

        /// <summary><see cref="Linear"/> with the block's bitness as a constant (blocks are decoded per bitness).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static ulong LinearAddress(EmulatorVcpu c, ref ulong regs, int bas, int idx, int scale, ulong disp, int asize, int seg, int bitness)
        {
            ulong ea = EffectiveAddress(ref regs, bas, idx, scale, disp, asize);
            if (bitness == 64) return seg >= FS ? c.Sregs[seg].Base + ea : ea;
            return (uint)(c.Sregs[seg].Base + ea);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovRR64(ref ulong regs, int dst, int src) => Reg(ref regs, dst) = Reg(ref regs, src);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovRI64(ref ulong regs, int dst, ulong imm) => Reg(ref regs, dst) = imm;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovRM64<TMem>(EmulatorVcpu c, ref ulong regs, int dst, ulong la)
            where TMem : struct, IGuestMemoryAccess => Reg(ref regs, dst) = TMem.Load(c, la, 8);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovMR64<TMem>(EmulatorVcpu c, ref ulong regs, int src, ulong la)
            where TMem : struct, IGuestMemoryAccess => TMem.Store(c, la, 8, Reg(ref regs, src));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovRR32(ref ulong regs, int dst, int src) => Reg(ref regs, dst) = (uint)Reg(ref regs, src);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovRM32<TMem>(EmulatorVcpu c, ref ulong regs, int dst, ulong la)
            where TMem : struct, IGuestMemoryAccess => Reg(ref regs, dst) = (uint)TMem.Load(c, la, 4);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovMR32<TMem>(EmulatorVcpu c, ref ulong regs, int src, ulong la)
            where TMem : struct, IGuestMemoryAccess => TMem.Store(c, la, 4, (uint)Reg(ref regs, src));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Lea(ref ulong regs, int dst, ulong ea) => Reg(ref regs, dst) = ea;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void AluRR64(EmulatorVcpu c, ref ulong regs, int alu, int dst, int src)
        {
            ulong r = c.Alu64(alu, Reg(ref regs, dst), Reg(ref regs, src));
            if (alu < OpCmp) Reg(ref regs, dst) = r;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void AluRI64(EmulatorVcpu c, ref ulong regs, int alu, int dst, ulong imm)
        {
            ulong r = c.Alu64(alu, Reg(ref regs, dst), imm);
            if (alu < OpCmp) Reg(ref regs, dst) = r;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void AluRM64<TMem>(EmulatorVcpu c, ref ulong regs, int alu, int dst, ulong la)
            where TMem : struct, IGuestMemoryAccess
        {
            ulong r = c.Alu64(alu, Reg(ref regs, dst), TMem.Load(c, la, 8));
            if (alu < OpCmp) Reg(ref regs, dst) = r;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void AluRR32(EmulatorVcpu c, ref ulong regs, int alu, int dst, int src)
        {
            uint r = c.Alu32(alu, (uint)Reg(ref regs, dst), (uint)Reg(ref regs, src));
            if (alu < OpCmp) Reg(ref regs, dst) = r;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void AluRI32(EmulatorVcpu c, ref ulong regs, int alu, int dst, ulong imm)
        {
            uint r = c.Alu32(alu, (uint)Reg(ref regs, dst), (uint)imm);
            if (alu < OpCmp) Reg(ref regs, dst) = r;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void IncDec64(EmulatorVcpu c, ref ulong regs, int dst, bool dec) => c.IncDecRegister64(ref Reg(ref regs, dst), dec);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void IncDec32(EmulatorVcpu c, ref ulong regs, int dst, bool dec) => c.IncDecRegister32(ref Reg(ref regs, dst), dec);

        /// <summary>SHL/SHR/SAR of a 64-bit register by a non-zero immediate (a zero count is translated to nothing).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void ShiftRI64(EmulatorVcpu c, ref ulong regs, int kind, int dst, int count) =>
            c.ShiftRegister64(ref Reg(ref regs, dst), kind, count);

        /// <summary>SHL/SHR/SAR of a 32-bit register by a non-zero (masked) immediate, as <see cref="Shift"/> computes them.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void ShiftRI32(EmulatorVcpu c, ref ulong regs, int kind, int dst, int count)
        {
            ref ulong g = ref Reg(ref regs, dst);
            uint a = (uint)g, r;
            bool cf, of;
            switch (kind)
            {
                case 0: r = a << count; cf = ((a >> (32 - count)) & 1) != 0; of = ((r >> 31) != 0) ^ cf; break;
                case 1: r = a >> count; cf = ((a >> (count - 1)) & 1) != 0; of = count == 1 && (a >> 31) != 0; break;
                default: r = (uint)((int)a >> count); cf = (((int)a >> (count - 1)) & 1) != 0; of = false; break;
            }
            c.SetSzp(r, 4, (cf ? Flags.CF : 0) | (of ? Flags.OF : 0));
            g = r;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void ShiftResultOnly32(ref ulong regs, int kind, int dst, int count)
        {
            ref ulong g = ref Reg(ref regs, dst);
            uint a = (uint)g;
            g = kind switch { 0 => a << count, 1 => a >> count, _ => (uint)((int)a >> count) };
        }

        /// <summary>
        /// ROL/ROR of a 32- or 64-bit register by a non-zero (masked) immediate: only CF and OF change, the other flags
        /// stay (so they are materialized), as <see cref="Shift"/> does it.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void RotateRI(EmulatorVcpu c, ref ulong regs, bool left, int dst, int count, int size)
        {
            ref ulong g = ref Reg(ref regs, dst);
            ulong r;
            bool cf, of;
            if (size == 8)
            {
                ulong a = g;
                r = left ? ulong.RotateLeft(a, count) : ulong.RotateRight(a, count);
                cf = left ? (r & 1) != 0 : (r >> 63) != 0;
                of = left ? ((r >> 63) != 0) ^ cf : cf ^ (((r >> 62) & 1) != 0);
            }
            else
            {
                uint a = (uint)g;
                uint r32 = left ? uint.RotateLeft(a, count) : uint.RotateRight(a, count);
                r = r32;
                cf = left ? (r32 & 1) != 0 : (r32 >> 31) != 0;
                of = left ? ((r32 >> 31) != 0) ^ cf : cf ^ (((r32 >> 30) & 1) != 0);
            }
            ulong f = c.Rflags & ~(Flags.CF | Flags.OF);
            if (cf) f |= Flags.CF;
            if (of) f |= Flags.OF;
            c.Rflags = f;
            g = r;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovzxRR(EmulatorVcpu c, ref ulong regs, int dst, int src, bool srcHigh, int size) =>
            Reg(ref regs, dst) = c.GetR(src, srcHigh, size);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovzxRM<TMem>(EmulatorVcpu c, ref ulong regs, int dst, ulong la, int size)
            where TMem : struct, IGuestMemoryAccess => Reg(ref regs, dst) = TMem.Load(c, la, size);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void SetccR(EmulatorVcpu c, int dst, bool dstHigh, bool condition) =>
            c.SetR(dst, dstHigh, 1, condition ? 1UL : 0);

        // SETcc and CMOVcc get their condition already evaluated (by the per-condition templates, see ConditionMethod).
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void CmovRR64(ref ulong regs, bool condition, int dst, int src)
        {
            if (condition) Reg(ref regs, dst) = Reg(ref regs, src);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void CmovRM64<TMem>(EmulatorVcpu c, ref ulong regs, bool condition, int dst, ulong la)
            where TMem : struct, IGuestMemoryAccess
        {
            ulong v = TMem.Load(c, la, 8); // read whatever the condition (it may fault), as on hardware
            if (condition) Reg(ref regs, dst) = v;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovsxdRR(ref ulong regs, int dst, int src) => Reg(ref regs, dst) = (ulong)(long)(int)Reg(ref regs, src);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovsxdRM<TMem>(EmulatorVcpu c, ref ulong regs, int dst, ulong la)
            where TMem : struct, IGuestMemoryAccess => Reg(ref regs, dst) = (ulong)(long)(int)TMem.Load(c, la, 4);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Push64<TMem>(EmulatorVcpu c, ref ulong regs, int src)
            where TMem : struct, IGuestMemoryAccess
        {
            ulong v = Reg(ref regs, src);
            ulong sp = Reg(ref regs, 4) - 8;
            TMem.Store(c, sp, 8, v);
            Reg(ref regs, 4) = sp;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Pop64<TMem>(EmulatorVcpu c, ref ulong regs, int dst)
            where TMem : struct, IGuestMemoryAccess
        {
            ulong sp = Reg(ref regs, 4);
            ulong v = TMem.Load(c, sp, 8);
            Reg(ref regs, 4) = sp + 8;
            Reg(ref regs, dst) = v;
        }

        // ---- Forms of any operand size (ExecFast / ExecFastExtra cases): the size and the high-byte flags are constants too.

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovRR(EmulatorVcpu c, int dst, bool dstHigh, int src, bool srcHigh, int size) =>
            c.SetR(dst, dstHigh, size, c.GetR(src, srcHigh, size));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovRM<TMem>(EmulatorVcpu c, int dst, bool dstHigh, ulong la, int size)
            where TMem : struct, IGuestMemoryAccess => c.SetR(dst, dstHigh, size, TMem.Load(c, la, size));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovMR<TMem>(EmulatorVcpu c, int src, bool srcHigh, ulong la, int size)
            where TMem : struct, IGuestMemoryAccess => TMem.Store(c, la, size, c.GetR(src, srcHigh, size));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovRI(EmulatorVcpu c, int dst, bool dstHigh, ulong imm, int size) => c.SetR(dst, dstHigh, size, imm);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovMI<TMem>(EmulatorVcpu c, ulong la, ulong imm, int size)
            where TMem : struct, IGuestMemoryAccess => TMem.Store(c, la, size, imm);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void AluRR(EmulatorVcpu c, int alu, int dst, bool dstHigh, int src, bool srcHigh, int size)
        {
            ulong r = c.Alu(alu, c.GetR(dst, dstHigh, size), c.GetR(src, srcHigh, size), size);
            if (alu < OpCmp) c.SetR(dst, dstHigh, size, r);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void AluRI(EmulatorVcpu c, int alu, int dst, bool dstHigh, ulong imm, int size)
        {
            ulong r = c.Alu(alu, c.GetR(dst, dstHigh, size), imm, size);
            if (alu < OpCmp) c.SetR(dst, dstHigh, size, r);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void AluRM<TMem>(EmulatorVcpu c, int alu, int dst, bool dstHigh, ulong la, int size)
            where TMem : struct, IGuestMemoryAccess
        {
            ulong r = c.Alu(alu, c.GetR(dst, dstHigh, size), TMem.Load(c, la, size), size);
            if (alu < OpCmp) c.SetR(dst, dstHigh, size, r);
        }

        /// <summary>ALU with a memory destination; the read asks for write access when the result is stored (see ReadForWrite).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void AluMR<TMem>(EmulatorVcpu c, int alu, int src, bool srcHigh, ulong la, int size)
            where TMem : struct, IGuestMemoryAccess
        {
            ulong m = alu < OpCmp ? TMem.LoadForWrite(c, la, size) : TMem.Load(c, la, size);
            ulong r = c.Alu(alu, m, c.GetR(src, srcHigh, size), size);
            if (alu < OpCmp) TMem.Store(c, la, size, r);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void AluMI<TMem>(EmulatorVcpu c, int alu, ulong la, ulong imm, int size)
            where TMem : struct, IGuestMemoryAccess
        {
            ulong m = alu < OpCmp ? TMem.LoadForWrite(c, la, size) : TMem.Load(c, la, size);
            ulong r = c.Alu(alu, m, imm, size);
            if (alu < OpCmp) TMem.Store(c, la, size, r);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void LeaSized(EmulatorVcpu c, int dst, ulong ea, int size) => c.SetR(dst, false, size, ea);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void IncDecR(EmulatorVcpu c, int dst, bool dstHigh, bool dec, int size) =>
            c.SetR(dst, dstHigh, size, c.IncDec(c.GetR(dst, dstHigh, size), size, dec));

        /// <summary>Shifts and rotates of a register by an immediate (SHL/SHR/SAR/ROL/ROR); a masked count of 0 changes nothing but still zero-extends a 32-bit register.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void ShiftRI(EmulatorVcpu c, int mnemonic, int dst, bool dstHigh, ulong imm, int size)
        {
            ulong count = imm & (size == 8 ? 63u : 31u);
            ulong res = c.Shift((Mnemonic)mnemonic, c.GetR(dst, dstHigh, size), imm, size);
            if (count != 0 || size == 4) c.SetR(dst, dstHigh, size, res);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovsxRR(EmulatorVcpu c, int dst, int src, bool srcHigh, int fromSize, int size) =>
            c.SetR(dst, false, size, (ulong)Bits.SignExtend(c.GetR(src, srcHigh, fromSize), fromSize));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovsxRM<TMem>(EmulatorVcpu c, int dst, ulong la, int fromSize, int size)
            where TMem : struct, IGuestMemoryAccess =>
            c.SetR(dst, false, size, (ulong)Bits.SignExtend(TMem.Load(c, la, fromSize), fromSize));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovzxRRSized(EmulatorVcpu c, int dst, int src, bool srcHigh, int fromSize, int size) =>
            c.SetR(dst, false, size, c.GetR(src, srcHigh, fromSize));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void MovzxRMSized<TMem>(EmulatorVcpu c, int dst, ulong la, int fromSize, int size)
            where TMem : struct, IGuestMemoryAccess => c.SetR(dst, false, size, TMem.Load(c, la, fromSize));

        /// <summary>64-bit two-operand IMUL: the signed high half from the unsigned product (as ExecFast does).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Imul64(EmulatorVcpu c, ref ulong regs, int dst, ulong b) => c.ImulRegister64(ref Reg(ref regs, dst), b);

        // ---- Flag producers whose flags are dead (see FlagsLiveness): the result only, no lazy-flag state.

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void AluResultOnly64(ref ulong regs, int alu, int dst, ulong b)
        {
            ulong a = Reg(ref regs, dst);
            Reg(ref regs, dst) = alu switch
            {
                OpAdd => a + b,
                OpOr => a | b,
                OpAnd => a & b,
                OpSub => a - b,
                _ => a ^ b, // OpXor: FlagsLiveness lets only ADD/OR/AND/SUB/XOR (and CMP/TEST, which do nothing) through
            };
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void AluResultOnly32(ref ulong regs, int alu, int dst, ulong b)
        {
            uint a = (uint)Reg(ref regs, dst), v = (uint)b;
            Reg(ref regs, dst) = alu switch
            {
                OpAdd => a + v,
                OpOr => a | v,
                OpAnd => a & v,
                OpSub => a - v,
                _ => a ^ v,
            };
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void ShiftResultOnly64(ref ulong regs, int kind, int dst, int count)
        {
            ref ulong g = ref Reg(ref regs, dst);
            g = kind switch { 0 => g << count, 1 => g >> count, _ => (ulong)((long)g >> count) };
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void ImulResultOnly64(ref ulong regs, int dst, ulong b) => Reg(ref regs, dst) *= b;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static ulong Register64(ref ulong regs, int idx) => Reg(ref regs, idx);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static ulong Load64<TMem>(EmulatorVcpu c, ulong la)
            where TMem : struct, IGuestMemoryAccess => TMem.Load(c, la, 8);

        /// <summary>IMUL r, r/m (and r, r/m, imm) of 16/32/64 bits through the interpreter's Imul2.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Imul(EmulatorVcpu c, int dst, ulong a, ulong b, int size) => c.SetR(dst, false, size, c.Imul2(a, b, size));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static ulong RegisterSized(EmulatorVcpu c, int idx, int size) => c.GetR(idx, false, size);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static ulong LoadSized<TMem>(EmulatorVcpu c, ulong la, int size)
            where TMem : struct, IGuestMemoryAccess => TMem.Load(c, la, size);

        /// <summary>
        /// Jcc/SETcc/CMOVcc's condition. The translator calls the small per-condition method for the code (ZF from any
        /// lazy result; the unsigned and signed orders straight from a lazy CMP/SUB) and everything else goes through
        /// <see cref="Cond"/> out of line: inlining Cond itself, a large method, cost ~170 us of JIT time per branch.
        /// </summary>
        public static string ConditionMethod(int cc) => (ConditionCode)cc switch
        {
            ConditionCode.e => nameof(IsEqual),
            ConditionCode.ne => nameof(IsNotEqual),
            ConditionCode.b => nameof(IsBelow),
            ConditionCode.ae => nameof(IsAboveOrEqual),
            ConditionCode.be => nameof(IsBelowOrEqual),
            ConditionCode.a => nameof(IsAbove),
            ConditionCode.l => nameof(IsLess),
            ConditionCode.ge => nameof(IsGreaterOrEqual),
            ConditionCode.le => nameof(IsLessOrEqual),
            ConditionCode.g => nameof(IsGreater),
            _ => nameof(Condition),
        };

        // Every lazy state keeps its result masked to its size (for LazySub a - b: zero exactly when a == b).
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static bool IsEqual(EmulatorVcpu c) => c._lazyOp != LazyNone ? c._lazyR == 0 : ConditionOutOfLine(c, (int)ConditionCode.e);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static bool IsNotEqual(EmulatorVcpu c) => c._lazyOp != LazyNone ? c._lazyR != 0 : ConditionOutOfLine(c, (int)ConditionCode.ne);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static bool IsBelow(EmulatorVcpu c) => c._lazyOp == LazySub ? c._lazyA < c._lazyB : ConditionOutOfLine(c, (int)ConditionCode.b);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static bool IsAboveOrEqual(EmulatorVcpu c) => c._lazyOp == LazySub ? c._lazyA >= c._lazyB : ConditionOutOfLine(c, (int)ConditionCode.ae);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static bool IsBelowOrEqual(EmulatorVcpu c) => c._lazyOp == LazySub ? c._lazyA <= c._lazyB : ConditionOutOfLine(c, (int)ConditionCode.be);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static bool IsAbove(EmulatorVcpu c) => c._lazyOp == LazySub ? c._lazyA > c._lazyB : ConditionOutOfLine(c, (int)ConditionCode.a);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static bool IsLess(EmulatorVcpu c) => c._lazyOp == LazySub
            ? Bits.SignExtend(c._lazyA, c._lazySz) < Bits.SignExtend(c._lazyB, c._lazySz) : ConditionOutOfLine(c, (int)ConditionCode.l);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static bool IsGreaterOrEqual(EmulatorVcpu c) => c._lazyOp == LazySub
            ? Bits.SignExtend(c._lazyA, c._lazySz) >= Bits.SignExtend(c._lazyB, c._lazySz) : ConditionOutOfLine(c, (int)ConditionCode.ge);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static bool IsLessOrEqual(EmulatorVcpu c) => c._lazyOp == LazySub
            ? Bits.SignExtend(c._lazyA, c._lazySz) <= Bits.SignExtend(c._lazyB, c._lazySz) : ConditionOutOfLine(c, (int)ConditionCode.le);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static bool IsGreater(EmulatorVcpu c) => c._lazyOp == LazySub
            ? Bits.SignExtend(c._lazyA, c._lazySz) > Bits.SignExtend(c._lazyB, c._lazySz) : ConditionOutOfLine(c, (int)ConditionCode.g);

        /// <summary>Any other condition (O, S, P and their negations), or one of the above used from C#.</summary>
        public static bool Condition(EmulatorVcpu c, int cc) => ConditionOutOfLine(c, cc);

        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        public static bool ConditionOutOfLine(EmulatorVcpu c, int cc) => c.Cond((ConditionCode)cc);

        /// <summary>CF of the lazy state (or of RFLAGS), for INC/DEC, which keep it.</summary>
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        public static ulong CarryFlagOf(EmulatorVcpu c) => c.CarryFlag();

        /// <summary>The base of segment register <paramref name="seg"/> (for addresses that add one).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static ulong SegmentBase(EmulatorVcpu c, int seg) => c.Sregs[seg].Base;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void SetRip(EmulatorVcpu c, ulong rip) => c.Rip = rip;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void SetFaultRip(EmulatorVcpu c, ulong rip) => c.FaultRip = rip;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Call64<TMem>(EmulatorVcpu c, ref ulong regs, ulong returnAddress, ulong target)
            where TMem : struct, IGuestMemoryAccess
        {
            ulong sp = Reg(ref regs, 4) - 8;
            TMem.Store(c, sp, 8, returnAddress);
            Reg(ref regs, 4) = sp;
            c.Rip = target;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Ret64<TMem>(EmulatorVcpu c, ref ulong regs)
            where TMem : struct, IGuestMemoryAccess
        {
            ulong sp = Reg(ref regs, 4);
            c.Rip = TMem.Load(c, sp, 8);
            Reg(ref regs, 4) = sp + 8;
        }

        /// <summary>True when a store hit the running code's page (or a generic instruction ended the block).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static bool BlockEnded(EmulatorVcpu c) => c._endBlock;

        /// <summary>
        /// The block ended before its last instruction: the ones after it did not retire (the block counted all of
        /// them on entry, as the interpreter's loop does).
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Unretire(EmulatorVcpu c, long notRun) => c.InstructionsRetired -= notRun;

        /// <summary>
        /// Whether a block that branches back to itself may run again without returning to the dispatcher:
        /// not when an interrupt, an exit request or a wake-up is pending, and at most <paramref name="budget"/> times.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static bool MayLoop(EmulatorVcpu c, ref int budget, long count)
        {
            if (--budget <= 0 || c._irqHint || c._exitRequested != 0) return false;
            c.InstructionsRetired += count;
            return true;
        }

        /// <summary>An instruction the translator has no template for: run it as the interpreter's block loop would.</summary>
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        public static void Interpret(EmulatorVcpu c, Block b, int k) => c.InterpretEntry(b, k);
    }

    private void InterpretEntry(Block b, int k)
    {
        ref DInsn d = ref b.D[k];
        Rip = d.NextIp;
        ExecEntry(b, k, ref d, ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(Gpr));
    }
}
