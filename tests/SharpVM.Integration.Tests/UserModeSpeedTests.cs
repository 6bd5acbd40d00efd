using System.Diagnostics;
using System.Runtime.InteropServices;
using Iced.Intel;
using SharpVM.Integration.Tests.Infrastructure;
using SharpVM.Interop.Libc;
using SharpVM.Vmm.Exits;
using Xunit.Abstractions;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Integration.Tests;

/// <summary>
/// A CPU-bound loop at guest CPL3 runs on the real CPU: it is timed inside the VM (between two port
/// writes) and the same machine code is timed natively on the host; the ratio is reported. The test
/// asserts the guest computed the right result; speed belongs to bench/, this only reports it.
/// </summary>
public class UserModeSpeedTests(ITestOutputHelper output)
{
    // Marks are MMIO writes: under kvm_pvm, IRETQ to CPL3 cannot raise IOPL (RFLAGS.IOPL reads back
    // 0), so IN/OUT at CPL3 fault there; MMIO works at any privilege level on every KVM.
    private const ulong MarkAddress = 0xD000_0000;
    private const long Iterations = 50_000_000;

    /// <summary>rax = sum of rcx..1 computed with a dependent add chain; rcx counts down.</summary>
    private static void EmitLoop(Assembler a)
    {
        var loop = a.CreateLabel();
        a.xor(eax, eax);
        a.mov(rcx, Iterations);
        a.Label(ref loop);
        a.add(rax, rcx);
        a.dec(rcx);
        a.jnz(loop);
    }

    [Fact]
    public unsafe void CpuBoundLoopAtCpl3RunsAndIsTimedAgainstTheHost()
    {
        var a = new Assembler(64);
        var user = a.CreateLabel();
        var done = a.CreateLabel();
        GuestSnippets.EnterUserMode(a, user);
        a.Label(ref user);
        a.mov(rdx, MarkAddress);
        a.mov(__byte_ptr[rdx], al);
        EmitLoop(a);
        a.mov(__byte_ptr[rdx], al);
        a.Label(ref done);
        a.jmp(done);

        long expected = Iterations * (Iterations + 1) / 2;
        var marks = new List<long>();
        using var kvm = Kvm.Open();
        using var vm = TestGuest.Create(kvm, TestGuest.Assemble(a, TestGuest.CodeAddress), GuestMode.Long);
        var device = new RecordingDevice();
        device.OnWrite = _ =>
        {
            lock (marks) marks.Add(Stopwatch.GetTimestamp());
            if (marks.Count == 2) vm.RequestStop(new VmStopReport(VmStopKind.Requested, "loop done"));
        };
        vm.Mmio.Register(MarkAddress, 0x1000, device, "marks");
        vm.Start();
        var report = vm.WaitForStop(TimeSpan.FromSeconds(60));
        Assert.True(report.Kind == VmStopKind.Requested, report.Describe());
        Assert.Equal(2, marks.Count);
        // The second mark is written with AL = low byte of the sum.
        Assert.Equal((ulong)(expected & 0xFF), device.Writes[1].Value);
        double guestSeconds = Stopwatch.GetElapsedTime(marks[0], marks[1]).TotalSeconds;

        // The same loop, natively: assembled into an executable page and called.
        var native = new Assembler(64);
        EmitLoop(native);
        native.ret();
        using var page = MappedMemory.Anonymous(4096, MemoryProtection.Read | MemoryProtection.Write | MemoryProtection.Execute);
        var code = TestGuest.Assemble(native, (ulong)page.Pointer);
        code.CopyTo(new Span<byte>(page.Pointer, code.Length));
        var function = (delegate* unmanaged<long>)page.Pointer;
        var best = double.MaxValue;
        long result = 0;
        for (int i = 0; i < 3; i++)
        {
            long start = Stopwatch.GetTimestamp();
            result = function();
            best = Math.Min(best, Stopwatch.GetElapsedTime(start).TotalSeconds);
        }
        Assert.Equal(expected, result);
        output.WriteLine($"CPL3 loop of {Iterations:N0} iterations: guest {guestSeconds * 1000:F1} ms, host {best * 1000:F1} ms, guest/host = {guestSeconds / best:F2}x");
    }
}
