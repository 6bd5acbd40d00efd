using System.Collections.Concurrent;
using SharpVM.Devices.Bus;
using SharpVM.Vmm;
using SharpVM.Vmm.Exits;

namespace SharpVM.Integration.Tests.Infrastructure;

/// <summary>One access a test device saw.</summary>
public readonly record struct Access(ulong Offset, int Width, ulong Value, bool IsWrite, int ThreadId);

/// <summary>Records every access and answers reads with a pattern derived from offset and width.</summary>
public sealed class RecordingDevice : IBusDevice
{
    public ConcurrentQueue<Access> Accesses { get; } = new();
    public Action<Access>? OnWrite { get; set; }

    /// <summary>What a read of <paramref name="width"/> bytes at <paramref name="offset"/> returns.</summary>
    public static ulong Pattern(ulong offset, int width) =>
        (0x8877_6655_4433_2211UL + offset * 0x0101_0101_0101_0101UL) & (width == 8 ? ulong.MaxValue : (1UL << (8 * width)) - 1);

    public void Read(ulong offset, Span<byte> data)
    {
        ulong value = Pattern(offset, data.Length);
        for (int i = 0; i < data.Length; i++) data[i] = (byte)(value >> (8 * i));
        Accesses.Enqueue(new Access(offset, data.Length, value, false, Environment.CurrentManagedThreadId));
    }

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        ulong value = 0;
        for (int i = 0; i < data.Length && i < 8; i++) value |= (ulong)data[i] << (8 * i);
        var access = new Access(offset, data.Length, value, true, Environment.CurrentManagedThreadId);
        Accesses.Enqueue(access);
        OnWrite?.Invoke(access);
    }

    public Access[] Writes => Accesses.Where(a => a.IsWrite).ToArray();
    public Access[] Reads => Accesses.Where(a => !a.IsWrite).ToArray();
}

/// <summary>
/// Like QEMU's isa-debug-exit: a guest write ends the VM with the written value as its exit code.
/// Test guests that run with an in-kernel irqchip (where HLT never exits) end through it.
/// </summary>
public sealed class DebugExitDevice(VirtualMachine vm) : IBusDevice
{
    public const ushort Port = 0xF4;

    public void Read(ulong offset, Span<byte> data) => data.Fill(0xFF);

    public void Write(ulong offset, ReadOnlySpan<byte> data) =>
        vm.RequestStop(new VmStopReport(VmStopKind.Requested, $"the guest wrote {data[0]} to the debug-exit port", GuestExitCode: data[0]));
}
