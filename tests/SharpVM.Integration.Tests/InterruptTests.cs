using Iced.Intel;
using SharpVM.Hypervisor.Kvm;
using SharpVM.Integration.Tests.Infrastructure;
using SharpVM.Memory;
using SharpVM.Vmm;
using static Iced.Intel.AssemblerRegisters;

namespace SharpVM.Integration.Tests;

/// <summary>An interrupt injected through an irqfd reaches the guest's IDT handler via the in-kernel PIC.</summary>
public class InterruptTests
{
    private const ulong Idtr = 0x4000, Idt = 0x5000, HandlerAddress = TestGuest.CodeAddress + 0x1000;
    private const int Irq = 5, VectorBase = 0x20, Vector = VectorBase + Irq;
    private const ushort ReadyPort = 0x10, HandlerPort = 0x11;

    [Fact]
    public void IrqfdInterruptRunsTheGuestHandler()
    {
        var main = new Assembler(64);
        var idle = main.CreateLabel();
        main.lidt(__[Idtr]);
        // Initialise the master 8259: vectors 0x20-0x27, cascade on IRQ2, 8086 mode; unmask only IRQ 5.
        void Out(byte port, byte value) { main.mov(al, value); main.@out(port, al); }
        Out(0x20, 0x11); Out(0x21, VectorBase); Out(0x21, 0x04); Out(0x21, 0x01); Out(0x21, unchecked((byte)~(1 << Irq)));
        Out(0xA1, 0xFF);
        main.sti();
        Out((byte)ReadyPort, 1);
        main.Label(ref idle);
        main.hlt();
        main.jmp(idle);

        var handler = new Assembler(64);
        handler.mov(al, Vector);
        handler.@out((byte)HandlerPort, al);
        handler.mov(al, 0x20);        // non-specific EOI to the PIC
        handler.@out(0x20, al);
        handler.mov(al, 0x42);
        handler.@out((byte)DebugExitDevice.Port, al);
        handler.iretq();

        using var kvm = Kvm.Open();
        var config = new VmConfig { MemoryBytes = 64UL << 20, InterruptController = true, Pit = false };
        using var vm = TestGuest.Create(kvm, TestGuest.Assemble(main, TestGuest.CodeAddress), GuestMode.Long, config);
        vm.Memory.Write(new GuestAddress(HandlerAddress), TestGuest.Assemble(handler, HandlerAddress));
        WriteInterruptGate(vm.Memory, Vector, HandlerAddress);
        vm.Memory.Write(new GuestAddress(Idtr), (ushort)(256 * 16 - 1));
        vm.Memory.Write(new GuestAddress(Idtr + 2), Idt);

        var ready = new ManualResetEventSlim();
        var ports = new RecordingDevice { OnWrite = w => { if (w.Offset == 0) ready.Set(); } };
        vm.Pio.Register(ReadyPort, 2, ports, "test-ports");
        DebugExitDevice.Attach(vm);
        using var line = ((KvmMachine)vm.Machine).CreateIrqfdLine(Irq);
        vm.Start();
        Assert.True(ready.Wait(TimeSpan.FromSeconds(30)), "the guest never got ready");
        Assert.DoesNotContain(ports.Writes, w => w.Offset == 1);

        line.SetLevel(true);
        var report = vm.WaitForStop(TimeSpan.FromSeconds(30));

        Assert.True(report.GuestExitCode == 0x42, report.Describe());
        Assert.Contains(ports.Writes, w => w.Offset == 1 && w.Value == Vector);
    }

    private static void WriteInterruptGate(GuestMemory memory, int vector, ulong handler)
    {
        var gate = new GuestAddress(Idt + (ulong)vector * 16);
        memory.Write(gate, (ushort)handler);
        memory.Write(gate + 2, Vmm.X86.GuestCpuSetup.Code64Selector);
        memory.Write(gate + 4, (ushort)0x8E00);          // present, DPL0, 64-bit interrupt gate
        memory.Write(gate + 6, (ushort)(handler >> 16));
        memory.Write(gate + 8, (uint)(handler >> 32));
        memory.Write(gate + 12, 0u);
    }
}
