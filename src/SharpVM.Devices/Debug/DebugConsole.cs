using SharpVM.Devices.Bus;

namespace SharpVM.Devices.Debug;

/// <summary>
/// The Bochs/QEMU debug console at port 0xE9: each byte the guest writes is passed on as is
/// (reads return 0xE9, which is how guests detect it). Used by micro-guests that have no UART.
/// </summary>
public sealed class DebugConsole(Action<byte> output) : IBusDevice
{
    public const ushort Port = 0xE9;

    public void Read(ulong offset, Span<byte> data) => data.Fill(0xE9);

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        foreach (byte b in data) output(b);
    }
}
