using Iced.Intel;
using SharpVM.Integration.Tests.Infrastructure;
using SharpVM.Vmm;
using SharpVM.Vmm.Exits;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Integration.Tests;

/// <summary>Several vCPUs run at once, each on its own thread, meeting at a barrier in guest memory.</summary>
public class MultiVcpuTests
{
    private const ulong Arrived = 0x30000, Done = 0x30008;
    private const ushort IdPort = 0x10;

    [Theory]
    [InlineData("kvm", 2)]
    [InlineData("kvm", 4)]
    [InlineData("emu", 2)]
    [InlineData("emu", 4)]
    public void AllVcpusRunConcurrently(string backend, int cpus)
    {
        // Each vCPU (RDI = its id) checks in, waits for all the others (so they must run at the same
        // time), reports its id, checks out; vCPU 0 ends the VM once everyone has checked out.
        var a = new Assembler(64);
        var wait = a.CreateLabel();
        var spin = a.CreateLabel();
        var waitDone = a.CreateLabel();
        a.@lock.inc(__qword_ptr[Arrived]);
        a.Label(ref wait);
        a.cmp(__qword_ptr[Arrived], cpus);
        a.jne(wait);
        a.mov(eax, edi);
        a.@out((byte)IdPort, eax);
        a.@lock.inc(__qword_ptr[Done]);
        a.test(edi, edi);
        a.jnz(spin);
        a.Label(ref waitDone);
        a.cmp(__qword_ptr[Done], cpus);
        a.jne(waitDone);
        a.mov(al, 7);
        a.@out((byte)DebugExitDevice.Port, al);
        a.Label(ref spin);
        a.pause();
        a.jmp(spin);

        using var hypervisor = Backends.Open(backend);
        var config = new VmConfig { MemoryBytes = 64UL << 20, Cpus = cpus, InterruptController = false, Pit = false };
        using var vm = TestGuest.Create(hypervisor, TestGuest.Assemble(a, TestGuest.CodeAddress), GuestMode.Long, config);
        var ids = new RecordingDevice();
        vm.Pio.Register(IdPort, 1, ids, "vcpu-ids");
        DebugExitDevice.Attach(vm);
        vm.Start();
        var report = vm.WaitForStop(TimeSpan.FromSeconds(60));

        Assert.True(report.GuestExitCode == 7, report.Describe());
        Assert.Equal(Enumerable.Range(0, cpus).Select(i => (ulong)i), ids.Writes.Select(w => w.Value).Order());
        Assert.Equal(cpus, ids.Writes.Select(w => w.ThreadId).Distinct().Count());
        Assert.All(vm.Vcpus, v => Assert.Equal(1, v.Statistics.PortCount(IdPort)));
        Assert.All(vm.Vcpus, v => Assert.True(v.Join(TimeSpan.FromSeconds(5)), $"vCPU {v.Id} did not stop"));
    }
}
