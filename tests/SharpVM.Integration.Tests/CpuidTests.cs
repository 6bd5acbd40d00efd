using Iced.Intel;
using SharpVM.Integration.Tests.Infrastructure;
using SharpVM.Memory;
using SharpVM.Vmm.Exits;
using SharpVM.Vmm.Host;
using SharpVM.Vmm.X86;
using Xunit.Abstractions;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Integration.Tests;

/// <summary>
/// What a guest sees in CPUID's hypervisor leaf. SharpVM always asks KVM for the KVM signature and
/// kvm-clock leaves; on hardware KVM the guest sees exactly that. Under kvm_pvm, KVM_SET_CPUID2 is
/// accepted but CPUID at guest CPL0 returns what the host CPU (itself a guest) reports — this test
/// records which, and asserts the VMM side and, on hardware KVM, the guest side.
/// </summary>
public class CpuidTests(ITestOutputHelper output)
{
    private const ulong Results = 0x20000;

    [Fact]
    public void GuestSeesTheHypervisorLeaf()
    {
        var a = new Assembler(64);
        a.mov(eax, CpuidPolicy.HypervisorBase);
        a.xor(ecx, ecx);
        a.cpuid();
        a.mov(__dword_ptr[Results], eax);
        a.mov(__dword_ptr[Results + 4], ebx);
        a.mov(__dword_ptr[Results + 8], ecx);
        a.mov(__dword_ptr[Results + 12], edx);
        a.mov(eax, 1);
        a.cpuid();
        a.mov(__dword_ptr[Results + 16], ecx);
        a.hlt();

        using var kvm = Kvm.Open();
        var requested = CpuidPolicy.ForVcpu(kvm.GetSupportedCpuid(), 0, 1);
        Assert.Equal("KVMKVMKVM", CpuidPolicy.HypervisorSignature(requested));
        Assert.Contains(requested, e => e.Function == 1 && (e.Ecx & (1u << 31)) != 0);

        using var vm = TestGuest.Create(kvm, TestGuest.Assemble(a, TestGuest.CodeAddress), GuestMode.Long);
        vm.Start();
        var report = vm.WaitForStop(TimeSpan.FromSeconds(30));
        Assert.True(report.Kind == VmStopKind.Halted, report.Describe());

        var m = vm.Memory;
        string seen = CpuidPolicy.Signature(m.Read<uint>(new GuestAddress(Results + 4)), m.Read<uint>(new GuestAddress(Results + 8)), m.Read<uint>(new GuestAddress(Results + 12)));
        bool hypervisorBit = (m.Read<uint>(new GuestAddress(Results + 16)) & (1u << 31)) != 0;
        var host = HostProbe.Probe();
        output.WriteLine($"host KVM: {AcceleratorPolicy.Describe(host.Provider)}; guest CPL0 CPUID 0x40000000 signature \"{seen}\", max leaf 0x{m.Read<uint>(new GuestAddress(Results)):x}; CPUID.1:ECX.hypervisor = {hypervisorBit}");
        if (host.HardwareKvm)
            Assert.Equal("KVMKVMKVM", seen);
        Assert.True(hypervisorBit, "the guest must see that it runs under a hypervisor");
    }
}
