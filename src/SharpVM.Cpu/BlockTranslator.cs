using System.Collections.Concurrent;
using System.Diagnostics;
using System.Reflection;
using System.Reflection.Emit;
using Ops = SharpVM.Cpu.EmulatorVcpu.TranslatedOps;
using Fields = SharpVM.Cpu.EmulatorVcpu.TranslatedFields;

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
/// JIT compiles to host code. Each guest instruction of a form the interpreter's fast paths know becomes IL specialised
/// to it, with its fields as constants (no per-instruction dispatch, no operand loads): register-file accesses, address
/// arithmetic, TLB loads and stores, ALU results with their lazy-flag state. Rarer forms call an inlined
/// <see cref="EmulatorVcpu.TranslatedOps"/> template, whose switches the JIT folds. Direct IL because every inlined call
/// costs the JIT several microseconds, even one that folds to a single store; the JIT's time is the translator's budget
/// (SharpVM.Cpu.Bench jit measures it per form). Other instructions call back into the interpreter for that one instruction. A block that
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
                $"translator: {BlocksTranslated} blocks translated ({s_seen.Count} distinct) in {TranslationTime.TotalSeconds:F2} s" +
                $" ({ThreadCpuSeconds("sharpvm-transla"):F2} s CPU), {BlocksFailed} failed" +
                (LastError is null ? "" : $" (last: {LastError})"));
    }

    /// <summary>
    /// CPU seconds (user + system) of this process's thread named <paramref name="comm"/> (Linux truncates thread names to
    /// 15 characters), from /proc; NaN if there is none. The translator's wall time also counts the time it waits for
    /// a core, which on a busy 2-core machine is much of it.
    /// </summary>
    private static double ThreadCpuSeconds(string comm)
    {
        try
        {
            foreach (var task in Directory.EnumerateDirectories("/proc/self/task"))
            {
                if (File.ReadAllText(Path.Combine(task, "comm")).TrimEnd('\n') != comm) continue;
                string stat = File.ReadAllText(Path.Combine(task, "stat"));
                // Fields after the parenthesised name: state is field 3, utime and stime are fields 14 and 15.
                var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                return (double.Parse(f[11]) + double.Parse(f[12])) / 100.0; // USER_HZ is 100 on Linux
            }
        }
        catch (IOException) { }
        return double.NaN;
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

    private static readonly FieldInfo s_segmentBase = typeof(Seg).GetField(nameof(Seg.Base))!;
    private static readonly MethodInfo s_segmentArrayData = typeof(System.Runtime.InteropServices.MemoryMarshal)
        .GetMethod(nameof(System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference), 1, [Type.MakeGenericMethodParameter(0).MakeArrayType()])!
        .MakeGenericMethod(typeof(Seg));
    private static readonly MethodInfo s_bigMul = typeof(Math).GetMethod(nameof(Math.BigMul), [typeof(ulong), typeof(ulong), typeof(ulong).MakeByRefType()])!;
    private static readonly MethodInfo s_popCount = typeof(System.Numerics.BitOperations).GetMethod(nameof(System.Numerics.BitOperations.PopCount), [typeof(uint)])!;
    private static readonly MethodInfo s_byteSwap32 = typeof(System.Buffers.Binary.BinaryPrimitives).GetMethod(nameof(System.Buffers.Binary.BinaryPrimitives.ReverseEndianness), [typeof(uint)])!;
    private static readonly MethodInfo s_byteSwap64 = typeof(System.Buffers.Binary.BinaryPrimitives).GetMethod(nameof(System.Buffers.Binary.BinaryPrimitives.ReverseEndianness), [typeof(ulong)])!;

    private static readonly Dictionary<string, MethodInfo> s_calledMemory = typeof(EmulatorVcpu.CalledMemory)
        .GetMethods(BindingFlags.Public | BindingFlags.Static).ToDictionary(m => m.Name);
    private static readonly Dictionary<string, MethodInfo> s_inlinedMemory = typeof(EmulatorVcpu.InlinedMemory)
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

        /// <summary>The entry being emitted.</summary>
        private int _entry;

        /// <summary>
        /// The entry whose ALU operation (<see cref="_knownAlu"/>, <see cref="_knownSize"/>) left its operands and result in
        /// <see cref="FlagA"/>, <see cref="FlagB"/> and <see cref="FlagR"/> (AluWithLazyFlags), or -1: a condition or carry
        /// read after it is computed from those instead of the lazy-flag fields, as long as no other instruction changed
        /// the flags and no branch inside the block landed in between (the flags stay in the lazy-flag fields too).
        /// </summary>
        private int _knownFlagsAt = -1, _knownAlu, _knownSize;

        /// <summary>The known flags' operands and result: locals of their own, which the instructions in between leave alone.</summary>
        private LocalBuilder FlagA => _flagA ??= il.DeclareLocal(typeof(ulong));
        private LocalBuilder FlagB => _flagB ??= il.DeclareLocal(typeof(ulong));
        private LocalBuilder FlagR => _flagR ??= il.DeclareLocal(typeof(ulong));
        private LocalBuilder? _flagA, _flagB, _flagR;

        private void ForgetKnownFlags() => _knownFlagsAt = _knownCarryAt = -1;

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
            il.Emit(OpCodes.Ret); // the JIT warm-up call
            il.MarkLabel(body);
            while (_templatedPrefix < _n && IsTemplated(in b.D[_templatedPrefix])) _templatedPrefix++;
            bool loops = false;
            for (int k = 0; k < _templatedPrefix; k++) loops |= BranchTarget(in b.D[k]) == b.Rip;
            loops &= b.Len2 == 0;
            _registersInLocals = loops;
            if (_registersInLocals)
            {
                _loadRegisters = il.DefineLabel();
                _afterLoad = il.DefineLabel();
                il.Emit(OpCodes.Br, _loadRegisters);
                il.MarkLabel(_afterLoad);
            }
            if (loops)
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
            if (_registersInLocals)
            {
                // Going round does not write registers back: from here on every register counts as changed, so every
                // way out and every miss path writes all of them back (and all are loaded on entry).
                _used = _dirty = 0xFFFF;
            }
            bool returned = false;
            for (int k = 0; k < _n; k++)
            {
                if (_entryLabels.TryGetValue(b.D[k].Ip, out var target) && target.Index == k)
                {
                    // Paths with other flags, and other registers changed, meet here.
                    il.MarkLabel(target.Label);
                    ForgetKnownFlags();
                    _dirty |= _dirtyAtLabel.GetValueOrDefault(k);
                }
                _entry = k;
                returned = EmitEntry(k);
                if (b.Insns[k].RflagsModified != 0)
                {
                    // It changed the flags: what is known now is only what it left known itself.
                    if (_knownFlagsAt != k) _knownFlagsAt = -1;
                    if (_knownCarryAt != k) _knownCarryAt = -1;
                }
            }
            if (!returned)
            {
                // The block ended without a branch (page end, size limit): go on after its last instruction.
                SetRip(b.D[_n - 1].NextIp);
                Leave();
            }
            if (_registersInLocals) EmitRegisterLoads();
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
                or FastOp.AluJccRR or FastOp.AluJccRI or FastOpExtra.CallR or FastOpExtra.CallM or FastOpExtra.JmpR or FastOpExtra.JmpM
                or FastOpExtra.UnaryR or FastOpExtra.UnaryM or FastOpExtra.BswapR => true,
            FastOpExtra.ShiftRCl => d.Size is 4 or 8 && !d.DstHigh,
            _ => false,
        };

        /// <summary>Emits entry k; returns true when the code emitted for it always returns (it ended the block).</summary>
        private bool EmitEntry(int k)
        {
            ref DInsn d = ref b.D[k];
            switch (d.Op)
            {
                case FastOp.Nop: return false;
                case FastOp.MovRR64: BeginSetReg(d.Dst); LoadReg(d.Src); EndSetReg(); return false;
                case FastOp.MovRI64: BeginSetReg(d.Dst); I8(d.Imm); EndSetReg(); return false;
                case FastOp.MovRM64: Faults(ref d); BeginSetReg(d.Dst); Load(ref d, 8); EndSetReg(); return false;
                case FastOp.MovMR64: { Faults(ref d); int src = d.Src; Store(ref d, 8, () => LoadReg(src)); } AfterStore(k); return false;
                case FastOp.MovRR32: BeginSetReg(d.Dst); LoadReg(d.Src); ZeroExtend(4); EndSetReg(); return false;
                case FastOp.MovRI32: BeginSetReg(d.Dst); I8((uint)d.Imm); EndSetReg(); return false;
                // A 4-byte load is already zero-extended.
                case FastOp.MovRM32: Faults(ref d); BeginSetReg(d.Dst); Load(ref d, 4); EndSetReg(); return false;
                case FastOp.MovMR32: { Faults(ref d); int src = d.Src; Store(ref d, 4, () => { LoadReg(src); ZeroExtend(4); }); } AfterStore(k); return false;
                case FastOp.Lea64: BeginSetReg(d.Dst); EffectiveAddress(ref d); EndSetReg(); return false;
                // A flag-setting ALU operation whose flags nothing can see (FlagsLiveness) computes only its result;
                // CMP and TEST then do nothing at all.
                case FastOp.AluRR64 or FastOp.AluRI64 or FastOp.AluRR32 or FastOp.AluRI32 when _flagsDead[k] && !IsCarryAlu(d.Alu):
                    if (d.Alu >= EmulatorVcpu.OpCmp) return false;
                {
                    int size = d.Op is FastOp.AluRR64 or FastOp.AluRI64 ? 8 : 4;
                    BeginSetReg(d.Dst);
                    LoadReg(d.Dst);
                    if (d.Op is FastOp.AluRR64 or FastOp.AluRR32) LoadReg(d.Src);
                    else I8(size == 8 ? d.Imm : (uint)d.Imm);
                    il.Emit(AluOpCode(d.Alu));
                    ZeroExtend(size);
                    EndSetReg();
                    return false;
                }
                case FastOp.AluRR64: AluRR(ref d, nameof(Ops.AluRR64)); return false;
                case FastOp.AluRI64: AluRI(ref d, nameof(Ops.AluRI64)); return false;
                case FastOp.AluRR32: AluRR(ref d, nameof(Ops.AluRR32)); return false;
                case FastOp.AluRI32: AluRI(ref d, nameof(Ops.AluRI32)); return false;
                case FastOp.AluRM64: AluRM64(ref d); return false;
                case FastOp.IncR64: IncDec(ref d, 8, false); return false;
                case FastOp.DecR64: IncDec(ref d, 8, true); return false;
                case FastOp.IncR32: IncDec(ref d, 4, false); return false;
                case FastOp.DecR32: IncDec(ref d, 4, true); return false;
                case FastOp.ShiftRI64:
                    if ((d.Imm & 63) == 0) return false;
                    ShiftImmediate(d.Alu, d.Dst, (int)(d.Imm & 63), 8, !_flagsDead[k]);
                    return false;
                case FastOp.MovzxRRWide: BeginSetReg(d.Dst); LoadReg(d.Src, d.SrcHigh, (int)d.Imm); EndSetReg(); return false;
                // Loads of 1 and 2 bytes are zero-extended.
                case FastOp.MovzxRMWide: Faults(ref d); BeginSetReg(d.Dst); Load(ref d, (int)d.Imm); EndSetReg(); return false;
                case FastOp.SetccR:
                    Condition(d.Alu); il.Emit(OpCodes.Conv_U8); il.Emit(OpCodes.Stloc, Temp(0));
                    StoreReg(d.Dst, d.DstHigh, 1, () => il.Emit(OpCodes.Ldloc, Temp(0)));
                    return false;
                case FastOp.CmovRR64:
                {
                    int src = d.Src;
                    Select(d.Alu, d.Dst, () => LoadReg(src));
                    return false;
                }
                case FastOp.CmovRM64:
                    // The load happens whatever the condition (it may fault), as on hardware.
                    Faults(ref d); Load(ref d, 8); il.Emit(OpCodes.Stloc, Temp(3));
                    Select(d.Alu, d.Dst, () => il.Emit(OpCodes.Ldloc, Temp(3)));
                    return false;
                case FastOp.MovsxdRR: BeginSetReg(d.Dst); LoadReg(d.Src); il.Emit(OpCodes.Conv_I4); il.Emit(OpCodes.Conv_I8); EndSetReg(); return false;
                case FastOp.MovsxdRM: Faults(ref d); BeginSetReg(d.Dst); Load(ref d, 4); il.Emit(OpCodes.Conv_I4); il.Emit(OpCodes.Conv_I8); EndSetReg(); return false;
                case FastOp.Push:
                    // The value is read before RSP changes (PUSH RSP stores the old RSP); RSP changes once the store succeeded.
                    Faults(ref d);
                    LoadReg(Rsp); I8(8); il.Emit(OpCodes.Sub); il.Emit(OpCodes.Stloc, Temp(0));
                    Cpu(); il.Emit(OpCodes.Ldloc, Temp(0)); LoadReg(d.Dst); CallMemory(nameof(EmulatorVcpu.CalledMemory.Store), 8);
                    BeginSetReg(Rsp); il.Emit(OpCodes.Ldloc, Temp(0)); EndSetReg();
                    AfterStore(k);
                    return false;
                case FastOp.Pop:
                    // RSP is incremented before the destination is written (POP RSP loads the value popped).
                    Faults(ref d);
                    LoadReg(Rsp); il.Emit(OpCodes.Stloc, Temp(0));
                    Cpu(); il.Emit(OpCodes.Ldloc, Temp(0)); CallMemory(nameof(EmulatorVcpu.CalledMemory.Load), 8); il.Emit(OpCodes.Stloc, Temp(1));
                    BeginSetReg(Rsp); il.Emit(OpCodes.Ldloc, Temp(0)); I8(8); il.Emit(OpCodes.Add); EndSetReg();
                    BeginSetReg(d.Dst); il.Emit(OpCodes.Ldloc, Temp(1)); EndSetReg();
                    return false;
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
                        if (inBlock.Index > k + 1) { Unretire(inBlock.Index - k - 1); }
                        _dirtyAtLabel[inBlock.Index] = _dirtyAtLabel.GetValueOrDefault(inBlock.Index) | _dirty;
                        il.Emit(OpCodes.Br, inBlock.Label);
                        il.MarkLabel(notTaken);
                        return false;
                    }
                    Unretire(b.Count - k - 1);
                    if (d.Imm == b.Rip && CanLoopAt(k)) { LoopBackOrLeave(); }
                    SetRip(d.Imm);
                    Leave();
                    il.MarkLabel(notTaken);
                    return false;
                }
                case FastOp.Jcc:
                    Condition(d.Alu);
                    Branch(d.Imm, d.NextIp, k);
                    return true;
                case FastOp.Jmp:
                    if (d.Imm == b.Rip && CanLoopAt(k)) { LoopBackOrLeave(); }
                    SetRip(d.Imm);
                    Leave();
                    return true;
                case FastOp.Call:
                    Faults(ref d);
                    PushReturnAddress(d.NextIp);
                    SetRip(d.Imm);
                    Leave();
                    return true;
                case FastOp.Ret:
                    Faults(ref d);
                    LoadReg(Rsp); il.Emit(OpCodes.Stloc, Temp(0));
                    Cpu(); Cpu(); il.Emit(OpCodes.Ldloc, Temp(0)); CallMemory(nameof(EmulatorVcpu.CalledMemory.Load), 8);
                    il.Emit(OpCodes.Stfld, Fields.Rip);
                    BeginSetReg(Rsp); il.Emit(OpCodes.Ldloc, Temp(0)); I8(8); il.Emit(OpCodes.Add); EndSetReg();
                    Leave();
                    return true;
                case FastOp.AluJccRR64: case FastOp.AluJccRR32:
                    AluRR(ref d, d.Op == FastOp.AluJccRR64 ? nameof(Ops.AluRR64) : nameof(Ops.AluRR32));
                    FusedBranch(ref d, k);
                    return true;
                case FastOp.AluJccRI64: case FastOp.AluJccRI32:
                    AluRI(ref d, d.Op == FastOp.AluJccRI64 ? nameof(Ops.AluRI64) : nameof(Ops.AluRI32));
                    FusedBranch(ref d, k);
                    return true;
                case FastOpExtra.JmpR:
                    Cpu(); LoadReg(d.Dst); il.Emit(OpCodes.Stfld, Fields.Rip);
                    Leave();
                    return true;
                case FastOpExtra.JmpM:
                    Faults(ref d);
                    Cpu(); Load(ref d, 8); il.Emit(OpCodes.Stfld, Fields.Rip);
                    Leave();
                    return true;
                case FastOpExtra.CallR: case FastOpExtra.CallM:
                    // The target is read before RSP changes; RSP changes once the return address is stored.
                    Faults(ref d);
                    if (d.Op == FastOpExtra.CallR) LoadReg(d.Dst); else Load(ref d, 8);
                    il.Emit(OpCodes.Stloc, Temp(1));
                    PushReturnAddress(d.NextIp);
                    Cpu(); il.Emit(OpCodes.Ldloc, Temp(1)); il.Emit(OpCodes.Stfld, Fields.Rip);
                    Leave();
                    return true;
                case FastOp.AluJccRM64:
                    AluRM64(ref d);
                    FusedBranch(ref d, k);
                    return true;
                // Forms of any operand size.
                case FastOp.MovRR: { var s = d; StoreReg(d.Dst, d.DstHigh, d.Size, () => LoadReg(s.Src, s.SrcHigh, s.Size)); return false; }
                case FastOp.MovRI: { ulong imm = d.Imm; StoreReg(d.Dst, d.DstHigh, d.Size, () => I8(imm)); return false; }
                case FastOp.MovRM: { Faults(ref d); var s = d; StoreReg(d.Dst, d.DstHigh, d.Size, () => Load(ref s, s.Size)); return false; }
                case FastOp.MovMR: { Faults(ref d); var s = d; Store(ref d, d.Size, () => LoadReg(s.Src, s.SrcHigh, s.Size)); AfterStore(k); return false; }
                case FastOp.MovMI: { Faults(ref d); ulong imm = d.Imm; Store(ref d, d.Size, () => I8(imm)); AfterStore(k); return false; }
                case FastOp.AluRR: AluRRSized(ref d); return false;
                case FastOp.AluRI: AluRISized(ref d); return false;
                case FastOp.AluRM when IsLazyAlu(d.Alu):
                {
                    Faults(ref d);
                    var s = d;
                    AluWithLazyFlags(d.Alu, d.Size, () => LoadReg(s.Dst, s.DstHigh, s.Size), () => Load(ref s, s.Size),
                        v => StoreReg(s.Dst, s.DstHigh, s.Size, v));
                    return false;
                }
                case FastOp.AluRM: Faults(ref d); Cpu(); I4(d.Alu); I4(d.Dst); Bool(d.DstHigh); Linear(ref d); I4(d.Size); Call(nameof(Ops.AluRM), d.Dst); return false;
                case FastOp.AluMR or FastOp.AluMI when IsLazyAlu(d.Alu):
                {
                    // The read asks for write access when the result is stored (see ReadForWrite); the address is computed once.
                    Faults(ref d);
                    var s = d;
                    Linear(ref d); il.Emit(OpCodes.Stloc, Temp(3));
                    bool stores = d.Alu < EmulatorVcpu.OpCmp;
                    AluWithLazyFlags(d.Alu, d.Size,
                        () => { Cpu(); il.Emit(OpCodes.Ldloc, Temp(3)); CallMemory(stores ? nameof(EmulatorVcpu.CalledMemory.LoadForWrite) : nameof(EmulatorVcpu.CalledMemory.Load), s.Size); },
                        () => { if (s.Op == FastOp.AluMR) LoadReg(s.Src, s.SrcHigh, s.Size); else I8(s.Imm); },
                        v => { Cpu(); il.Emit(OpCodes.Ldloc, Temp(3)); v(); CallMemory(nameof(EmulatorVcpu.CalledMemory.Store), s.Size); });
                    if (stores) AfterStore(k);
                    return false;
                }
                case FastOp.AluMR:
                    Faults(ref d); Cpu(); I4(d.Alu); I4(d.Src); Bool(d.SrcHigh); Linear(ref d); I4(d.Size); Call(nameof(Ops.AluMR));
                    if (d.Alu < EmulatorVcpu.OpCmp) AfterStore(k);
                    return false;
                case FastOp.AluMI:
                    Faults(ref d); Cpu(); I4(d.Alu); Linear(ref d); I8(d.Imm); I4(d.Size); Call(nameof(Ops.AluMI));
                    if (d.Alu < EmulatorVcpu.OpCmp) AfterStore(k);
                    return false;
                case FastOp.Lea: { var s = d; StoreReg(d.Dst, false, d.Size, () => EffectiveAddress(ref s)); return false; }
                case FastOp.IncR or FastOp.DecR:
                {
                    var s = d;
                    IncDecWithLazyFlags(d.Op == FastOp.DecR, d.Size, () => LoadReg(s.Dst, s.DstHigh, s.Size), v => StoreReg(s.Dst, s.DstHigh, s.Size, v));
                    return false;
                }
                // 32-bit shifts and 32/64-bit rotates by an immediate have their own IL; a masked count of 0
                // changes no flag and (32-bit) only zero-extends the register.
                case FastOp.ShiftRI when d.Size == 4 && !d.DstHigh:
                {
                    int count = (int)(d.Imm & 31);
                    if (count == 0) { BeginSetReg(d.Dst); LoadReg(d.Dst); ZeroExtend(4); EndSetReg(); }
                    else ShiftImmediate(d.Alu, d.Dst, count, 4, !_flagsDead[k]);
                    return false;
                }
                case FastOpExtra.RotRI when d.Size is 4 or 8 && !d.DstHigh:
                {
                    int count = (int)(d.Imm & (d.Size == 8 ? 63u : 31u));
                    if (count == 0)
                    {
                        if (d.Size == 4) { BeginSetReg(d.Dst); LoadReg(d.Dst); ZeroExtend(4); EndSetReg(); }
                        return false;
                    }
                    RotateImmediate(d.Alu == 0, d.Dst, count, d.Size, flags: !_flagsDead[k]);
                    return false;
                }
                case FastOp.ShiftRI: case FastOpExtra.RotRI:
                {
                    var mn = d.Op == FastOpExtra.RotRI ? (d.Alu == 0 ? Iced.Intel.Mnemonic.Rol : Iced.Intel.Mnemonic.Ror)
                        : d.Alu == 0 ? Iced.Intel.Mnemonic.Shl : d.Alu == 1 ? Iced.Intel.Mnemonic.Shr : Iced.Intel.Mnemonic.Sar;
                    Cpu(); I4((int)mn); I4(d.Dst); Bool(d.DstHigh); I8(d.Imm); I4(d.Size); Call(nameof(Ops.ShiftRI), d.Dst);
                    return false;
                }
                // MOVZX/MOVSX: the source's size is in Imm.
                case FastOp.MovzxRR: { var s = d; StoreReg(d.Dst, false, d.Size, () => LoadReg(s.Src, s.SrcHigh, (int)s.Imm)); return false; }
                case FastOp.MovzxRM: { Faults(ref d); var s = d; StoreReg(d.Dst, false, d.Size, () => Load(ref s, (int)s.Imm)); return false; }
                case FastOp.MovsxRR: { var s = d; StoreReg(d.Dst, false, d.Size, () => { LoadReg(s.Src, s.SrcHigh, (int)s.Imm); SignExtend((int)s.Imm); }); return false; }
                case FastOp.MovsxRM: { Faults(ref d); var s = d; StoreReg(d.Dst, false, d.Size, () => { Load(ref s, (int)s.Imm); SignExtend((int)s.Imm); }); return false; }
                case FastOp.ImulRR64 when _flagsDead[k]:
                    BeginSetReg(d.Dst); LoadReg(d.Dst); LoadReg(d.Src); il.Emit(OpCodes.Mul); EndSetReg();
                    return false;
                case FastOp.ImulRR64:
                    LoadReg(d.Src); il.Emit(OpCodes.Stloc, Temp(1));
                    Imul64WithFlags(d.Dst);
                    return false;
                case FastOp.ImulRM64:
                    Faults(ref d); Load(ref d, 8); il.Emit(OpCodes.Stloc, Temp(1));
                    Imul64WithFlags(d.Dst);
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
                    I4(d.Size); Call(nameof(Ops.Imul), d.Dst);
                    return false;
                }
                case FastOpExtra.UnaryR:
                {
                    // NEG is a SUB from 0 (the same flags, kept lazily); NOT changes no flag.
                    var s = d;
                    Action value = () => LoadReg(s.Dst, s.DstHigh, s.Size);
                    Action<Action> store = v => StoreReg(s.Dst, s.DstHigh, s.Size, v);
                    Unary(d.Alu, d.Size, value, store);
                    return false;
                }
                case FastOpExtra.UnaryM:
                {
                    // INC/DEC/NEG/NOT of memory (not LOCK-ed: those stay with the interpreter). The read asks for write
                    // access, so the store after the flags changed cannot fault.
                    Faults(ref d);
                    int size = d.Size;
                    Linear(ref d); il.Emit(OpCodes.Stloc, Temp(3));
                    Unary(d.Alu, size,
                        () => { Cpu(); il.Emit(OpCodes.Ldloc, Temp(3)); CallMemory(nameof(EmulatorVcpu.CalledMemory.LoadForWrite), size); },
                        v => { Cpu(); il.Emit(OpCodes.Ldloc, Temp(3)); v(); CallMemory(nameof(EmulatorVcpu.CalledMemory.Store), size); });
                    AfterStore(k);
                    return false;
                }
                case FastOpExtra.ShiftRCl when d.Size is 4 or 8 && !d.DstHigh:
                    ShiftByCl(d.Alu, d.Dst, d.Size);
                    return false;
                case FastOpExtra.BswapR:
                    BeginSetReg(d.Dst); LoadReg(d.Dst);
                    if (d.Size == 8) il.Emit(OpCodes.Call, s_byteSwap64);
                    else { il.Emit(OpCodes.Conv_U4); il.Emit(OpCodes.Call, s_byteSwap32); il.Emit(OpCodes.Conv_U8); }
                    EndSetReg();
                    return false;
                case FastOp.AluJccRR: AluRRSized(ref d); FusedBranch(ref d, k); return true;
                case FastOp.AluJccRI: AluRISized(ref d); FusedBranch(ref d, k); return true;
                default:
                    Faults(ref d);
                    Cpu(); il.Emit(OpCodes.Ldarg_0); I4(k); Call(nameof(Ops.Interpret), AllRegisters);
                    if (k == _n - 1)
                    {
                        Leave(); // it set RIP (the next instruction or a branch target)
                        return true;
                    }
                    // It may have branched, changed the mode or stored into this block's page: then stop here.
                    var goOn = il.DefineLabel();
                    Cpu(); il.Emit(OpCodes.Ldfld, Fields.EndBlock);
                    il.Emit(OpCodes.Brfalse, goOn);
                    Unretire(b.Count - k - 1);
                    Leave();
                    il.MarkLabel(goOn);
                    return false;
            }
        }

        /// <summary>
        /// CMOV: register <paramref name="dst"/> = condition <paramref name="cc"/> ? the value <paramref name="value"/> pushes :
        /// itself, without a branch: the conditions of multi-precision arithmetic (carries) follow the data, and a host
        /// branch on them mispredicts about every other time.
        /// </summary>
        private void Select(int cc, int dst, Action value)
        {
            Condition(cc); il.Emit(OpCodes.Conv_U8); il.Emit(OpCodes.Neg); il.Emit(OpCodes.Stloc, Temp(0)); // all ones or zero
            BeginSetReg(dst);
            value(); il.Emit(OpCodes.Ldloc, Temp(0)); il.Emit(OpCodes.And);
            LoadReg(dst); il.Emit(OpCodes.Ldloc, Temp(0)); il.Emit(OpCodes.Not); il.Emit(OpCodes.And);
            il.Emit(OpCodes.Or);
            EndSetReg();
        }

        /// <summary>
        /// INC (kind 0), DEC (1), NEG (2) or NOT (3) of the operand <paramref name="value"/> pushes (zero-extended), as
        /// EmulatorVcpu.Unary computes it; <paramref name="store"/> writes the result. NEG's flags are those of a SUB from 0.
        /// </summary>
        private void Unary(int kind, int size, Action value, Action<Action> store)
        {
            switch (kind)
            {
                case 0 or 1: IncDecWithLazyFlags(kind == 1, size, value, store); break;
                case 2: AluWithLazyFlags(EmulatorVcpu.OpSub, size, () => I8(0), value, store); break;
                default: store(() => { value(); il.Emit(OpCodes.Not); ZeroExtend(size); }); break;
            }
        }

        /// <summary>
        /// SHL (kind 0), SHR (1) or SAR (2) of a 4- or 8-byte register by CL, as ShiftRCl computes it: a masked count of 0
        /// changes no flag and only zero-extends a 32-bit register; else the flags as <see cref="ShiftImmediate"/> sets them.
        /// </summary>
        private void ShiftByCl(int kind, int dst, int size)
        {
            int bits = size * 8;
            var count = _shiftCount ??= il.DeclareLocal(typeof(int));
            var none = il.DefineLabel();
            var done = il.DefineLabel();
            LoadReg(1); I8((ulong)(bits - 1)); il.Emit(OpCodes.And); il.Emit(OpCodes.Conv_I4); il.Emit(OpCodes.Stloc, count);
            il.Emit(OpCodes.Ldloc, count); il.Emit(OpCodes.Brfalse, none);
            LoadReg(dst); ZeroExtend(size); il.Emit(OpCodes.Stloc, Temp(0));
            // The result, then CF: the last bit shifted out (SAR: of the sign-extended operand).
            il.Emit(OpCodes.Ldloc, Temp(0)); if (kind == 2) SignExtend(size);
            il.Emit(OpCodes.Ldloc, count); il.Emit(kind == 0 ? OpCodes.Shl : kind == 1 ? OpCodes.Shr_Un : OpCodes.Shr);
            ZeroExtend(size); il.Emit(OpCodes.Stloc, Temp(2));
            il.Emit(OpCodes.Ldloc, Temp(0)); if (kind == 2) SignExtend(size);
            if (kind == 0) { I4(bits); il.Emit(OpCodes.Ldloc, count); il.Emit(OpCodes.Sub); }
            else { il.Emit(OpCodes.Ldloc, count); I4(1); il.Emit(OpCodes.Sub); }
            il.Emit(kind == 2 ? OpCodes.Shr : OpCodes.Shr_Un); I8(1); il.Emit(OpCodes.And);
            if (kind == 0)
            {
                // OF = the result's sign XOR CF.
                il.Emit(OpCodes.Dup); il.Emit(OpCodes.Ldloc, Temp(2)); I4(bits - 1); il.Emit(OpCodes.Shr_Un); il.Emit(OpCodes.Xor);
                I4(11); il.Emit(OpCodes.Shl); il.Emit(OpCodes.Or);
            }
            else if (kind == 1)
            {
                // OF = the operand's sign when the count is 1.
                il.Emit(OpCodes.Ldloc, count); I4(1); il.Emit(OpCodes.Ceq); il.Emit(OpCodes.Conv_U8);
                il.Emit(OpCodes.Ldloc, Temp(0)); I4(bits - 1); il.Emit(OpCodes.Shr_Un); il.Emit(OpCodes.And);
                I4(11); il.Emit(OpCodes.Shl); il.Emit(OpCodes.Or);
            }
            SetSzp(size);
            BeginSetReg(dst); il.Emit(OpCodes.Ldloc, Temp(2)); EndSetReg();
            il.Emit(OpCodes.Br, done);
            il.MarkLabel(none);
            if (size == 4) { BeginSetReg(dst); LoadReg(dst); ZeroExtend(4); EndSetReg(); }
            il.MarkLabel(done);
        }

        private LocalBuilder? _shiftCount;

        private void AluRRSized(ref DInsn d)
        {
            var s = d;
            if (IsLazyAlu(d.Alu))
                AluWithLazyFlags(d.Alu, d.Size, () => LoadReg(s.Dst, s.DstHigh, s.Size), () => LoadReg(s.Src, s.SrcHigh, s.Size),
                    v => StoreReg(s.Dst, s.DstHigh, s.Size, v));
            else if (IsCarryAlu(d.Alu))
                AluWithCarry(d.Alu, d.Size, () => LoadReg(s.Dst, s.DstHigh, s.Size), () => LoadReg(s.Src, s.SrcHigh, s.Size),
                    v => StoreReg(s.Dst, s.DstHigh, s.Size, v), false);
            else { Cpu(); I4(d.Alu); I4(d.Dst); Bool(d.DstHigh); I4(d.Src); Bool(d.SrcHigh); I4(d.Size); Call(nameof(Ops.AluRR), d.Dst); }
        }

        private void AluRISized(ref DInsn d)
        {
            var s = d;
            if (IsLazyAlu(d.Alu))
                AluWithLazyFlags(d.Alu, d.Size, () => LoadReg(s.Dst, s.DstHigh, s.Size), () => I8(s.Imm), v => StoreReg(s.Dst, s.DstHigh, s.Size, v));
            else if (IsCarryAlu(d.Alu))
                AluWithCarry(d.Alu, d.Size, () => LoadReg(s.Dst, s.DstHigh, s.Size), () => I8(s.Imm), v => StoreReg(s.Dst, s.DstHigh, s.Size, v), false);
            else { Cpu(); I4(d.Alu); I4(d.Dst); Bool(d.DstHigh); I8(d.Imm); I4(d.Size); Call(nameof(Ops.AluRI), d.Dst); }
        }

        /// <summary>Register <paramref name="dst"/> of <paramref name="size"/> bytes (AH-BH with <paramref name="high"/>) = the value <paramref name="value"/> pushes, as SetR writes it: 4 bytes zero-extend, 2 and 1 keep the rest.</summary>
        private void StoreReg(int dst, bool high, int size, Action value)
        {
            BeginSetReg(dst);
            switch (size)
            {
                case 8: value(); break;
                case 4: value(); ZeroExtend(4); break;
                default:
                    ulong keep = size == 2 ? ~0xFFFFUL : high ? ~0xFF00UL : ~0xFFUL;
                    LoadReg(dst); I8(keep); il.Emit(OpCodes.And);
                    value(); ZeroExtend(size);
                    if (high) { I4(8); il.Emit(OpCodes.Shl); }
                    il.Emit(OpCodes.Or);
                    break;
            }
            EndSetReg();
        }

        private void AluRR(ref DInsn d, string op)
        {
            int src = d.Src, dst = d.Dst, size = op == nameof(Ops.AluRR64) ? 8 : 4;
            if (IsLazyAlu(d.Alu)) AluWithLazyFlags(d.Alu, d.Dst, size, () => LoadReg(src));
            else if (IsCarryAlu(d.Alu))
                AluWithCarry(d.Alu, size, () => LoadReg(dst), () => LoadReg(src), v => { BeginSetReg(dst); v(); EndSetReg(); }, _flagsDead[_entry]);
            else { Cpu(); Regs(); I4(d.Alu); I4(d.Dst); I4(d.Src); Call(op, d.Dst); }
        }

        private void AluRI(ref DInsn d, string op)
        {
            ulong imm = op == nameof(Ops.AluRI64) ? d.Imm : (uint)d.Imm;
            int dst = d.Dst, size = op == nameof(Ops.AluRI64) ? 8 : 4;
            if (IsLazyAlu(d.Alu)) AluWithLazyFlags(d.Alu, d.Dst, size, () => I8(imm));
            else if (IsCarryAlu(d.Alu))
                AluWithCarry(d.Alu, size, () => LoadReg(dst), () => I8(imm), v => { BeginSetReg(dst); v(); EndSetReg(); }, _flagsDead[_entry]);
            else { Cpu(); Regs(); I4(d.Alu); I4(d.Dst); I8(d.Imm); Call(op, d.Dst); }
        }

        private void AluRM64(ref DInsn d)
        {
            Faults(ref d);
            if (IsLazyAlu(d.Alu) || IsCarryAlu(d.Alu))
            {
                Cpu(); Linear(ref d); CallMemory(nameof(EmulatorVcpu.CalledMemory.Load), 8); il.Emit(OpCodes.Stloc, Temp(1));
                if (IsLazyAlu(d.Alu)) AluWithLazyFlags(d.Alu, d.Dst, 8, () => il.Emit(OpCodes.Ldloc, Temp(1)));
                else
                {
                    int dst = d.Dst;
                    AluWithCarry(d.Alu, 8, () => LoadReg(dst), () => il.Emit(OpCodes.Ldloc, Temp(1)), v => { BeginSetReg(dst); v(); EndSetReg(); }, false);
                }
            }
            else { Cpu(); Regs(); I4(d.Alu); I4(d.Dst); Linear(ref d); Call(nameof(Ops.AluRM64), d.Dst); }
        }

        /// <summary>The ALU operations whose flags are a lazy state (Alu64/Alu32): ADD, SUB/CMP, AND/TEST, OR, XOR.</summary>
        private static bool IsLazyAlu(int alu) => alu is EmulatorVcpu.OpAdd or EmulatorVcpu.OpSub or EmulatorVcpu.OpCmp
            or EmulatorVcpu.OpAnd or EmulatorVcpu.OpTest or EmulatorVcpu.OpOr or EmulatorVcpu.OpXor;

        private static OpCode AluOpCode(int alu) => alu switch
        {
            EmulatorVcpu.OpAdd => OpCodes.Add,
            EmulatorVcpu.OpSub or EmulatorVcpu.OpCmp => OpCodes.Sub,
            EmulatorVcpu.OpAnd or EmulatorVcpu.OpTest => OpCodes.And,
            EmulatorVcpu.OpOr => OpCodes.Or,
            EmulatorVcpu.OpXor => OpCodes.Xor,
            _ => throw new ArgumentOutOfRangeException(nameof(alu), alu, "not an ALU operation with a lazy-flag state"),
        };

        /// <summary>
        /// dst = dst op source, of 8 or 4 bytes, recording the lazy-flag state as Alu64/Alu32 do (operands and result,
        /// 4-byte ones zero-extended); CMP and TEST keep dst. <paramref name="source"/> pushes the second operand.
        /// </summary>
        private void AluWithLazyFlags(int alu, int dst, int size, Action source) =>
            AluWithLazyFlags(alu, size, () => LoadReg(dst), source, v => { BeginSetReg(dst); v(); EndSetReg(); });

        /// <summary>
        /// The ALU operation on operands <paramref name="first"/> and <paramref name="second"/> push, of any size, masked and
        /// recorded as the lazy-flag state as <see cref="EmulatorVcpu.Alu"/> does; unless it is CMP or TEST,
        /// <paramref name="store"/> then writes the result (which the action it gets pushes). Leaves a, b and the result
        /// in FlagA, FlagB and FlagR (the known flags).
        /// </summary>
        private void AluWithLazyFlags(int alu, int size, Action first, Action second, Action<Action> store)
        {
            first(); ZeroExtend(size); il.Emit(OpCodes.Stloc, FlagA);
            second(); ZeroExtend(size); il.Emit(OpCodes.Stloc, FlagB);
            il.Emit(OpCodes.Ldloc, FlagA); il.Emit(OpCodes.Ldloc, FlagB); il.Emit(AluOpCode(alu)); ZeroExtend(size);
            il.Emit(OpCodes.Stloc, FlagR);
            int state = alu switch
            {
                EmulatorVcpu.OpAdd => Fields.LazyAddState,
                EmulatorVcpu.OpSub or EmulatorVcpu.OpCmp => Fields.LazySubState,
                _ => Fields.LazyLogicState,
            };
            LazyState(state, size);
            Cpu(); il.Emit(OpCodes.Ldloc, FlagA); il.Emit(OpCodes.Stfld, Fields.LazyA);
            Cpu(); il.Emit(OpCodes.Ldloc, FlagB); il.Emit(OpCodes.Stfld, Fields.LazyB);
            Cpu(); il.Emit(OpCodes.Ldloc, FlagR); il.Emit(OpCodes.Stfld, Fields.LazyR);
            if (alu < EmulatorVcpu.OpCmp) store(() => il.Emit(OpCodes.Ldloc, FlagR));
            (_knownFlagsAt, _knownAlu, _knownSize) = (_entry, alu, size);
        }

        /// <summary>The ALU operations that add or subtract the carry flag (their flags: a lazy ADC/SBB state).</summary>
        private static bool IsCarryAlu(int alu) => alu is EmulatorVcpu.OpAdc or EmulatorVcpu.OpSbb;

        /// <summary>
        /// ADC or SBB of <paramref name="size"/> bytes on the operands <paramref name="first"/> and <paramref name="second"/>
        /// push, as <see cref="EmulatorVcpu.Alu"/> computes it: the result and, unless <paramref name="flagsDead"/>, the
        /// flags as a lazy ADC/SBB state (CF also kept for a carry chain, see <see cref="RememberCarry"/>);
        /// <paramref name="store"/> then writes the result. Multi-precision arithmetic runs on these: inline, they cost no
        /// call and no switch.
        /// </summary>
        private void AluWithCarry(int alu, int size, Action first, Action second, Action<Action> store, bool flagsDead)
        {
            bool adc = alu == EmulatorVcpu.OpAdc;
            var carryIn = _carryIn ??= il.DeclareLocal(typeof(ulong));
            CarryFlag(); il.Emit(OpCodes.Stloc, carryIn);
            first(); ZeroExtend(size); il.Emit(OpCodes.Stloc, FlagA);
            second(); ZeroExtend(size); il.Emit(OpCodes.Stloc, FlagB);
            il.Emit(OpCodes.Ldloc, FlagA); il.Emit(OpCodes.Ldloc, FlagB); il.Emit(adc ? OpCodes.Add : OpCodes.Sub);
            il.Emit(OpCodes.Ldloc, carryIn); il.Emit(adc ? OpCodes.Add : OpCodes.Sub); ZeroExtend(size);
            il.Emit(OpCodes.Stloc, FlagR);
            if (!flagsDead)
            {
                // CF: ADC, r < a, or r == a with a carry in; SBB, a < b, or a == b with a borrow in. Kept for a carry
                // chain (the JIT drops it when nothing reads it); the flags themselves are a lazy state.
                if (adc) { il.Emit(OpCodes.Ldloc, FlagR); il.Emit(OpCodes.Ldloc, FlagA); il.Emit(OpCodes.Clt_Un); il.Emit(OpCodes.Ldloc, FlagR); il.Emit(OpCodes.Ldloc, FlagA); }
                else { il.Emit(OpCodes.Ldloc, FlagA); il.Emit(OpCodes.Ldloc, FlagB); il.Emit(OpCodes.Clt_Un); il.Emit(OpCodes.Ldloc, FlagA); il.Emit(OpCodes.Ldloc, FlagB); }
                il.Emit(OpCodes.Ceq); il.Emit(OpCodes.Ldloc, carryIn); il.Emit(OpCodes.Conv_I4); il.Emit(OpCodes.And); il.Emit(OpCodes.Or);
                il.Emit(OpCodes.Conv_U8);
                RememberCarry();
                il.Emit(OpCodes.Pop);
                LazyState(adc ? Fields.LazyAdcState : Fields.LazySbbState, size);
                Cpu(); il.Emit(OpCodes.Ldloc, FlagA); il.Emit(OpCodes.Stfld, Fields.LazyA);
                Cpu(); il.Emit(OpCodes.Ldloc, FlagB); il.Emit(OpCodes.Stfld, Fields.LazyB);
                Cpu(); il.Emit(OpCodes.Ldloc, FlagR); il.Emit(OpCodes.Stfld, Fields.LazyR);
            }
            store(() => il.Emit(OpCodes.Ldloc, FlagR));
            _knownFlagsAt = -1;
        }

        private LocalBuilder? _carryIn;

        /// <summary>
        /// Pushes condition <paramref name="cc"/> computed from the operands and result of the ALU operation just emitted
        /// (in FlagA, FlagB, FlagR), as Cond would compute it from the lazy state that operation recorded; false (nothing emitted)
        /// when no such operation precedes this entry directly or the condition needs the materialized flags.
        /// </summary>
        private bool TryKnownCondition(int cc)
        {
            // Either this entry's own ALU part (a fused compare-and-branch) or an earlier entry's whose flags are still
            // the current ones (EmitBlock forgets them at branch targets and after anything else that changes flags).
            if (_knownFlagsAt < 0) return false;
            int state = _knownAlu switch
            {
                KnownIncDec => Fields.LazyIncState, // INC or DEC: ZF and SF from the result, CF kept from before
                EmulatorVcpu.OpAdd => Fields.LazyAddState,
                EmulatorVcpu.OpSub or EmulatorVcpu.OpCmp => Fields.LazySubState,
                _ => Fields.LazyLogicState,
            };
            var c = (Iced.Intel.ConditionCode)cc;
            switch (c)
            {
                case Iced.Intel.ConditionCode.e or Iced.Intel.ConditionCode.ne:
                    ResultIsZero();
                    break;
                case Iced.Intel.ConditionCode.s or Iced.Intel.ConditionCode.ns:
                    ResultSign();
                    break;
                case Iced.Intel.ConditionCode.b or Iced.Intel.ConditionCode.ae when state == Fields.LazySubState:
                    il.Emit(OpCodes.Ldloc, FlagA); il.Emit(OpCodes.Ldloc, FlagB); il.Emit(OpCodes.Clt_Un);
                    break;
                case Iced.Intel.ConditionCode.b or Iced.Intel.ConditionCode.ae when state == Fields.LazyIncState:
                    il.Emit(OpCodes.Ldloc, FlagB); il.Emit(OpCodes.Conv_I4);
                    break;
                case Iced.Intel.ConditionCode.b or Iced.Intel.ConditionCode.ae when state == Fields.LazyAddState:
                    il.Emit(OpCodes.Ldloc, FlagR); il.Emit(OpCodes.Ldloc, FlagA); il.Emit(OpCodes.Clt_Un); // the carry out
                    break;
                case Iced.Intel.ConditionCode.a or Iced.Intel.ConditionCode.be when state == Fields.LazySubState:
                    il.Emit(OpCodes.Ldloc, FlagA); il.Emit(OpCodes.Ldloc, FlagB); il.Emit(OpCodes.Cgt_Un);
                    break;
                case Iced.Intel.ConditionCode.l or Iced.Intel.ConditionCode.ge when state == Fields.LazySubState:
                    il.Emit(OpCodes.Ldloc, FlagA); SignExtend(_knownSize); il.Emit(OpCodes.Ldloc, FlagB); SignExtend(_knownSize); il.Emit(OpCodes.Clt);
                    break;
                case Iced.Intel.ConditionCode.g or Iced.Intel.ConditionCode.le when state == Fields.LazySubState:
                    il.Emit(OpCodes.Ldloc, FlagA); SignExtend(_knownSize); il.Emit(OpCodes.Ldloc, FlagB); SignExtend(_knownSize); il.Emit(OpCodes.Cgt);
                    break;
                // After a logic operation CF = OF = 0: B never, A when not ZF, L when SF, LE when ZF or SF.
                case Iced.Intel.ConditionCode.b or Iced.Intel.ConditionCode.ae when state == Fields.LazyLogicState:
                    il.Emit(OpCodes.Ldc_I4_0);
                    break;
                case Iced.Intel.ConditionCode.a or Iced.Intel.ConditionCode.be when state == Fields.LazyLogicState:
                    ResultIsZero(); Not();
                    break;
                case Iced.Intel.ConditionCode.l or Iced.Intel.ConditionCode.ge when state == Fields.LazyLogicState:
                    ResultSign();
                    break;
                case Iced.Intel.ConditionCode.g or Iced.Intel.ConditionCode.le when state == Fields.LazyLogicState:
                    ResultIsZero(); ResultSign(); il.Emit(OpCodes.Or); Not();
                    break;
                default:
                    return false;
            }
            // Each case pushes the first condition of its pair (E, S, B, A, L, G); the second is its negation.
            if (c is Iced.Intel.ConditionCode.ne or Iced.Intel.ConditionCode.ns or Iced.Intel.ConditionCode.ae
                or Iced.Intel.ConditionCode.be or Iced.Intel.ConditionCode.ge or Iced.Intel.ConditionCode.le)
                Not();
            return true;
        }

        private void ResultIsZero() { il.Emit(OpCodes.Ldloc, FlagR); I8(0); il.Emit(OpCodes.Ceq); }

        private void ResultSign()
        {
            il.Emit(OpCodes.Ldloc, FlagR); I4(_knownSize * 8 - 1); il.Emit(OpCodes.Shr_Un); il.Emit(OpCodes.Conv_I4);
        }

        private void IncDec(ref DInsn d, int size, bool dec)
        {
            int dst = d.Dst;
            IncDecWithLazyFlags(dec, size, () => LoadReg(dst), v => { BeginSetReg(dst); v(); EndSetReg(); });
        }

        /// <summary>
        /// INC/DEC as IncDec computes it: the result masked to the size, and a lazy INC/DEC state that keeps the carry
        /// flag of before (CF does not change).
        /// </summary>
        private void IncDecWithLazyFlags(bool dec, int size, Action operand, Action<Action> store)
        {
            CarryFlag(); il.Emit(OpCodes.Stloc, FlagB); // before anything changes the lazy state (or the known flags)
            operand(); ZeroExtend(size); il.Emit(OpCodes.Stloc, FlagA);
            il.Emit(OpCodes.Ldloc, FlagA); I8(1); il.Emit(dec ? OpCodes.Sub : OpCodes.Add); ZeroExtend(size); il.Emit(OpCodes.Stloc, FlagR);
            LazyState(dec ? Fields.LazyDecState : Fields.LazyIncState, size);
            Cpu(); il.Emit(OpCodes.Ldloc, FlagA); il.Emit(OpCodes.Stfld, Fields.LazyA);
            Cpu(); il.Emit(OpCodes.Ldloc, FlagB); il.Emit(OpCodes.Stfld, Fields.LazyB);
            Cpu(); il.Emit(OpCodes.Ldloc, FlagR); il.Emit(OpCodes.Stfld, Fields.LazyR);
            store(() => il.Emit(OpCodes.Ldloc, FlagR));
            (_knownFlagsAt, _knownAlu, _knownSize) = (_entry, KnownIncDec, size);
        }

        /// <summary>
        /// Records lazy-flag state <paramref name="state"/> of <paramref name="size"/> bytes: two constant stores to adjacent
        /// int fields, one after the other, which the JIT merges into one 8-byte store.
        /// </summary>
        private void LazyState(int state, int size)
        {
            Cpu(); I4(state); il.Emit(OpCodes.Stfld, Fields.LazyOp);
            Cpu(); I4(size); il.Emit(OpCodes.Stfld, Fields.LazySz);
        }

        /// <summary>The <see cref="_knownAlu"/> of an INC/DEC: the operand, the CF kept and the result are in FlagA, FlagB and FlagR.</summary>
        private const int KnownIncDec = -1;

        /// <summary>
        /// With the CF (0 or 1, a ulong) that this entry leaves on the stack (a shift, rotate, IMUL or ADC/SBB; the value
        /// stays on the stack): keeps a copy for a later INC/DEC or ADC/SBB (see <see cref="CarryFlag"/>).
        /// </summary>
        private void RememberCarry()
        {
            _carry ??= il.DeclareLocal(typeof(ulong));
            il.Emit(OpCodes.Dup); il.Emit(OpCodes.Stloc, _carry);
            _knownCarryAt = _entry;
        }

        /// <summary>The entry whose CF <see cref="_carry"/> holds (<see cref="RememberCarry"/>), or -1.</summary>
        private int _knownCarryAt = -1;
        private LocalBuilder? _carry;

        /// <summary>
        /// Pushes CF (0 or 1, a ulong) as CarryFlag reads it: from the ALU operation, shift, rotate, IMUL or ADC/SBB that last
        /// set it if that is known (see <see cref="_knownFlagsAt"/>), else from the lazy state.
        /// </summary>
        private void CarryFlag()
        {
            if (_knownCarryAt >= 0)
            {
                il.Emit(OpCodes.Ldloc, _carry!);
                return;
            }
            if (_knownFlagsAt >= 0)
            {
                switch (_knownAlu)
                {
                    case KnownIncDec: il.Emit(OpCodes.Ldloc, FlagB); return; // the CF it kept
                    case EmulatorVcpu.OpAdd: il.Emit(OpCodes.Ldloc, FlagR); il.Emit(OpCodes.Ldloc, FlagA); il.Emit(OpCodes.Clt_Un); il.Emit(OpCodes.Conv_U8); return;
                    case EmulatorVcpu.OpSub or EmulatorVcpu.OpCmp: il.Emit(OpCodes.Ldloc, FlagA); il.Emit(OpCodes.Ldloc, FlagB); il.Emit(OpCodes.Clt_Un); il.Emit(OpCodes.Conv_U8); return;
                    default: I8(0); return;
                }
            }
            if (_budget is null)
            {
                // Out of line: the switch below costs the JIT ~45 us per INC/DEC (a call, ~1 ns when it runs); blocks that
                // loop on themselves (where code quality pays) get it inline.
                Cpu(); Call(nameof(Ops.CarryFlagOf));
                return;
            }
            var none = il.DefineLabel();
            var add = il.DefineLabel();
            var sub = il.DefineLabel();
            var logic = il.DefineLabel();
            var incDec = il.DefineLabel();
            var done = il.DefineLabel();
            Cpu(); il.Emit(OpCodes.Ldfld, Fields.LazyOp);
            il.Emit(OpCodes.Switch, [none, add, sub, logic, incDec, incDec]); // LazyNone, LazyAdd, LazySub, LazyLogic, LazyInc, LazyDec
            Cpu(); Call(nameof(Ops.CarryFlagOf)); il.Emit(OpCodes.Br, done); // the shift and ADC/SBB states
            il.MarkLabel(incDec);
            Cpu(); il.Emit(OpCodes.Ldfld, Fields.LazyB); il.Emit(OpCodes.Br, done); // LazyInc/LazyDec keep the CF of before in B
            il.MarkLabel(none);
            Cpu(); il.Emit(OpCodes.Ldfld, Fields.RflagsBits); I8(Flags.CF); il.Emit(OpCodes.And); il.Emit(OpCodes.Br, done);
            il.MarkLabel(add);
            Cpu(); il.Emit(OpCodes.Ldfld, Fields.LazyR); Cpu(); il.Emit(OpCodes.Ldfld, Fields.LazyA); il.Emit(OpCodes.Clt_Un); il.Emit(OpCodes.Conv_U8); il.Emit(OpCodes.Br, done);
            il.MarkLabel(sub);
            Cpu(); il.Emit(OpCodes.Ldfld, Fields.LazyA); Cpu(); il.Emit(OpCodes.Ldfld, Fields.LazyB); il.Emit(OpCodes.Clt_Un); il.Emit(OpCodes.Conv_U8); il.Emit(OpCodes.Br, done);
            il.MarkLabel(logic);
            I8(0);
            il.MarkLabel(done);
        }

        /// <summary>
        /// SHL (kind 0), SHR (1) or SAR (2) of a 4- or 8-byte register by a count of 1 to bits-1, as ShiftRegister64 and
        /// ShiftRI32 compute it; with <paramref name="flags"/>, the flags as a lazy shift state (operand, count, result).
        /// </summary>
        private void ShiftImmediate(int kind, int dst, int count, int size, bool flags)
        {
            int bits = size * 8;
            LoadReg(dst); ZeroExtend(size); il.Emit(OpCodes.Stloc, Temp(0));
            il.Emit(OpCodes.Ldloc, Temp(0));
            if (kind == 2 && size == 4) { il.Emit(OpCodes.Conv_I4); I4(count); il.Emit(OpCodes.Shr); }
            else { I4(count); il.Emit(kind == 0 ? OpCodes.Shl : kind == 1 ? OpCodes.Shr_Un : OpCodes.Shr); }
            ZeroExtend(size);
            il.Emit(OpCodes.Stloc, Temp(2));
            if (flags)
            {
                // The flags as a lazy state (operand, count, result): four stores instead of computing every flag. CF
                // (the last bit shifted out; SAR: bit count-1 of the operand, below any sign extension) is also kept
                // for an INC/DEC or ADC after it; the JIT drops it when nothing reads it.
                il.Emit(OpCodes.Ldloc, Temp(0)); I4(kind == 0 ? bits - count : count - 1); il.Emit(OpCodes.Shr_Un); I8(1); il.Emit(OpCodes.And);
                RememberCarry();
                il.Emit(OpCodes.Pop);
                LazyState(kind == 0 ? Fields.LazyShlState : kind == 1 ? Fields.LazyShrState : Fields.LazySarState, size);
                Cpu(); il.Emit(OpCodes.Ldloc, Temp(0)); il.Emit(OpCodes.Stfld, Fields.LazyA);
                Cpu(); I8((ulong)count); il.Emit(OpCodes.Stfld, Fields.LazyB);
                Cpu(); il.Emit(OpCodes.Ldloc, Temp(2)); il.Emit(OpCodes.Stfld, Fields.LazyR);
            }
            BeginSetReg(dst); il.Emit(OpCodes.Ldloc, Temp(2)); EndSetReg();
            _knownFlagsAt = -1;
        }

        /// <summary>
        /// dst = dst * temp 1 (64-bit two-operand IMUL) as ImulRegister64 computes it: CF and OF when the signed product
        /// does not fit 64 bits (its high half, from the unsigned one, differs from the low half's sign), the rest as
        /// SetSzp sets them.
        /// </summary>
        private void Imul64WithFlags(int dst)
        {
            _bigMulLow ??= il.DeclareLocal(typeof(ulong)); // its address is taken: not one of the shared temps
            LoadReg(dst); il.Emit(OpCodes.Stloc, Temp(0));
            il.Emit(OpCodes.Ldloc, Temp(0)); il.Emit(OpCodes.Ldloc, Temp(1)); il.Emit(OpCodes.Ldloca, _bigMulLow);
            il.Emit(OpCodes.Call, s_bigMul);
            // high = unsigned high - (a < 0 ? b : 0) - (b < 0 ? a : 0)
            il.Emit(OpCodes.Ldloc, Temp(0)); I4(63); il.Emit(OpCodes.Shr); il.Emit(OpCodes.Ldloc, Temp(1)); il.Emit(OpCodes.And); il.Emit(OpCodes.Sub);
            il.Emit(OpCodes.Ldloc, Temp(1)); I4(63); il.Emit(OpCodes.Shr); il.Emit(OpCodes.Ldloc, Temp(0)); il.Emit(OpCodes.And); il.Emit(OpCodes.Sub);
            il.Emit(OpCodes.Ldloc, _bigMulLow); il.Emit(OpCodes.Dup); il.Emit(OpCodes.Stloc, Temp(2)); I4(63); il.Emit(OpCodes.Shr);
            il.Emit(OpCodes.Ceq); Not(); il.Emit(OpCodes.Conv_U8); RememberCarry(); I8(Flags.CF | Flags.OF); il.Emit(OpCodes.Mul);
            SetSzp(8);
            BeginSetReg(dst); il.Emit(OpCodes.Ldloc, Temp(2)); EndSetReg();
            _knownFlagsAt = -1;
        }

        private LocalBuilder? _bigMulLow;

        /// <summary>
        /// With CF/OF (a ulong of flag bits) on the stack and the result (masked to <paramref name="size"/>) in
        /// <paramref name="result"/> (temp 2 if null):
        /// replaces the arithmetic flags with them plus ZF, SF and PF of the result, as SetSzp does (AF cleared, no lazy state).
        /// </summary>
        private void SetSzp(int size, LocalBuilder? result = null)
        {
            result ??= Temp(2);
            il.Emit(OpCodes.Ldloc, result); I8(0); il.Emit(OpCodes.Ceq); il.Emit(OpCodes.Conv_U8); I4(6); il.Emit(OpCodes.Shl); il.Emit(OpCodes.Or); // ZF
            il.Emit(OpCodes.Ldloc, result); I4(size * 8 - 1); il.Emit(OpCodes.Shr_Un); I4(7); il.Emit(OpCodes.Shl); il.Emit(OpCodes.Or); // SF
            // PF: an even number of set bits in the low byte (POPCNT; Bits.ParityTable's lookup cost the JIT ~25 us more).
            il.Emit(OpCodes.Ldloc, result); il.Emit(OpCodes.Conv_U1); il.Emit(OpCodes.Call, s_popCount);
            I4(1); il.Emit(OpCodes.And); I4(1); il.Emit(OpCodes.Xor); I4(2); il.Emit(OpCodes.Shl); il.Emit(OpCodes.Conv_U8); il.Emit(OpCodes.Or);
            il.Emit(OpCodes.Stloc, Temp(1));
            Cpu(); Cpu(); il.Emit(OpCodes.Ldfld, Fields.RflagsBits); I8(~Flags.Arith); il.Emit(OpCodes.And); il.Emit(OpCodes.Ldloc, Temp(1)); il.Emit(OpCodes.Or);
            il.Emit(OpCodes.Stfld, Fields.RflagsBits);
            Cpu(); I4(Fields.LazyNoneState); il.Emit(OpCodes.Stfld, Fields.LazyOp);
        }

        /// <summary>
        /// ROL/ROR of a 4- or 8-byte register by a count of 1 to bits-1, as RotateRI computes it: only CF and OF change, so
        /// a pending lazy state is materialized first, unless nothing can see the flags it leaves (<paramref name="flags"/>
        /// false, FlagsLiveness): hash functions rotate after nearly every ADD or XOR, and materializing for each was
        /// ~12 M calls per boot.
        /// </summary>
        private void RotateImmediate(bool left, int dst, int count, int size, bool flags)
        {
            int bits = size * 8;
            if (flags)
            {
                var materialized = il.DefineLabel();
                Cpu(); il.Emit(OpCodes.Ldfld, Fields.LazyOp); il.Emit(OpCodes.Brfalse, materialized);
                Cpu(); il.Emit(OpCodes.Call, Fields.MaterializeFlags);
                il.MarkLabel(materialized);
            }
            LoadReg(dst); ZeroExtend(size); il.Emit(OpCodes.Stloc, Temp(0));
            il.Emit(OpCodes.Ldloc, Temp(0)); I4(left ? count : bits - count); il.Emit(OpCodes.Shl);
            il.Emit(OpCodes.Ldloc, Temp(0)); I4(left ? bits - count : count); il.Emit(OpCodes.Shr_Un);
            il.Emit(OpCodes.Or); ZeroExtend(size); il.Emit(OpCodes.Stloc, Temp(2));
            if (!flags)
            {
                BeginSetReg(dst); il.Emit(OpCodes.Ldloc, Temp(2)); EndSetReg();
                _knownFlagsAt = -1;
                return;
            }
            // CF: the bit rotated into the low (ROL) or high (ROR) end. OF: ROL, the result's sign XOR CF; ROR, its top two bits differ.
            il.Emit(OpCodes.Ldloc, Temp(2)); if (!left) { I4(bits - 1); il.Emit(OpCodes.Shr_Un); } I8(1); il.Emit(OpCodes.And);
            RememberCarry();
            il.Emit(OpCodes.Dup);
            il.Emit(OpCodes.Ldloc, Temp(2)); I4(left ? bits - 1 : bits - 2); il.Emit(OpCodes.Shr_Un); I8(1); il.Emit(OpCodes.And);
            il.Emit(OpCodes.Xor); I4(11); il.Emit(OpCodes.Shl); il.Emit(OpCodes.Or);
            il.Emit(OpCodes.Stloc, Temp(1));
            Cpu(); Cpu(); il.Emit(OpCodes.Ldfld, Fields.RflagsBits); I8(~(Flags.CF | Flags.OF)); il.Emit(OpCodes.And); il.Emit(OpCodes.Ldloc, Temp(1)); il.Emit(OpCodes.Or);
            il.Emit(OpCodes.Stfld, Fields.RflagsBits);
            BeginSetReg(dst); il.Emit(OpCodes.Ldloc, Temp(2)); EndSetReg();
            _knownFlagsAt = -1;
        }

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
            if (target == b.Rip && CanLoopAt(k)) { LoopBackOrLeave(); }
            SetRip(target);
            Leave();
            il.MarkLabel(notTaken);
            SetRip(next);
            Leave();
        }

        /// <summary>
        /// Goes round again (counting the block's instructions) unless the budget of rounds is spent or an interrupt, an
        /// exit request or a wake-up is pending; else falls through (to leave the block).
        /// </summary>
        private void LoopBackOrLeave()
        {
            var leave = il.DefineLabel();
            il.Emit(OpCodes.Ldloc, _budget!); I4(1); il.Emit(OpCodes.Sub); il.Emit(OpCodes.Dup); il.Emit(OpCodes.Stloc, _budget!);
            I4(0); il.Emit(OpCodes.Ble, leave);
            Cpu(); il.Emit(OpCodes.Volatile); il.Emit(OpCodes.Ldfld, Fields.IrqHint); il.Emit(OpCodes.Brtrue, leave);
            Cpu(); il.Emit(OpCodes.Volatile); il.Emit(OpCodes.Ldfld, Fields.ExitRequested); il.Emit(OpCodes.Brtrue, leave);
            Cpu(); Cpu(); il.Emit(OpCodes.Ldfld, Fields.InstructionsRetired); I8Signed(b.Count); il.Emit(OpCodes.Add);
            il.Emit(OpCodes.Stfld, Fields.InstructionsRetired);
            il.Emit(OpCodes.Br, _top);
            il.MarkLabel(leave);
        }

        /// <summary>A near CALL's push of <paramref name="returnAddress"/>: RSP changes once the store succeeded (temp 0 holds the new RSP).</summary>
        private void PushReturnAddress(ulong returnAddress)
        {
            LoadReg(Rsp); I8(8); il.Emit(OpCodes.Sub); il.Emit(OpCodes.Stloc, Temp(0));
            Cpu(); il.Emit(OpCodes.Ldloc, Temp(0)); I8(returnAddress); CallMemory(nameof(EmulatorVcpu.CalledMemory.Store), 8);
            BeginSetReg(Rsp); il.Emit(OpCodes.Ldloc, Temp(0)); EndSetReg();
        }

        /// <summary>After an instruction that stores: if it wrote into the running code's page, end the block after it.</summary>
        private void AfterStore(int k)
        {
            var goOn = il.DefineLabel();
            Cpu(); il.Emit(OpCodes.Ldfld, Fields.EndBlock);
            il.Emit(OpCodes.Brfalse, goOn);
            SetRip(b.D[k].NextIp);
            if (k != _n - 1) { Unretire(b.Count - k - 1); }
            Leave();
            il.MarkLabel(goOn);
        }

        /// <summary>Before an instruction that can fault: a fault is then delivered at it, and it and the rest of the block un-counted.</summary>
        private void Faults(ref DInsn d)
        {
            // With registers in locals, what a fault needs is done where it can happen: on the TLB miss path of each
            // access (CallMemory) and before each call that can fault (Call).
            if (_registersInLocals) return;
            Cpu(); I8(d.Ip); il.Emit(OpCodes.Stfld, Fields.FaultRip);
        }

        /// <summary>Before something that can fault: the register file current and FaultRip naming the running instruction.</summary>
        private void PrepareForFault(bool clean)
        {
            WriteBack(clean);
            Cpu(); I8(b.D[_entry].Ip); il.Emit(OpCodes.Stfld, Fields.FaultRip);
        }

        /// <summary>Pushes whether condition code <paramref name="cc"/> holds.</summary>
        private void Condition(int cc)
        {
            if (TryKnownCondition(cc)) return;
            if (cc is (int)Iced.Intel.ConditionCode.e or (int)Iced.Intel.ConditionCode.ne)
            {
                // ZF without a branch (a diamond costs the JIT ~10 us): from the lazy result if there is a lazy state (each
                // keeps its result masked to its size, zero exactly when ZF is set), else from RFLAGS.
                Cpu(); il.Emit(OpCodes.Ldfld, Fields.LazyOp); I4(Fields.LazyNoneState); il.Emit(OpCodes.Cgt_Un);
                Cpu(); il.Emit(OpCodes.Ldfld, Fields.LazyR); I8(0); il.Emit(OpCodes.Ceq);
                il.Emit(OpCodes.And);
                Cpu(); il.Emit(OpCodes.Ldfld, Fields.LazyOp); I4(Fields.LazyNoneState); il.Emit(OpCodes.Ceq);
                Cpu(); il.Emit(OpCodes.Ldfld, Fields.RflagsBits); I4(6); il.Emit(OpCodes.Shr_Un); il.Emit(OpCodes.Conv_I4); I4(1); il.Emit(OpCodes.And);
                il.Emit(OpCodes.And);
                il.Emit(OpCodes.Or);
                if (cc == (int)Iced.Intel.ConditionCode.ne) Not();
                return;
            }
            var slow = il.DefineLabel();
            var done = il.DefineLabel();
            switch ((Iced.Intel.ConditionCode)cc)
            {
                // The unsigned orders straight from a lazy SUB/CMP's operands.
                case Iced.Intel.ConditionCode.b or Iced.Intel.ConditionCode.ae or Iced.Intel.ConditionCode.a or Iced.Intel.ConditionCode.be:
                    Cpu(); il.Emit(OpCodes.Ldfld, Fields.LazyOp); I4(Fields.LazySubState); il.Emit(OpCodes.Bne_Un, slow);
                    Cpu(); il.Emit(OpCodes.Ldfld, Fields.LazyA); Cpu(); il.Emit(OpCodes.Ldfld, Fields.LazyB);
                    bool below = cc is (int)Iced.Intel.ConditionCode.b or (int)Iced.Intel.ConditionCode.ae;
                    il.Emit(below ? OpCodes.Clt_Un : OpCodes.Cgt_Un);
                    if (cc is (int)Iced.Intel.ConditionCode.ae or (int)Iced.Intel.ConditionCode.be) Not();
                    break;
                default:
                {
                    // The signed orders get their lazy SUB/CMP fast path inline in blocks that loop on themselves (it costs
                    // the JIT two size switches); everything else asks Cond.
                    string method = _budget is not null ? Ops.ConditionMethod(cc) : nameof(Ops.Condition);
                    Cpu();
                    if (method == nameof(Ops.Condition)) I4(cc);
                    Call(method);
                    return;
                }
            }
            il.Emit(OpCodes.Br, done);
            il.MarkLabel(slow);
            Cpu(); I4(cc); Call(nameof(Ops.ConditionOutOfLine));
            il.MarkLabel(done);
        }

        private void Not() { il.Emit(OpCodes.Ldc_I4_0); il.Emit(OpCodes.Ceq); }

        /// <summary>The block ended before its last instruction: the <paramref name="notRun"/> after it did not retire (the block counted them all on entry).</summary>
        private void Unretire(long notRun)
        {
            Cpu(); Cpu(); il.Emit(OpCodes.Ldfld, Fields.InstructionsRetired); I8Signed(notRun); il.Emit(OpCodes.Sub);
            il.Emit(OpCodes.Stfld, Fields.InstructionsRetired);
        }

        private void SetRip(ulong rip) { Cpu(); I8(rip); il.Emit(OpCodes.Stfld, Fields.Rip); }

        /// <summary>
        /// In blocks that loop on themselves, guest registers live in IL locals while the block runs (the JIT keeps them
        /// in host registers where it can; it cannot forward values through the register file, a byref it must assume
        /// aliased). The block loads them on entry and writes back those it changed (<see cref="_dirty"/>; from the top of
        /// the loop on, all) wherever the register file must be current: on the TLB-miss path of each load and store, the
        /// only place one can fault (the exception handler and the interpreter's retry read the register file, and
        /// FaultRip is set there too), before calls into the interpreter or templates (reloading what they may change),
        /// and on every way out; going round costs nothing. Other blocks read and write the register file directly:
        /// measured on a boot, locals gave them nothing (bench/cpu/README.md) and cost JIT time.
        /// </summary>
        private bool _registersInLocals;
        private readonly LocalBuilder?[] _regLocals = new LocalBuilder?[16];
        private int _used, _dirty;
        private readonly Stack<int> _storeTargets = new();
        private readonly Dictionary<int, int> _dirtyAtLabel = [];
        private readonly List<(Label Go, Label Back)> _reloadSites = [];
        private Label _loadRegisters, _afterLoad;

        private LocalBuilder RegLocal(int r) => _regLocals[r] ??= il.DeclareLocal(typeof(ulong));

        /// <summary>Starts writing guest register <paramref name="r"/>: the value pushed next is stored by <see cref="EndSetReg"/>.</summary>
        private void BeginSetReg(int r)
        {
            if (!_registersInLocals) { RegisterFileAddress(r); return; }
            _used |= 1 << r;
            _storeTargets.Push(r);
        }

        /// <summary>Stores the value on the stack into the register named by the matching <see cref="BeginSetReg"/>.</summary>
        private void EndSetReg()
        {
            if (!_registersInLocals) { il.Emit(OpCodes.Stind_I8); return; }
            int r = _storeTargets.Pop();
            il.Emit(OpCodes.Stloc, RegLocal(r));
            _dirty |= 1 << r;
        }

        private void LoadReg(int r)
        {
            if (!_registersInLocals) { RegisterFileAddress(r); il.Emit(OpCodes.Ldind_I8); return; }
            _used |= 1 << r;
            il.Emit(OpCodes.Ldloc, RegLocal(r));
        }

        /// <summary>Pushes the address of guest register <paramref name="r"/> in the register file.</summary>
        private void RegisterFileAddress(int r)
        {
            Regs();
            if (r != 0) { I4(r * sizeof(ulong)); il.Emit(OpCodes.Add); }
        }

        /// <summary>Writes the changed registers back to the register file; they stay changed for the code after this point unless <paramref name="clean"/>.</summary>
        private void WriteBack(bool clean)
        {
            if (!_registersInLocals) return;
            for (int r = 0; r < 16; r++)
            {
                if ((_dirty & (1 << r)) == 0) continue;
                RegisterFileAddress(r); il.Emit(OpCodes.Ldloc, RegLocal(r)); il.Emit(OpCodes.Stind_I8);
            }
            if (clean) _dirty = 0;
        }

        /// <summary>Loads register <paramref name="r"/> from the register file into its local.</summary>
        private void Reload(int r)
        {
            if (!_registersInLocals) return;
            RegisterFileAddress(r); il.Emit(OpCodes.Ldind_I8); il.Emit(OpCodes.Stloc, RegLocal(r));
        }

        /// <summary>Reloads every register the block uses (known only at its end: the loads are emitted there, see <see cref="EmitRegisterLoads"/>).</summary>
        private void ReloadAll()
        {
            if (!_registersInLocals) return;
            var go = il.DefineLabel();
            var back = il.DefineLabel();
            il.Emit(OpCodes.Br, go);
            il.MarkLabel(back);
            _reloadSites.Add((go, back));
        }

        /// <summary>After the block's code: the loads on entry and after each interpreter call, of the registers it turned out to use.</summary>
        private void EmitRegisterLoads()
        {
            il.MarkLabel(_loadRegisters);
            for (int r = 0; r < 16; r++) if ((_used & (1 << r)) != 0) Reload(r);
            il.Emit(OpCodes.Br, _afterLoad);
            foreach (var (go, back) in _reloadSites)
            {
                il.MarkLabel(go);
                for (int r = 0; r < 16; r++) if ((_used & (1 << r)) != 0) Reload(r);
                il.Emit(OpCodes.Br, back);
            }
        }

        /// <summary>Leaves the translation (RIP already set): the register file gets the changed registers first.</summary>
        private void Leave()
        {
            WriteBack(clean: false); // only this way out: the code after it goes on with the same registers changed
            il.Emit(OpCodes.Ret);
        }

        /// <summary>Pushes a register operand of <paramref name="size"/> bytes (or AH-BH with <paramref name="high"/>), zero-extended, as GetR reads it.</summary>
        private void LoadReg(int r, bool high, int size)
        {
            LoadReg(r);
            if (high) { I4(8); il.Emit(OpCodes.Shr_Un); ZeroExtend(1); }
            else ZeroExtend(size);
        }

        /// <summary>Pushes the linear address of d's memory operand (as EmulatorVcpu.Linear computes it; blocks are decoded per bitness).</summary>
        private void Linear(ref DInsn d)
        {
            EffectiveAddress(ref d);
            if (b.Bitness == 64 && d.Seg < EmulatorVcpu.FS) return; // flat
            // Sregs[seg].Base without the bounds check (seg is a segment register number, 0-5, and Sregs has all six).
            Cpu(); il.Emit(OpCodes.Ldfld, Fields.Sregs); il.Emit(OpCodes.Call, s_segmentArrayData);
            if (d.Seg != 0) { I4(d.Seg * System.Runtime.CompilerServices.Unsafe.SizeOf<Seg>()); il.Emit(OpCodes.Add); }
            il.Emit(OpCodes.Ldfld, s_segmentBase);
            il.Emit(OpCodes.Add);
            if (b.Bitness != 64) ZeroExtend(4);
        }

        /// <summary>Pushes d's effective address: base + index * scale + displacement, wrapped to the address size.</summary>
        private void EffectiveAddress(ref DInsn d)
        {
            bool any = false;
            if (d.Base >= 0) { LoadReg(d.Base); any = true; }
            if (d.Index >= 0)
            {
                LoadReg(d.Index);
                if (d.Scale != 0) { I4(d.Scale); il.Emit(OpCodes.Shl); }
                if (any) il.Emit(OpCodes.Add);
                any = true;
            }
            if (!any) I8(d.Disp);
            else if (d.Disp != 0) { I8(d.Disp); il.Emit(OpCodes.Add); }
            if (d.ASize != 8) ZeroExtend(d.ASize);
        }

        /// <summary>Pushes the <paramref name="size"/>-byte value (zero-extended) at d's memory operand.</summary>
        private void Load(ref DInsn d, int size) { Cpu(); Linear(ref d); CallMemory(nameof(EmulatorVcpu.CalledMemory.Load), size); }

        /// <summary>Stores the value <paramref name="value"/> pushes at d's memory operand.</summary>
        private void Store(ref DInsn d, int size, Action value) { Cpu(); Linear(ref d); value(); CallMemory(nameof(EmulatorVcpu.CalledMemory.Store), size); }

        /// <summary>
        /// Calls guest-memory access <paramref name="name"/> of the block's kind (see EmulatorVcpu.IGuestMemoryAccess), with
        /// the vCPU, the address (and for a store the value) on the stack. In a block with registers in locals: the TLB
        /// fast path inline (it cannot fault), and only on a miss the registers written back, FaultRip set and the full
        /// access called, which may fault.
        /// </summary>
        private void CallMemory(string name, int size)
        {
            if (!_registersInLocals)
            {
                il.Emit(OpCodes.Call, (_budget is not null ? s_inlinedMemory : s_calledMemory)[$"{name}{size}"]);
                return;
            }
            var address = _memAddress ??= il.DeclareLocal(typeof(ulong));
            var value = _memValue ??= il.DeclareLocal(typeof(ulong));
            var hit = il.DefineLabel();
            bool store = name == nameof(EmulatorVcpu.CalledMemory.Store);
            if (store) il.Emit(OpCodes.Stloc, value);
            il.Emit(OpCodes.Stloc, address);
            il.Emit(OpCodes.Pop); // the vCPU
            Cpu(); il.Emit(OpCodes.Ldloc, address); il.Emit(store ? OpCodes.Ldloc : OpCodes.Ldloca, value);
            il.Emit(OpCodes.Call, s_inlinedMemory[$"Try{name}{size}"]);
            il.Emit(OpCodes.Brtrue, hit);
            PrepareForFault(clean: false); // only this path: the fast one goes on with the same registers changed
            Cpu(); il.Emit(OpCodes.Ldloc, address);
            if (store) il.Emit(OpCodes.Ldloc, value);
            il.Emit(OpCodes.Call, s_calledMemory[$"{name}{size}"]);
            if (!store) il.Emit(OpCodes.Stloc, value);
            il.MarkLabel(hit);
            if (!store) il.Emit(OpCodes.Ldloc, value);
        }

        private LocalBuilder? _memAddress, _memValue;

        /// <summary>Truncates the ulong on the stack to <paramref name="size"/> bytes, zero-extended (nothing for 8).</summary>
        private void ZeroExtend(int size)
        {
            if (size == 8) return;
            il.Emit(size switch { 4 => OpCodes.Conv_U4, 2 => OpCodes.Conv_U2, _ => OpCodes.Conv_U1 });
            il.Emit(OpCodes.Conv_U8);
        }

        /// <summary>Sign-extends the low <paramref name="size"/> bytes of the ulong on the stack to 64 bits.</summary>
        private void SignExtend(int size)
        {
            if (size == 8) return;
            il.Emit(size switch { 4 => OpCodes.Conv_I4, 2 => OpCodes.Conv_I2, _ => OpCodes.Conv_I1 });
            il.Emit(OpCodes.Conv_I8);
        }

        private const int Rsp = 4;

        /// <summary>Scratch ulong locals, shared by all instructions of the block (the JIT gives each use its own live range).</summary>
        private readonly LocalBuilder?[] _temps = new LocalBuilder?[4];
        private LocalBuilder Temp(int i) => _temps[i] ??= il.DeclareLocal(typeof(ulong));

        // Arguments: 0 the block (the delegate's target), 1 the vCPU, 2 its register file.
        private void Cpu() => il.Emit(OpCodes.Ldarg_1);
        private void Regs() => il.Emit(OpCodes.Ldarg_2);
        private void I4(int v) => il.Emit(OpCodes.Ldc_I4, v);
        private void Bool(bool v) => il.Emit(v ? OpCodes.Ldc_I4_1 : OpCodes.Ldc_I4_0);
        private void I8(ulong v) => il.Emit(OpCodes.Ldc_I8, (long)v);
        private void I8Signed(long v) => il.Emit(OpCodes.Ldc_I8, v);
        /// <summary>Templates that read only flags and vCPU fields, never the register file: no write-back around them.</summary>
        private static bool LeavesRegistersAlone(string op) => op is nameof(Ops.Condition) or nameof(Ops.ConditionOutOfLine)
            or nameof(Ops.CarryFlagOf) or nameof(Ops.IsLess) or nameof(Ops.IsGreaterOrEqual) or nameof(Ops.IsLessOrEqual) or nameof(Ops.IsGreater);

        private const int NoRegister = -1, AllRegisters = -2;

        /// <summary>
        /// Calls template <paramref name="op"/>. Unless it leaves registers alone, the register file is brought up to date
        /// first and, after it, the register it <paramref name="writes"/> (or all, for the interpreter) reloaded.
        /// </summary>
        private void Call(string op, int writes = NoRegister)
        {
            bool touchesRegisters = !LeavesRegistersAlone(op);
            if (touchesRegisters)
            {
                if (_registersInLocals) PrepareForFault(clean: true); // templates and the interpreter may fault
                else WriteBack(clean: true);
            }
            EmitCall(op);
            if (!touchesRegisters) return;
            if (writes == AllRegisters) ReloadAll();
            else if (writes >= 0) { _used |= 1 << writes; Reload(writes); }
        }

        private void EmitCall(string op)
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
    /// Translate blocks that have run 400 times, in the background. Translating costs ~0.05-0.15 ms + ~0.01-0.03 ms
    /// per instruction of JIT time (more in self-looping blocks), so only warm code repays it: against 1000 runs a boot
    /// took ~6% less vCPU time (10 alternated pairs); 100 saturated the translator's core (bench/boot/README.md).
    /// </summary>
    public static EmulatorTranslation Default => new(400, true);

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
