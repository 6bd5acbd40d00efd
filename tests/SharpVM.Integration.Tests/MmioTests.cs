using Iced.Intel;
using SharpVM.Integration.Tests.Infrastructure;
using SharpVM.Memory;
using SharpVM.Vmm.Exits;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Integration.Tests;

/// <summary>MMIO reads and writes of every width reach the device on the MMIO bus; unclaimed MMIO reads all ones.</summary>
public class MmioTests
{
    private const ulong DeviceBase = 0xD000_0000, Unclaimed = 0xE000_0000, Results = 0x20000;

    [Theory]
    [MemberData(nameof(Backends.Both), MemberType = typeof(Backends))]
    public void ReadsAndWritesOfEveryWidthReachTheDevice(string backend)
    {
        var a = new Assembler(64);
        a.mov(rbx, DeviceBase);
        a.mov(__byte_ptr[rbx], 0x11);
        a.mov(__word_ptr[rbx + 0x10], 0x2222);
        a.mov(__dword_ptr[rbx + 0x20], 0x33333333);
        a.mov(rax, 0x4444_4444_4444_4444);
        a.mov(__qword_ptr[rbx + 0x30], rax);
        a.mov(al, __byte_ptr[rbx + 0x40]);
        a.mov(__byte_ptr[Results], al);
        a.mov(ax, __word_ptr[rbx + 0x50]);
        a.mov(__word_ptr[Results + 8], ax);
        a.mov(eax, __dword_ptr[rbx + 0x60]);
        a.mov(__dword_ptr[Results + 16], eax);
        a.mov(rax, __qword_ptr[rbx + 0x70]);
        a.mov(__qword_ptr[Results + 24], rax);
        a.mov(rbx, Unclaimed);
        a.mov(rax, __qword_ptr[rbx]);
        a.mov(__qword_ptr[Results + 32], rax);
        a.hlt();

        using var hypervisor = Backends.Open(backend);
        using var vm = TestGuest.Create(hypervisor, TestGuest.Assemble(a, TestGuest.CodeAddress), GuestMode.Long);
        var device = new RecordingDevice();
        var range = vm.Mmio.Register(DeviceBase, 0x1000, device, "mmio-recorder");
        vm.Start();
        var report = vm.WaitForStop(TimeSpan.FromSeconds(30));

        Assert.True(report.Kind == VmStopKind.Halted, report.Describe());
        Assert.Equal([(0x00UL, 1, 0x11UL), (0x10UL, 2, 0x2222UL), (0x20UL, 4, 0x33333333UL), (0x30UL, 8, 0x4444_4444_4444_4444UL)],
            device.Writes.Select(w => (w.Offset, w.Width, w.Value)));
        Assert.Equal([(0x40UL, 1), (0x50UL, 2), (0x60UL, 4), (0x70UL, 8)], device.Reads.Select(r => (r.Offset, r.Width)));
        var memory = vm.Memory;
        Assert.Equal((byte)RecordingDevice.Pattern(0x40, 1), memory.Read<byte>(new GuestAddress(Results)));
        Assert.Equal((ushort)RecordingDevice.Pattern(0x50, 2), memory.Read<ushort>(new GuestAddress(Results + 8)));
        Assert.Equal((uint)RecordingDevice.Pattern(0x60, 4), memory.Read<uint>(new GuestAddress(Results + 16)));
        Assert.Equal(RecordingDevice.Pattern(0x70, 8), memory.Read<ulong>(new GuestAddress(Results + 24)));
        Assert.Equal(ulong.MaxValue, memory.Read<ulong>(new GuestAddress(Results + 32)));
        var stats = vm.Vcpus[0].Statistics;
        Assert.Equal(4, stats.Count(ExitKind.MmioWrite));
        Assert.Equal(5, stats.Count(ExitKind.MmioRead));
        Assert.Equal(1, stats.UnclaimedMmio);
        Assert.Contains(stats.MmioRanges(), r => r.RangeIndex == range.Index && r.Count == 8);
    }
}
