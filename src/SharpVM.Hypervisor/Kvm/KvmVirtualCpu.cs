using System.Runtime.CompilerServices;
using SharpVM.Interop.Kvm;
using SharpVM.Interop.Libc;

namespace SharpVM.Hypervisor.Kvm;

/// <summary>
/// A vCPU on KVM. <see cref="Run"/> loops over KVM_RUN, serving PIO and MMIO exits through the
/// handler in place (the data lives in kvm_run), and returns every other exit as a value.
/// </summary>
public sealed class KvmVirtualCpu : IVcpu
{
    private readonly KvmVcpu _vcpu;
    private nuint _thread;
    private volatile bool _attached;

    public int Id => _vcpu.Id;

    /// <summary>The raw vCPU fd wrapper, for KVM-only state (LAPIC, events, XCRs, FPU).</summary>
    public KvmVcpu Kvm => _vcpu;

    private readonly bool _hasLapic;

    internal KvmVirtualCpu(KvmVcpu vcpu, bool hasLapic)
    {
        _vcpu = vcpu;
        _hasLapic = hasLapic;
    }

    /// <summary>See <see cref="KvmFirmwareState"/>.</summary>
    public void ApplyFirmwareState() => KvmFirmwareState.Apply(_vcpu, _hasLapic);

    public void AttachToCurrentThread()
    {
        ThreadSignals.BlockKickOnCurrentThread();
        // While in KVM_RUN the kick must be deliverable (so it interrupts the guest), everywhere else blocked.
        _vcpu.SetSignalMask(ThreadSignals.CurrentMask() & ~ThreadSignals.KickSet);
        _thread = ThreadSignals.CurrentThread();
        _attached = true;
    }

    /// <summary>KVM_SET_MP_STATE(RUNNABLE): with an in-kernel irqchip, APs otherwise wait for INIT/SIPI.</summary>
    public void MakeRunnable() => _vcpu.SetMpState(new KvmMpState { MpState = 0 });

    public void RequestExit()
    {
        _vcpu.ImmediateExit = true;
        if (_attached) ThreadSignals.Kick(_thread);
    }

    // Fully optimized by the JIT at its first call: it loops inside one call for the VM's whole life, so tiered
    // compilation would never replace its ReadyToRun code (bench/README.md, exit round trip).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public unsafe VcpuExit Run(IVcpuIoHandler io)
    {
        while (true)
        {
            if (!_vcpu.Run())
            {
                // A kick: consume the pending signal so the next KVM_RUN is not interrupted by it too.
                ThreadSignals.DrainKick();
                _vcpu.ImmediateExit = false;
                return new VcpuExit(VcpuExitReason.Interrupted);
            }
            ref KvmRun run = ref _vcpu.RunState;
            switch ((KvmExitReason)run.ExitReason)
            {
                case KvmExitReason.Io:
                    ServeIo(ref run, io);
                    continue;
                case KvmExitReason.Mmio:
                    ServeMmio(ref run, io);
                    continue;
                case KvmExitReason.Hlt:
                    return new VcpuExit(VcpuExitReason.Halt, run.ExitReason);
                case KvmExitReason.Shutdown:
                    return new VcpuExit(VcpuExitReason.Shutdown, run.ExitReason, "triple fault or shutdown");
                case KvmExitReason.FailEntry:
                    return new VcpuExit(VcpuExitReason.FailEntry, run.ExitReason,
                        $"hardware entry failure reason 0x{run.FailEntry.HardwareEntryFailureReason:x} on cpu {run.FailEntry.Cpu}",
                        run.FailEntry.HardwareEntryFailureReason);
                case KvmExitReason.InternalError:
                    return new VcpuExit(VcpuExitReason.InternalError, run.ExitReason,
                        DescribeInternalError(ref run), run.Internal.Suberror);
                case KvmExitReason.SystemEvent:
                    var kind = run.SystemEvent.Type switch
                    {
                        KvmRunSystemEvent.Shutdown => SystemEventKind.PowerOff,
                        KvmRunSystemEvent.Reset => SystemEventKind.Reset,
                        KvmRunSystemEvent.Crash => SystemEventKind.Crash,
                        _ => SystemEventKind.None,
                    };
                    return new VcpuExit(VcpuExitReason.SystemEvent, run.ExitReason, $"system event type {run.SystemEvent.Type}", run.SystemEvent.Type, kind);
                case KvmExitReason.Intr:
                    return new VcpuExit(VcpuExitReason.Interrupted, run.ExitReason);
                case KvmExitReason.Debug:
                    return new VcpuExit(VcpuExitReason.Debug, run.ExitReason);
                default:
                    return new VcpuExit(VcpuExitReason.Unknown, run.ExitReason, $"KVM exit reason {run.ExitReason} ({(KvmExitReason)run.ExitReason})");
            }
        }
    }

    private void ServeIo(ref KvmRun run, IVcpuIoHandler io)
    {
        KvmRunIo exit = run.Io;
        // String I/O (INS/OUTS with REP) arrives as Count items of Size bytes, back to back.
        for (uint i = 0; i < exit.Count; i++)
        {
            var data = _vcpu.RunBytes(exit.DataOffset + i * exit.Size, exit.Size);
            if (exit.Direction == KvmRunIo.DirectionOut) io.PioWrite(exit.Port, data);
            else io.PioRead(exit.Port, data);
        }
    }

    private static unsafe void ServeMmio(ref KvmRun run, IVcpuIoHandler io)
    {
        int length = (int)Math.Min(run.Mmio.Len, 8u);
        fixed (byte* p = run.Mmio.Data)
        {
            var data = new Span<byte>(p, length);
            if (run.Mmio.IsWrite != 0) io.MmioWrite(run.Mmio.PhysAddr, data);
            else io.MmioRead(run.Mmio.PhysAddr, data);
        }
    }

    private static unsafe string DescribeInternalError(ref KvmRun run)
    {
        string what = run.Internal.Suberror switch
        {
            1 => "emulation failure",
            2 => "simultaneous exceptions",
            3 => "delivery event failure",
            4 => "unexpected exit reason",
            _ => $"suberror {run.Internal.Suberror}",
        };
        int n = (int)Math.Min(run.Internal.Ndata, 16u);
        var data = new List<string>();
        for (int i = 0; i < n; i++) data.Add($"0x{run.Internal.Data[i]:x}");
        return n == 0 ? $"KVM internal error: {what}" : $"KVM internal error: {what} (data {string.Join(' ', data)})";
    }

    public Registers GetRegisters() => KvmConversions.ToRegisters(_vcpu.GetRegs());
    public void SetRegisters(in Registers registers) => _vcpu.SetRegs(KvmConversions.ToKvm(registers));
    public SpecialRegisters GetSpecialRegisters() => KvmConversions.ToSpecialRegisters(_vcpu.GetSregs());

    public void SetSpecialRegisters(in SpecialRegisters registers)
    {
        var sregs = _vcpu.GetSregs();
        KvmConversions.Apply(registers, ref sregs);
        _vcpu.SetSregs(sregs);
    }

    public ulong? GetMsr(uint index)
    {
        Span<KvmMsrEntry> e = [new KvmMsrEntry { Index = index }];
        return _vcpu.GetMsrs(e) == 1 ? e[0].Data : null;
    }

    public void SetMsr(uint index, ulong value)
    {
        if (_vcpu.SetMsrs([new KvmMsrEntry { Index = index, Data = value }]) != 1)
            throw new InvalidOperationException($"KVM refused MSR 0x{index:x} = 0x{value:x}");
    }

    public void SetCpuid(IReadOnlyList<CpuidEntry> entries)
    {
        // An array (what VmBuilder passes) is indexed directly: Count and the indexer through
        // IReadOnlyList<CpuidEntry> are CoreLib generics over our struct that ReadyToRun cannot
        // precompile, so they would be JIT-compiled on the first VM's setup path (bench/README.md).
        if (entries is CpuidEntry[] array)
        {
            var converted = new KvmCpuidEntry2[array.Length];
            for (int i = 0; i < array.Length; i++) converted[i] = KvmConversions.ToKvm(array[i]);
            _vcpu.SetCpuid2(converted);
            return;
        }
        var raw = new KvmCpuidEntry2[entries.Count];
        for (int i = 0; i < raw.Length; i++) raw[i] = KvmConversions.ToKvm(entries[i]);
        _vcpu.SetCpuid2(raw);
    }

    public ulong? Translate(ulong linearAddress)
    {
        var t = _vcpu.Translate(linearAddress);
        return t.Valid != 0 ? t.PhysicalAddress : null;
    }

    public void Dispose() => _vcpu.Dispose();
}
