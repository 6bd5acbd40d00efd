using System.Buffers.Binary;
using System.Text;
using SharpVM.Hypervisor;
using SharpVM.Memory;

namespace SharpVM.Vmm.Boot;

/// <summary>How a bzImage is brought into memory.</summary>
public enum KernelLoadMode
{
    /// <summary>Decompress on the host when the payload's compression is supported, else <see cref="GuestDecompress"/>.</summary>
    Auto,

    /// <summary>Decompress the payload on the host and load the vmlinux ELF: the guest's own decompressor never runs.</summary>
    HostDecompress,

    /// <summary>Load the protected-mode kernel and enter its 64-bit entry (load address + 0x200): it decompresses itself.</summary>
    GuestDecompress,
}

/// <summary>What to boot.</summary>
/// <param name="CommandLine">The kernel command line (ASCII).</param>
/// <param name="Initrd">The initial ramdisk, or empty for none.</param>
/// <param name="AcpiRsdp">Where the ACPI RSDP is (see <c>AcpiTables.Write</c>), reported in boot_params.acpi_rsdp_addr; null for none.</param>
public sealed record LinuxBootOptions(
    string CommandLine,
    ReadOnlyMemory<byte> Initrd = default,
    KernelLoadMode Mode = KernelLoadMode.Auto,
    GuestAddress? AcpiRsdp = null);

/// <summary>
/// The result of loading a kernel: everything the VMM needs to set the boot vCPU's registers for the
/// 64-bit boot protocol. Memory (kernel, initrd, command line, zero page, GDT, page tables) is already
/// written; <see cref="Registers"/> and <see cref="SpecialRegisters"/> give the register values.
/// </summary>
public sealed record LinuxBootSetup
{
    /// <summary>RIP: startup_64 (physical) for a host-decompressed or ELF kernel, load address + 0x200 otherwise.</summary>
    public required GuestAddress Entry { get; init; }

    /// <summary>RSI: struct boot_params.</summary>
    public required GuestAddress ZeroPage { get; init; }

    /// <summary>CR3: the PML4 of the identity map of the first 4 GiB (2 MiB pages).</summary>
    public required GuestAddress Cr3 { get; init; }

    public required GuestAddress GdtBase { get; init; }
    public required ushort GdtLimit { get; init; }
    public required GuestAddress StackPointer { get; init; }

    /// <summary>How the kernel was loaded (never <see cref="KernelLoadMode.Auto"/>).</summary>
    public required KernelLoadMode Mode { get; init; }

    /// <summary>Guest-physical range the kernel occupies (for bzImages in guest mode: up to load + init_size).</summary>
    public required GuestAddress KernelStart { get; init; }
    public required GuestAddress KernelEnd { get; init; }

    public required GuestAddress InitrdAddress { get; init; }
    public required ulong InitrdSize { get; init; }

    /// <summary>The PVH entry from the kernel's Xen ELF note (informational; SharpVM enters at <see cref="Entry"/>).</summary>
    public required ulong? PvhEntry { get; init; }

    public required IReadOnlyList<E820Entry> E820 { get; init; }

    /// <summary>Time spent decompressing the payload on the host (zero when not done).</summary>
    public required TimeSpan DecompressionTime { get; init; }

    public const ulong Cr0Value = 0x8000_0031; // PG | NE | ET | PE
    public const ulong Cr4Value = 0x20;         // PAE
    public const ulong EferValue = 0x500;       // LMA | LME
    public const ulong RflagsValue = 0x2;       // reserved bit 1; interrupts disabled

    /// <summary>General registers at entry: RIP = <see cref="Entry"/>, RSI = <see cref="ZeroPage"/>, RSP, RFLAGS = 2.</summary>
    public Registers Registers => new()
    {
        Rip = Entry.Value,
        Rsi = ZeroPage.Value,
        Rsp = StackPointer.Value,
        Rbp = StackPointer.Value,
        Rflags = RflagsValue,
    };

    /// <summary>
    /// Long mode with paging: CR0 = PG|NE|ET|PE, CR4 = PAE, EFER = LME|LMA, CR3 = <see cref="Cr3"/>;
    /// CS = __BOOT_CS (0x10, 64-bit code), DS/ES/SS/FS/GS = __BOOT_DS (0x18), TR = 0x20 (busy 64-bit TSS),
    /// GDTR = the boot GDT, IDTR empty. Keep ApicBase/Cr8 at the backend's defaults.
    /// </summary>
    public SpecialRegisters SpecialRegisters
    {
        get
        {
            var code = Segment.Flat(BootLayout.BootCs, 0xB, longMode: true, code: true);
            var data = Segment.Flat(BootLayout.BootDs, 0x3, longMode: true, code: false);
            return new SpecialRegisters
            {
                Cs = code,
                Ds = data, Es = data, Fs = data, Gs = data, Ss = data,
                Tr = new Segment { Selector = BootLayout.BootTss, Base = 0, Limit = 0x67, Type = 0xB, Present = true },
                Ldt = new Segment { Selector = 0, Type = 0x2, Present = true, Limit = 0xFFFF },
                Gdt = new DescriptorTable { Base = GdtBase.Value, Limit = GdtLimit },
                Idt = new DescriptorTable { Base = 0, Limit = 0 },
                Cr0 = Cr0Value,
                Cr3 = Cr3.Value,
                Cr4 = Cr4Value,
                Efer = EferValue,
            };
        }
    }
}

/// <summary>
/// Loads a Linux kernel for the x86-64 64-bit boot protocol (Documentation/arch/x86/boot.rst):
/// kernel, initrd, command line, zero page with the e820 map, boot GDT and identity page tables.
/// </summary>
public static class LinuxBoot
{
    /// <summary>
    /// A command line that suits SharpVM's platform: console on COM1, reboot at once on panic (the VMM
    /// sees <c>PlatformEvent.Reset</c>), and no i8042 AUX/MUX/PnP probing (there is no mouse; the
    /// AUX IRQ test would otherwise wait 250 ms). Append " -- command" for the default guest's /init
    /// to run a command and power off.
    /// </summary>
    public const string DefaultCommandLine = "console=ttyS0 panic=-1 i8042.noaux i8042.nomux i8042.nopnp";

    /// <summary>x86's COMMAND_LINE_SIZE: the limit for kernels whose header does not say.</summary>
    public const uint DefaultCommandLineSize = 2048;

    /// <summary>Where Linux wants to run; the usual 64-bit LOAD_PHYSICAL_ADDR.</summary>
    public const ulong DefaultLoadAddress = 0x100_0000;

    /// <summary>Loads <paramref name="kernel"/> into <paramref name="memory"/> and returns the register setup.</summary>
    public static LinuxBootSetup Load(GuestMemory memory, KernelImage kernel, LinuxBootOptions options)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(kernel);
        ArgumentNullException.ThrowIfNull(options);

        // The RAM below 4 GiB that starts at 0: everything the boot protocol points at lives there.
        var low = memory.FindRegion(new GuestAddress(0)) ?? throw new BootLayoutException("guest RAM does not start at address 0");
        ulong lowEnd = low.End.Value;
        if (lowEnd < BootLayout.HighMemory.Value + (1 << 20))
            throw new BootLayoutException($"guest RAM ({memory.Size >> 20} MiB) is too small to boot Linux");

        var mode = options.Mode;
        if (kernel.Format == KernelFormat.Elf) mode = KernelLoadMode.HostDecompress;
        else if (mode == KernelLoadMode.Auto)
            mode = PayloadDecompressor.CanDecompress(kernel.PayloadCompression) ? KernelLoadMode.HostDecompress : KernelLoadMode.GuestDecompress;

        var bp = new BootParams();
        GuestAddress entry, kernelStart, kernelEnd;
        ulong? pvh = null;
        var decompressTime = TimeSpan.Zero;
        uint cmdlineSize = DefaultCommandLineSize - 1;
        uint initrdAddrMax = 0x7FFF_FFFF;

        if (kernel.Header is { } header)
        {
            bp.SetHeader(header);
            cmdlineSize = header.CmdlineSize;
            initrdAddrMax = header.InitrdAddrMax;
        }
        else bp.SetSyntheticHeader();

        if (mode == KernelLoadMode.HostDecompress)
        {
            long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
            var elf = kernel.Decompress();
            if (kernel.Format == KernelFormat.BzImage) decompressTime = System.Diagnostics.Stopwatch.GetElapsedTime(t0);
            kernelStart = new GuestAddress(elf.LowestAddress);
            kernelEnd = new GuestAddress(elf.EndAddress);
            CheckKernelFits(kernel, kernelStart, kernelEnd, lowEnd, memory);
            foreach (var seg in elf.Segments)
            {
                var dst = new GuestAddress(seg.PhysicalAddress);
                memory.Write(dst, elf.Image.Span.Slice((int)seg.FileOffset, (int)seg.FileSize));
                if (seg.MemorySize > seg.FileSize)
                    Zero(memory, dst + seg.FileSize, seg.MemorySize - seg.FileSize);
            }
            entry = new GuestAddress(elf.Entry);
            if (entry < kernelStart || entry >= kernelEnd)
                throw new InvalidKernelException($"{kernel.Name}: ELF entry {entry} is outside its loadable segments [{kernelStart}, {kernelEnd})");
            pvh = elf.PvhEntry;
        }
        else
        {
            var h = kernel.Header!;
            if ((h.Xloadflags & SetupHeader.XlfKernel64) == 0)
                throw new InvalidKernelException($"{kernel.Name}: no 64-bit entry point (xloadflags lacks XLF_KERNEL_64; boot protocol {h.VersionText})");
            ulong load = h.PrefAddress != 0 ? h.PrefAddress : DefaultLoadAddress;
            if (h.KernelAlignment != 0 && load % h.KernelAlignment != 0)
                throw new InvalidKernelException($"{kernel.Name}: pref_address 0x{load:x} is not aligned to kernel_alignment 0x{h.KernelAlignment:x}");
            var pm = kernel.ProtectedModeKernel;
            ulong size = Math.Max((ulong)pm.Length, h.InitSize);
            kernelStart = new GuestAddress(load);
            kernelEnd = kernelStart + size;
            CheckKernelFits(kernel, kernelStart, kernelEnd, lowEnd, memory);
            memory.Write(kernelStart, pm.Span);
            entry = kernelStart + 0x200;
            bp.SetCode32Start((uint)load);
        }
        bp.SetLoader();

        // Command line.
        var cmdline = Encoding.ASCII.GetBytes(options.CommandLine);
        if (cmdline.Length > cmdlineSize)
            throw new BootLayoutException($"kernel command line is {cmdline.Length} bytes; {kernel.Name} accepts at most {cmdlineSize}");
        if (cmdline.Length >= BootLayout.CommandLineMax)
            throw new BootLayoutException($"kernel command line is {cmdline.Length} bytes; SharpVM reserves {BootLayout.CommandLineMax}");
        var cmdBuf = new byte[cmdline.Length + 1];
        cmdline.CopyTo(cmdBuf, 0);
        memory.Write(BootLayout.CommandLine, cmdBuf);
        bp.SetCommandLine(BootLayout.CommandLine.Value);

        // Initrd: as high as allowed, page-aligned, below 3 GiB / initrd_addr_max, above the kernel.
        var initrdAddress = new GuestAddress(0);
        ulong initrdSize = (ulong)options.Initrd.Length;
        if (initrdSize > 0)
        {
            ulong top = Math.Min(lowEnd, (ulong)initrdAddrMax + 1);
            ulong floor = kernelEnd.Value;
            ulong start = initrdSize > top ? 0 : (top - initrdSize) & ~(MemoryLayout.PageSize - 1);
            if (initrdSize > top || start < floor)
                throw new BootLayoutException(
                    $"kernel ({(kernelEnd - kernelStart) >> 20} MiB at {kernelStart}) and initrd ({initrdSize >> 20} MiB) do not fit below " +
                    $"0x{top:x} in {memory.Size >> 20} MiB of guest RAM; give the guest more memory");
            initrdAddress = new GuestAddress(start);
            memory.Write(initrdAddress, options.Initrd.Span);
            bp.SetRamdisk(start, initrdSize);
        }

        // A seed for the kernel's random number generator (see RngSeed; boot protocol 2.09+ has setup_data).
        if (bp.ReadU16(SetupHeader.VersionOffset) >= 0x0209)
        {
            memory.Write(BootLayout.SetupData, RngSeed.Build());
            bp.SetSetupData(BootLayout.SetupData.Value);
        }

        var e820 = E820Map.Build(memory);
        bp.SetE820(e820);
        if (options.AcpiRsdp is { } rsdp) bp.SetAcpiRsdp(rsdp.Value);
        memory.Write(BootLayout.ZeroPage, bp.Bytes);

        WriteGdt(memory);
        WriteIdentityPageTables(memory);

        return new LinuxBootSetup
        {
            Entry = entry,
            ZeroPage = BootLayout.ZeroPage,
            Cr3 = BootLayout.Pml4,
            GdtBase = BootLayout.Gdt,
            GdtLimit = BootLayout.GdtLimit,
            StackPointer = BootLayout.StackTop,
            Mode = mode,
            KernelStart = kernelStart,
            KernelEnd = kernelEnd,
            InitrdAddress = initrdAddress,
            InitrdSize = initrdSize,
            PvhEntry = pvh,
            E820 = e820,
            DecompressionTime = decompressTime,
        };
    }

    private static void CheckKernelFits(KernelImage kernel, GuestAddress start, GuestAddress end, ulong lowEnd, GuestMemory memory)
    {
        if (start < BootLayout.HighMemory)
            throw new InvalidKernelException($"{kernel.Name}: loads at {start}, below 1 MiB, over the boot structures");
        if (end.Value > lowEnd)
            throw new BootLayoutException(
                $"{kernel.Name} needs guest memory up to {end} ({(end.Value + (1 << 20) - 1) >> 20} MiB) but the guest has {memory.Size >> 20} MiB " +
                $"(0x{lowEnd:x} below 4 GiB); give the guest more memory");
    }

    private static void Zero(GuestMemory memory, GuestAddress at, ulong length)
    {
        while (length > 0)
        {
            int n = (int)Math.Min(length, 1 << 20);
            memory.GetWritableSpan(at, n).Clear();
            at += (ulong)n;
            length -= (ulong)n;
        }
    }

    /// <summary>The boot GDT entries: null, null, 64-bit code (0x10), data (0x18), 64-bit busy TSS (0x20, 16 bytes).</summary>
    public static readonly ulong[] GdtEntries =
    [
        0,
        0,
        0x00AF_9B00_0000_FFFF, // __BOOT_CS: present, DPL0, code exec/read accessed, L=1, G=1
        0x00CF_9300_0000_FFFF, // __BOOT_DS: present, DPL0, data read/write accessed, D/B=1, G=1
        0x0000_8B00_0000_0067, // TSS: present, type 0xB (busy 64-bit TSS), base 0, limit 0x67
        0,                     // TSS, upper half (base 63:32)
    ];

    public static void WriteGdt(GuestMemory memory)
    {
        var buf = new byte[GdtEntries.Length * 8];
        for (int i = 0; i < GdtEntries.Length; i++) BinaryPrimitives.WriteUInt64LittleEndian(buf.AsSpan(i * 8), GdtEntries[i]);
        memory.Write(BootLayout.Gdt, buf);
    }

    /// <summary>Identity-maps [0, 4 GiB) with 2 MiB pages: PML4[0] → PDPT, PDPT[0..3] → 4 page directories.</summary>
    public static void WriteIdentityPageTables(GuestMemory memory)
    {
        const ulong present = 1, writable = 2, large = 0x80;
        var page = new byte[4096];
        BinaryPrimitives.WriteUInt64LittleEndian(page, BootLayout.Pdpt.Value | present | writable);
        memory.Write(BootLayout.Pml4, page);
        page.AsSpan().Clear();
        for (int i = 0; i < 4; i++)
            BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(i * 8), (BootLayout.PageDirectories.Value + (ulong)i * 4096) | present | writable);
        memory.Write(BootLayout.Pdpt, page);
        for (int d = 0; d < 4; d++)
        {
            for (int i = 0; i < 512; i++)
            {
                ulong addr = ((ulong)d << 30) | ((ulong)i << 21);
                BinaryPrimitives.WriteUInt64LittleEndian(page.AsSpan(i * 8), addr | present | writable | large);
            }
            memory.Write(BootLayout.PageDirectories + (ulong)d * 4096, page);
        }
    }
}
