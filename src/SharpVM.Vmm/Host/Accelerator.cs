namespace SharpVM.Vmm.Host;

/// <summary>Which backend runs the guest: `--accel auto|kvm|emu`.</summary>
public enum Accelerator { Auto, Kvm, Emu }

/// <summary>What `auto` resolves to on a host, and why.</summary>
public sealed record AcceleratorChoice(Accelerator Chosen, string Reason);

public static class AcceleratorPolicy
{
    /// <summary>
    /// auto picks KVM only where the host's KVM runs guests on hardware virtualization (kvm_intel /
    /// kvm_amd); under kvm_pvm a stock kernel cannot boot (see HOST-FACTS), so the emulator runs it.
    /// </summary>
    public static AcceleratorChoice Resolve(Accelerator requested, HostReport host)
    {
        if (requested != Accelerator.Auto)
            return new(requested, $"--accel {OptionValue(requested)} was asked for");
        if (host.HardwareKvm)
            return new(Accelerator.Kvm, $"/dev/kvm is provided by {Describe(host.Provider)} with hardware virtualization");
        if (host.Provider == KvmProvider.KvmPvm)
            return new(Accelerator.Emu, "/dev/kvm is kvm_pvm (no VMX/SVM): it cannot run a stock kernel's CPL0 code, so SharpVM's own CPU runs the guest");
        if (!host.DevKvmExists)
            return new(Accelerator.Emu, "there is no /dev/kvm, so SharpVM's own CPU runs the guest");
        return new(Accelerator.Emu, $"/dev/kvm is unusable ({host.KvmError ?? "unknown provider"}), so SharpVM's own CPU runs the guest");
    }

    /// <summary>
    /// The `--accel` spelling of <paramref name="accelerator"/>. A switch, not Enum.ToString: that is
    /// reflection, milliseconds on the first VM's setup path (bench/README.md).
    /// </summary>
    public static string OptionValue(Accelerator accelerator) => accelerator switch
    {
        Accelerator.Auto => "auto",
        Accelerator.Kvm => "kvm",
        Accelerator.Emu => "emu",
        _ => ((int)accelerator).ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    public static string Describe(KvmProvider provider) => provider switch
    {
        KvmProvider.KvmIntel => "kvm_intel",
        KvmProvider.KvmAmd => "kvm_amd",
        KvmProvider.KvmPvm => "kvm_pvm",
        KvmProvider.None => "no kvm module",
        _ => "an unknown kvm module",
    };
}
