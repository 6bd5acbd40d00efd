using System.Runtime.CompilerServices;
using Iced.Intel;
using SharpVM.Hypervisor;
using SharpVM.Memory;

namespace SharpVM.Cpu;

public sealed unsafe partial class EmulatorVcpu
{
    private const int BlockCacheSize = 1 << 15;
    private const int MaxBlockInsns = 64;
    /// <summary>
    /// Decoded blocks by RIP (direct-mapped), each with the versions of its code page(s) when it was decoded or
    /// checked (<see cref="CodePageVersions"/>): the entry is valid while the pages keep those versions. The versions
    /// are kept here, per vCPU, not on the block: blocks are shared between VMs (<see cref="BlockTranslator"/>
    /// remembers translated ones by address), versions belong to one VM's memory.
    /// </summary>
    private readonly CachedBlock[] _blocks = new CachedBlock[BlockCacheSize];
    private readonly CodePageVersions _codePages;

    /// <summary>
    /// A block cache slot. It repeats the block's key and instruction count, and holds its translation once this vCPU
    /// has seen it, so that dispatching a translated block reads this slot and not the <see cref="Block"/> object: with
    /// more blocks than the L1 cache holds, each cache line less per entry counts (bench/cpu, the 2048-block loop).
    /// </summary>
    private struct CachedBlock
    {
        public Block? Block;
        /// <summary>
        /// <see cref="Block.Translated"/>, copied on the first translated run through this slot; null before, and for
        /// blocks with a second page (they take the general path, which checks that page too).
        /// </summary>
        public TranslatedBlock? Translated;
        public ulong Rip, Phys;
        public uint Version1, Version2;
        public int Count;
        public byte Bitness;
        public bool TwoPages;

        public CachedBlock(Block b, uint version1, uint version2)
        {
            Block = b;
            Rip = b.Rip;
            Phys = b.Phys;
            Bitness = (byte)b.Bitness;
            Count = b.Count;
            TwoPages = b.Len2 != 0;
            Version1 = version1;
            Version2 = version2;
        }
    }
    private readonly BufferReader _reader = new();
    private readonly Instruction[] _decodeScratch = new Instruction[MaxBlockInsns];
    private Decoder? _dec16, _dec32, _dec64;
    private uint _blockCounter;
    internal ulong FaultRip;
    /// <summary>
    /// The block cache slot of the block whose instructions are running (-1 between blocks): a fault in it un-counts its
    /// rest. A slot index rather than the block itself: storing a reference on every block entry cost a GC write
    /// barrier. The slot keeps the running block: only <see cref="FindOrDecode"/>, between blocks, replaces slots.
    /// </summary>
    private int _runningSlot = -1;

    /// <summary>Runs guest code until HLT (without an interrupt source), shutdown, an error or <see cref="RequestExit"/>.</summary>
    public VcpuExit Run(IVcpuIoHandler io)
    {
        _io = io;
        while (true)
        {
            if (_exitRequested != 0)
            {
                _exitRequested = 0;
                return new VcpuExit(VcpuExitReason.Interrupted);
            }
            if (_apic is not null) PollLocalApicStartup();
            if ((_waitForSipi || _initPending != 0) && !HandleInitSipi())
            {
                _wake.Wait(1);
                continue;
            }
            try
            {
                _runningSlot = -1;
                if (_halted)
                {
                    if (_intSource is null)
                    {
                        _halted = false;
                        return new VcpuExit(VcpuExitReason.Halt);
                    }
                    if (!WaitWhileHalted()) continue;
                }
                // Interrupts are looked at when a wake-up, an STI or the like asked for it (_irqHint), and at least every
                // 2048 blocks (BlocksPerRun * 8), in case an interrupt became deliverable with no wake-up.
                if (_irqHint || (++_blockCounter & 7) == 0)
                {
                    FaultRip = Rip;
                    CheckInterrupts();
                }
                RunBlocks();
            }
            catch (CpuFault f)
            {
                UncountUnretired();
                Rip = FaultRip;
                try
                {
                    DeliverException(f.Vector, f.HasErrorCode, f.ErrorCode);
                }
                catch (CpuTripleFault)
                {
                    FlushTrace();
                    return new VcpuExit(VcpuExitReason.Shutdown, Detail: $"triple fault at RIP 0x{Rip:x}");
                }
            }
            catch (CpuTripleFault)
            {
                return new VcpuExit(VcpuExitReason.Shutdown, Detail: $"triple fault at RIP 0x{Rip:x}");
            }
            catch (CpuUnimplemented u)
            {
                Rip = FaultRip;
                return new VcpuExit(VcpuExitReason.InternalError, Detail: $"{u.Message} at RIP 0x{FaultRip:x} (bytes {DescribeBytes(FaultRip)})");
            }
            catch (GuestMemoryException e)
            {
                Rip = FaultRip;
                return new VcpuExit(VcpuExitReason.InternalError, Detail: $"guest memory access failed at RIP 0x{FaultRip:x}: {e.Message}");
            }
            catch (Exception e) when (e is IndexOutOfRangeException or ArgumentException or InvalidOperationException or NotSupportedException or OverflowException)
            {
                Rip = FaultRip;
                return new VcpuExit(VcpuExitReason.InternalError, Detail: $"emulator error at RIP 0x{FaultRip:x} (bytes {DescribeBytes(FaultRip)}): {e}");
            }
        }
    }

    private string DescribeBytes(ulong rip)
    {
        try
        {
            var sb = new System.Text.StringBuilder();
            ulong la = Linear(CS, rip);
            for (int k = 0; k < 15; k++) sb.Append($"{Read(la + (ulong)k, 1, PermSR | PermUR | PermSX):x2} ");
            return sb.ToString().TrimEnd();
        }
        catch (CpuFault)
        {
            return "unreadable";
        }
    }

    /// <summary>Waits in HLT; returns true when the vCPU should go on running guest code.</summary>
    private bool WaitWhileHalted()
    {
        var src = _intSource!;
        while (true)
        {
            if (_apic is not null) PollLocalApicStartup();
            if (_exitRequested != 0 || _initPending != 0) return false;
            if (!_nmiBlocked && src.TakePendingNmi())
            {
                _halted = false;
                DeliverInterrupt(2, false, 0, InterruptKind.Nmi);
                _nmiBlocked = true;
                return true;
            }
            if ((SystemFlags & Flags.IF) != 0 && src.HasPendingInterrupt)
            {
                _halted = false;
                _irqHint = true;
                return true;
            }
            _wake.Wait(1);
        }
    }

    private void CheckInterrupts()
    {
        _irqHint = false;
        var src = _intSource;
        if (src is null) return;
        if (_interruptShadow)
        {
            _interruptShadow = false;
            _irqHint = true;
            return;
        }
        if (!_nmiBlocked && src.TakePendingNmi())
        {
            DeliverInterrupt(2, false, 0, InterruptKind.Nmi);
            _nmiBlocked = true;
            return;
        }
        if ((SystemFlags & Flags.IF) != 0 && src.HasPendingInterrupt)
        {
            int vector = src.AcknowledgeInterrupt();
            if (vector >= 0 && vector < 256)
            {
                InterruptsDelivered++;
                DeliverInterrupt(vector, false, 0, InterruptKind.External);
            }
            _irqHint = true;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong Linear(int seg, ulong ea)
    {
        if (Bitness == 64) return seg >= FS ? Sregs[seg].Base + ea : ea;
        return (uint)(Sregs[seg].Base + ea);
    }

    /// <summary>
    /// Blocks per <see cref="RunBlocks"/> call. Only a cost limit for the outer loop in <see cref="Run"/> (ready-to-run
    /// code: it is entered once and never re-jitted): exit requests, wake-ups (interrupts, INIT/SIPI) and HLT end the
    /// call after the block that sees them, whatever is left of the budget.
    /// </summary>
    private const int BlocksPerRun = 256;

    /// <summary>Runs up to <see cref="BlocksPerRun"/> blocks, stopping early for exits, interrupts and HLT.</summary>
    private void RunBlocks()
    {
        for (int budget = BlocksPerRun; budget > 0; budget--)
        {
            RunBlock();
            if (_exitRequested != 0 || _irqHint || _halted) return;
        }
    }

    private ulong[]? _trace;
    private int _tracePos;
    private readonly List<string> _eventLog = [];

    /// <summary>Diagnostics: when true, the last 256 block entry addresses and the last exceptions are kept.</summary>
    public bool Tracing
    {
        get => _trace is not null;
        set { _trace = value ? new ulong[256] : null; _tracePos = 0; UpdateRunTranslated(); }
    }

    /// <summary>Diagnostics: recent block entry RIPs, oldest first (empty unless <see cref="Tracing"/>).</summary>
    public IReadOnlyList<ulong> RecentBlocks()
    {
        var t = _trace;
        if (t is null) return [];
        var list = new List<ulong>();
        for (int k = 0; k < t.Length; k++) list.Add(t[(_tracePos + k) % t.Length]);
        return list;
    }

    /// <summary>Diagnostics: recent exceptions and interrupts delivered (only while <see cref="Tracing"/>).</summary>
    public IReadOnlyList<string> RecentEvents() => [.. _eventLog];

    private void TraceEvent(string e)
    {
        if (_eventLog.Count >= 64) _eventLog.RemoveAt(0);
        _eventLog.Add(e);
    }

    /// <summary>
    /// Looks up the block at RIP and runs it, translated or interpreted. Inlined into <see cref="RunBlocks"/>' loop, so
    /// dispatching a translated block costs no call and no prologue of its own (the dispatch benchmark in bench/cpu:
    /// 10.9 -> 8.3 ns per block entry, with <see cref="RunInterpreted"/> out of line).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void RunBlock()
    {
        ulong rip = Rip;
        if (_trace is not null) { _trace[_tracePos] = rip; _tracePos = (_tracePos + 1) % _trace.Length; }
        FaultRip = rip;
        ulong la = Linear(CS, rip);
        ulong phys = TranslateFetch(la, out byte* host);
        if (host == null) ThrowFetchFromNonRam(phys);
        int slot = (int)((rip ^ (rip >> 15)) & (BlockCacheSize - 1));
        // SAFETY: slot < BlockCacheSize, the length of _blocks (a readonly field), so no bounds check is needed.
        ref CachedBlock cached = ref Unsafe.Add(ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(_blocks), slot);
        // The miss path translates RIP again (a TLB hit): fewer values live across the checks. (An empty slot has
        // Bitness 0, which matches no mode.)
        if (cached.Rip != rip || cached.Phys != phys || cached.Bitness != Bitness || _codePages.Current(phys >> 12) != cached.Version1
            || (cached.TwoPages && !SecondPageCurrent(cached.Block!, rip, cached.Version2)))
            FindOrDecode(ref cached, rip);
        // _blockPpn/_blockPpn2 stay set after the block: a store between blocks then sets _endBlock, which nothing reads
        // before the next block clears it here.
        _blockPpn = cached.Phys >> 12;
        _endBlock = false;
        // _runTranslated: translation on (turning it off also stops blocks translated earlier from running translated)
        // and no tracing.
        var translated = cached.Translated;
        if (translated is not null && _runTranslated)
        {
            // Only one-page blocks have their translation in the slot.
            _blockPpn2 = ulong.MaxValue;
            TranslatedBlockRuns++;
            InstructionsRetired += cached.Count;
            _runningSlot = slot;
            translated(this, ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(Gpr));
            _runningSlot = -1;
            return;
        }
        var b = cached.Block!;
        _blockPpn2 = b.Ppn2;
        translated = b.Translated ?? CountInterpretedRun(b);
        if (translated is not null && _runTranslated) RunTranslatedFirstTime(ref cached, b, translated, slot);
        else RunInterpreted(b, slot);
    }

    /// <summary>
    /// A translated block whose translation is not in its slot yet (copied there now, unless the block crosses into a
    /// second page: those always come here). Out of line, like the interpreter.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void RunTranslatedFirstTime(ref CachedBlock cached, Block b, TranslatedBlock translated, int slot)
    {
        if (!cached.TwoPages) cached.Translated = translated;
        TranslatedBlockRuns++;
        InstructionsRetired += b.Count;
        _runningSlot = slot;
        translated(this, ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(Gpr));
        _runningSlot = -1;
    }

    /// <summary>
    /// An entry into a block not translated (yet): counts it towards the translation threshold and, on reaching it, asks
    /// for the translation; returns the translation when it is ready at once (translating on this thread), else null.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private TranslatedBlock? CountInterpretedRun(Block b)
    {
        if (!_translation.Enabled || ++b.Runs != _translation.Threshold) return null;
        RequestTranslation(b);
        return b.Translated;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowFetchFromNonRam(ulong phys) =>
        throw new CpuUnimplemented($"instruction fetch from non-RAM physical address 0x{phys:x}");

    /// <summary>Whether translated blocks run translated: translation is on and no tracing wants every instruction.</summary>
    private bool _runTranslated;

    private void UpdateRunTranslated() => _runTranslated = _translation.Enabled && _trace is null && !s_trace;

    /// <summary>
    /// Runs a block in the interpreter. Out of line: with the interpreter's inlined handlers <see cref="RunBlock"/> had a
    /// 26 KiB body whose prologue (six saved registers, a 280-byte frame) every translated block's dispatch paid too.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void RunInterpreted(Block b, int slot)
    {
        // No try/finally here: exception handling would keep the loop's locals out of registers.
        ref ulong regs = ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(Gpr);
        var ds = b.D;
        int n = b.RunCount;
        InstructionsRetired += b.Count;
        _runningSlot = slot;
        for (int k = 0; k < n; k++)
        {
            ref DInsn d = ref ds[k];
            FaultRip = d.Ip;
            if (s_trace) TraceBlockEntry(b, k, n);
            Rip = d.NextIp;
            ExecEntry(b, k, ref d, ref regs);
            if (_endBlock)
            {
                // Entries after k did not run (a fused last entry, k == n - 1, covers two instructions that both ran).
                if (k != n - 1) InstructionsRetired -= b.Count - k - 1;
                break;
            }
        }
        _runningSlot = -1;
    }

    private EmulatorTranslation _translation = EmulatorTranslation.FromEnvironment();

    /// <summary>Diagnostics: entries into translated blocks (a self-looping block counts once per entry).</summary>
    public long TranslatedBlockRuns { get; private set; }

    /// <summary>
    /// Whether and when blocks are translated to host code (<see cref="BlockTranslator"/>); by default as the
    /// SHARPVM_EMU_TRANSLATE environment variable says, else <see cref="EmulatorTranslation.Default"/>.
    /// </summary>
    public EmulatorTranslation Translation
    {
        get => _translation;
        set { _translation = value; UpdateRunTranslated(); }
    }

    private void RequestTranslation(Block b)
    {
        if (b.TranslationFailed) return;
        if (!_translation.Background) BlockTranslator.TranslateNow(b);
        else if (!BlockTranslator.Enqueue(b)) b.Runs = 0; // queue full: try again after as many runs
    }

    /// <summary>
    /// Runs entry <paramref name="k"/> of a block (RIP already past it): the inlined hot handlers, then the fast paths,
    /// then the generic interpreter. The block loop and the translator's fallback for untemplated instructions share it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ExecEntry(Block b, int k, ref DInsn d, ref ulong regs)
    {
        if (!ExecHot(ref d, ref regs) && (d.Op == FastOp.None || !(d.Op >= FastOpExtra.First ? ExecFastExtra(ref d) : ExecFast(ref d))))
            Exec(ref b.Insns[k], b.OpSize[k], b.AddrSize[k]);
    }

    /// <summary>
    /// A fault in a block: the block counted all its instructions on entry, but the faulting one (at
    /// FaultRip) and those after it did not retire.
    /// </summary>
    private void UncountUnretired()
    {
        if (_runningSlot < 0) return;
        var b = _blocks[_runningSlot].Block!;
        _runningSlot = -1;
        for (int k = 0; k < b.RunCount; k++)
        {
            if (b.D[k].Ip == FaultRip)
            {
                InstructionsRetired -= b.Count - k;
                return;
            }
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void TraceBlockEntry(Block b, int k, int n)
    {
        TraceInstruction(in b.Insns[k]);
        if (k == n - 1 && b.Count > n) TraceInstruction(in b.Insns[k + 1]); // the Jcc of a fused pair
    }

    /// <summary>Whether the second page of a block whose last instruction crosses a page is still mapped and unchanged.</summary>
    private bool SecondPageCurrent(Block b, ulong rip, uint version2)
    {
        ulong la = Linear(CS, rip);
        ulong phys2 = TranslateFetch((la & ~0xFFFUL) + 0x1000, out byte* host2);
        return host2 != null && phys2 >> 12 == b.Ppn2 && _codePages.Current(b.Ppn2) == version2;
    }

    /// <summary>
    /// A block cache miss, or a block whose code page was written since it was checked: the same block again if its
    /// bytes still match (the write was elsewhere on the page), or a translated block remembered at this address
    /// whose bytes match (a colliding entry evicted it), else a new decode. The page is watched before its bytes are
    /// read (see <see cref="CodePageVersions"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FindOrDecode(ref CachedBlock cached, ulong rip)
    {
        ulong la = Linear(CS, rip);
        ulong phys = TranslateFetch(la, out byte* host);
        if (host == null) ThrowFetchFromNonRam(phys);
        uint version1 = _codePages.Watch(phys >> 12);
        var candidate = cached.Block is { } c && c.Rip == rip && c.Phys == phys && c.Bitness == Bitness ? c
            : _translation.Enabled ? BlockTranslator.FindTranslated(rip, phys, Bitness) : null;
        if (candidate is not null)
        {
            uint version2 = candidate.Len2 != 0 ? _codePages.Watch(candidate.Ppn2) : 0;
            if (Verify(candidate, host + (phys & 0xFFF), la))
            {
                cached = new CachedBlock(candidate, version1, version2);
                return;
            }
        }
        var b = Decode(rip, la, phys, host, out uint decodedVersion2);
        cached = new CachedBlock(b, version1, decodedVersion2);
    }

    // SAFETY: code points into a RAM page at the block's start; Len1 <= bytes to the page end (the
    // decoder only read that far), and the second page is re-translated before it is read.
    private bool Verify(Block b, byte* code, ulong la)
    {
        if (!new ReadOnlySpan<byte>(code, b.Len1).SequenceEqual(b.ExpectedBytes[..b.Len1])) return false;
        if (b.Len2 == 0) return true;
        ulong phys2 = TranslateFetch((la & ~0xFFFUL) + 0x1000, out byte* host2);
        if (host2 == null || phys2 >> 12 != b.Ppn2) return false;
        return new ReadOnlySpan<byte>(host2, b.Len2).SequenceEqual(b.ExpectedBytes.Slice(b.Len1, b.Len2));
    }

    private Decoder GetDecoder(int bitness)
    {
        return bitness switch
        {
            64 => _dec64 ??= Decoder.Create(64, _reader, 0, DecoderOptions.None),
            32 => _dec32 ??= Decoder.Create(32, _reader, 0, DecoderOptions.None),
            _ => _dec16 ??= Decoder.Create(16, _reader, 0, DecoderOptions.None),
        };
    }

    /// <summary>Decodes the block at RIP (the caller watched its first page); <paramref name="version2"/>: the second page's version, if it has one.</summary>
    private Block Decode(ulong rip, ulong la, ulong phys, byte* host, out uint version2)
    {
        version2 = 0;
        int off = (int)(phys & 0xFFF);
        int avail = 4096 - off;
        var buf = _reader.Buffer;
        new ReadOnlySpan<byte>(host + off, avail).CopyTo(buf);
        _reader.Position = 0;
        _reader.End = avail;
        var dec = GetDecoder(Bitness);
        dec.IP = rip;
        var insns = _decodeScratch; // the block keeps a copy of the instructions decoded (insns[..count])
        int count = 0;
        int len2 = 0;
        ulong ppn2 = ulong.MaxValue;
        ulong followedJumps = 0; // bit k: instruction k is a JMP the block goes on through
        while (count < MaxBlockInsns)
        {
            int start = _reader.Position;
            dec.Decode(out insns[count]);
            ref var ins = ref insns[count];
            if (ins.IsInvalid && dec.LastError == DecoderError.NoMoreBytes)
            {
                if (count > 0) { _reader.Position = start; break; }
                // The first instruction crosses into the next page: fetch that page too (may #PF).
                ulong phys2 = TranslateFetch((la & ~0xFFFUL) + 0x1000, out byte* host2);
                if (host2 == null) ThrowFetchFromNonRam(phys2);
                version2 = _codePages.Watch(phys2 >> 12);
                new ReadOnlySpan<byte>(host2, 15).CopyTo(buf.AsSpan(avail));
                _reader.Position = 0;
                _reader.End = avail + 15;
                dec.IP = rip;
                dec.Decode(out insns[0]);
                int used = _reader.Position;
                len2 = Math.Max(0, used - avail);
                if (len2 > 0) ppn2 = phys2 >> 12;
                count = 1;
                _reader.Position = used;
                break;
            }
            count++;
            // A block goes on through a direct JMP forward on the same page (the jump over the else-branch of an if),
            // continuing at its target: one dispatch fewer. 64-bit code only (linear address = RIP); forward only, so
            // no instruction is decoded twice and the bytes from RIP to the end of the last one cover all of them.
            if (Bitness == 64 && ins.FlowControl == FlowControl.UnconditionalBranch && ins.Op0Kind == OpKind.NearBranch64
                && ins.NearBranchTarget >= ins.NextIP && ins.NearBranchTarget >> 12 == rip >> 12 && count < MaxBlockInsns)
            {
                followedJumps |= 1UL << (count - 1);
                dec.IP = ins.NearBranchTarget;
                _reader.Position = (int)(ins.NearBranchTarget - rip);
                continue;
            }
            // A block runs on past conditional branches (a taken one leaves it through _endBlock, as any branch does):
            // the not-taken path, error checks in kernel code mostly, then costs no new dispatch.
            if (ins.IsInvalid || ins.FlowControl is not (FlowControl.Next or FlowControl.ConditionalBranch) || EndsBlock(ins.Mnemonic)) break;
        }
        int total = _reader.Position;
        var b = new Block
        {
            Rip = rip, Phys = phys, Bitness = Bitness, Count = count,
            Insns = insns[..count], OpSize = new byte[count], AddrSize = new byte[count],
            Len1 = total - len2, Len2 = len2, Ppn2 = ppn2,
        };
        b.SetBytes(buf.AsSpan(0, total));
        b.D = new DInsn[count];
        for (int k = 0; k < count; k++)
        {
            b.OpSize[k] = (byte)Decoding.OperandSize(in b.Insns[k]);
            b.AddrSize[k] = (byte)Decoding.AddressSize(in b.Insns[k], Bitness);
            b.D[k] = Predecode(in b.Insns[k], b.OpSize[k], b.AddrSize[k], Bitness);
            // A JMP the block goes on through: nothing to do but move RIP to its target.
            if ((followedJumps & (1UL << k)) != 0) { b.D[k].Op = FastOp.Nop; b.D[k].NextIp = b.Insns[k].NearBranchTarget; }
        }
        b.RunCount = FuseCompareAndBranch(b.D, count);
        MarkDeadRotates(b.D, b.RunCount);
        return b;
    }

    /// <summary>
    /// Marks the block's rotates whose flags nothing sees (<see cref="DInsn.FlagsDead"/>): hash functions rotate after
    /// nearly every ADD or XOR, and each rotate that keeps flags materializes the lazy state first.
    /// </summary>
    private static void MarkDeadRotates(DInsn[] d, int n)
    {
        bool any = false;
        for (int k = 0; k < n && !any; k++) any = d[k].Op == FastOpExtra.RotRI;
        if (!any) return;
        var dead = FlagsLiveness.DeadFlagOutputs(d, n);
        for (int k = 0; k < n; k++) if (d[k].Op == FastOpExtra.RotRI) d[k].FlagsDead = dead[k];
    }

    /// <summary>Instructions after which the mode or interrupt state may have changed: end the block there.</summary>
    private static bool EndsBlock(Mnemonic m) => m is Mnemonic.Sti or Mnemonic.Popf or Mnemonic.Popfd or Mnemonic.Popfq
        or Mnemonic.Hlt or Mnemonic.Lgdt or Mnemonic.Lidt or Mnemonic.Lmsw or Mnemonic.Invlpg or Mnemonic.Wrmsr
        or Mnemonic.Ltr or Mnemonic.Lldt or Mnemonic.Swapgs or Mnemonic.Clts or Mnemonic.Cli;
}
