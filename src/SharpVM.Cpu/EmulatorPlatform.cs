using SharpVM.Devices.Interrupts;

namespace SharpVM.Cpu;

/// <summary>
/// The emulated CPU's side of SharpVM's interrupt platform (<see cref="EmulatedInterruptPlatform"/>):
/// its local APIC (interrupts, NMI, APIC MSRs, TSC-deadline) and INIT / start-up IPIs.
/// </summary>
public sealed partial class EmulatorVcpu
{
    private LocalApic? _apic;

    /// <summary>The local APIC this vCPU uses, when the VM has the emulated interrupt platform.</summary>
    public LocalApic? LocalApic => _apic;

    /// <summary>
    /// Connects this vCPU to its local APIC; an application processor (<paramref name="waitForStartup"/>)
    /// then waits for a start-up IPI before it runs guest code.
    /// </summary>
    public void AttachLocalApic(LocalApic apic, bool waitForStartup)
    {
        ArgumentNullException.ThrowIfNull(apic);
        _apic = apic;
        AttachInterruptSource(apic);
        apic.SetTscSource(ReadTsc, (long)EmulatorCpuid.TscHz);
        _waitForSipi = waitForStartup;
    }

    /// <summary>Starts an application processor at the registers set, as if INIT/SIPI had started it.</summary>
    public void MakeRunnable()
    {
        _waitForSipi = false;
        _irqHint = true;
    }

    private const uint MsrTscAdjust = 0x3B;
    private long _tscAdjust;

    private static bool IsApicMsr(uint index) => index is 0x1B or 0x6E0 or (>= 0x800 and <= 0x8FF);

    /// <summary>RDMSR of an APIC MSR goes to the local APIC (when there is one). Returns true if handled.</summary>
    private bool TryReadApicMsr(uint index, out ulong value, out bool ok)
    {
        value = 0;
        ok = false;
        if (index == MsrTscAdjust)
        {
            value = (ulong)_tscAdjust;
            ok = true;
            return true;
        }
        var apic = _apic;
        if (apic is null || !IsApicMsr(index)) return false;
        ok = apic.TryReadMsr(index, out value);
        if (ok && index == 0x1B) ApicBase = value;
        return true;
    }

    private bool TryWriteApicMsr(uint index, ulong value, out bool ok)
    {
        ok = false;
        var apic = _apic;
        if (index is 0x10 or MsrTscAdjust)
        {
            // IA32_TSC_ADJUST follows writes to the TSC and moves it by the change written to it (SDM 17.17.3).
            ulong before = ReadTsc();
            if (index == 0x10) WriteTsc(value);
            else WriteTsc(before + (value - (ulong)_tscAdjust));
            _tscAdjust += index == 0x10 ? (long)(value - before) : (long)value - _tscAdjust;
            // The TSC moved: an armed TSC deadline must be re-evaluated.
            apic?.OnTscChanged();
            ok = true;
            return true;
        }
        if (apic is null) return false;
        if (!IsApicMsr(index)) return false;
        ok = apic.TryWriteMsr(index, value);
        if (ok && index == 0x1B) ApicBase = value;
        if (ok) _irqHint = true;
        return true;
    }

    /// <summary>
    /// Passes INIT and start-up IPIs accepted by the local APIC to the vCPU's INIT/SIPI handling
    /// (<see cref="Init"/>, <see cref="Startup"/>). Lock-free unless one is pending.
    /// </summary>
    private void PollLocalApicStartup()
    {
        var apic = _apic!;
        if (apic.TakePendingInit()) _initPending = 1;
        if ((_waitForSipi || _initPending != 0) && apic.TryTakeStartupIpi(out byte vector)) _sipiVector = vector;
    }
}

public sealed partial class EmulatorVirtualMachine
{
    /// <summary>
    /// The LAPICs, IOAPIC, PICs and PIT of this VM (the emulator's KVM_CREATE_IRQCHIP + KVM_CREATE_PIT2),
    /// when <see cref="SharpVM.Hypervisor.VmPlatformOptions.InterruptController"/> asked for them.
    /// </summary>
    public EmulatedInterruptPlatform? InterruptPlatform { get; private set; }

    /// <summary>Creates the interrupt platform for <see cref="Options"/>' vCPU count, claims its ports and MMIO, and routes GSIs to it.</summary>
    internal void CreateInterruptPlatform(SharpVM.Devices.Bus.PioBus pio, SharpVM.Devices.Bus.MmioBus mmio)
    {
        var platform = new EmulatedInterruptPlatform(Math.Max(1, Options.VcpuCount));
        try
        {
            platform.RegisterDevices(pio, mmio);
        }
        catch
        {
            platform.Dispose();
            throw;
        }
        InterruptPlatform = platform;
        ConnectInterruptLines(platform.GetInterruptLine);
    }
}
