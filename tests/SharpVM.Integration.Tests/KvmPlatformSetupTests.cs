using Iced.Intel;
using SharpVM.Hypervisor.Kvm;
using SharpVM.Integration.Tests.Infrastructure;
using SharpVM.Interop.Kvm;
using SharpVM.Memory;
using SharpVM.Vmm;
using SharpVM.Vmm.Exits;
using SharpVM.Vmm.Host;
using SharpVM.Vmm.X86;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Integration.Tests;

/// <summary>
/// The platform state SharpVM gives a Linux guest on KVM reaches the kernel (these ioctls work under
/// kvm_pvm too): the firmware-like vCPU state, the PC GSI routing, the in-kernel speaker port.
/// </summary>
public class KvmPlatformSetupTests
{
    [Fact]
    public void FirmwareStateReachesTheKernelOnEveryVcpu()
    {
        using var kvm = Kvm.Open();
        using var vm = VmBuilder.Build(new VmConfig { MemoryBytes = 16UL << 20, Cpus = 2, Accelerator = Accelerator.Kvm }, kvm);
        foreach (var vcpu in vm.Vcpus.Select(v => (KvmVirtualCpu)v.Vcpu))
        {
            vcpu.ApplyFirmwareState();
            var raw = vcpu.Kvm;
            var lapic = raw.GetLapic();
            Assert.Equal(KvmFirmwareState.DeliveryModeExtInt, (KvmFirmwareState.ReadRegister(lapic, KvmFirmwareState.LapicLvtLint0) >> 8) & 7);
            Assert.Equal(KvmFirmwareState.DeliveryModeNmi, (KvmFirmwareState.ReadRegister(lapic, KvmFirmwareState.LapicLvtLint1) >> 8) & 7);
            // KVM sets each LAPIC's ID to the vCPU id: what CPUID leaf 1/0xB and the MADT say.
            Assert.Equal((uint)vcpu.Id, KvmFirmwareState.ReadRegister(lapic, 0x20) >> 24);
            Assert.Equal(KvmFirmwareState.MtrrDefTypeEnabled | KvmFirmwareState.MemoryTypeWriteBack, vcpu.GetMsr(KvmFirmwareState.MsrMtrrDefType));
            Assert.Equal(KvmFirmwareState.MiscEnableFastStrings, vcpu.GetMsr(KvmFirmwareState.MsrMiscEnable) & KvmFirmwareState.MiscEnableFastStrings);
            var fpu = raw.GetFpu();
            Assert.Equal(KvmFirmwareState.FpuControlWord, fpu.Fcw);
            // kvm_pvm accepts KVM_SET_FPU's MXCSR but reads back 0 (measured; FCW round-trips): only hardware KVM can show it.
            if (HostProbe.Probe().HardwareKvm) Assert.Equal(KvmFirmwareState.MxcsrDefault, fpu.Mxcsr);
        }
    }

    [Fact]
    public void ThePcGsiRoutingIsAcceptedAndTheLinesItNamesCanBeDriven()
    {
        using var kvm = Kvm.Open();
        using var vm = VmBuilder.Build(new VmConfig { MemoryBytes = 16UL << 20, Accelerator = Accelerator.Kvm }, kvm);
        // KvmMachine installed the routing; COM1 (4), SCI (9) and a PCI GSI (16) assert and deassert.
        foreach (int gsi in new[] { 0, 4, 9, 16 })
        {
            var line = vm.Machine.GetInterruptLine(gsi);
            line.SetLevel(true);
            line.SetLevel(false);
        }
    }

    [Fact]
    public void TheSpeakerPortIsAnsweredInTheKernel()
    {
        const ulong Result = 0x20000;
        var a = new Assembler(64);
        a.mov(al, 1);          // gate channel 2 on, speaker off
        a.@out(0x61, al);
        a.@in(al, 0x61);
        a.mov(__byte_ptr[Result], al);
        a.mov(al, 0x42);       // with the in-kernel LAPIC a HLT never leaves the kernel: end through the debug-exit port
        a.@out((byte)DebugExitDevice.Port, al);
        a.hlt();

        using var kvm = Kvm.Open();
        using var vm = TestGuest.Create(kvm, TestGuest.Assemble(a, TestGuest.CodeAddress), GuestMode.Long,
            new VmConfig { MemoryBytes = 64UL << 20, Accelerator = Accelerator.Kvm });
        DebugExitDevice.Attach(vm);
        vm.Start();
        var report = vm.WaitForStop(TimeSpan.FromSeconds(30));

        Assert.True(report.GuestExitCode == 0x42, report.Describe());
        Assert.Equal(0, vm.Vcpus[0].Statistics.PortCount(0x61)); // KVM_PIT_SPEAKER_DUMMY: no exit to user space
        Assert.Equal(1, vm.Memory.Read<byte>(new GuestAddress(Result)) & 1); // the gate bit reads back
    }
}
