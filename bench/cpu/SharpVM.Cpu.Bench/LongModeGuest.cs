using Iced.Intel;
using SharpVM.Cpu;
using SharpVM.Devices.Bus;
using SharpVM.Hypervisor;
using SharpVM.Memory;

/// <summary>
/// The guest of the bench's 64-bit kernel-mode loops (the exception round trip, the many-block dispatch loop): 64 MiB,
/// a GDT with 64-bit code at 0x08 and data at 0x10, the first 64 MiB identity-mapped with 2 MiB pages (PML4 at 0x2000),
/// an IDT at <see cref="Idt"/>, and one emulated vCPU in flat long mode.
/// </summary>
internal sealed class LongModeGuest : IDisposable
{
    public const ulong Idt = 0x5000, StackTop = 0x80000;

    private readonly EmulatorHypervisor _hypervisor = new();
    private readonly IVirtualMachine _vm;

    public GuestMemory Memory { get; } = GuestMemory.Create(64 << 20);
    public EmulatorVcpu Cpu { get; }

    public LongModeGuest()
    {
        W64(0x1008, 0x00AF9B000000FFFF); W64(0x1010, 0x00CF93000000FFFF);
        W64(0x2000, 0x3000 | 3); W64(0x3000, 0x4000 | 3);
        for (ulong k = 0; k < 32; k++) W64(0x4000 + k * 8, (k << 21) | 0x83);
        _vm = _hypervisor.CreateVm(Memory, new PioBus(), new MmioBus(), new VmPlatformOptions());
        Cpu = (EmulatorVcpu)_vm.CreateVcpu(0);
        var s = Cpu.GetSpecialRegisters();
        s.Cr0 = 0x80050033; s.Cr3 = 0x2000; s.Cr4 = 0x20; s.Efer = 0x500;
        s.Cs = Segment.Flat(0x08, 0xB, longMode: true, code: true);
        s.Ds = s.Es = s.Ss = s.Fs = s.Gs = Segment.Flat(0x10, 0x3, longMode: true, code: false);
        s.Gdt = new DescriptorTable { Base = 0x1000, Limit = 0x17 };
        s.Idt = new DescriptorTable { Base = Idt, Limit = 0xFFF };
        Cpu.SetSpecialRegisters(s);
    }

    public void W64(ulong address, ulong value) => Memory.Write(new GuestAddress(address), value);

    /// <summary>Assembles <paramref name="code"/> at <paramref name="address"/> into guest memory.</summary>
    public void Put(ulong address, Action<Assembler> code)
    {
        var a = new Assembler(64);
        code(a);
        var w = new ListWriter();
        a.Assemble(w, address);
        Memory.Write(new GuestAddress(address), w.Bytes.ToArray());
    }

    /// <summary>Points the vCPU at <paramref name="rip"/> with <paramref name="rcx"/>, the stack at <see cref="StackTop"/>, interrupts off.</summary>
    public void Start(ulong rip, ulong rcx = 0) => Cpu.SetRegisters(new Registers { Rip = rip, Rcx = rcx, Rsp = StackTop, Rflags = 2 });

    public void Dispose()
    {
        _vm.Dispose();
        _hypervisor.Dispose();
        Memory.Dispose();
    }
}
