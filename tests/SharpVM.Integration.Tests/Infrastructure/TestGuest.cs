using Iced.Intel;
using SharpVM.Hypervisor;
using SharpVM.Memory;
using SharpVM.Vmm;
using SharpVM.Vmm.X86;

namespace SharpVM.Integration.Tests.Infrastructure;

/// <summary>The CPU mode a test guest starts in.</summary>
public enum GuestMode { Real, Protected, Long }

/// <summary>
/// A small guest assembled in C# with Iced, loaded into a fresh VM and started directly in the mode
/// it was written for.
/// </summary>
public static class TestGuest
{
    public const ulong CodeAddress = 0x10000;  // below 1 MiB, so real mode reaches it as 1000:0000
    public const ulong StackTop = 0x7000;

    public static byte[] Assemble(Assembler assembler, ulong address)
    {
        var stream = new MemoryStream();
        assembler.Assemble(new StreamCodeWriter(stream), address);
        return stream.ToArray();
    }

    public static int Bitness(GuestMode mode) => mode switch { GuestMode.Real => 16, GuestMode.Protected => 32, _ => 64 };

    /// <summary>Builds a VM, loads <paramref name="code"/> at <see cref="CodeAddress"/> and arranges for every vCPU to start there in <paramref name="mode"/>.</summary>
    public static VirtualMachine Create(IHypervisor hypervisor, byte[] code, GuestMode mode, VmConfig? config = null,
        Func<IVcpu, Registers, Registers>? adjust = null)
    {
        config ??= new VmConfig { MemoryBytes = 64UL << 20, InterruptController = false, Pit = false };
        var vm = VmBuilder.Build(config, hypervisor);
        vm.Memory.Write(new GuestAddress(CodeAddress), code);
        var startMode = mode switch { GuestMode.Real => StartMode.Real, GuestMode.Protected => StartMode.Protected, _ => StartMode.Long };
        DirectStart.Configure(vm, startMode, vcpu =>
        {
            var regs = new Registers
            {
                Rip = mode == GuestMode.Real ? 0 : CodeAddress,
                Rsp = StackTop - (ulong)vcpu.Id * 0x400,
                Rflags = 2,
                Rdi = (ulong)vcpu.Id,
            };
            return adjust is null ? regs : adjust(vcpu, regs);
        }, CodeAddress);
        return vm;
    }
}

/// <summary>Code snippets test guests share.</summary>
public static class GuestSnippets
{
    public const ulong UserStackTop = 0x6000;

    /// <summary>
    /// From 64-bit CPL0, IRETQ to <paramref name="userCode"/> at CPL3, asking for IOPL 3. (kvm_pvm
    /// ignores the IOPL request: user code there must use MMIO, not IN/OUT.)
    /// </summary>
    public static void EnterUserMode(Assembler a, Label userCode)
    {
        a.push((int)Vmm.X86.GuestCpuSetup.UserDataSelector);
        a.push((int)UserStackTop);
        a.push(0x3002);                     // RFLAGS: IOPL=3, reserved bit 1, interrupts off
        a.push((int)Vmm.X86.GuestCpuSetup.UserCode64Selector);
        a.lea(AssemblerRegisters.rax, AssemblerRegisters.__[userCode]);
        a.push(AssemblerRegisters.rax);
        a.iretq();
    }
}
