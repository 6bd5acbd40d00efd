using System.Collections.Concurrent;
using System.Diagnostics;
using System.Reflection;
using System.Reflection.Emit;
using Ops = SharpVM.Cpu.EmulatorVcpu.TranslatedOps;

namespace SharpVM.Cpu;

/// <summary>
/// Translated code for one block: runs the block's instructions with <paramref name="regs"/> the vCPU's register
/// file. Called with a null vCPU it returns at once (the translator calls it so to have it JIT-compiled on its own
/// thread rather than on the vCPU's). The delegate is closed over its <see cref="Block"/> (the method's first
/// parameter), which spares each call the shuffle thunk of a delegate to a static method.
/// </summary>
internal delegate void TranslatedBlock(EmulatorVcpu? cpu, ref ulong regs);

/// <summary>
/// The emulator's translator: turns a hot decoded block into IL (a <see cref="DynamicMethod"/>) that the .NET
/// JIT compiles to host code. Each guest instruction of a form the interpreter's fast paths know becomes a call to its
/// <see cref="EmulatorVcpu.TranslatedOps"/> template with the instruction's fields as constants, which the JIT
/// inlines and specialises (no per-instruction dispatch, no operand loads, the ALU switch and register indices
/// folded away). Other instructions call back into the interpreter for that one instruction. A block that
/// branches back to its own start loops inside its translation (bounded, and never past a pending interrupt or
/// exit request), so tight loops also skip the block lookup.
///
/// The interpreter's contract is kept exactly: FaultRip names each instruction that can fault before it runs
/// (a fault un-counts it and the rest of the block, and the exception is delivered precisely), a store into the
/// running code's page ends the block after that instruction, and RIP is right whenever the translation returns.
/// Translation happens on a background thread once a block has run <see cref="EmulatorTranslation.Threshold"/>
/// times; until then, and whenever translating fails, the interpreter runs the block.
/// </summary>
internal static class BlockTranslator
{
    /// <summary>How many times a self-looping block may go round inside its translation before returning to the dispatcher.</summary>
    private const int SelfLoopBudget = 64;

    private static readonly TranslationQueue s_queue = new(4096);
    private static Thread? s_thread;
    private static readonly Lock s_startLock = new();
    private static long s_translated, s_failed, s_ticks;
    private static string? s_lastError;
    /// <summary>Diagnostics (SHARPVM_TRANSLATE_STATS=1): the distinct block addresses translated, printed at exit.</summary>
    private static readonly HashSet<(ulong, ulong)>? s_seen =
        Environment.GetEnvironmentVariable("SHARPVM_TRANSLATE_STATS") is { Length: > 0 } ? [] : null;

    static BlockTranslator()
    {
        if (s_seen is not null)
            AppDomain.CurrentDomain.ProcessExit += (_, _) => Console.Error.WriteLine(
                $"translator: {BlocksTranslated} blocks translated ({s_seen.Count} distinct) in {TranslationTime.TotalSeconds:F2} s, {BlocksFailed} failed" +
                (LastError is null ? "" : $" (last: {LastError})"));
    }

    /// <summary>Blocks translated so far (all vCPUs of the process).</summary>
    public static long BlocksTranslated => Interlocked.Read(ref s_translated);

    /// <summary>Blocks whose translation failed (they stay interpreted); see <see cref="LastError"/>.</summary>
    public static long BlocksFailed => Interlocked.Read(ref s_failed);

    /// <summary>Time spent translating and JIT-compiling, summed over blocks.</summary>
    public static TimeSpan TranslationTime => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref s_ticks));

    public static string? LastError => Volatile.Read(ref s_lastError);

    /// <summary>Queues a block for the background translator; false (and the block stays interpreted for now) if the queue is full.</summary>
    public static bool Enqueue(Block b)
    {
        EnsureThread();
        return s_queue.TryAdd(b);
    }

    private static void EnsureThread()
    {
        if (s_thread is not null) return;
        lock (s_startLock)
        {
            if (s_thread is not null) return;
            var t = new Thread(TranslateQueued) { IsBackground = true, Name = "sharpvm-translator" };
            t.Start();
            s_thread = t;
        }
    }

    private static void TranslateQueued()
    {
        while (true) TranslateNow(s_queue.TakeHottest());
    }

    /// <summary>Translates a block and JIT-compiles the result, then publishes it on the block; never throws.</summary>
    public static void TranslateNow(Block b)
    {
        long start = Stopwatch.GetTimestamp();
        try
        {
            var code = Translate(b);
            ulong dummy = 0;
            code(null, ref dummy); // JIT-compiles it here
            Volatile.Write(ref b.Translated, code);
            Interlocked.Increment(ref s_translated);
            if (s_seen is not null) lock (s_seen) s_seen.Add((b.Rip, b.Phys));
            Remember(b);
        }
        catch (Exception e)
        {
            // The translator is an optimisation: a block it cannot handle stays with the interpreter.
            b.TranslationFailed = true;
            Interlocked.Increment(ref s_failed);
            Volatile.Write(ref s_lastError, $"block at 0x{b.Rip:x}: {e.GetType().Name}: {e.Message}");
        }
        Interlocked.Add(ref s_ticks, Stopwatch.GetTimestamp() - start);
    }

    /// <summary>
    /// Translated blocks by address, kept after the vCPUs' direct-mapped block caches drop them (a collision, a
    /// patched neighbour on the page): a block decoded again is looked up here first and, if its bytes still match
    /// (the caller verifies), reused with its translation instead of being interpreted and translated once more.
    /// A third of the boot's translations were such repeats. Shared by all vCPUs (a translation keeps no vCPU
    /// state); cleared when it grows past <see cref="MaxRemembered"/>.
    /// </summary>
    private static readonly ConcurrentDictionary<(ulong Rip, ulong Phys, int Bitness), Block> s_byAddress = new();
    private const int MaxRemembered = 1 << 14;

    private static void Remember(Block b)
    {
        if (s_byAddress.Count >= MaxRemembered) s_byAddress.Clear();
        s_byAddress[(b.Rip, b.Phys, b.Bitness)] = b;
    }

    /// <summary>A translated block decoded earlier at this address, or null; the caller must check its bytes.</summary>
    public static Block? FindTranslated(ulong rip, ulong phys, int bitness) =>
        s_byAddress.TryGetValue((rip, phys, bitness), out var b) ? b : null;

    private static readonly Dictionary<string, MethodInfo> s_ops = typeof(Ops)
        .GetMethods(BindingFlags.Public | BindingFlags.Static).ToDictionary(m => m.Name);

    private static MethodInfo Op(string name) => s_ops[name];

    /// <summary>Builds the IL for a block (see the class comment for the contract it keeps).</summary>
    internal static TranslatedBlock Translate(Block b)
    {
        var dm = new DynamicMethod($"guest_block_{b.Rip:x}", typeof(void),
            [typeof(Block), typeof(EmulatorVcpu), typeof(ulong).MakeByRefType()], typeof(EmulatorVcpu).Module, skipVisibility: true);
        var il = dm.GetILGenerator();
        var e = new Emitter(il, b);
        e.EmitBlock();
        return (TranslatedBlock)dm.CreateDelegate(typeof(TranslatedBlock), b);
    }

    private sealed class Emitter(ILGenerator il, Block b)
    {
        private readonly int _n = b.RunCount;
        private bool[] _flagsDead = null!;
        private Label _top;
        private readonly Dictionary<ulong, (int Index, Label Label)> _entryLabels = [];
        private LocalBuilder? _budget;

        /// <summary>Entries [0, this) have templates: no interpreter call before them can change the mode, the TLB or the interrupt state.</summary>
        private int _templatedPrefix;

        /// <summary>
        /// A branch at entry k back to the block's start may go round inside the translation when everything before it
        /// is translated (what follows it only runs once the loop is left) and the block lies in one page.
        /// </summary>
        private bool CanLoopAt(int k) => _budget is not null && k < _templatedPrefix;

        private static ulong? BranchTarget(in DInsn d) => d.Op switch
        {
            FastOp.Jcc or FastOp.Jmp => d.Imm,
            FastOp.AluJccRR64 or FastOp.AluJccRI64 or FastOp.AluJccRR32 or FastOp.AluJccRI32 or FastOp.AluJccRM64
                or FastOp.AluJccRR or FastOp.AluJccRI => d.Target,
            _ => null,
        };

        public void EmitBlock()
        {
            _flagsDead = FlagsLiveness.DeadFlagOutputs(b.D, _n);
            var body = il.DefineLabel();
            Cpu();
            il.Emit(OpCodes.Brtrue, body);
            il.Emit(OpCodes.Ret);
            il.MarkLabel(body);
            while (_templatedPrefix < _n && IsTemplated(in b.D[_templatedPrefix])) _templatedPrefix++;
            bool loops = false;
            for (int k = 0; k < _templatedPrefix; k++) loops |= BranchTarget(in b.D[k]) == b.Rip;
            if (loops && b.Len2 == 0)
            {
                _budget = il.DeclareLocal(typeof(int));
                I4(SelfLoopBudget);
                il.Emit(OpCodes.Stloc, _budget);
            }
            // Labels for the targets of forward conditional branches inside the block.
            for (int k = 0; k < _n - 1; k++)
            {
                if (b.D[k].Op != FastOp.Jcc) continue;
                for (int j = k + 1; j < _n; j++)
                    if (b.D[j].Ip == b.D[k].Imm && !_entryLabels.ContainsKey(b.D[j].Ip)) _entryLabels[b.D[j].Ip] = (j, il.DefineLabel());
            }
            _top = il.DefineLabel();
            il.MarkLabel(_top);
            bool returned = false;
            for (int k = 0; k < _n; k++)
            {
                if (_entryLabels.TryGetValue(b.D[k].Ip, out var target) && target.Index == k) il.MarkLabel(target.Label);
                returned = EmitEntry(k);
            }
            if (!returned)
            {
                // The block ended without a branch (page end, size limit): go on after its last instruction.
                SetRip(b.D[_n - 1].NextIp);
                il.Emit(OpCodes.Ret);
            }
        }

        private static bool IsTemplated(in DInsn d) => d.Op switch
        {
            FastOp.MovRR64 or FastOp.MovRM64 or FastOp.MovMR64 or FastOp.MovRI64 or FastOp.AluRR64 or FastOp.AluRI64 or FastOp.AluRM64
                or FastOp.Lea64 or FastOp.MovRR32 or FastOp.MovRM32 or FastOp.MovMR32 or FastOp.MovRI32 or FastOp.AluRR32 or FastOp.AluRI32
                or FastOp.Jcc or FastOp.IncR64 or FastOp.DecR64 or FastOp.IncR32 or FastOp.DecR32 or FastOp.Jmp or FastOp.Call or FastOp.Ret
                or FastOp.Push or FastOp.Pop or FastOp.ShiftRI64 or FastOp.MovzxRRWide or FastOp.MovzxRMWide or FastOp.SetccR
                or FastOp.CmovRR64 or FastOp.CmovRM64 or FastOp.MovsxdRR or FastOp.MovsxdRM or FastOp.AluJccRR64 or FastOp.AluJccRI64
                or FastOp.AluJccRR32 or FastOp.AluJccRI32 or FastOp.AluJccRM64 or FastOp.Nop
                or FastOp.MovRR or FastOp.MovRI or FastOp.MovRM or FastOp.MovMR or FastOp.MovMI or FastOp.AluRR or FastOp.AluRI
                or FastOp.AluRM or FastOp.AluMR or FastOp.AluMI or FastOp.Lea or FastOp.IncR or FastOp.DecR or FastOp.ShiftRI
                or FastOpExtra.RotRI or FastOp.MovzxRR or FastOp.MovzxRM or FastOp.MovsxRR or FastOp.MovsxRM or FastOp.ImulRR64
                or FastOp.ImulRM64 or FastOpExtra.ImulRR or FastOpExtra.ImulRM or FastOpExtra.ImulRRI or FastOpExtra.ImulRMI
                or FastOp.AluJccRR or FastOp.AluJccRI => true,
            _ => false,
        };

        /// <summary>Emits entry k; returns true when the code emitted for it always returns (it ended the block).</summary>
        private bool EmitEntry(int k)
        {
            ref DInsn d = ref b.D[k];
            switch (d.Op)
            {
                case FastOp.Nop: return false;
                case FastOp.MovRR64: Regs(); I4(d.Dst); I4(d.Src); Call(nameof(Ops.MovRR64)); return false;
                case FastOp.MovRI64: Regs(); I4(d.Dst); I8(d.Imm); Call(nameof(Ops.MovRI64)); return false;
                case FastOp.MovRM64: Faults(ref d); Cpu(); Regs(); I4(d.Dst); Linear(ref d); Call(nameof(Ops.MovRM64)); return false;
                case FastOp.MovMR64: Faults(ref d); Cpu(); Regs(); I4(d.Src); Linear(ref d); Call(nameof(Ops.MovMR64)); AfterStore(k); return false;
                case FastOp.MovRR32: Regs(); I4(d.Dst); I4(d.Src); Call(nameof(Ops.MovRR32)); return false;
                case FastOp.MovRI32: Regs(); I4(d.Dst); I8((uint)d.Imm); Call(nameof(Ops.MovRI64)); return false;
                case FastOp.MovRM32: Faults(ref d); Cpu(); Regs(); I4(d.Dst); Linear(ref d); Call(nameof(Ops.MovRM32)); return false;
                case FastOp.MovMR32: Faults(ref d); Cpu(); Regs(); I4(d.Src); Linear(ref d); Call(nameof(Ops.MovMR32)); AfterStore(k); return false;
                case FastOp.Lea64: Regs(); I4(d.Dst); EffectiveAddress(ref d); Call(nameof(Ops.Lea)); return false;
                // A flag-setting ALU operation whose flags nothing can see (FlagsLiveness) computes only its result;
                // CMP and TEST then do nothing at all.
                case FastOp.AluRR64 or FastOp.AluRI64 or FastOp.AluRR32 or FastOp.AluRI32 when _flagsDead[k]:
                    if (d.Alu >= EmulatorVcpu.OpCmp) return false;
                    Regs(); I4(d.Alu); I4(d.Dst);
                    if (d.Op is FastOp.AluRR64 or FastOp.AluRR32) { Regs(); I4(d.Src); Call(nameof(Ops.Register64)); }
                    else I8(d.Imm);
                    Call(d.Op is FastOp.AluRR64 or FastOp.AluRI64 ? nameof(Ops.AluResultOnly64) : nameof(Ops.AluResultOnly32));
                    return false;
                case FastOp.AluRR64: AluRR(ref d, nameof(Ops.AluRR64)); return false;
                case FastOp.AluRI64: AluRI(ref d, nameof(Ops.AluRI64)); return false;
                case FastOp.AluRR32: AluRR(ref d, nameof(Ops.AluRR32)); return false;
                case FastOp.AluRI32: AluRI(ref d, nameof(Ops.AluRI32)); return false;
                case FastOp.AluRM64: AluRM64(ref d); return false;
                case FastOp.IncR64: IncDec(ref d, nameof(Ops.IncDec64), false); return false;
                case FastOp.DecR64: IncDec(ref d, nameof(Ops.IncDec64), true); return false;
                case FastOp.IncR32: IncDec(ref d, nameof(Ops.IncDec32), false); return false;
                case FastOp.DecR32: IncDec(ref d, nameof(Ops.IncDec32), true); return false;
                case FastOp.ShiftRI64:
                    if ((d.Imm & 63) == 0) return false;
                    if (_flagsDead[k]) { Regs(); I4(d.Alu); I4(d.Dst); I4((int)(d.Imm & 63)); Call(nameof(Ops.ShiftResultOnly64)); }
                    else { Cpu(); Regs(); I4(d.Alu); I4(d.Dst); I4((int)(d.Imm & 63)); Call(nameof(Ops.ShiftRI64)); }
                    return false;
                case FastOp.MovzxRRWide: Cpu(); Regs(); I4(d.Dst); I4(d.Src); Bool(d.SrcHigh); I4((int)d.Imm); Call(nameof(Ops.MovzxRR)); return false;
                case FastOp.MovzxRMWide: Faults(ref d); Cpu(); Regs(); I4(d.Dst); Linear(ref d); I4((int)d.Imm); Call(nameof(Ops.MovzxRM)); return false;
                case FastOp.SetccR: Cpu(); I4(d.Dst); Bool(d.DstHigh); Condition(d.Alu); Call(nameof(Ops.SetccR)); return false;
                case FastOp.CmovRR64: Regs(); Condition(d.Alu); I4(d.Dst); I4(d.Src); Call(nameof(Ops.CmovRR64)); return false;
                case FastOp.CmovRM64: Faults(ref d); Cpu(); Regs(); Condition(d.Alu); I4(d.Dst); Linear(ref d); Call(nameof(Ops.CmovRM64)); return false;
                case FastOp.MovsxdRR: Regs(); I4(d.Dst); I4(d.Src); Call(nameof(Ops.MovsxdRR)); return false;
                case FastOp.MovsxdRM: Faults(ref d); Cpu(); Regs(); I4(d.Dst); Linear(ref d); Call(nameof(Ops.MovsxdRM)); return false;
                case FastOp.Push: Faults(ref d); Cpu(); Regs(); I4(d.Dst); Call(nameof(Ops.Push64)); AfterStore(k); return false;
                case FastOp.Pop: Faults(ref d); Cpu(); Regs(); I4(d.Dst); Call(nameof(Ops.Pop64)); return false;
                case FastOp.Jcc when k < _n - 1:
                {
                    // A conditional branch inside the block: taken, it leaves the block (the instructions after it
                    // did not retire), or goes round again if it targets the block's start.
                    var notTaken = il.DefineLabel();
                    Condition(d.Alu);
                    il.Emit(OpCodes.Brfalse, notTaken);
                    if (_entryLabels.TryGetValue(d.Imm, out var inBlock) && inBlock.Index > k)
                    {
                        // A forward branch to an instruction of this block (an if that skips a few): jump there; the
                        // instructions skipped did not retire.
                        if (inBlock.Index > k + 1) { Cpu(); I8Signed(inBlock.Index - k - 1); Call(nameof(Ops.Unretire)); }
                        il.Emit(OpCodes.Br, inBlock.Label);
                        il.MarkLabel(notTaken);
                        return false;
                    }
                    Cpu(); I8Signed(b.Count - k - 1); Call(nameof(Ops.Unretire));
                    if (d.Imm == b.Rip && CanLoopAt(k)) { Cpu(); LoopBackOrLeave(); }
                    SetRip(d.Imm);
                    il.Emit(OpCodes.Ret);
                    il.MarkLabel(notTaken);
                    return false;
                }
                case FastOp.Jcc:
                    Condition(d.Alu);
                    Branch(d.Imm, d.NextIp, k);
                    return true;
                case FastOp.Jmp:
                    if (d.Imm == b.Rip && CanLoopAt(k)) { Cpu(); LoopBackOrLeave(); }
                    SetRip(d.Imm);
                    il.Emit(OpCodes.Ret);
                    return true;
                case FastOp.Call:
                    Faults(ref d); Cpu(); Regs(); I8(d.NextIp); I8(d.Imm); Call(nameof(Ops.Call64));
                    il.Emit(OpCodes.Ret);
                    return true;
                case FastOp.Ret:
                    Faults(ref d); Cpu(); Regs(); Call(nameof(Ops.Ret64));
                    il.Emit(OpCodes.Ret);
                    return true;
                case FastOp.AluJccRR64: case FastOp.AluJccRR32:
                    AluRR(ref d, d.Op == FastOp.AluJccRR64 ? nameof(Ops.AluRR64) : nameof(Ops.AluRR32));
                    FusedBranch(ref d, k);
                    return true;
                case FastOp.AluJccRI64: case FastOp.AluJccRI32:
                    AluRI(ref d, d.Op == FastOp.AluJccRI64 ? nameof(Ops.AluRI64) : nameof(Ops.AluRI32));
                    FusedBranch(ref d, k);
                    return true;
                case FastOp.AluJccRM64:
                    AluRM64(ref d);
                    FusedBranch(ref d, k);
                    return true;
                // Forms of any operand size.
                case FastOp.MovRR: Cpu(); I4(d.Dst); Bool(d.DstHigh); I4(d.Src); Bool(d.SrcHigh); I4(d.Size); Call(nameof(Ops.MovRR)); return false;
                case FastOp.MovRI: Cpu(); I4(d.Dst); Bool(d.DstHigh); I8(d.Imm); I4(d.Size); Call(nameof(Ops.MovRI)); return false;
                case FastOp.MovRM: Faults(ref d); Cpu(); I4(d.Dst); Bool(d.DstHigh); Linear(ref d); I4(d.Size); Call(nameof(Ops.MovRM)); return false;
                case FastOp.MovMR: Faults(ref d); Cpu(); I4(d.Src); Bool(d.SrcHigh); Linear(ref d); I4(d.Size); Call(nameof(Ops.MovMR)); AfterStore(k); return false;
                case FastOp.MovMI: Faults(ref d); Cpu(); Linear(ref d); I8(d.Imm); I4(d.Size); Call(nameof(Ops.MovMI)); AfterStore(k); return false;
                case FastOp.AluRR: AluRRSized(ref d); return false;
                case FastOp.AluRI: AluRISized(ref d); return false;
                case FastOp.AluRM: Faults(ref d); Cpu(); I4(d.Alu); I4(d.Dst); Bool(d.DstHigh); Linear(ref d); I4(d.Size); Call(nameof(Ops.AluRM)); return false;
                case FastOp.AluMR:
                    Faults(ref d); Cpu(); I4(d.Alu); I4(d.Src); Bool(d.SrcHigh); Linear(ref d); I4(d.Size); Call(nameof(Ops.AluMR));
                    if (d.Alu < EmulatorVcpu.OpCmp) AfterStore(k);
                    return false;
                case FastOp.AluMI:
                    Faults(ref d); Cpu(); I4(d.Alu); Linear(ref d); I8(d.Imm); I4(d.Size); Call(nameof(Ops.AluMI));
                    if (d.Alu < EmulatorVcpu.OpCmp) AfterStore(k);
                    return false;
                case FastOp.Lea: Cpu(); I4(d.Dst); EffectiveAddress(ref d); I4(d.Size); Call(nameof(Ops.LeaSized)); return false;
                case FastOp.IncR: case FastOp.DecR:
                    Cpu(); I4(d.Dst); Bool(d.DstHigh); Bool(d.Op == FastOp.DecR); I4(d.Size); Call(nameof(Ops.IncDecR));
                    return false;
                // 32-bit shifts and 32/64-bit rotates by an immediate have their own templates; a masked count of 0
                // changes no flag and (32-bit) only zero-extends the register.
                case FastOp.ShiftRI when d.Size == 4 && !d.DstHigh:
                {
                    int count = (int)(d.Imm & 31);
                    if (count == 0) { Regs(); I4(d.Dst); Regs(); I4(d.Dst); Call(nameof(Ops.Register64)); I8(0xFFFF_FFFF); il.Emit(OpCodes.And); Call(nameof(Ops.MovRI64)); }
                    else if (_flagsDead[k]) { Regs(); I4(d.Alu); I4(d.Dst); I4(count); Call(nameof(Ops.ShiftResultOnly32)); }
                    else { Cpu(); Regs(); I4(d.Alu); I4(d.Dst); I4(count); Call(nameof(Ops.ShiftRI32)); }
                    return false;
                }
                case FastOpExtra.RotRI when d.Size is 4 or 8 && !d.DstHigh:
                {
                    int count = (int)(d.Imm & (d.Size == 8 ? 63u : 31u));
                    if (count == 0)
                    {
                        if (d.Size == 4) { Regs(); I4(d.Dst); Regs(); I4(d.Dst); Call(nameof(Ops.Register64)); I8(0xFFFF_FFFF); il.Emit(OpCodes.And); Call(nameof(Ops.MovRI64)); }
                        return false;
                    }
                    Cpu(); Regs(); Bool(d.Alu == 0); I4(d.Dst); I4(count); I4(d.Size); Call(nameof(Ops.RotateRI));
                    return false;
                }
                case FastOp.ShiftRI: case FastOpExtra.RotRI:
                {
                    var mn = d.Op == FastOpExtra.RotRI ? (d.Alu == 0 ? Iced.Intel.Mnemonic.Rol : Iced.Intel.Mnemonic.Ror)
                        : d.Alu == 0 ? Iced.Intel.Mnemonic.Shl : d.Alu == 1 ? Iced.Intel.Mnemonic.Shr : Iced.Intel.Mnemonic.Sar;
                    Cpu(); I4((int)mn); I4(d.Dst); Bool(d.DstHigh); I8(d.Imm); I4(d.Size); Call(nameof(Ops.ShiftRI));
                    return false;
                }
                case FastOp.MovzxRR: Cpu(); I4(d.Dst); I4(d.Src); Bool(d.SrcHigh); I4((int)d.Imm); I4(d.Size); Call(nameof(Ops.MovzxRRSized)); return false;
                case FastOp.MovzxRM: Faults(ref d); Cpu(); I4(d.Dst); Linear(ref d); I4((int)d.Imm); I4(d.Size); Call(nameof(Ops.MovzxRMSized)); return false;
                case FastOp.MovsxRR: Cpu(); I4(d.Dst); I4(d.Src); Bool(d.SrcHigh); I4((int)d.Imm); I4(d.Size); Call(nameof(Ops.MovsxRR)); return false;
                case FastOp.MovsxRM: Faults(ref d); Cpu(); I4(d.Dst); Linear(ref d); I4((int)d.Imm); I4(d.Size); Call(nameof(Ops.MovsxRM)); return false;
                case FastOp.ImulRR64 when _flagsDead[k]:
                    Regs(); I4(d.Dst); Regs(); I4(d.Src); Call(nameof(Ops.Register64)); Call(nameof(Ops.ImulResultOnly64));
                    return false;
                case FastOp.ImulRR64:
                    Cpu(); Regs(); I4(d.Dst); Regs(); I4(d.Src); Call(nameof(Ops.Register64)); Call(nameof(Ops.Imul64));
                    return false;
                case FastOp.ImulRM64:
                    Faults(ref d); Cpu(); Regs(); I4(d.Dst); Cpu(); Linear(ref d); Call(nameof(Ops.Load64)); Call(nameof(Ops.Imul64));
                    return false;
                case FastOpExtra.ImulRR: case FastOpExtra.ImulRM: case FastOpExtra.ImulRRI: case FastOpExtra.ImulRMI:
                {
                    bool memory = d.Op is FastOpExtra.ImulRM or FastOpExtra.ImulRMI;
                    if (memory) Faults(ref d);
                    Cpu(); I4(d.Dst);
                    // First factor: the destination (two operands) or the source (three operands, with an immediate).
                    if (d.Op == FastOpExtra.ImulRR || d.Op == FastOpExtra.ImulRM) { Cpu(); I4(d.Dst); I4(d.Size); Call(nameof(Ops.RegisterSized)); }
                    if (d.Op == FastOpExtra.ImulRRI) { Cpu(); I4(d.Src); I4(d.Size); Call(nameof(Ops.RegisterSized)); }
                    if (memory) { Cpu(); Linear(ref d); I4(d.Size); Call(nameof(Ops.LoadSized)); }
                    if (d.Op == FastOpExtra.ImulRR) { Cpu(); I4(d.Src); I4(d.Size); Call(nameof(Ops.RegisterSized)); }
                    if (d.Op is FastOpExtra.ImulRRI or FastOpExtra.ImulRMI) I8(d.Imm);
                    I4(d.Size); Call(nameof(Ops.Imul));
                    return false;
                }
                case FastOp.AluJccRR: AluRRSized(ref d); FusedBranch(ref d, k); return true;
                case FastOp.AluJccRI: AluRISized(ref d); FusedBranch(ref d, k); return true;
                default:
                    Faults(ref d);
                    Cpu(); il.Emit(OpCodes.Ldarg_0); I4(k); Call(nameof(Ops.Interpret));
                    if (k == _n - 1)
                    {
                        il.Emit(OpCodes.Ret); // it set RIP (the next instruction or a branch target)
                        return true;
                    }
                    // It may have branched, changed the mode or stored into this block's page: then stop here.
                    var goOn = il.DefineLabel();
                    Cpu(); Call(nameof(Ops.BlockEnded));
                    il.Emit(OpCodes.Brfalse, goOn);
                    Cpu(); I8Signed(b.Count - k - 1); Call(nameof(Ops.Unretire));
                    il.Emit(OpCodes.Ret);
                    il.MarkLabel(goOn);
                    return false;
            }
        }

        private void AluRRSized(ref DInsn d) { Cpu(); I4(d.Alu); I4(d.Dst); Bool(d.DstHigh); I4(d.Src); Bool(d.SrcHigh); I4(d.Size); Call(nameof(Ops.AluRR)); }

        private void AluRISized(ref DInsn d) { Cpu(); I4(d.Alu); I4(d.Dst); Bool(d.DstHigh); I8(d.Imm); I4(d.Size); Call(nameof(Ops.AluRI)); }

        private void AluRR(ref DInsn d, string op) { Cpu(); Regs(); I4(d.Alu); I4(d.Dst); I4(d.Src); Call(op); }

        private void AluRI(ref DInsn d, string op) { Cpu(); Regs(); I4(d.Alu); I4(d.Dst); I8(d.Imm); Call(op); }

        private void AluRM64(ref DInsn d) { Faults(ref d); Cpu(); Regs(); I4(d.Alu); I4(d.Dst); Linear(ref d); Call(nameof(Ops.AluRM64)); }

        private void IncDec(ref DInsn d, string op, bool dec) { Cpu(); Regs(); I4(d.Dst); Bool(dec); Call(op); }

        private void FusedBranch(ref DInsn d, int k)
        {
            Condition(d.Cc);
            Branch(d.Target, d.JccNext, k);
        }

        /// <summary>With the condition on the stack: RIP = taken ? target : next, then return (or loop, for a branch back to the block's start).</summary>
        private void Branch(ulong target, ulong next, int k)
        {
            var notTaken = il.DefineLabel();
            il.Emit(OpCodes.Brfalse, notTaken);
            if (target == b.Rip && CanLoopAt(k)) { Cpu(); LoopBackOrLeave(); }
            SetRip(target);
            il.Emit(OpCodes.Ret);
            il.MarkLabel(notTaken);
            SetRip(next);
            il.Emit(OpCodes.Ret);
        }

        /// <summary>With the vCPU on the stack: go round again (counting the block's instructions) if allowed.</summary>
        private void LoopBackOrLeave()
        {
            il.Emit(OpCodes.Ldloca, _budget!);
            I8Signed(b.Count);
            Call(nameof(Ops.MayLoop));
            il.Emit(OpCodes.Brtrue, _top);
        }

        /// <summary>After an instruction that stores: if it wrote into the running code's page, end the block after it.</summary>
        private void AfterStore(int k)
        {
            var goOn = il.DefineLabel();
            Cpu(); Call(nameof(Ops.BlockEnded));
            il.Emit(OpCodes.Brfalse, goOn);
            SetRip(b.D[k].NextIp);
            if (k != _n - 1) { Cpu(); I8Signed(b.Count - k - 1); Call(nameof(Ops.Unretire)); }
            il.Emit(OpCodes.Ret);
            il.MarkLabel(goOn);
        }

        /// <summary>Before an instruction that can fault: a fault is then delivered at it, and it and the rest of the block un-counted.</summary>
        private void Faults(ref DInsn d) { Cpu(); I8(d.Ip); Call(nameof(Ops.SetFaultRip)); }

        /// <summary>Pushes whether condition code <paramref name="cc"/> holds.</summary>
        private void Condition(int cc)
        {
            string method = Ops.ConditionMethod(cc);
            Cpu();
            if (method == nameof(Ops.Condition)) I4(cc);
            Call(method);
        }

        private void SetRip(ulong rip) { Cpu(); I8(rip); Call(nameof(Ops.SetRip)); }

        private void Linear(ref DInsn d)
        {
            Cpu(); Regs(); I4(d.Base); I4(d.Index); I4(d.Scale); I8(d.Disp); I4(d.ASize); I4(d.Seg); I4(b.Bitness);
            Call(nameof(Ops.LinearAddress));
        }

        private void EffectiveAddress(ref DInsn d)
        {
            Regs(); I4(d.Base); I4(d.Index); I4(d.Scale); I8(d.Disp); I4(d.ASize);
            Call(nameof(Ops.EffectiveAddress));
        }

        // Arguments: 0 the block (the delegate's target), 1 the vCPU, 2 its register file.
        private void Cpu() => il.Emit(OpCodes.Ldarg_1);
        private void Regs() => il.Emit(OpCodes.Ldarg_2);
        private void I4(int v) => il.Emit(OpCodes.Ldc_I4, v);
        private void Bool(bool v) => il.Emit(v ? OpCodes.Ldc_I4_1 : OpCodes.Ldc_I4_0);
        private void I8(ulong v) => il.Emit(OpCodes.Ldc_I8, (long)v);
        private void I8Signed(long v) => il.Emit(OpCodes.Ldc_I8, v);
        private void Call(string op)
        {
            var m = Op(op);
            // Memory templates are generic over how they reach guest memory (see EmulatorVcpu.IGuestMemoryAccess).
            if (m.IsGenericMethodDefinition) m = m.MakeGenericMethod(_budget is not null ? typeof(EmulatorVcpu.InlinedMemory) : typeof(EmulatorVcpu.CalledMemory));
            il.Emit(OpCodes.Call, m);
        }
    }
}

/// <summary>
/// When the emulator translates blocks to host code (see <see cref="BlockTranslator"/>): after
/// <see cref="Threshold"/> runs of a block, on a background thread or, with <see cref="Background"/> false,
/// at once on the vCPU thread (deterministic: for tests).
/// </summary>
public readonly record struct EmulatorTranslation(int Threshold, bool Background)
{
    /// <summary>Interpret only.</summary>
    public static EmulatorTranslation Off => new(0, true);

    /// <summary>
    /// Translate blocks that have run 1000 times, in the background. Translating costs ~0.3 ms + ~0.07 ms per
    /// instruction of JIT time, so only hot code repays it (see bench/cpu/README.md).
    /// </summary>
    public static EmulatorTranslation Default => new(1000, true);

    /// <summary>Translate every block on its first run, on the vCPU thread (tests: every instruction runs translated).</summary>
    public static EmulatorTranslation Eager => new(1, false);

    public bool Enabled => Threshold > 0;

    /// <summary>
    /// The translation the environment asks for: SHARPVM_EMU_TRANSLATE = off | eager | a threshold (runs before a
    /// block is translated); <see cref="Default"/> when unset.
    /// </summary>
    public static EmulatorTranslation FromEnvironment()
    {
        string? v = Environment.GetEnvironmentVariable("SHARPVM_EMU_TRANSLATE");
        if (string.IsNullOrEmpty(v)) return Default;
        if (v.Equals("off", StringComparison.OrdinalIgnoreCase) || v == "0") return Off;
        if (v.Equals("eager", StringComparison.OrdinalIgnoreCase)) return Eager;
        if (int.TryParse(v, out int n) && n > 0) return new(n, true);
        throw new ArgumentException($"SHARPVM_EMU_TRANSLATE='{v}' is not off, eager or a positive number of runs");
    }
}
