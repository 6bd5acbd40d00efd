using System.Runtime.CompilerServices;
using Iced.Intel;

namespace SharpVM.Cpu;

public sealed partial class EmulatorVcpu
{
    /// <summary>
    /// How translated code reaches guest memory, chosen per block: through calls (<see cref="CalledMemory"/>) or with the
    /// TLB fast path inlined (<see cref="InlinedMemory"/>). The translator's own IL calls one of the two directly; the
    /// remaining memory templates take it as a generic argument (the JIT specialises them for each).
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

        // One method per access size, which the translator's own IL calls: the size folds into the TLB fast path
        // instead of a jump table on every access.
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)] public static ulong Load1(EmulatorVcpu c, ulong la) => c.Read(la, 1);
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)] public static ulong Load2(EmulatorVcpu c, ulong la) => c.Read(la, 2);
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)] public static ulong Load4(EmulatorVcpu c, ulong la) => c.Read(la, 4);
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)] public static ulong Load8(EmulatorVcpu c, ulong la) => c.Read(la, 8);
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)] public static ulong LoadForWrite1(EmulatorVcpu c, ulong la) => c.ReadForWrite(la, 1);
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)] public static ulong LoadForWrite2(EmulatorVcpu c, ulong la) => c.ReadForWrite(la, 2);
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)] public static ulong LoadForWrite4(EmulatorVcpu c, ulong la) => c.ReadForWrite(la, 4);
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)] public static ulong LoadForWrite8(EmulatorVcpu c, ulong la) => c.ReadForWrite(la, 8);
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)] public static void Store1(EmulatorVcpu c, ulong la, ulong v) => c.Write(la, 1, v);
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)] public static void Store2(EmulatorVcpu c, ulong la, ulong v) => c.Write(la, 2, v);
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)] public static void Store4(EmulatorVcpu c, ulong la, ulong v) => c.Write(la, 4, v);
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)] public static void Store8(EmulatorVcpu c, ulong la, ulong v) => c.Write(la, 8, v);
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

        // The TLB fast path alone, for translated loops (false on a miss: the caller then writes its registers back,
        // sets FaultRip and calls CalledMemory's access, which may fault).
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool TryLoad1(EmulatorVcpu c, ulong la, out ulong v) => c.TryReadFast(la, 1, c.NeedR, out v);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool TryLoad2(EmulatorVcpu c, ulong la, out ulong v) => c.TryReadFast(la, 2, c.NeedR, out v);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool TryLoad4(EmulatorVcpu c, ulong la, out ulong v) => c.TryReadFast(la, 4, c.NeedR, out v);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool TryLoad8(EmulatorVcpu c, ulong la, out ulong v) => c.TryReadFast(la, 8, c.NeedR, out v);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool TryLoadForWrite1(EmulatorVcpu c, ulong la, out ulong v) => c.TryReadFast(la, 1, c.NeedW, out v);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool TryLoadForWrite2(EmulatorVcpu c, ulong la, out ulong v) => c.TryReadFast(la, 2, c.NeedW, out v);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool TryLoadForWrite4(EmulatorVcpu c, ulong la, out ulong v) => c.TryReadFast(la, 4, c.NeedW, out v);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool TryLoadForWrite8(EmulatorVcpu c, ulong la, out ulong v) => c.TryReadFast(la, 8, c.NeedW, out v);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool TryStore1(EmulatorVcpu c, ulong la, ulong v) => c.TryWriteFast(la, 1, v, c.NeedW);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool TryStore2(EmulatorVcpu c, ulong la, ulong v) => c.TryWriteFast(la, 2, v, c.NeedW);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool TryStore4(EmulatorVcpu c, ulong la, ulong v) => c.TryWriteFast(la, 4, v, c.NeedW);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool TryStore8(EmulatorVcpu c, ulong la, ulong v) => c.TryWriteFast(la, 8, v, c.NeedW);

        // The same per-size shape as CalledMemory's (the translator picks either by name).
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Load1(EmulatorVcpu c, ulong la) => c.Read(la, 1);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Load2(EmulatorVcpu c, ulong la) => c.Read(la, 2);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Load4(EmulatorVcpu c, ulong la) => c.Read(la, 4);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong Load8(EmulatorVcpu c, ulong la) => c.Read(la, 8);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong LoadForWrite1(EmulatorVcpu c, ulong la) => c.ReadForWrite(la, 1);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong LoadForWrite2(EmulatorVcpu c, ulong la) => c.ReadForWrite(la, 2);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong LoadForWrite4(EmulatorVcpu c, ulong la) => c.ReadForWrite(la, 4);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong LoadForWrite8(EmulatorVcpu c, ulong la) => c.ReadForWrite(la, 8);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store1(EmulatorVcpu c, ulong la, ulong v) => c.Write(la, 1, v);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store2(EmulatorVcpu c, ulong la, ulong v) => c.Write(la, 2, v);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store4(EmulatorVcpu c, ulong la, ulong v) => c.Write(la, 4, v);
        [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store8(EmulatorVcpu c, ulong la, ulong v) => c.Write(la, 8, v);
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
        public static readonly System.Reflection.FieldInfo IrqHint = Field(nameof(_irqHint));
        public static readonly System.Reflection.FieldInfo Sregs = Field(nameof(EmulatorVcpu.Sregs));
        public static readonly System.Reflection.FieldInfo ExitRequested = Field(nameof(_exitRequested));
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
            LazyIncState = LazyInc, LazyDecState = LazyDec, LazyShlState = LazyShl, LazyShrState = LazyShr, LazySarState = LazySar,
            LazyAdcState = LazyAdc, LazySbbState = LazySbb;

        private static System.Reflection.FieldInfo Field(string name) => typeof(EmulatorVcpu).GetField(name,
            System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.NonPublic)!;
    }

    /// <summary>
    /// The templates translated code still calls (<see cref="BlockTranslator"/> emits most instructions as IL of its own):
    /// rarer forms whose bodies are the interpreter's handlers (ADC/SBB, IMUL, shifts of other sizes), condition helpers,
    /// and the calls back into the interpreter. Each is inlined (AggressiveInlining) with the instruction's fields as
    /// constants, so the JIT folds away its switches; semantics are the interpreter's by construction.
    /// </summary>
    internal static class TranslatedOps
    {
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

        // ---- Forms of any operand size (ExecFast / ExecFastExtra cases): the size and the high-byte flags are constants too.

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

        /// <summary>Shifts and rotates of a register by an immediate (SHL/SHR/SAR/ROL/ROR); a masked count of 0 changes nothing but still zero-extends a 32-bit register.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void ShiftRI(EmulatorVcpu c, int mnemonic, int dst, bool dstHigh, ulong imm, int size)
        {
            ulong count = imm & (size == 8 ? 63u : 31u);
            ulong res = c.Shift((Mnemonic)mnemonic, c.GetR(dst, dstHigh, size), imm, size);
            if (count != 0 || size == 4) c.SetR(dst, dstHigh, size, res);
        }

        // ---- Flag producers whose flags are dead (see FlagsLiveness): the result only, no lazy-flag state.

        /// <summary>IMUL r, r/m (and r, r/m, imm) of 16/32/64 bits through the interpreter's Imul2.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Imul(EmulatorVcpu c, int dst, ulong a, ulong b, int size) => c.SetR(dst, false, size, c.Imul2(a, b, size));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static ulong RegisterSized(EmulatorVcpu c, int idx, int size) => c.GetR(idx, false, size);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static ulong LoadSized<TMem>(EmulatorVcpu c, ulong la, int size)
            where TMem : struct, IGuestMemoryAccess => TMem.Load(c, la, size);

        /// <summary>
        /// The template for a Jcc/SETcc/CMOVcc condition the translator does not emit as IL of its own (it does ZF and the
        /// unsigned orders): the signed orders straight from a lazy CMP/SUB, everything else through <see cref="Cond"/>
        /// out of line (inlining Cond itself, a large method, cost ~170 us of JIT time per branch).
        /// </summary>
        public static string ConditionMethod(int cc) => (ConditionCode)cc switch
        {
            ConditionCode.l => nameof(IsLess),
            ConditionCode.ge => nameof(IsGreaterOrEqual),
            ConditionCode.le => nameof(IsLessOrEqual),
            ConditionCode.g => nameof(IsGreater),
            _ => nameof(Condition),
        };

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

        /// <summary>Any other condition (O, S, P and their negations), or a signed order outside self-looping blocks.</summary>
        public static bool Condition(EmulatorVcpu c, int cc) => ConditionOutOfLine(c, cc);

        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        public static bool ConditionOutOfLine(EmulatorVcpu c, int cc) => c.Cond((ConditionCode)cc);

        /// <summary>CF of the lazy state (or of RFLAGS), for INC/DEC, which keep it.</summary>
        [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
        public static ulong CarryFlagOf(EmulatorVcpu c) => c.CarryFlag();


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
