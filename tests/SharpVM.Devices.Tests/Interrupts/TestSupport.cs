using System.Buffers.Binary;
using SharpVM.Devices.Bus;
using SharpVM.Devices.Interrupts;
using SharpVM.Devices.Timers;

namespace SharpVM.Devices.Tests.Interrupts;

/// <summary>An interrupt line that records what it was driven with.</summary>
internal sealed class RecordingLine : IInterruptLine
{
    private int _rising;
    private bool _level;

    public int RisingEdges => Volatile.Read(ref _rising);
    public bool Level => _level;

    public void SetLevel(bool asserted)
    {
        if (asserted && !_level) Interlocked.Increment(ref _rising);
        _level = asserted;
    }
}

internal static class Io
{
    public static void Out8(this IBusDevice d, ulong offset, byte value) => d.Write(offset, [value]);

    public static byte In8(this IBusDevice d, ulong offset)
    {
        Span<byte> b = stackalloc byte[1];
        d.Read(offset, b);
        return b[0];
    }

    public static void Write32(this IBusDevice d, ulong offset, uint value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        d.Write(offset, b);
    }

    public static uint Read32(this IBusDevice d, ulong offset)
    {
        Span<byte> b = stackalloc byte[4];
        d.Read(offset, b);
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    public static void Out8(this DeviceBus bus, ulong port, byte value) => bus.Write(port, [value]);

    public static byte In8(this DeviceBus bus, ulong port)
    {
        Span<byte> b = stackalloc byte[1];
        bus.Read(port, b);
        return b[0];
    }

    public static void Write32(this DeviceBus bus, ulong address, uint value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        bus.Write(address, b);
    }

    public static uint Read32(this DeviceBus bus, ulong address)
    {
        Span<byte> b = stackalloc byte[4];
        bus.Read(address, b);
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    /// <summary>Programs an IOAPIC redirection entry through IOREGSEL/IOWIN.</summary>
    public static void SetRedirection(this IoApic ioapic, int pin, ulong entry)
    {
        ioapic.Write32(0x00, (uint)(0x10 + 2 * pin));
        ioapic.Write32(0x10, (uint)entry);
        ioapic.Write32(0x00, (uint)(0x11 + 2 * pin));
        ioapic.Write32(0x10, (uint)(entry >> 32));
    }

    public static uint ReadIndirect(this IoApic ioapic, uint index)
    {
        ioapic.Write32(0x00, index);
        return ioapic.Read32(0x10);
    }
}

/// <summary>N local APICs on one bus with a manual clock, software-enabled.</summary>
internal sealed class ApicRig
{
    public readonly ManualDeviceClock Clock = new();
    public readonly ApicBus Bus = new();
    public readonly LocalApic[] Apics;
    public readonly int[] Wakes;

    public ApicRig(int count, bool enable = true)
    {
        Apics = new LocalApic[count];
        Wakes = new int[count];
        for (int i = 0; i < count; i++)
        {
            int index = i;
            Apics[i] = new LocalApic(Bus, Clock, i, (uint)i, isBootstrapProcessor: i == 0);
            Apics[i].WakeUp = () => Interlocked.Increment(ref Wakes[index]);
            if (enable) Apics[i].WriteRegister(Reg.Svr, 0x1FF);
        }
    }
}

/// <summary>xAPIC register offsets.</summary>
internal static class Reg
{
    public const uint Id = 0x20, Version = 0x30, Tpr = 0x80, Ppr = 0xA0, Eoi = 0xB0, Ldr = 0xD0, Dfr = 0xE0,
        Svr = 0xF0, Isr = 0x100, Tmr = 0x180, Irr = 0x200, Esr = 0x280, IcrLow = 0x300, IcrHigh = 0x310,
        LvtTimer = 0x320, LvtLint0 = 0x350, LvtLint1 = 0x360, LvtError = 0x370, InitialCount = 0x380,
        CurrentCount = 0x390, DivideConfig = 0x3E0;
}
