using SharpVM.Devices.Bus;

namespace SharpVM.Devices.Debug;

/// <summary>
/// Like QEMU's isa-debug-exit at port 0xF4: a guest write ends the VM with the written byte as the
/// exit code. Test and demo guests running with an irqchip, where HLT never exits, end through it.
/// </summary>
public sealed class DebugExit(Action<int> exit) : IBusDevice
{
    public const ushort Port = 0xF4;

    public void Read(ulong offset, Span<byte> data) => data.Fill(0xFF);

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (!data.IsEmpty) exit(data[0]);
    }
}
