using SharpVM.Devices.Bus;
using SharpVM.Devices.Timers;

namespace SharpVM.Devices.Interrupts;

/// <summary>
/// The PC interrupt and timer hardware that KVM would otherwise keep in the kernel, for the emulated-CPU
/// backend: one <see cref="LocalApic"/> per vCPU (APIC ID = vCPU index, vCPU 0 is the BSP), the
/// <see cref="IoApic"/>, the 8259 pair (<see cref="DualPic8259"/>, INTR to the BSP's LINT0 as ExtINT)
/// and the 8254 <see cref="Pit8254"/> (counter 0 on ISA IRQ0).
/// </summary>
/// <remarks>
/// <para><b>VMM wiring.</b> Create it, call <see cref="RegisterDevices"/> with the VM's buses, hand
/// <see cref="GetInterruptLine"/> lines to devices, call <see cref="DeliverMsi"/> for MSI/MSI-X writes,
/// and give each vCPU its <see cref="LocalApics"/>[i] as its <see cref="IVcpuInterruptSource"/>. Each vCPU
/// thread calls <see cref="LocalApic.BindCurrentThread"/> before running guest code, because the one
/// registered xAPIC page (<see cref="LocalApicMmioDevice"/>) serves the APIC bound to the calling thread.</para>
/// <para><b>GSI routing</b> (what the MADT/MP table must describe): GSI 0 (ISA IRQ0, the PIT) goes to PIC
/// IRQ0 and IOAPIC pin 2 (an interrupt source override IRQ0 → GSI 2); GSI 1 and 3-15 go to PIC IRQ n and
/// IOAPIC pin n; GSI 16-23 go to the IOAPIC only. GSI 2 is the PIC cascade and drives nothing.</para>
/// </remarks>
public sealed class EmulatedInterruptPlatform : IDisposable
{
    public const int GsiCount = IoApic.PinCount;

    private readonly SystemDeviceClock? _ownedClock;
    private readonly LocalApic[] _apics;
    private readonly GsiLine[] _lines = new GsiLine[GsiCount];

    /// <summary>Creates the platform for <paramref name="vcpuCount"/> vCPUs. Without a
    /// <paramref name="clock"/>, a real-time <see cref="SystemDeviceClock"/> is created and owned.</summary>
    public EmulatedInterruptPlatform(int vcpuCount, DeviceClock? clock = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(vcpuCount, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(vcpuCount, 255);
        if (clock is null) clock = _ownedClock = new SystemDeviceClock();
        Clock = clock;
        ApicBus = new ApicBus();
        _apics = new LocalApic[vcpuCount];
        for (int i = 0; i < vcpuCount; i++)
            _apics[i] = new LocalApic(ApicBus, clock, i, (uint)i, isBootstrapProcessor: i == 0);
        IoApic = new IoApic(ApicBus);
        Pic = new DualPic8259();
        _apics[0].ConnectExtIntSource(Pic);
        for (int gsi = 0; gsi < GsiCount; gsi++) _lines[gsi] = new GsiLine(this, gsi);
        Pit = new Pit8254(clock, _lines[0]);
        LocalApicMmio = new LocalApicMmioDevice(ApicBus);
    }

    public DeviceClock Clock { get; }
    public ApicBus ApicBus { get; }
    public IReadOnlyList<LocalApic> LocalApics => _apics;
    public IoApic IoApic { get; }
    public DualPic8259 Pic { get; }
    public Pit8254 Pit { get; }
    public LocalApicMmioDevice LocalApicMmio { get; }

    /// <summary>
    /// Registers the devices: PIC 0x20-0x21, 0xA0-0xA1, ELCR 0x4D0-0x4D1, PIT 0x40-0x43, port 0x61
    /// (unless <paramref name="includeSystemControlPort"/> is false, for a VMM whose keyboard controller
    /// model owns it: forward it to <see cref="Pit8254.SystemControlPortDevice"/>), the IOAPIC at
    /// 0xFEC00000 and the interrupt range 0xFEE00000-0xFEEFFFFF (xAPIC page + MSI window).
    /// </summary>
    public void RegisterDevices(PioBus pio, MmioBus mmio, bool includeSystemControlPort = true)
    {
        ArgumentNullException.ThrowIfNull(pio);
        ArgumentNullException.ThrowIfNull(mmio);
        pio.Register(DualPic8259.MasterBase, 2, Pic.MasterPorts, "pic-master");
        pio.Register(DualPic8259.SlaveBase, 2, Pic.SlavePorts, "pic-slave");
        pio.Register(DualPic8259.ElcrBase, 2, Pic.ElcrPorts, "pic-elcr");
        pio.Register(Pit8254.BasePort, 4, Pit.CounterPorts, "pit");
        if (includeSystemControlPort)
            pio.Register(Pit8254.SystemControlPort, 1, Pit.SystemControlPortDevice, "port61");
        mmio.Register(IoApic.DefaultBaseAddress, IoApic.MmioSize, IoApic, "ioapic");
        mmio.Register(LocalApic.DefaultBaseAddress, LocalApicMmioDevice.RangeSize, LocalApicMmio, "lapic-msi");
    }

    /// <summary>The input line of global system interrupt <paramref name="gsi"/> (0..23).</summary>
    public IInterruptLine GetInterruptLine(int gsi)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(gsi);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(gsi, GsiCount);
        return _lines[gsi];
    }

    /// <summary>
    /// An MSI (or MSI-X) write from a device: <paramref name="address"/> in 0xFEE00000-0xFEEFFFFF with the
    /// destination in bits 19:12, <paramref name="data"/> with vector and delivery mode. Anything else is
    /// dropped. Returns the number of local APICs that accepted it.
    /// </summary>
    public int DeliverMsi(ulong address, uint data) =>
        ApicMessage.TryDecodeMsi(address, data, out var message) ? ApicBus.Deliver(message) : 0;

    public void Dispose() => _ownedClock?.Dispose();

    private sealed class GsiLine(EmulatedInterruptPlatform platform, int gsi) : IInterruptLine
    {
        public void SetLevel(bool asserted)
        {
            if (gsi < 16 && gsi != 2) platform.Pic.SetIrq(gsi, asserted);
            int pin = gsi switch { 0 => 2, 2 => -1, _ => gsi };
            if (pin >= 0) platform.IoApic.SetPin(pin, asserted);
        }
    }
}
