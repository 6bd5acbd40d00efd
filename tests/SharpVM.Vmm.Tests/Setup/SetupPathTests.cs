using SharpVM.Hypervisor;
using SharpVM.Memory;
using SharpVM.Vmm.Exits;
using SharpVM.Vmm.Host;
using SharpVM.Vmm.X86;

namespace SharpVM.Vmm.Tests.Setup;

/// <summary>
/// The VM-setup code that avoids reflection and CoreLib generics over our structs (so the first VM
/// in a process needs no JIT; see bench/README.md) behaves as the general code did.
/// </summary>
public class SetupPathTests
{
    [Fact]
    public void EveryExitKindCanBeRecordedAndCounted()
    {
        var stats = new ExitStatistics(0);
        var kinds = Enum.GetValues<ExitKind>();
        foreach (var kind in kinds) stats.Record(kind, 5);
        foreach (var kind in kinds) Assert.Equal(1, stats.Count(kind));
        Assert.Equal(kinds.Length, stats.Total);
    }

    [Fact]
    public void AcceleratorOptionValuesAreTheLowerCaseNames()
    {
        foreach (var accelerator in Enum.GetValues<Accelerator>())
            Assert.Equal(accelerator.ToString().ToLowerInvariant(), AcceleratorPolicy.OptionValue(accelerator));
        Assert.Equal("--accel kvm was asked for", AcceleratorPolicy.Resolve(Accelerator.Kvm, null!).Reason);
    }

    private static readonly CpuidEntry[] Supported =
    [
        new(0, 0, 0x1F, 0x756E_6547, 0x6C65_746E, 0x4965_6E69),
        new(1, 0, 0x806F8, 0xAB00_0800, 0x7FFA_FBFF, 0x0FAB_FBFF),
        new(0xB, 0, 1, 2, 0x100, 7, Indexed: true),
        new(0xB, 1, 4, 16, 0x201, 7, Indexed: true),
        new(0x1F, 2, 0, 0, 2, 7, Indexed: true),
        new(0x4000_0000, 0, 0x4000_0001, 0x4B4D_564B, 0x564B_4D56, 0x4D),
    ];

    [Fact]
    public void CpuidForAVcpuSetsItsApicIdTopologyAndTheHypervisorBit()
    {
        var leaves = CpuidPolicy.ForVcpu(Supported, vcpuId: 3, vcpuCount: 4);
        Assert.IsType<CpuidEntry[]>(leaves);
        Assert.Equal(Supported.Length, leaves.Count);
        Assert.Equal(Supported[0], leaves[0]);
        Assert.Equal(Supported[5], leaves[5]);
        // Leaf 1: APIC ID 3 in EBX[31:24], 4 logical CPUs in EBX[23:16], low EBX kept; HTT; hypervisor bit.
        Assert.Equal(0x0304_0800u, leaves[1].Ebx);
        Assert.Equal(0x7FFA_FBFFu | (1u << 31), leaves[1].Ecx);
        Assert.Equal(0x0FAB_FBFFu | (1u << 28), leaves[1].Edx);
        Assert.Equal(Supported[1].Eax, leaves[1].Eax);
        // Topology leaves: x2APIC ID in EDX; SMT level 1 thread, core level all vCPUs, others untouched.
        Assert.Equal((1u, 3u), (leaves[2].Ebx, leaves[2].Edx));
        Assert.Equal((4u, 3u), (leaves[3].Ebx, leaves[3].Edx));
        Assert.Equal((0u, 3u), (leaves[4].Ebx, leaves[4].Edx));
        Assert.All(leaves.Skip(2).Take(3), e => Assert.True(e.Indexed));
    }

    [Fact]
    public void CpuidFromAListIsTheSameAsFromAnArray()
    {
        var fromArray = CpuidPolicy.ForVcpu(Supported, 1, 2);
        var fromList = CpuidPolicy.ForVcpu(new List<CpuidEntry>(Supported), 1, 2);
        Assert.Equal(fromArray, fromList);
        // A single vCPU: no HTT bit added.
        Assert.Equal(Supported[1].Edx, CpuidPolicy.ForVcpu(Supported, 0, 1)[1].Edx);
    }

    [Fact]
    public async Task TheVcpuThreadAndTheStopTaskAreMadeOnFirstUse()
    {
        // The emulator backend, so this runs on any host: a real-mode HLT with interrupts off.
        using var vm = VmBuilder.Build(new VmConfig { MemoryBytes = 2UL << 20, Accelerator = Accelerator.Emu, InterruptController = false, Pit = false });
        var stopped = vm.Stopped;
        Assert.False(stopped.IsCompleted);
        Assert.True(vm.Vcpus[0].Join(TimeSpan.Zero), "a vCPU that was never started has nothing to join");
        vm.Memory.Write(new GuestAddress(0x10000), (byte)0xF4);
        vm.VcpuSetup = vcpu =>
        {
            vcpu.SetSpecialRegisters(GuestCpuSetup.RealMode(vcpu.GetSpecialRegisters(), 0x10000));
            vcpu.SetRegisters(new Registers { Rip = 0, Rflags = 2 });
        };
        vm.Start();
        var report = vm.WaitForStop(TimeSpan.FromSeconds(30));
        Assert.True(report.Kind == VmStopKind.Halted, report.Describe());
        Assert.Same(stopped, vm.Stopped);
        Assert.Same(report, await stopped);
        Assert.Throws<InvalidOperationException>(() => vm.Start());
        Assert.Throws<InvalidOperationException>(() => vm.Vcpus[0].Start());
    }
}
