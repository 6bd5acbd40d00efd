using System.Buffers.Binary;
using SharpVM.Devices.Bus;

namespace SharpVM.Devices.Interrupts;

/// <summary>
/// The I/O APIC (82093AA register model): 24 input pins, each with a 64-bit redirection entry, MMIO at
/// <see cref="DefaultBaseAddress"/> (IOREGSEL at +0x00, IOWIN at +0x10, EOI register at +0x40 as in
/// version 0x20 parts). Edge pins deliver on a rising edge; level pins deliver while asserted and
/// remote IRR is clear, set remote IRR, and deliver again after the EOI if still asserted.
/// </summary>
/// <remarks>
/// Input levels are logical (true = asserted): the polarity bit is stored and read back but a device's
/// <see cref="IInterruptLine.SetLevel"/> already means "asserted". Masked edges are lost, as on hardware.
/// Thread-safe: one lock; it delivers to local APICs while holding it (lock order IOAPIC, then LAPIC;
/// local APICs send their EOI broadcast after releasing their own lock).
/// </remarks>
public sealed class IoApic : IBusDevice
{
    public const ulong DefaultBaseAddress = 0xFEC0_0000;
    public const ulong MmioSize = 0x1000;
    public const int PinCount = 24;

    /// <summary>Version register: version 0x20 (has the EOI register), max redirection entry 23.</summary>
    public const uint VersionRegister = ((PinCount - 1) << 16) | 0x20;

    private const ulong Masked = 1UL << 16, LevelTrigger = 1UL << 15, RemoteIrr = 1UL << 14,
        DeliveryStatus = 1UL << 12;
    // Writable: vector, delivery mode, destination mode, polarity, trigger mode, mask, destination 63:56.
    private const ulong WritableMask = 0xFF00_0000_0001_AFFFUL;

    private readonly object _lock = new();
    private readonly ApicBus _bus;
    private readonly ulong[] _redirection = new ulong[PinCount];
    private readonly bool[] _level = new bool[PinCount];
    private uint _ioRegSel;
    private uint _id;
    private long _delivered, _coalesced;

    public IoApic(ApicBus bus)
    {
        ArgumentNullException.ThrowIfNull(bus);
        _bus = bus;
        for (int i = 0; i < PinCount; i++) _redirection[i] = Masked;
        bus.EndOfInterruptBroadcast += EndOfInterrupt;
    }

    /// <summary>Interrupt messages sent to local APICs.</summary>
    public long Delivered => Interlocked.Read(ref _delivered);

    /// <summary>Level interrupts held back because remote IRR was still set (or masked).</summary>
    public long Coalesced => Interlocked.Read(ref _coalesced);

    /// <summary>The redirection entry of <paramref name="pin"/> (for tests and debugging).</summary>
    public ulong GetRedirectionEntry(int pin)
    {
        lock (_lock) return _redirection[pin];
    }

    /// <summary>Drives input <paramref name="pin"/> (0..23). Out-of-range pins are ignored.</summary>
    public void SetPin(int pin, bool asserted)
    {
        if ((uint)pin >= PinCount) return;
        lock (_lock)
        {
            bool old = _level[pin];
            _level[pin] = asserted;
            ulong e = _redirection[pin];
            if ((e & LevelTrigger) != 0)
            {
                if (asserted) TryDeliverLocked(pin);
            }
            else if (asserted && !old)
            {
                TryDeliverLocked(pin);
            }
        }
    }

    /// <summary>An EOI for <paramref name="vector"/>: broadcast by a local APIC, or written to the EOI register.</summary>
    public void EndOfInterrupt(int vector)
    {
        lock (_lock)
        {
            for (int pin = 0; pin < PinCount; pin++)
            {
                ulong e = _redirection[pin];
                if ((e & 0xFF) != (ulong)vector || (e & RemoteIrr) == 0) continue;
                _redirection[pin] = e & ~RemoteIrr;
                if ((e & LevelTrigger) != 0 && _level[pin]) TryDeliverLocked(pin);
            }
        }
    }

    private void TryDeliverLocked(int pin)
    {
        ulong e = _redirection[pin];
        if ((e & Masked) != 0)
        {
            Interlocked.Increment(ref _coalesced);
            return;
        }
        bool level = (e & LevelTrigger) != 0;
        if (level && (e & RemoteIrr) != 0)
        {
            Interlocked.Increment(ref _coalesced);
            return;
        }
        var mode = (ApicDeliveryMode)((e >> 8) & 7);
        // Only fixed and lowest-priority interrupts use remote IRR/EOI; NMI/INIT/ExtINT are edge-like.
        bool usesEoi = level && mode is ApicDeliveryMode.Fixed or ApicDeliveryMode.LowestPriority;
        var message = new ApicMessage(mode, (byte)e, (uint)(e >> 56), LogicalDestination: (e & (1UL << 11)) != 0,
            LevelTriggered: usesEoi);
        int accepted = _bus.Deliver(message);
        Interlocked.Increment(ref _delivered);
        if (usesEoi && accepted > 0) _redirection[pin] = e | RemoteIrr;
    }

    // ---------------------------------------------------------------- Snapshot

    public IoApicState SaveState()
    {
        lock (_lock) return new IoApicState(_id, _ioRegSel, [.. _redirection], [.. _level]);
    }

    /// <summary>Restores a saved state. Nothing is delivered: pending work is already in the local APICs' state.</summary>
    public void RestoreState(IoApicState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        if (state.Redirection.Length != PinCount || state.PinLevels.Length != PinCount)
            throw new ArgumentException("IOAPIC state must have 24 redirection entries and pin levels", nameof(state));
        lock (_lock)
        {
            _id = state.Id & 0xF;
            _ioRegSel = state.IoRegSel & 0xFF;
            for (int i = 0; i < PinCount; i++)
            {
                _redirection[i] = state.Redirection[i] & (WritableMask | RemoteIrr);
                _level[i] = state.PinLevels[i];
            }
        }
    }

    // ---------------------------------------------------------------- MMIO

    public void Read(ulong offset, Span<byte> data)
    {
        data.Clear();
        uint value;
        lock (_lock)
        {
            switch (offset & ~3UL)
            {
                case 0x00: value = _ioRegSel; break;
                case 0x10: value = ReadIndirectLocked(_ioRegSel); break;
                default: value = 0; break;
            }
        }
        int within = (int)(offset & 3);
        for (int i = 0; i < data.Length && within + i < 4; i++)
            data[i] = (byte)(value >> (8 * (within + i)));
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (data.Length == 0) return;
        uint value = data.Length >= 4
            ? BinaryPrimitives.ReadUInt32LittleEndian(data)
            : data.Length >= 2 ? BinaryPrimitives.ReadUInt16LittleEndian(data) : data[0];
        switch (offset)
        {
            case 0x00:
                lock (_lock) _ioRegSel = value & 0xFF;
                break;
            case 0x10:
                lock (_lock) WriteIndirectLocked(_ioRegSel, value);
                break;
            case 0x40:
                EndOfInterrupt((int)(value & 0xFF));
                break;
        }
    }

    private uint ReadIndirectLocked(uint index)
    {
        switch (index)
        {
            case 0x00: return _id << 24;
            case 0x01: return VersionRegister;
            case 0x02: return _id << 24; // arbitration ID follows the ID
            case >= 0x10 and < 0x10 + 2 * PinCount:
                ulong e = _redirection[(index - 0x10) >> 1];
                return (index & 1) == 0 ? (uint)e : (uint)(e >> 32);
            default: return 0;
        }
    }

    private void WriteIndirectLocked(uint index, uint value)
    {
        switch (index)
        {
            case 0x00:
                _id = (value >> 24) & 0xF;
                break;
            case >= 0x10 and < 0x10 + 2 * PinCount:
                int pin = (int)(index - 0x10) >> 1;
                ulong old = _redirection[pin];
                ulong merged = (index & 1) == 0
                    ? (old & 0xFFFF_FFFF_0000_0000UL) | value
                    : (old & 0x0000_0000_FFFF_FFFFUL) | ((ulong)value << 32);
                ulong e = (merged & WritableMask) | (old & RemoteIrr);
                if ((e & LevelTrigger) == 0) e &= ~RemoteIrr; // edge pins have no remote IRR
                _redirection[pin] = e & ~DeliveryStatus;
                // Unmasking (or switching to level) with the line asserted delivers now.
                if ((e & LevelTrigger) != 0 && _level[pin]) TryDeliverLocked(pin);
                break;
            // Version and arbitration registers are read-only; other indices are reserved.
        }
    }
}

/// <summary>The IOAPIC's state for snapshots.</summary>
public sealed record IoApicState(uint Id, uint IoRegSel, ulong[] Redirection, bool[] PinLevels);
