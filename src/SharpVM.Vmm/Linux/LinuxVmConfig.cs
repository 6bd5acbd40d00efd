using SharpVM.Vmm.Boot;

namespace SharpVM.Vmm.Linux;

/// <summary>A Linux guest to boot: the machine, the kernel, its initrd and command line.</summary>
public sealed record LinuxVmConfig
{
    public required VmConfig Machine { get; init; }
    public required string KernelPath { get; init; }
    public string? InitrdPath { get; init; }
    public string CommandLine { get; init; } = LinuxBoot.DefaultCommandLine;
    /// <summary>Auto decompresses a bzImage's payload on the host when SharpVM can (LZ4, gzip).</summary>
    public KernelLoadMode LoadMode { get; init; } = KernelLoadMode.Auto;
}
