namespace SharpVM.Devices.Bus;

/// <summary>
/// A device that answers reads and writes on a bus range. <c>offset</c> is relative to the start of the
/// range the device was registered at; <c>data.Length</c> is the access width (1, 2, 4 or 8 bytes, or
/// more for string I/O). Called on vCPU threads: implementations must be thread-safe.
/// </summary>
public interface IBusDevice
{
    void Read(ulong offset, Span<byte> data);
    void Write(ulong offset, ReadOnlySpan<byte> data);
}
