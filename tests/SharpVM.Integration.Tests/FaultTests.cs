using Iced.Intel;
using SharpVM.Integration.Tests.Infrastructure;
using SharpVM.Memory;
using SharpVM.Vmm.Exits;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Integration.Tests;

/// <summary>A guest that triple-faults ends the VM with a clear report: reason, registers, instruction.</summary>
public class FaultTests
{
    [Theory]
    [MemberData(nameof(Backends.Both), MemberType = typeof(Backends))]
    public void TripleFaultIsReportedWithRegistersAndTheInstruction(string backend)
    {
        const ulong idtr = 0x4000;
        var a = new Assembler(64);
        a.lidt(__[idtr]);          // an empty IDT: every exception becomes #DF, then a triple fault
        a.mov(rax, 0x1122_3344_5566_7788);
        a.ud2();

        using var hypervisor = Backends.Open(backend);
        using var vm = TestGuest.Create(hypervisor, TestGuest.Assemble(a, TestGuest.CodeAddress), GuestMode.Long);
        vm.Memory.Write(new GuestAddress(idtr), (ushort)0);
        vm.Memory.Write(new GuestAddress(idtr + 2), 0UL);
        vm.Start();
        var report = vm.WaitForStop(TimeSpan.FromSeconds(30));

        Assert.True(report.Kind == VmStopKind.TripleFault, report.Describe());
        Assert.Equal(4, report.ExitCode);
        Assert.Equal(0x1122_3344_5566_7788UL, report.Registers!.Value.Rax);
        string text = report.Describe();
        Assert.Contains("triple fault", text);
        Assert.Contains("rax=1122334455667788", text);
    }
}
