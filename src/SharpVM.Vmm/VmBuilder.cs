using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using SharpVM.Devices.Bus;
using SharpVM.Hypervisor;
using SharpVM.Hypervisor.Kvm;
using SharpVM.Memory;
using SharpVM.Vmm.Host;
using SharpVM.Vmm.X86;

namespace SharpVM.Vmm;

/// <summary>Turns a <see cref="VmConfig"/> into a live <see cref="VirtualMachine"/> on the chosen backend.</summary>
public static class VmBuilder
{
    /// <summary>Opens the backend the config asks for (auto: see <see cref="AcceleratorPolicy"/>).</summary>
    public static IHypervisor OpenHypervisor(Accelerator accelerator)
    {
        // An explicit choice needs no host probe (nor the report types: VM setup stays lean).
        var chosen = accelerator == Accelerator.Auto ? AcceleratorPolicy.Resolve(accelerator, HostProbe.Probe()).Chosen : accelerator;
        return chosen == Accelerator.Kvm ? KvmHypervisor.Open() : OpenEmulator();
    }

    // Its own method so that the KVM path never loads SharpVM.Cpu (and what it pulls in): a
    // ReadyToRun method resolves the types it names when it is first called.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static IHypervisor OpenEmulator() => new SharpVM.Cpu.EmulatorHypervisor();

    /// <summary>Builds a VM; <paramref name="hypervisor"/> if given is borrowed, otherwise one is opened and owned.</summary>
    public static VirtualMachine Build(VmConfig config, IHypervisor? hypervisor = null)
    {
        config.Validate();
        bool owns = hypervisor is null;
        hypervisor ??= OpenHypervisor(config.Accelerator);
        GuestMemory? memory = null;
        IVirtualMachine? machine = null;
        try
        {
            memory = GuestMemory.Create(config.MemoryBytes, new GuestMemoryOptions(config.HugePages, config.MergeablePages));
            var pio = new PioBus { Logger = config.LoggerFactory.CreateLogger("SharpVM.Devices.PioBus") };
            var mmio = new MmioBus { Logger = config.LoggerFactory.CreateLogger("SharpVM.Devices.MmioBus") };
            machine = hypervisor.CreateVm(memory, pio, mmio, new VmPlatformOptions(config.InterruptController, config.Pit, config.Cpus));
            var vm = new VirtualMachine(config, hypervisor, owns, memory, pio, mmio, machine);
            var supported = hypervisor.GetSupportedCpuid();
            for (int i = 0; i < config.Cpus; i++)
            {
                var vcpu = machine.CreateVcpu(i);
                vcpu.SetCpuid(CpuidPolicy.ForVcpu(supported, i, config.Cpus));
                vm.AddVcpu(vcpu);
            }
            return vm;
        }
        catch
        {
            machine?.Dispose();
            memory?.Dispose();
            if (owns) hypervisor.Dispose();
            throw;
        }
    }
}
