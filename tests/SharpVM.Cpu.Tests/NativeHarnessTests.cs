using System.Diagnostics;
using Xunit.Abstractions;

namespace SharpVM.Cpu.Tests;

[Collection(NativeCpuCollection.Name)]
public sealed class NativeHarnessTests(ITestOutputHelper output)
{
    [Fact]
    public void HarnessReallyRunsTheInstruction()
    {
        if (!NativeCpu.TryInit(out string? err)) Assert.Fail($"the native test harness is unavailable: {err}");
        var regs = new ulong[16];
        regs[0] = 40; regs[3] = 2;
        var xmm = new ulong[32];
        var outRegs = new ulong[16];
        var outXmm = new ulong[32];
        byte[] addRaxRbx = [0x48, 0x01, 0xD8]; // add rax, rbx
        NativeCpu.Run(addRaxRbx, regs, 2, xmm, outRegs, out ulong flags, outXmm);
        Assert.Equal(42UL, outRegs[0]);
        Assert.Equal(2UL, outRegs[3]);
        regs[0] = ulong.MaxValue; regs[3] = 1;
        NativeCpu.Run(addRaxRbx, regs, 2, xmm, outRegs, out flags, outXmm);
        Assert.Equal(0UL, outRegs[0]);
        Assert.Equal(0x55UL, flags & 0x8D5); // CF PF AF ZF
        var sw = Stopwatch.StartNew();
        for (int k = 0; k < 1000; k++) NativeCpu.Run(addRaxRbx, regs, 2, xmm, outRegs, out flags, outXmm);
        output.WriteLine($"native run: {sw.Elapsed.TotalMicroseconds / 1000:F1} us each");
    }
}
