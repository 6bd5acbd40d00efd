namespace SharpVM.Cpu;

/// <summary>
/// Which flag-setting instructions of a block have flags nobody can observe, so the translator may compute only their
/// results. Multi-precision and address arithmetic sets flags on nearly every instruction and reads few of them: in the
/// kernel's multiply loop 13 of 19 flag producers are dead.
///
/// A producer's flags are dead when, scanning forward in the block, another instruction replaces all arithmetic flags
/// before anything reads them <b>and before anything can fault</b>: a fault delivers RFLAGS to the guest's handler, which
/// must see them as the interpreter would. Reaching the block's end keeps them live (the next block may read them),
/// as does any instruction this analysis does not know: the interpreter, INC/DEC (they keep CF), shifts other than
/// 32/64-bit ones by an immediate, conditions; ADC/SBB and 32/64-bit rotates by an immediate read the flags, so only
/// their own outputs may be dead (a rotate with dead outputs is then transparent to what comes before it).
/// </summary>
internal static class FlagsLiveness
{
    public static bool[] DeadFlagOutputs(DInsn[] d, int n)
    {
        var dead = new bool[n];
        for (int k = 0; k < n; k++)
            if (ProducesAllFlags(in d[k]) || IsCarryArithmetic(in d[k]) || IsRotate(in d[k])) dead[k] = ReplacedBeforeSeen(d, n, k);
        return dead;
    }

    /// <summary>Whether, after entry k, a producer replaces every arithmetic flag before anything reads them or can fault.</summary>
    private static bool ReplacedBeforeSeen(DInsn[] d, int n, int k)
    {
        for (int j = k + 1; j < n; j++)
        {
            // A rotate reads the flags (it keeps all but CF and OF), but only for its own outputs: when those are seen,
            // the same scan finds what sees them; when they are dead, so is what it read.
            if (IsRotate(in d[j])) continue;
            if (CanFault(in d[j]) || !IsTransparent(in d[j]) && !ProducesAllFlags(in d[j])) return false;
            if (ProducesAllFlags(in d[j])) return true;
        }
        return false;
    }

    /// <summary>
    /// ROL/ROR of a 32/64-bit register by a non-zero immediate (the translator's RotateImmediate): it changes CF and OF
    /// and keeps the rest, so it reads the flags before it; with its own outputs dead it needs none of them.
    /// </summary>
    private static bool IsRotate(in DInsn d) =>
        d.Op == FastOpExtra.RotRI && d.Size is 4 or 8 && !d.DstHigh && (d.Imm & (d.Size == 8 ? 63u : 31u)) != 0;

    /// <summary>Register-only forms that replace every arithmetic flag without reading any (and whose templates have a result-only variant, or write nothing else).</summary>
    private static bool ProducesAllFlags(in DInsn d) => d.Op switch
    {
        FastOp.AluRR64 or FastOp.AluRI64 or FastOp.AluRR32 or FastOp.AluRI32 =>
            d.Alu is EmulatorVcpu.OpAdd or EmulatorVcpu.OpOr or EmulatorVcpu.OpAnd or EmulatorVcpu.OpSub or EmulatorVcpu.OpXor
                or EmulatorVcpu.OpCmp or EmulatorVcpu.OpTest,
        FastOp.ShiftRI64 => (d.Imm & 63) != 0,
        FastOp.ShiftRI => d.Size == 4 && !d.DstHigh && (d.Imm & 31) != 0,
        FastOp.ImulRR64 => true,
        _ => false,
    };

    /// <summary>
    /// Register-only ADC/SBB: they replace every arithmetic flag too, but read CF, so they end the scan for an earlier
    /// producer (as a reader) and only their own outputs can be dead.
    /// </summary>
    private static bool IsCarryArithmetic(in DInsn d) =>
        d.Op is FastOp.AluRR64 or FastOp.AluRI64 or FastOp.AluRR32 or FastOp.AluRI32 && d.Alu is EmulatorVcpu.OpAdc or EmulatorVcpu.OpSbb;

    /// <summary>Register-only forms that neither read nor write flags.</summary>
    private static bool IsTransparent(in DInsn d) => d.Op switch
    {
        FastOp.MovRR64 or FastOp.MovRI64 or FastOp.MovRR32 or FastOp.MovRI32 or FastOp.Lea64 or FastOp.MovzxRRWide
            or FastOp.MovsxdRR or FastOp.Nop => true,
        FastOp.ShiftRI64 => (d.Imm & 63) == 0, // translated to nothing
        _ => false,
    };

    /// <summary>Conservative: anything that touches memory or calls the interpreter may fault.</summary>
    private static bool CanFault(in DInsn d) => !(IsTransparent(in d) || ProducesAllFlags(in d));
}
