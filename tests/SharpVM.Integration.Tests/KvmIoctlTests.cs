using Iced.Intel;
using SharpVM.Hypervisor.Kvm;
using SharpVM.Integration.Tests.Infrastructure;
using SharpVM.Interop.Kvm;
using SharpVM.Interop.Libc;
using SharpVM.Memory;
using SharpVM.Vmm;
using SharpVM.Vmm.Exits;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Integration.Tests;

/// <summary>The KVM ioctls the VMM needs beyond running guests: state get/set round trips, GSI routing, ioeventfd.</summary>
public class KvmIoctlTests
{
    [Fact]
    public void CpuidSetFromAnArrayOrASpanReachesTheKernel()
    {
        using var system = KvmSystem.Open();
        using var vm = system.CreateVm();
        using var vcpu = vm.CreateVcpu(0);
        var supported = system.GetSupportedCpuid();
        Assert.InRange(supported.Length, 2, 256);

        // The array overload (the VM-setup path). KVM adjusts some leaves to the vCPU's state (1, 7,
        // 0xD) and may drop others, so: every leaf read back is one we set, and the basic and extended
        // maximum leaves (0 and 0x80000000), which it keeps as given, come back field for field.
        vcpu.SetCpuid2(supported);
        var set = vcpu.GetCpuid2();
        Assert.All(set, e => Assert.Contains(supported, s => s.Function == e.Function && s.Index == e.Index));
        Assert.True(set.Length >= supported.Length / 2, $"{set.Length} of {supported.Length} leaves came back");
        var kept = supported.Where(e => e.Function is 0 or 0x8000_0000).ToArray();
        Assert.Equal(2, kept.Length);
        foreach (var leaf in kept) Assert.Equal(Fields(leaf), Fields(Assert.Single(set, e => e.Function == leaf.Function)));

        // The span overload: exactly those two leaves are what the kernel then holds.
        vcpu.SetCpuid2((ReadOnlySpan<KvmCpuidEntry2>)kept);
        Assert.Equal(kept.Select(Fields), vcpu.GetCpuid2().Select(Fields));
    }

    private static (uint, uint, uint, uint, uint, uint, uint) Fields(KvmCpuidEntry2 e) => (e.Function, e.Index, e.Flags, e.Eax, e.Ebx, e.Ecx, e.Edx);

    [Fact]
    public unsafe void VcpuStateRoundTripsThroughTheKernel()
    {
        using var system = KvmSystem.Open();
        using var vm = system.CreateVm();
        vm.CreateIrqchip();
        using var vcpu = vm.CreateVcpu(0);
        Assert.True(system.CheckExtension(KvmCapability.ImmediateExit) > 0);
        Assert.True(system.GetVcpuMmapSize() >= 4096);

        // (Under kvm_pvm KVM_GET_FPU reports MXCSR as 0 whatever was set, so the x87 control word is checked.)
        var fpu = vcpu.GetFpu();
        fpu.Fcw = 0x027F; // 53-bit precision instead of the default 64
        vcpu.SetFpu(fpu);
        Assert.Equal(0x027F, vcpu.GetFpu().Fcw);

        var lapic = vcpu.GetLapic();
        lapic.Regs[0x80] = 0x20;   // TPR
        vcpu.SetLapic(lapic);
        var readBack = vcpu.GetLapic();
        Assert.Equal(0x20, readBack.Regs[0x80]);

        var events = vcpu.GetVcpuEvents();
        vcpu.SetVcpuEvents(events);
        Assert.Equal(0, vcpu.GetVcpuEvents().ExceptionPending);

        var mp = vcpu.GetMpState();
        vcpu.SetMpState(new KvmMpState { MpState = 0 });
        Assert.Equal(0u, vcpu.GetMpState().MpState);
        _ = mp;

        Span<KvmMsrEntry> msrs = [new KvmMsrEntry { Index = 0x277 /* PAT */ }];
        Assert.Equal(1, vcpu.GetMsrs(msrs));
        ulong pat = 0x0007_0406_0007_0406;
        Assert.Equal(1, vcpu.SetMsrs([new KvmMsrEntry { Index = 0x277, Data = pat }]));
        vcpu.GetMsrs(msrs);
        Assert.Equal(pat, msrs[0].Data);

        var regs = vcpu.GetRegs();
        regs.Rbx = 0xDEAD_BEEF;
        vcpu.SetRegs(regs);
        Assert.Equal(0xDEAD_BEEFUL, vcpu.GetRegs().Rbx);

        var sregs = vcpu.GetSregs();
        sregs.Cr2 = 0x1234_5000;
        vcpu.SetSregs(sregs);
        Assert.Equal(0x1234_5000UL, vcpu.GetSregs().Cr2);

        var cpuid = system.GetSupportedCpuid();
        vcpu.SetCpuid2(cpuid);
        var set = vcpu.GetCpuid2();
        Assert.Contains(set, e => e.Function == 0x4000_0000);
        Assert.Contains(set, e => e.Function == 1);

        // Real mode, paging off: a linear address translates to itself.
        var t = vcpu.Translate(0x5000);
        Assert.Equal(1, t.Valid);
        Assert.Equal(0x5000UL, t.PhysicalAddress);

        if (system.CheckExtension(KvmCapability.Xcrs) > 0)
        {
            var xcrs = vcpu.GetXcrs();
            vcpu.SetXcrs(xcrs);
            Assert.Equal(xcrs.NrXcrs, vcpu.GetXcrs().NrXcrs);
        }
    }

    [Fact]
    public void GsiRoutingAcceptsIrqchipAndMsiRoutes()
    {
        using var system = KvmSystem.Open();
        using var vm = system.CreateVm();
        vm.CreateIrqchip();
        var routes = new List<KvmIrqRoutingEntry>();
        for (uint gsi = 0; gsi < 16; gsi++)
        {
            if (gsi != 2) routes.Add(new KvmIrqRoutingEntry { Gsi = gsi, Type = KvmIrqRoutingEntry.TypeIrqchip, IrqchipOrAddressLo = gsi < 8 ? 0u : 1u, PinOrAddressHi = gsi % 8 });
            routes.Add(new KvmIrqRoutingEntry { Gsi = gsi, Type = KvmIrqRoutingEntry.TypeIrqchip, IrqchipOrAddressLo = 2, PinOrAddressHi = gsi == 0 ? 2 : gsi });
        }
        routes.Add(new KvmIrqRoutingEntry { Gsi = 24, Type = KvmIrqRoutingEntry.TypeMsi, IrqchipOrAddressLo = 0xFEE0_0000, MsiData = 0x41 });
        vm.SetGsiRouting(routes.ToArray());
        vm.IrqLine(24, true); // an MSI route fires on the rising edge; must be accepted
    }

    [Fact]
    public void IoeventfdSignalsWithoutAnExitToUserSpace()
    {
        const byte Doorbell = 0x70, Other = 0x71;
        var a = new Assembler(64);
        a.mov(al, 1);
        for (int i = 0; i < 5; i++) a.@out(Doorbell, al);
        a.@out(Other, al);
        a.hlt();

        using var kvm = Kvm.Open();
        using var vm = TestGuest.Create(kvm, TestGuest.Assemble(a, TestGuest.CodeAddress), GuestMode.Long);
        using var doorbell = new EventFd(nonBlocking: true);
        ((KvmMachine)vm.Machine).Vm.Ioeventfd(doorbell, Doorbell, 1, pio: true);
        var other = new RecordingDevice();
        vm.Pio.Register(Other, 1, other, "other");
        vm.Start();
        var report = vm.WaitForStop(TimeSpan.FromSeconds(30));

        Assert.True(report.Kind == VmStopKind.Halted, report.Describe());
        Assert.Equal(5UL, doorbell.Consume());                     // the kernel counted every write
        Assert.Equal(0, vm.Vcpus[0].Statistics.PortCount(Doorbell)); // and none reached user space
        Assert.Single(other.Writes);
    }
}
