using SharpVM.Memory;
using SharpVM.Vmm.Acpi;

namespace SharpVM.Vmm.Boot;

/// <summary>
/// One call to make guest memory bootable: ACPI tables for <paramref name="vcpuCount"/> vCPUs, then the
/// kernel, initrd, command line, zero page (with acpi_rsdp_addr), GDT and page tables.
/// </summary>
public static class LinuxGuest
{
    /// <summary>Prepares <paramref name="memory"/> to boot the kernel at <paramref name="kernelPath"/>.</summary>
    public static LinuxBootSetup Prepare(GuestMemory memory, int vcpuCount, string kernelPath, string? initrdPath, string commandLine,
        KernelLoadMode mode = KernelLoadMode.Auto, AcpiConfig? acpi = null)
    {
        var kernel = KernelImage.Load(kernelPath);
        byte[] initrd = [];
        if (initrdPath is not null)
        {
            try { initrd = File.ReadAllBytes(initrdPath); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new BootLayoutException($"{initrdPath}: cannot read the initrd: {e.Message}");
            }
        }
        var rsdp = AcpiTables.Write(memory, acpi ?? new AcpiConfig { VcpuCount = vcpuCount });
        return LinuxBoot.Load(memory, kernel, new LinuxBootOptions(commandLine, initrd, mode, rsdp));
    }
}
