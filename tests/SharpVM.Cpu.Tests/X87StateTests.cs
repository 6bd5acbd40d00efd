using Iced.Intel;
using SharpVM.Hypervisor;
using SharpVM.Memory;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Cpu.Tests;

/// <summary>
/// x87 behaviour the host comparison cannot show (it would trap in the test process, or it needs
/// CR0 settings user mode cannot have): #MF for unmasked exceptions, #NM/#UD from CR0.EM/TS, and the
/// FNSAVE/FRSTOR and FNSTENV/FLDENV images.
/// </summary>
public sealed class X87StateTests
{
    private const ulong Data = 0x200000;

    private static VcpuExit Run(TestGuest g, Action<Assembler> code)
    {
        g.Load(TestGuest.CodeAddr, a =>
        {
            a.mov(rbx, (long)Data);
            code(a);
            a.hlt();
        });
        g.Cpu.SetRegisters(new Registers { Rsp = TestGuest.StackTop, Rip = TestGuest.CodeAddr, Rflags = 2 });
        return g.Run();
    }

    [Fact]
    public void UnmaskedZeroDivideRaisesMfAtTheNextWaitingInstruction()
    {
        using var g = new TestGuest();
        g.W16(Data, 0x037F & ~0x4); // ZM clear
        var exit = Run(g, a =>
        {
            a.fninit();
            a.fldcw(__word_ptr[rbx]);
            a.fld1();
            a.fldz();
            a.fdivp(st1, st0);         // 1/0: ZE, unmasked: pending
            a.fnstsw(ax);              // non-waiting: no #MF
            a.mov(__word_ptr[rbx + 2], ax);
            a.db(0x9B);                // FWAIT: #MF
            a.mov(__dword_ptr[rbx + 8], 1);
        });
        Assert.Equal(VcpuExitReason.Halt, exit.Reason);
        Assert.Equal(16, g.Vector);
        ushort fsw = (ushort)g.R32(Data + 2);
        Assert.Equal(0x04, fsw & 0x3F);          // ZE only
        Assert.Equal(0x8080, fsw & 0x8080);      // ES and B
        Assert.Equal(0u, g.R32(Data + 8));       // the store after FWAIT never ran
        // The masked response was stored: +infinity in ST(0).
        Assert.Equal(0x8000_0000_0000_0000UL, g.Cpu.FpuSignificand[(g.Cpu.Fsw >> 11) & 7]);
    }

    [Fact]
    public void MaskedExceptionsDoNotFault()
    {
        using var g = new TestGuest();
        var exit = Run(g, a =>
        {
            a.fninit();
            a.fld1();
            a.fldz();
            a.fdivp(st1, st0);
            a.db(0x9B);
            a.fnstsw(ax);
            a.mov(__word_ptr[rbx], ax);
        });
        Assert.Equal(VcpuExitReason.Halt, exit.Reason);
        Assert.Null(g.Vector);
        Assert.Equal(0x04u, g.R32(Data) & 0xFF);
    }

    [Theory]
    [InlineData(0x4UL, true, 7)]   // EM: x87 #NM
    [InlineData(0x4UL, false, 6)]  // EM: MMX #UD
    [InlineData(0x8UL, true, 7)]   // TS: #NM
    [InlineData(0x8UL, false, 7)]
    public void Cr0EmAndTsStopFpuAndMmxInstructions(ulong cr0Bit, bool x87, int vector)
    {
        using var g = new TestGuest();
        var s = g.Cpu.GetSpecialRegisters();
        s.Cr0 |= cr0Bit;
        g.Cpu.SetSpecialRegisters(s);
        var exit = Run(g, a =>
        {
            if (x87) a.fld1();
            else a.paddb(mm0, mm1);
        });
        Assert.Equal(VcpuExitReason.Halt, exit.Reason);
        Assert.Equal(vector, g.Vector);
    }

    [Fact]
    public void FnsaveStoresTheImageAndInitialisesFrstorBringsItBack()
    {
        using var g = new TestGuest();
        var exit = Run(g, a =>
        {
            a.fninit();
            a.fldpi();
            a.fld1();
            a.fnsave(__[rbx]);
            a.fnstsw(ax);
            a.mov(__word_ptr[rbx + 200], ax);   // after FNSAVE: initialised
            a.frstor(__[rbx]);
            a.fstp(__tword_ptr[rbx + 300]);     // 1.0
            a.fstp(__tword_ptr[rbx + 320]);     // pi
        });
        Assert.Equal(VcpuExitReason.Halt, exit.Reason);
        Assert.Null(g.Vector);
        Assert.Equal(0x037Fu, g.R32(Data) & 0xFFFF);
        Assert.Equal(6u << 11, g.R32(Data + 4) & 0x3800);        // TOP = 6
        Assert.Equal(0x0FFFu, g.R32(Data + 8) & 0xFFFF);          // R6, R7 valid; the rest empty
        Assert.Equal(0x8000_0000_0000_0000UL, g.R64(Data + 28));  // ST(0) = 1.0
        Assert.Equal(0x3FFFu, g.R32(Data + 36) & 0xFFFF);
        Assert.Equal(0xC90F_DAA2_2168_C235UL, g.R64(Data + 38));  // ST(1) = pi (round to nearest)
        Assert.Equal(0u, g.R32(Data + 200) & 0x3800);             // FNSAVE initialised: TOP = 0
        Assert.Equal(0x8000_0000_0000_0000UL, g.R64(Data + 300));
        Assert.Equal(0xC90F_DAA2_2168_C235UL, g.R64(Data + 320));
        Assert.Equal(0, g.Cpu.Ftw);                                // both popped again
    }

    [Fact]
    public void FnstenvMasksExceptionsAndFldenvRestoresTheTags()
    {
        using var g = new TestGuest();
        g.W16(Data + 100, 0x0372); // some exceptions unmasked
        var exit = Run(g, a =>
        {
            a.fninit();
            a.fldcw(__word_ptr[rbx + 100]);
            a.fldz();
            a.fnstenv(__[rbx]);
            a.fnstcw(__word_ptr[rbx + 40]);
            a.fninit();
            a.fldenv(__[rbx]);
            a.fnstcw(__word_ptr[rbx + 44]);
        });
        Assert.Equal(VcpuExitReason.Halt, exit.Reason);
        Assert.Equal(0x0372u, g.R32(Data) & 0xFFFF);
        Assert.Equal(0x7FFFu, g.R32(Data + 8) & 0xFFFF);   // R7 holds a zero (tag 01), the rest empty (11)
        Assert.Equal(0x037Fu, g.R32(Data + 40) & 0xFFFF);  // FNSTENV masked everything
        Assert.Equal(0x0372u, g.R32(Data + 44) & 0xFFFF);  // FLDENV brought the saved word back
        Assert.Equal(0x80, g.Cpu.Ftw);
    }

    /// <summary>The WAIT-prefixed forms (FSTCW, FSTSW, FSTENV, FINIT, FCLEX) run as WAIT plus the FN* instruction.</summary>
    [Fact]
    public void WaitingFormsOfTheControlInstructions()
    {
        using var g = new TestGuest();
        var exit = Run(g, a =>
        {
            a.fninit();
            a.fld1();
            a.fldz();
            a.fdivp(st1, st0);                    // ZE (masked)
            a.db(0x9B, 0xD9, 0x3B);               // FSTCW [rbx]
            a.db(0x9B, 0xDF, 0xE0);               // FSTSW AX
            a.mov(__word_ptr[rbx + 2], ax);
            a.db(0x9B, 0xD9, 0x73, 0x10);         // FSTENV [rbx+16]
            a.db(0x9B, 0xDB, 0xE2);               // FCLEX
            a.db(0x9B, 0xDF, 0xE0);
            a.mov(__word_ptr[rbx + 4], ax);
            a.db(0x9B, 0xDB, 0xE3);               // FINIT
            a.db(0x9B, 0xDF, 0xE0);
            a.mov(__word_ptr[rbx + 6], ax);
        });
        Assert.Equal(VcpuExitReason.Halt, exit.Reason);
        Assert.Null(g.Vector);
        Assert.Equal(0x037Fu, g.R32(Data) & 0xFFFF);
        Assert.Equal(0x3804u, g.R32(Data + 2) & 0xFFFF);       // TOP = 7, ZE
        Assert.Equal(0x3804u, g.R32(Data + 16 + 4) & 0xFFFF);  // the environment's status word
        Assert.Equal(0x3800u, g.R32(Data + 4) & 0xFFFF);       // FCLEX cleared the flags, not TOP
        Assert.Equal(0u, g.R32(Data + 6) & 0xFFFF);            // FINIT
    }
}
