namespace SharpVM.Hypervisor;

/// <summary>
/// Where a vCPU sends port and MMIO accesses. The VMM implements it over its buses (and counts
/// them); both backends call it on the vCPU thread, mid-instruction on the emulator.
/// </summary>
public interface IVcpuIoHandler
{
    void PioRead(ushort port, Span<byte> data);
    void PioWrite(ushort port, ReadOnlySpan<byte> data);
    void MmioRead(ulong address, Span<byte> data);
    void MmioWrite(ulong address, ReadOnlySpan<byte> data);
}
