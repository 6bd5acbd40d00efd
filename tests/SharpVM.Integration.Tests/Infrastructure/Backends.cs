using SharpVM.Cpu;
using SharpVM.Hypervisor;

namespace SharpVM.Integration.Tests.Infrastructure;

/// <summary>The two vCPU backends the same test guests run on: KVM and SharpVM's own CPU.</summary>
public static class Backends
{
    public static TheoryData<string> Both => new("kvm", "emu");

    public static IHypervisor Open(string name) => name switch
    {
        "kvm" => Kvm.Open(),
        "emu" => new EmulatorHypervisor(),
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, "unknown backend"),
    };
}
