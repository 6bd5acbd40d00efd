using SharpVM.Devices.Bus;

namespace SharpVM.Devices.Legacy;

/// <summary>Snapshot state of a <see cref="PciHostBridge"/>.</summary>
public sealed record PciHostBridgeState(uint ConfigAddress);

/// <summary>Counters for a <see cref="PciHostBridge"/>.</summary>
public sealed class PciHostBridgeMetrics
{
    public long ConfigReads;
    public long ConfigWrites;
    public long EmptyReads;
}

/// <summary>
/// PCI configuration mechanism #1 at ports 0xCF8-0xCFF: a 32-bit CONFIG_ADDRESS at 0xCF8 (bit 31
/// enable, bus, device, function, register) and the data window 0xCFC-0xCFF onto <see cref="Bus"/>.
/// Only bus 0 exists; other buses, and disabled accesses, read all ones.
/// Byte port 0xCF9 inside the address register is the reset control register (PIIX/ICH): byte
/// accesses there go to <c>resetControl</c> (see <see cref="AcpiPmDevice.ResetControl"/>).
/// </summary>
public sealed class PciHostBridge : IBusDevice
{
    public const ushort BasePort = 0xCF8;
    public const int PortCount = 8;
    public const uint EnableBit = 0x8000_0000;

    private readonly IBusDevice? _resetControl;
    private uint _address;

    public PciBus Bus { get; }
    public PciHostBridgeMetrics Metrics { get; } = new();

    /// <param name="bus">Bus 0; gets a host bridge function at 00:00.0 if that slot is free.</param>
    /// <param name="resetControl">Handles byte accesses to port 0xCF9 (offset 0), or null to ignore them.</param>
    public PciHostBridge(PciBus bus, IBusDevice? resetControl = null)
    {
        Bus = bus;
        _resetControl = resetControl;
        if (bus.Get(0, 0) is null) bus.Add(0, 0, new PciHostBridgeFunction());
    }

    public BusRange Attach(PioBus bus) => bus.Register(BasePort, PortCount, this, "pci-host");

    public uint ConfigAddress => Volatile.Read(ref _address);

    public void Read(ulong offset, Span<byte> data)
    {
        if (offset < 4)
        {
            if (offset == 0 && data.Length == 4)
            {
                uint a = ConfigAddress;
                data[0] = (byte)a; data[1] = (byte)(a >> 8); data[2] = (byte)(a >> 16); data[3] = (byte)(a >> 24);
            }
            else if (offset == 1 && data.Length == 1 && _resetControl is not null) _resetControl.Read(0, data);
            else data.Fill(0xFF);
            return;
        }
        int dataOffset = (int)offset - 4;
        if (!TryDecode(dataOffset, data.Length, out int slot, out int fn, out int reg)) { data.Fill(0xFF); Interlocked.Increment(ref Metrics.EmptyReads); return; }
        Interlocked.Increment(ref Metrics.ConfigReads);
        Bus.ReadConfig(slot, fn, reg, data);
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (offset < 4)
        {
            // Only a dword write at 0xCF8 sets CONFIG_ADDRESS; byte writes elsewhere (Linux's type-1
            // probe writes 0x01 to 0xCFB) are ignored, except 0xCF9 (reset control).
            if (offset == 0 && data.Length == 4)
                Volatile.Write(ref _address, (uint)(data[0] | data[1] << 8 | data[2] << 16 | data[3] << 24) & 0x80FF_FFFC);
            else if (offset == 1 && data.Length == 1) _resetControl?.Write(0, data);
            return;
        }
        int dataOffset = (int)offset - 4;
        if (!TryDecode(dataOffset, data.Length, out int slot, out int fn, out int reg)) return;
        Interlocked.Increment(ref Metrics.ConfigWrites);
        Bus.WriteConfig(slot, fn, reg, data);
    }

    private bool TryDecode(int dataOffset, int length, out int slot, out int fn, out int reg)
    {
        uint a = ConfigAddress;
        slot = (int)(a >> 11) & 0x1F;
        fn = (int)(a >> 8) & 7;
        reg = (int)(a & 0xFC) + dataOffset;
        int bus = (int)(a >> 16) & 0xFF;
        return (a & EnableBit) != 0 && bus == 0 && dataOffset + length <= 4;
    }

    public PciHostBridgeState SaveState() => new(ConfigAddress);

    public void RestoreState(PciHostBridgeState s) => Volatile.Write(ref _address, s.ConfigAddress & 0x80FF_FFFC);
}
