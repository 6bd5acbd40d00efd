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

/// <summary>Wires the debug-exit port (0xF4): a guest write ends the VM with that exit code.</summary>
public static class DebugExitDevice
{
    public const ushort Port = SharpVM.Devices.Debug.DebugExit.Port;

    public static void Attach(VirtualMachine vm) =>
        vm.Pio.Register(Port, 1, new SharpVM.Devices.Debug.DebugExit(code =>
            vm.RequestStop(new VmStopReport(VmStopKind.Requested, $"the guest wrote {code} to the debug-exit port", GuestExitCode: code))), "debug-exit");
}
