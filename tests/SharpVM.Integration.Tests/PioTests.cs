using Iced.Intel;
using SharpVM.Integration.Tests.Infrastructure;
using SharpVM.Memory;
using SharpVM.Vmm.Exits;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Integration.Tests;

/// <summary>Port I/O of every width, in every CPU mode, on both backends (the real /dev/kvm and SharpVM's own CPU), through the PIO bus.</summary>
public class PioTests
{
    private const ushort OutPort = 0x10, InPort = 0x20;
    private const ulong Results = 0x20000;

    [Theory]
    [InlineData("kvm", GuestMode.Real)]
    [InlineData("kvm", GuestMode.Protected)]
    [InlineData("kvm", GuestMode.Long)]
    [InlineData("emu", GuestMode.Real)]
    [InlineData("emu", GuestMode.Protected)]
    [InlineData("emu", GuestMode.Long)]
    public void OutAndInOfOneTwoAndFourBytesReachTheBus(string backend, GuestMode mode)
    {
        var a = new Assembler(TestGuest.Bitness(mode));
        a.mov(al, 0x12);
        a.@out((byte)OutPort, al);
        a.mov(ax, 0x3456);
        a.@out((byte)OutPort, ax);
        a.mov(eax, 0x789ABCDE);
        a.@out((byte)OutPort, eax);
        a.mov(dx, InPort);
        if (mode == GuestMode.Real)
        {
            // Real mode reaches only 64 KiB through a segment: point DS at the results.
            a.mov(ax, (ushort)(Results >> 4));
            a.mov(ds, ax);
            a.@in(al, dx);
            a.mov(__byte_ptr[0], al);
            a.@in(ax, dx);
            a.mov(__word_ptr[2], ax);
            a.@in(eax, dx);
            a.mov(__dword_ptr[4], eax);
        }
        else
        {
            a.@in(al, dx);
            a.mov(__byte_ptr[Results], al);
            a.@in(ax, dx);
            a.mov(__word_ptr[Results + 2], ax);
            a.@in(eax, dx);
            a.mov(__dword_ptr[Results + 4], eax);
        }
        a.hlt();

        using var hypervisor = Backends.Open(backend);
        using var vm = TestGuest.Create(hypervisor, TestGuest.Assemble(a, TestGuest.CodeAddress), mode);
        var outDevice = new RecordingDevice();
        var inDevice = new RecordingDevice();
        vm.Pio.Register(OutPort, 1, outDevice, "out-recorder");
        vm.Pio.Register(InPort, 1, inDevice, "in-pattern");
        vm.Start();
        var report = vm.WaitForStop(TimeSpan.FromSeconds(30));

        Assert.True(report.Kind == VmStopKind.Halted, report.Describe());
        Assert.Equal([(1, 0x12UL), (2, 0x3456UL), (4, 0x789ABCDEUL)], outDevice.Writes.Select(w => (w.Width, w.Value)));
        Assert.Equal([1, 2, 4], inDevice.Reads.Select(r => r.Width));
        Assert.Equal((byte)RecordingDevice.Pattern(0, 1), vm.Memory.Read<byte>(new GuestAddress(Results)));
        Assert.Equal((ushort)RecordingDevice.Pattern(0, 2), vm.Memory.Read<ushort>(new GuestAddress(Results + 2)));
        Assert.Equal((uint)RecordingDevice.Pattern(0, 4), vm.Memory.Read<uint>(new GuestAddress(Results + 4)));
        var stats = vm.Vcpus[0].Statistics;
        Assert.Equal(3, stats.Count(ExitKind.PioWrite));
        Assert.Equal(3, stats.Count(ExitKind.PioRead));
        Assert.Equal(3, stats.PortCount(OutPort));
        Assert.Equal(1, stats.Count(ExitKind.Halt));
    }

    [Theory]
    [MemberData(nameof(Backends.Both), MemberType = typeof(Backends))]
    public void UnclaimedPortsReadAllOnesAndAreCounted(string backend)
    {
        var a = new Assembler(64);
        a.mov(dx, 0x1234);
        a.@in(eax, dx);
        a.mov(__dword_ptr[Results], eax);
        a.mov(al, 1);
        a.@out(dx, al);
        a.hlt();
        using var hypervisor = Backends.Open(backend);
        using var vm = TestGuest.Create(hypervisor, TestGuest.Assemble(a, TestGuest.CodeAddress), GuestMode.Long);
        vm.Start();
        var report = vm.WaitForStop(TimeSpan.FromSeconds(30));
        Assert.True(report.Kind == VmStopKind.Halted, report.Describe());
        Assert.Equal(0xFFFF_FFFFu, vm.Memory.Read<uint>(new GuestAddress(Results)));
        Assert.Equal(1, vm.Pio.UnclaimedReads);
        Assert.Equal(1, vm.Pio.UnclaimedWrites);
    }

    private sealed class ThrowingDevice : SharpVM.Devices.Bus.IBusDevice
    {
        public int Calls;
        public void Read(ulong offset, Span<byte> data) { Calls++; throw new InvalidOperationException("garbage the device cannot handle"); }
        public void Write(ulong offset, ReadOnlySpan<byte> data) { Calls++; throw new InvalidOperationException("garbage the device cannot handle"); }
    }

    /// <summary>A device that throws while the guest uses it is taken off the bus; the vCPU and the VM go on.</summary>
    [Theory]
    [MemberData(nameof(Backends.Both), MemberType = typeof(Backends))]
    public void DeviceThatThrowsIsTakenOffTheBusAndTheGuestGoesOn(string backend)
    {
        var a = new Assembler(64);
        a.mov(al, 1);
        a.@out((byte)OutPort, al);        // the device throws here
        a.@in(eax, (byte)OutPort);        // now an empty slot: all ones, the device is not called
        a.mov(__dword_ptr[Results], eax);
        a.mov(al, 2);
        a.@out((byte)InPort, al);         // a healthy device still works
        a.hlt();
        using var hypervisor = Backends.Open(backend);
        using var vm = TestGuest.Create(hypervisor, TestGuest.Assemble(a, TestGuest.CodeAddress), GuestMode.Long);
        var broken = new ThrowingDevice();
        var healthy = new RecordingDevice();
        var range = vm.Pio.Register(OutPort, 1, broken, "thrower");
        vm.Pio.Register(InPort, 1, healthy, "healthy");
        vm.Start();
        var report = vm.WaitForStop(TimeSpan.FromSeconds(30));
        Assert.True(report.Kind == VmStopKind.Halted, report.Describe());
        Assert.Equal(1, broken.Calls);
        Assert.Contains("garbage the device cannot handle", range.Failure);
        Assert.Equal(0xFFFF_FFFFu, vm.Memory.Read<uint>(new GuestAddress(Results)));
        Assert.Equal([(1, 2UL)], healthy.Writes.Select(w => (w.Width, w.Value)));
    }
}
