using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SharpVM.Vmm.Host;

namespace SharpVM.Vmm;

/// <summary>What the user asked for (CLI or API). <see cref="VmBuilder"/> turns it into a live <see cref="VirtualMachine"/>.</summary>
public sealed record VmConfig
{
    public ulong MemoryBytes { get; init; } = 256UL << 20;
    public int Cpus { get; init; } = 1;
    public Accelerator Accelerator { get; init; } = Accelerator.Auto;
    public bool HugePages { get; init; }
    public bool MergeablePages { get; init; }
    /// <summary>In-kernel (or emulated) LAPIC/IOAPIC/PIC. Off only for bare test guests.</summary>
    public bool InterruptController { get; init; } = true;
    public bool Pit { get; init; } = true;
    /// <summary>Time every port/MMIO access for the exit tables (`--stats`); counts are kept regardless.</summary>
    public bool TimeExits { get; init; }
    /// <summary>Where the VM logs its life (start, stop) and its devices' failures; nothing by default.</summary>
    public ILoggerFactory LoggerFactory { get; init; } = NullLoggerFactory.Instance;

    public const int MaxCpus = 255;

    /// <summary>Throws <see cref="ArgumentException"/> naming the bad value.</summary>
    public void Validate()
    {
        if (Cpus < 1 || Cpus > MaxCpus) throw new ArgumentException($"--cpus {Cpus}: must be between 1 and {MaxCpus}");
        if (MemoryBytes < (2UL << 20)) throw new ArgumentException($"--memory {MemoryBytes >> 20}M: at least 2 MiB is needed");
        if (MemoryBytes % 4096 != 0) throw new ArgumentException($"--memory {MemoryBytes}: must be a multiple of 4 KiB");
        if (Pit && !InterruptController) throw new ArgumentException("the PIT needs the interrupt controller");
    }
}
