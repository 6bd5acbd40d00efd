using System.Buffers.Binary;
using SharpVM.Memory;
using SharpVM.Vmm.Boot;

namespace SharpVM.Vmm.Tests.Boot;

public sealed class LinuxBootTests : IDisposable
{
    private readonly GuestMemory _memory = GuestMemory.Create(256UL << 20);

    public void Dispose() => _memory.Dispose();

    private static KernelImage LzKernel(int codeSize = 0x8000, ulong? pvh = null) =>
        KernelImage.Parse(TestKernels.BzImage(TestKernels.Lz4LegacyPayload(TestKernels.Elf(TestKernels.Code(codeSize), pvhEntry: pvh))), "bz");

    private byte[] ZeroPage() => _memory.GetSpan(BootLayout.ZeroPage, BootParams.Size).ToArray();

    [Fact]
    public void Host_decompressed_kernel_is_loaded_at_its_physical_address_and_entered_there()
    {
        var setup = LinuxBoot.Load(_memory, LzKernel(pvh: 0x1000010), new LinuxBootOptions("console=ttyS0"));
        Assert.Equal(KernelLoadMode.HostDecompress, setup.Mode);
        Assert.Equal(new GuestAddress(TestKernels.LoadAddress), setup.Entry);
        Assert.Equal(TestKernels.Code(0x8000), _memory.GetSpan(new GuestAddress(TestKernels.LoadAddress), 0x8000).ToArray());
        Assert.Equal(new GuestAddress(TestKernels.LoadAddress + 0x9000), setup.KernelEnd); // code + 0x1000 bss
        Assert.Equal(0x1000010ul, setup.PvhEntry);
        Assert.Equal(BootLayout.ZeroPage, setup.ZeroPage);
    }

    [Fact]
    public void Guest_decompress_mode_loads_the_protected_mode_kernel_at_pref_address_and_enters_at_0x200()
    {
        var k = LzKernel();
        var setup = LinuxBoot.Load(_memory, k, new LinuxBootOptions("quiet", Mode: KernelLoadMode.GuestDecompress));
        Assert.Equal(KernelLoadMode.GuestDecompress, setup.Mode);
        Assert.Equal(new GuestAddress(0x100_0200), setup.Entry);
        Assert.Equal(0xF4, _memory.Read<byte>(setup.Entry));
        Assert.Equal(new GuestAddress(0x100_0000 + 0x40_0000), setup.KernelEnd); // init_size
        var zp = new BootParams();
        ZeroPage().CopyTo(zp.Bytes, 0);
        Assert.Equal(0x100_0000u, zp.ReadU32(SetupHeader.Code32StartOffset));
    }

    [Fact]
    public void Zero_page_has_the_copied_header_loader_cmdline_initrd_rsdp_and_e820()
    {
        var initrd = TestKernels.Code(3 * 4096 + 17);
        var setup = LinuxBoot.Load(_memory, LzKernel(), new LinuxBootOptions("console=ttyS0 root=/dev/vda", initrd, AcpiRsdp: new GuestAddress(0xE0000)));
        var zp = new BootParams();
        ZeroPage().CopyTo(zp.Bytes, 0);
        Assert.Equal(SetupHeader.HdrSMagic, zp.ReadU32(SetupHeader.HeaderOffset));
        Assert.Equal(0xAA55, zp.ReadU16(SetupHeader.BootFlagOffset));
        Assert.Equal(0x020F, zp.ReadU16(SetupHeader.VersionOffset));
        Assert.Equal(0xFF, zp.Bytes[SetupHeader.TypeOfLoaderOffset]);
        Assert.Equal(SetupHeader.LoadedHigh, zp.Bytes[SetupHeader.LoadflagsOffset] & SetupHeader.LoadedHigh);
        Assert.Equal(0, zp.Bytes[BootParams.SentinelOffset]);
        Assert.Equal((uint)BootLayout.CommandLine.Value, zp.ReadU32(SetupHeader.CmdLinePtrOffset));
        Assert.Equal("console=ttyS0 root=/dev/vda",
            BootParams.ReadCommandLine(_memory.GetSpan(BootLayout.CommandLine, 64)));
        Assert.Equal(0xE0000ul, zp.ReadU64(BootParams.AcpiRsdpAddrOffset));

        uint rdImage = zp.ReadU32(SetupHeader.RamdiskImageOffset), rdSize = zp.ReadU32(SetupHeader.RamdiskSizeOffset);
        Assert.Equal((uint)initrd.Length, rdSize);
        Assert.Equal(setup.InitrdAddress.Value, rdImage);
        Assert.Equal(0u, rdImage % 4096);
        Assert.True(rdImage + rdSize <= 256u << 20, "initrd inside RAM");
        Assert.True(rdImage + rdSize > (256u << 20) - 8192, "initrd placed high");
        Assert.True(rdImage >= setup.KernelEnd.Value, "initrd above the kernel");
        Assert.Equal(initrd, _memory.GetSpan(new GuestAddress(rdImage), initrd.Length).ToArray());

        var e820 = BootParams.ReadE820(zp.Bytes);
        Assert.Equal(setup.E820, e820);
    }

    [Fact]
    public void Setup_data_carries_a_fresh_rng_seed()
    {
        byte[] Seed()
        {
            LinuxBoot.Load(_memory, LzKernel(), new LinuxBootOptions("x"));
            var zp = new BootParams();
            ZeroPage().CopyTo(zp.Bytes, 0);
            Assert.Equal(BootLayout.SetupData.Value, zp.ReadU64(SetupHeader.SetupDataOffset));
            var entry = _memory.GetSpan(BootLayout.SetupData, 16 + RngSeed.SeedBytes);
            Assert.Equal(0ul, BinaryPrimitives.ReadUInt64LittleEndian(entry)); // the only entry
            Assert.Equal(RngSeed.SetupRngSeed, BinaryPrimitives.ReadUInt32LittleEndian(entry[8..]));
            Assert.Equal((uint)RngSeed.SeedBytes, BinaryPrimitives.ReadUInt32LittleEndian(entry[12..]));
            return entry[16..].ToArray();
        }
        var first = Seed();
        var second = Seed();
        Assert.NotEqual(first, second);
        Assert.Contains(first, b => b != 0);
    }

    [Fact]
    public void E820_map_for_small_guest()
    {
        var map = E820Map.Build(_memory);
        Assert.Equal(
        [
            new E820Entry(0, 0x9FC00, E820Type.Ram),
            new E820Entry(0x9FC00, 0x400, E820Type.Reserved),
            new E820Entry(0xE0000, 0x20000, E820Type.Reserved),
            new E820Entry(0x100000, (256UL << 20) - 0x100000, E820Type.Ram),
            new E820Entry(0xFEC0_0000, 0x140_0000, E820Type.Reserved),
        ], map);
    }

    [Fact]
    public void E820_map_for_guest_above_4GiB_has_high_ram_and_leaves_the_pci_window_as_a_gap()
    {
        var ranges = MemoryLayout.RamRanges(5UL << 30);
        var map = E820Map.Build(ranges);
        Assert.Contains(new E820Entry(0x100000, MemoryLayout.MmioHoleStart - 0x100000, E820Type.Ram), map);
        Assert.Contains(new E820Entry(0x1_0000_0000, 2UL << 30, E820Type.Ram), map);
        Assert.DoesNotContain(map, e => e.Address < BootLayout.PciMmioWindowEnd && e.End > BootLayout.PciMmioWindowStart);
        for (int i = 1; i < map.Count; i++) Assert.True(map[i - 1].End <= map[i].Address, $"{map[i - 1]} overlaps {map[i]}");
    }

    [Fact]
    public void Identity_page_tables_map_the_first_4GiB_with_2MiB_pages()
    {
        var setup = LinuxBoot.Load(_memory, LzKernel(), new LinuxBootOptions(""));
        Assert.Equal(BootLayout.Pml4, setup.Cr3);
        // Walk the tables for a few addresses.
        foreach (ulong va in new ulong[] { 0, 0x7000, 0x100_0000, 0xBFFF_FFFF, 0xFEE0_0000, 0xFFFF_FFFF })
        {
            ulong pml4e = _memory.Read<ulong>(setup.Cr3 + ((va >> 39) & 511) * 8);
            Assert.Equal(3ul, pml4e & 3);
            ulong pdpte = _memory.Read<ulong>(new GuestAddress(pml4e & ~0xFFFul) + ((va >> 30) & 511) * 8);
            Assert.Equal(3ul, pdpte & 3);
            ulong pde = _memory.Read<ulong>(new GuestAddress(pdpte & ~0xFFFul) + ((va >> 21) & 511) * 8);
            Assert.Equal(0x83ul, pde & 0x83);
            Assert.Equal(va & ~0x1F_FFFFul, pde & ~0xFFFul);
        }
    }

    [Fact]
    public void Gdt_has_flat_64bit_boot_cs_and_ds_and_registers_match()
    {
        var setup = LinuxBoot.Load(_memory, LzKernel(), new LinuxBootOptions(""));
        Assert.Equal(0x00AF_9B00_0000_FFFFul, _memory.Read<ulong>(setup.GdtBase + 0x10));
        Assert.Equal(0x00CF_9300_0000_FFFFul, _memory.Read<ulong>(setup.GdtBase + 0x18));
        var regs = setup.Registers;
        Assert.Equal(setup.Entry.Value, regs.Rip);
        Assert.Equal(BootLayout.ZeroPage.Value, regs.Rsi);
        Assert.Equal(2ul, regs.Rflags);
        var s = setup.SpecialRegisters;
        Assert.Equal(0x10, s.Cs.Selector);
        Assert.True(s.Cs.L);
        Assert.False(s.Cs.Db);
        Assert.Equal(0x18, s.Ds.Selector);
        Assert.Equal(0x18, s.Ss.Selector);
        Assert.Equal(0x8000_0000ul, s.Cr0 & 0x8000_0001ul & 0x8000_0000ul);
        Assert.Equal(1ul, s.Cr0 & 1);
        Assert.Equal(0x20ul, s.Cr4 & 0x20);
        Assert.Equal(0x500ul, s.Efer & 0x500);
        Assert.Equal(BootLayout.Pml4.Value, s.Cr3);
        Assert.Equal(setup.GdtBase.Value, s.Gdt.Base);
        Assert.Equal(47, s.Gdt.Limit);
    }

    [Fact]
    public void Elf_kernel_gets_a_synthetic_header()
    {
        var k = KernelImage.Parse(TestKernels.Elf(TestKernels.Code(0x100), entryOffset: 0x40), "vmlinux");
        var setup = LinuxBoot.Load(_memory, k, new LinuxBootOptions("x"));
        Assert.Equal(new GuestAddress(TestKernels.LoadAddress + 0x40), setup.Entry);
        var zp = ZeroPage();
        Assert.Equal(SetupHeader.HdrSMagic, BinaryPrimitives.ReadUInt32LittleEndian(zp.AsSpan(SetupHeader.HeaderOffset)));
        Assert.Equal(0xAA55, BinaryPrimitives.ReadUInt16LittleEndian(zp.AsSpan(SetupHeader.BootFlagOffset)));
        Assert.Equal(0xFF, zp[SetupHeader.TypeOfLoaderOffset]);
        Assert.True(BinaryPrimitives.ReadUInt16LittleEndian(zp.AsSpan(SetupHeader.VersionOffset)) >= 0x020E, "acpi_rsdp_addr needs 2.14+");
    }

    [Fact]
    public void Command_line_longer_than_cmdline_size_is_refused()
    {
        var k = KernelImage.Parse(TestKernels.BzImage(TestKernels.Lz4LegacyPayload(TestKernels.Elf(TestKernels.Code(16))), cmdlineSize: 10), "bz");
        var e = Assert.Throws<BootLayoutException>(() => LinuxBoot.Load(_memory, k, new LinuxBootOptions("console=ttyS0")));
        Assert.Contains("at most 10", e.Message);
    }

    [Fact]
    public void Kernel_that_does_not_fit_is_a_clear_error()
    {
        using var tiny = GuestMemory.Create(8UL << 20);
        var e = Assert.Throws<BootLayoutException>(() => LinuxBoot.Load(tiny, LzKernel(), new LinuxBootOptions("")));
        Assert.Contains("more memory", e.Message);
    }

    [Fact]
    public void Initrd_that_does_not_fit_above_the_kernel_is_a_clear_error()
    {
        using var small = GuestMemory.Create(32UL << 20);
        var initrd = new byte[20 << 20];
        var e = Assert.Throws<BootLayoutException>(() => LinuxBoot.Load(small, LzKernel(), new LinuxBootOptions("", initrd)));
        Assert.Contains("initrd", e.Message);
        Assert.Contains("do not fit", e.Message);
    }

    [Fact]
    public void Bss_is_zeroed_even_if_memory_was_dirty()
    {
        _memory.GetWritableSpan(new GuestAddress(TestKernels.LoadAddress + 0x8000), 0x1000).Fill(0xCC);
        LinuxBoot.Load(_memory, LzKernel(), new LinuxBootOptions(""));
        Assert.All(_memory.GetSpan(new GuestAddress(TestKernels.LoadAddress + 0x8000), 0x1000).ToArray(), b => Assert.Equal(0, b));
    }

    [Fact]
    public void Guest_mode_without_64bit_entry_is_refused()
    {
        var k = KernelImage.Parse(TestKernels.BzImage(TestKernels.Lz4LegacyPayload(TestKernels.Elf(TestKernels.Code(16))), xloadflags: 0), "k32");
        var e = Assert.Throws<InvalidKernelException>(() => LinuxBoot.Load(_memory, k, new LinuxBootOptions("", Mode: KernelLoadMode.GuestDecompress)));
        Assert.Contains("XLF_KERNEL_64", e.Message);
    }
}
