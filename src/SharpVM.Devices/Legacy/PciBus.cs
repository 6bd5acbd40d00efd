using System.Buffers.Binary;

namespace SharpVM.Devices.Legacy;

/// <summary>
/// A PCI function's configuration space as the host bridge sees it. <paramref name="offset"/> is a
/// byte offset in the 256-byte space (4 KiB for PCIe); accesses are 1, 2 or 4 bytes and never cross
/// a dword. Called on vCPU threads: implementations must be thread-safe.
/// </summary>
public interface IPciFunction
{
    void ReadConfig(int offset, Span<byte> data);
    void WriteConfig(int offset, ReadOnlySpan<byte> data);
}

/// <summary>
/// PCI bus 0: 32 device slots of 8 functions each. Empty slots read as all ones (no device), as on
/// real hardware; devices are added with <see cref="Add"/> (virtio-pci functions later on).
/// </summary>
public sealed class PciBus
{
    public const int Slots = 32, FunctionsPerSlot = 8;
    private readonly IPciFunction?[] _functions = new IPciFunction?[Slots * FunctionsPerSlot];
    private readonly object _lock = new();

    /// <summary>Places <paramref name="function"/> at <paramref name="slot"/>.<paramref name="fn"/>; throws if taken.</summary>
    public void Add(int slot, int fn, IPciFunction function)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(slot);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(slot, Slots);
        ArgumentOutOfRangeException.ThrowIfNegative(fn);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(fn, FunctionsPerSlot);
        lock (_lock)
        {
            if (_functions[slot * FunctionsPerSlot + fn] is not null)
                throw new InvalidOperationException($"PCI 00:{slot:x2}.{fn} is already taken");
            Volatile.Write(ref _functions[slot * FunctionsPerSlot + fn], function);
        }
    }

    /// <summary>The first free slot (function 0), or -1.</summary>
    public int FirstFreeSlot()
    {
        lock (_lock)
            for (int s = 0; s < Slots; s++)
                if (_functions[s * FunctionsPerSlot] is null) return s;
        return -1;
    }

    public IPciFunction? Get(int slot, int fn) => Volatile.Read(ref _functions[slot * FunctionsPerSlot + fn]);

    public void ReadConfig(int slot, int fn, int offset, Span<byte> data)
    {
        var f = Get(slot, fn);
        if (f is null) data.Fill(0xFF);
        else f.ReadConfig(offset, data);
    }

    public void WriteConfig(int slot, int fn, int offset, ReadOnlySpan<byte> data) => Get(slot, fn)?.WriteConfig(offset, data);
}

/// <summary>
/// The host bridge function at 00:00.0 (vendor Intel 0x8086, device 0x0D57, class 06:00:00). Linux
/// needs a host bridge on bus 0 to trust configuration mechanism #1 when the firmware is old or absent.
/// Its config space is read-only apart from the command register.
/// </summary>
public sealed class PciHostBridgeFunction : IPciFunction
{
    public const ushort VendorId = 0x8086, DeviceId = 0x0D57;
    private readonly byte[] _config = new byte[256];
    private readonly object _lock = new();

    public PciHostBridgeFunction()
    {
        BinaryPrimitives.WriteUInt16LittleEndian(_config, VendorId);
        BinaryPrimitives.WriteUInt16LittleEndian(_config.AsSpan(2), DeviceId);
        _config[0x08] = 0x00; // revision
        _config[0x09] = 0x00; // prog-if
        _config[0x0A] = 0x00; // subclass: host bridge
        _config[0x0B] = 0x06; // class: bridge
        _config[0x0E] = 0x00; // header type 0, single function
    }

    public void ReadConfig(int offset, Span<byte> data)
    {
        lock (_lock)
            for (int i = 0; i < data.Length; i++) data[i] = offset + i < _config.Length ? _config[offset + i] : (byte)0;
    }

    public void WriteConfig(int offset, ReadOnlySpan<byte> data)
    {
        lock (_lock)
            for (int i = 0; i < data.Length; i++)
                if (offset + i is 0x04 or 0x05) _config[offset + i] = data[i]; // command register
    }
}
