using Iced.Intel;
using SharpVM.Integration.Tests.Infrastructure;
using SharpVM.Memory;
using SharpVM.Vmm.Exits;
using SharpVM.Vmm.Vcpus;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Integration.Tests;

/// <summary>Another thread pauses, resumes and stops a vCPU whose guest spins and never exits by itself.</summary>
public class VcpuControlTests
{
    private const ulong Counter = 0x30000;

    [Theory]
    [InlineData("kvm", false)]
    [InlineData("kvm", true)]
    [InlineData("emu", false)]
    [InlineData("emu", true)]
    public void SpinningGuestIsPausedResumedAndStoppedPromptly(string backend, bool userMode)
    {
        // The guest counts forever. At CPL3 it runs on the real CPU and never exits: only the
        // signal kick can get the vCPU thread back.
        var a = new Assembler(64);
        var loop = a.CreateLabel();
        if (userMode) GuestSnippets.EnterUserMode(a, loop);
        a.Label(ref loop);
        a.inc(__qword_ptr[Counter]);
        a.jmp(loop);

        using var hypervisor = Backends.Open(backend);
        using var vm = TestGuest.Create(hypervisor, TestGuest.Assemble(a, TestGuest.CodeAddress), GuestMode.Long);
        var counter = new GuestAddress(Counter);
        vm.Start();
        Assert.True(SpinWait.SpinUntil(() => vm.Memory.Read<ulong>(counter) > 0, TimeSpan.FromSeconds(20)), "the guest never started counting");

        Assert.True(vm.Pause(TimeSpan.FromSeconds(2)), "the vCPU did not pause within 2 s");
        Assert.Equal(VcpuState.Paused, vm.Vcpus[0].State);
        ulong paused = vm.Memory.Read<ulong>(counter);
        Thread.Sleep(100);
        Assert.Equal(paused, vm.Memory.Read<ulong>(counter));

        vm.Resume();
        Assert.True(SpinWait.SpinUntil(() => vm.Memory.Read<ulong>(counter) > paused, TimeSpan.FromSeconds(10)), "the guest did not resume");
        Assert.Equal(VcpuState.Running, vm.Vcpus[0].State);

        Assert.True(vm.Vcpus[0].Stop(TimeSpan.FromSeconds(2)), "the vCPU did not stop within 2 s");
        Assert.Equal(VcpuState.Stopped, vm.Vcpus[0].State);
        Assert.True(vm.Vcpus[0].Statistics.Count(ExitKind.Interrupted) >= 2);
    }
}
