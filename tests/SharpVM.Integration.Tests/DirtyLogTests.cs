using Iced.Intel;
using SharpVM.Integration.Tests.Infrastructure;
using SharpVM.Memory;
using SharpVM.Vmm.Exits;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Integration.Tests;

/// <summary>KVM's dirty log reports exactly the pages the guest wrote.</summary>
public class DirtyLogTests
{
    [Theory]
    [MemberData(nameof(Backends.Both), MemberType = typeof(Backends))]
    public void PagesTheGuestWritesAreDirtyAndOthersAreNot(string backend)
    {
        ulong[] written = [0x10_0000, 0x30_5000, 0x1F0_0000];
        var a = new Assembler(64);
        foreach (var page in written) a.mov(__dword_ptr[page + 0x10], 0xABCD);
        a.mov(eax, __dword_ptr[0x20_0000]); // a read does not dirty a page
        a.hlt();

        using var hypervisor = Backends.Open(backend);
        using var vm = TestGuest.Create(hypervisor, TestGuest.Assemble(a, TestGuest.CodeAddress), GuestMode.Long);
        vm.Machine.EnableDirtyLogging();
        vm.Start();
        var report = vm.WaitForStop(TimeSpan.FromSeconds(30));
        Assert.True(report.Kind == VmStopKind.Halted, report.Describe());

        var log = vm.Machine.TakeDirtyLog();
        var dirty = log.SelectMany(b => b.DirtyPages()).Select(p => p.Value).ToHashSet();
        foreach (var page in written) Assert.Contains(page, dirty);
        Assert.DoesNotContain(0x20_0000UL, dirty);
        Assert.DoesNotContain(0x40_0000UL, dirty);
        // The log was cleared by taking it: nothing ran since.
        Assert.Equal(0, vm.Machine.TakeDirtyLog().Sum(b => b.CountDirty()));
    }
}
