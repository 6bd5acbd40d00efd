using Iced.Intel;
using SharpVM.Devices.Debug;
using SharpVM.Hypervisor;
using SharpVM.Memory;
using SharpVM.Vmm.Exits;
using SharpVM.Vmm.X86;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Vmm.Demo;

/// <summary>
/// A micro-guest assembled at run time: every vCPU starts in 64-bit long mode, prints a greeting with
/// its number on the debug console (port 0xE9) under a spinlock, and the last one to finish ends the
/// VM through the debug-exit port. It shows the whole path — KVM_RUN, PIO exits, the bus, vCPU
/// threads — without a kernel.
/// </summary>
public static class HelloGuest
{
    public const ulong CodeAddress = 0x10000, MessageAddress = 0x18000, LockAddress = 0x19000, DoneAddress = 0x19008;
    public const string Greeting = "Hello from SharpVM micro-guest vCPU ";

    public static byte[] Assemble(int cpus)
    {
        var a = new Assembler(64);
        var acquire = a.CreateLabel();
        var print = a.CreateLabel();
        var printed = a.CreateLabel();
        var wait = a.CreateLabel();
        var idle = a.CreateLabel();
        // spin lock (xchg) so lines from different vCPUs do not interleave
        a.Label(ref acquire);
        a.mov(eax, 1);
        a.xchg(__dword_ptr[LockAddress], eax);
        a.test(eax, eax);
        a.jnz(acquire);
        a.mov(rsi, MessageAddress);
        a.mov(dx, DebugConsole.Port);
        a.Label(ref print);
        a.mov(al, __byte_ptr[rsi]);
        a.test(al, al);
        a.jz(printed);
        a.@out(dx, al);
        a.inc(rsi);
        a.jmp(print);
        a.Label(ref printed);
        a.mov(eax, edi);               // RDI = vCPU number, printed as decimal (up to 255)
        a.mov(ecx, 100);
        a.xor(edx, edx);
        a.div(ecx);
        a.mov(ebx, edx);
        a.add(al, (byte)'0');
        a.mov(dx, DebugConsole.Port);
        a.@out(dx, al);
        a.mov(eax, ebx);
        a.mov(cl, 10);
        a.div(cl);
        a.mov(bl, ah);
        a.add(al, (byte)'0');
        a.@out(dx, al);
        a.mov(al, bl);
        a.add(al, (byte)'0');
        a.@out(dx, al);
        a.mov(al, (byte)'\n');
        a.@out(dx, al);
        a.mov(__dword_ptr[LockAddress], 0);
        a.@lock.inc(__dword_ptr[DoneAddress]);
        a.test(edi, edi);
        a.jnz(idle);
        a.Label(ref wait);             // vCPU 0 waits for everyone, then ends the VM
        a.pause();
        a.cmp(__dword_ptr[DoneAddress], cpus);
        a.jne(wait);
        a.mov(al, 0);
        a.@out((byte)DebugExit.Port, al);
        a.Label(ref idle);
        a.pause();
        a.jmp(idle);
        var stream = new MemoryStream();
        a.Assemble(new StreamCodeWriter(stream), CodeAddress);
        return stream.ToArray();
    }

    /// <summary>Loads the micro-guest into <paramref name="vm"/> and wires its console and exit ports.</summary>
    public static void Install(VirtualMachine vm, Action<byte> console)
    {
        vm.Memory.Write(new GuestAddress(CodeAddress), Assemble(vm.Config.Cpus));
        vm.Memory.Write(new GuestAddress(MessageAddress), System.Text.Encoding.ASCII.GetBytes(Greeting + "\0"));
        vm.Pio.Register(DebugConsole.Port, 1, new DebugConsole(console), "debug-console");
        vm.Pio.Register(DebugExit.Port, 1, new DebugExit(code =>
            vm.RequestStop(new VmStopReport(VmStopKind.PowerOff, "the micro-guest finished", GuestExitCode: code))), "debug-exit");
        DirectStart.Configure(vm, StartMode.Long, vcpu =>
            new Registers { Rip = CodeAddress, Rsp = 0x7000 - (ulong)vcpu.Id * 0x100, Rflags = 2, Rdi = (ulong)vcpu.Id });
    }
}
