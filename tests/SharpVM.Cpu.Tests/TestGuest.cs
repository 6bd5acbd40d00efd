using Iced.Intel;
using SharpVM.Cpu;
using SharpVM.Hypervisor;
using SharpVM.Memory;

namespace SharpVM.Cpu.Tests;

/// <summary>Records port and MMIO traffic; reads come from <see cref="PortReadValue"/> / <see cref="MmioValues"/>.</summary>
internal sealed class FakeIo : IVcpuIoHandler
{
    public readonly List<(ushort Port, uint Value, int Size)> PioWrites = [];
    public readonly List<(ulong Address, ulong Value, int Size)> MmioWrites = [];
    public readonly List<ulong> MmioReads = [];
    public readonly Dictionary<ulong, ulong> MmioValues = [];
    public uint PortReadValue = 0x12345678;
    public int PioReads;

    public void PioRead(ushort port, Span<byte> data)
    {
        PioReads++;
        for (int i = 0; i < data.Length; i++) data[i] = (byte)(PortReadValue >> (8 * i));
    }

    public void PioWrite(ushort port, ReadOnlySpan<byte> data)
    {
        uint v = 0;
        for (int i = 0; i < data.Length; i++) v |= (uint)data[i] << (8 * i);
        PioWrites.Add((port, v, data.Length));
    }

    public void MmioRead(ulong address, Span<byte> data)
    {
        MmioReads.Add(address);
        ulong v = MmioValues.TryGetValue(address, out var x) ? x : 0xDEADBEEFCAFEF00DUL;
        for (int i = 0; i < data.Length; i++) data[i] = (byte)(v >> (8 * i));
    }

    public void MmioWrite(ulong address, ReadOnlySpan<byte> data)
    {
        ulong v = 0;
        for (int i = 0; i < data.Length; i++) v |= (ulong)data[i] << (8 * i);
        MmioWrites.Add((address, v, data.Length));
    }
}

/// <summary>
/// A tiny guest for tests: 64-bit long mode set up through the public register API the way the VMM
/// does for the Linux 64-bit boot protocol. Identity-mapped first GiB (2 MiB pages, user-accessible),
/// a GDT with kernel/user segments and a TSS, an IDT whose vector v handler is a HLT at
/// <see cref="HandlerBase"/> + 16*v.
/// </summary>
internal sealed class TestGuest : IDisposable
{
    public const ulong GdtAddr = 0x500, Pml4 = 0x1000, Pdpt = 0x2000, Pd = 0x3000, TssAddr = 0x4000, IdtAddr = 0x5000;
    public const ulong HandlerBase = 0x9000, StackTop = 0x80000, Rsp0 = 0x70000, Ist1 = 0x68000, CodeAddr = 0x100000;
    public const ushort KCode = 0x08, KData = 0x10, KCode32 = 0x18, UCode32 = 0x20, UData = 0x28, UCode = 0x30, TssSel = 0x38, KCode16 = 0x48, KData16 = 0x50;

    public GuestMemory Memory { get; }
    public EmulatorVirtualMachine Vm { get; }
    public EmulatorVcpu Cpu { get; }
    public FakeIo Io { get; } = new();

    /// <param name="translated">
    /// True: every block is translated to host code before its first run (<see cref="EmulatorTranslation.Eager"/>),
    /// so the test checks the translator; false: the interpreter runs everything.
    /// </param>
    public TestGuest(ulong ramBytes = 1UL << 30, bool longMode = true, bool translated = false)
    {
        Memory = GuestMemory.Create(ramBytes);
        var hv = new EmulatorHypervisor();
        Vm = (EmulatorVirtualMachine)hv.CreateVm(Memory, new SharpVM.Devices.Bus.PioBus(), new SharpVM.Devices.Bus.MmioBus(), new VmPlatformOptions(InterruptController: false, Pit: false));
        Cpu = Vm.CreateEmulatorVcpu(0);
        Cpu.Translation = translated ? EmulatorTranslation.Eager : EmulatorTranslation.Off;
        Cpu.AttachToCurrentThread();
        WriteTables();
        if (longMode) EnterLongMode();
    }

    public void W64(ulong a, ulong v) => Memory.Write(new GuestAddress(a), v);
    public void W32(ulong a, uint v) => Memory.Write(new GuestAddress(a), v);
    public void W16(ulong a, ushort v) => Memory.Write(new GuestAddress(a), v);
    public void W8(ulong a, byte v) => Memory.Write(new GuestAddress(a), v);
    public ulong R64(ulong a) => Memory.Read<ulong>(new GuestAddress(a));
    public uint R32(ulong a) => Memory.Read<uint>(new GuestAddress(a));
    public byte R8(ulong a) => Memory.Read<byte>(new GuestAddress(a));

    public static ulong Descriptor(uint bas, uint limit, byte access, byte flags) =>
        (limit & 0xFFFFUL) | ((bas & 0xFFFFFFUL) << 16) | ((ulong)access << 40) | (((limit >> 16) & 0xFUL) << 48) |
        ((ulong)(flags & 0xF) << 52) | ((ulong)(bas >> 24) << 56);

    private void WriteTables()
    {
        // GDT
        W64(GdtAddr + 0x00, 0);
        W64(GdtAddr + KCode, Descriptor(0, 0xFFFFF, 0x9B, 0xA));    // 64-bit code, DPL0
        W64(GdtAddr + KData, Descriptor(0, 0xFFFFF, 0x93, 0xC));    // data, DPL0
        W64(GdtAddr + KCode32, Descriptor(0, 0xFFFFF, 0x9B, 0xC));  // 32-bit code, DPL0
        W64(GdtAddr + UCode32, Descriptor(0, 0xFFFFF, 0xFB, 0xC));  // 32-bit code, DPL3
        W64(GdtAddr + UData, Descriptor(0, 0xFFFFF, 0xF3, 0xC));    // data, DPL3
        W64(GdtAddr + UCode, Descriptor(0, 0xFFFFF, 0xFB, 0xA));    // 64-bit code, DPL3
        W64(GdtAddr + TssSel, Descriptor((uint)TssAddr, 0x67, 0x89, 0));
        W64(GdtAddr + TssSel + 8, 0);
        W64(GdtAddr + KCode16, Descriptor(0, 0xFFFF, 0x9B, 0));     // 16-bit code
        W64(GdtAddr + KData16, Descriptor(0, 0xFFFF, 0x93, 0));     // 16-bit data
        // TSS64
        W64(TssAddr + 4, Rsp0);
        W64(TssAddr + 0x24, Ist1);
        // Page tables: identity map of the first GiB with 2 MiB pages, user + writable.
        W64(Pml4, Pdpt | 7);
        W64(Pdpt, Pd | 7);
        for (ulong i = 0; i < 512; i++) W64(Pd + i * 8, (i << 21) | 0x87);
        // IDT: 64-bit interrupt gates, DPL3 so INT n works from user mode.
        for (ulong v = 0; v < 256; v++)
        {
            ulong h = HandlerBase + v * 16;
            ulong lo = (h & 0xFFFF) | ((ulong)KCode << 16) | (0xEEUL << 40) | ((h >> 16 & 0xFFFF) << 48);
            W64(IdtAddr + v * 16, lo);
            W64(IdtAddr + v * 16 + 8, h >> 32);
            W8(h, 0xF4); // hlt
        }
    }

    public void EnterLongMode()
    {
        var s = Cpu.GetSpecialRegisters();
        s.Cr0 = 0x80050033; // PG, WP, NE, ET, MP, PE
        s.Cr3 = Pml4;
        s.Cr4 = 0x6A0;      // OSXMMEXCPT, OSFXSR, PGE, PAE
        s.Efer = 0xD01;     // NXE, LMA, LME, SCE
        s.Cs = Segment.Flat(KCode, 0xB, longMode: true, code: true);
        var data = Segment.Flat(KData, 0x3, longMode: true, code: false);
        s.Ds = s.Es = s.Fs = s.Gs = s.Ss = data;
        s.Gdt = new DescriptorTable { Base = GdtAddr, Limit = 0x57 };
        s.Idt = new DescriptorTable { Base = IdtAddr, Limit = 0xFFF };
        s.Tr = new Segment { Base = TssAddr, Limit = 0x67, Selector = TssSel, Type = 0xB, Present = true };
        s.Ldt = new Segment { Unusable = true };
        Cpu.SetSpecialRegisters(s);
        var r = new Registers { Rsp = StackTop, Rip = CodeAddr, Rflags = 2 };
        Cpu.SetRegisters(r);
    }

    /// <summary>Assembles code at <paramref name="address"/> and writes it into guest RAM; returns its length.</summary>
    public int Load(ulong address, Action<Assembler> build, int bitness = 64)
    {
        var a = new Assembler(bitness);
        build(a);
        var w = new MemoryCodeWriter();
        a.Assemble(w, address);
        Memory.Write(new GuestAddress(address), w.Bytes.ToArray());
        return w.Bytes.Count;
    }

    public VcpuExit Run() => Cpu.Run(Io);

    /// <summary>If the guest stopped in an exception handler stub, its vector.</summary>
    public int? Vector
    {
        get
        {
            ulong rip = Cpu.GetRegisters().Rip;
            if (rip > HandlerBase && rip <= HandlerBase + 256 * 16 && (rip - HandlerBase - 1) % 16 == 0) return (int)((rip - HandlerBase - 1) / 16);
            return null;
        }
    }

    public void Dispose()
    {
        Vm.Dispose();
        Memory.Dispose();
    }
}

internal sealed class MemoryCodeWriter : CodeWriter
{
    public readonly List<byte> Bytes = [];
    public override void WriteByte(byte value) => Bytes.Add(value);
}
