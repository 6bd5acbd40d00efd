using Iced.Intel;
using SharpVM.Memory;
using SharpVM.Vmm.Boot;
using Xunit.Abstractions;

namespace SharpVM.Vmm.Tests.Boot;

/// <summary>
/// Tests on the real Debian kernel built by guest/build-default-guest.sh. They fail, naming the
/// script, when it has not been run: the kernel is part of the project's test material.
/// </summary>
public sealed class RealKernelTests(ITestOutputHelper output)
{
    public static string GuestDirectory =>
        Path.Combine(Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } x ? x
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"), "sharpvm", "guest");

    public static string KernelPath => Path.Combine(GuestDirectory, "vmlinuz");
    public static string InitrdPath => Path.Combine(GuestDirectory, "initramfs.cpio.gz");

    private static KernelImage LoadRealKernel()
    {
        Assert.True(File.Exists(KernelPath),
            $"The default guest kernel {KernelPath} is missing: run guest/build-default-guest.sh (as root) to build it.");
        return KernelImage.Load(KernelPath);
    }

    [Fact]
    public void Debian_kernel_is_a_bzImage_with_an_lz4_legacy_payload()
    {
        var k = LoadRealKernel();
        Assert.Equal(KernelFormat.BzImage, k.Format);
        var h = k.Header!;
        Assert.True(h.Version >= 0x020F, $"protocol {h.VersionText}");
        Assert.Equal(SetupHeader.XlfKernel64, h.Xloadflags & SetupHeader.XlfKernel64);
        Assert.Equal(0x100_0000ul, h.PrefAddress);
        Assert.True(h.RelocatableKernel);
        Assert.Equal(PayloadCompression.Lz4Legacy, k.PayloadCompression);
    }

    [Fact]
    public void Lz4_payload_decompresses_to_vmlinux_whose_entry_is_startup_64()
    {
        var k = LoadRealKernel();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var elf = k.Decompress();
        output.WriteLine($"decompressed {k.Payload.Length} -> {elf.Image.Length} bytes in {sw.ElapsedMilliseconds} ms");
        Assert.InRange(elf.Image.Length, 20 << 20, 200 << 20);
        // x86-64 vmlinux links ENTRY(phys_startup_64): startup_64 is the first byte of .text, at LOAD_PHYSICAL_ADDR.
        Assert.Equal(0x100_0000ul, elf.Entry);
        Assert.Equal(0x100_0000ul, elf.LowestAddress);
        var text = elf.Segments.First(s => s.PhysicalAddress == elf.Entry);
        Assert.Equal(0xFFFF_FFFF_8100_0000ul, text.VirtualAddress);
        // startup_64 begins "lea rsp, [rip+...]" (the stack for verify_cpu), then "lea rdi, [rip+...]" (_text).
        var code = elf.Image.Slice((int)text.FileOffset, 64).ToArray();
        var decoder = Decoder.Create(64, new ByteArrayCodeReader(code));
        decoder.IP = text.VirtualAddress;
        var first = decoder.Decode();
        output.WriteLine($"startup_64: {first}");
        Assert.Equal(Mnemonic.Lea, first.Mnemonic);
        Assert.Equal(Register.RSP, first.Op0Register);
        Assert.True(first.IsIPRelativeMemoryOperand);
        Assert.NotNull(elf.PvhEntry); // CONFIG_PVH=y: the Xen PHYS32_ENTRY note is there
        output.WriteLine($"PVH entry 0x{elf.PvhEntry:x}, {elf.Segments.Count} PT_LOAD segments, end 0x{elf.EndAddress:x}");
    }

    /// <summary>Our LZ4 decoder agrees byte for byte with the reference one (the lz4 command, Debian package lz4).</summary>
    [Fact]
    public void Lz4_decoder_matches_the_reference_lz4_tool()
    {
        var k = LoadRealKernel();
        string? lz4 = new[] { "/usr/bin/lz4", "/usr/local/bin/lz4" }.FirstOrDefault(File.Exists);
        Assert.True(lz4 is not null, "the lz4 command is missing (apt-get install lz4): it is the reference this test compares against");
        string dir = Directory.CreateTempSubdirectory("sharpvm-lz4-").FullName;
        try
        {
            // lz4 -d stops at the size Linux appends (it is not a frame magic) with a warning; strip it first.
            File.WriteAllBytes(Path.Combine(dir, "payload.lz4"), k.Payload[..^4].ToArray());
            var psi = new System.Diagnostics.ProcessStartInfo(lz4!, "-d -f -q payload.lz4 vmlinux.bin") { WorkingDirectory = dir, RedirectStandardError = true };
            using (var p = System.Diagnostics.Process.Start(psi)!)
            {
                string err = p.StandardError.ReadToEnd();
                p.WaitForExit();
                Assert.True(p.ExitCode == 0, $"lz4 -d failed: {err}");
            }
            var reference = File.ReadAllBytes(Path.Combine(dir, "vmlinux.bin"));
            var ours = k.Decompress().Image;
            Assert.Equal(reference.Length, ours.Length);
            Assert.True(ours.Span.SequenceEqual(reference), "decoded bytes differ from lz4 -d");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Debian_kernel_and_initramfs_load_into_a_512MiB_guest()
    {
        var k = LoadRealKernel();
        Assert.True(File.Exists(InitrdPath), $"{InitrdPath} is missing: run guest/build-default-guest.sh (as root) to build it.");
        using var memory = GuestMemory.Create(512UL << 20);
        var setup = LinuxBoot.Load(memory, k, new LinuxBootOptions("console=ttyS0", File.ReadAllBytes(InitrdPath)));
        output.WriteLine($"entry {setup.Entry}, kernel [{setup.KernelStart}, {setup.KernelEnd}), initrd {setup.InitrdAddress}+{setup.InitrdSize}, " +
                         $"host decompression {setup.DecompressionTime.TotalMilliseconds:F0} ms");
        Assert.Equal(KernelLoadMode.HostDecompress, setup.Mode);
        Assert.Equal(new GuestAddress(0x100_0000), setup.Entry);
        Assert.True(setup.InitrdAddress >= setup.KernelEnd);
        // The first instruction is in guest memory at the entry.
        Assert.Equal(0x48, memory.Read<byte>(setup.Entry)); // REX.W of lea rsp, [rip+...]
    }

    [Fact]
    public void Debian_kernel_in_guest_decompress_mode_uses_init_size()
    {
        var k = LoadRealKernel();
        using var memory = GuestMemory.Create(512UL << 20);
        var setup = LinuxBoot.Load(memory, k, new LinuxBootOptions("console=ttyS0", Mode: KernelLoadMode.GuestDecompress));
        Assert.Equal(new GuestAddress(0x100_0200), setup.Entry);
        Assert.Equal(0x100_0000ul + k.Header!.InitSize, setup.KernelEnd.Value);
    }
}

public sealed class LinuxGuestTests
{
    [Fact]
    public void Prepare_writes_acpi_tables_and_points_boot_params_at_the_rsdp()
    {
        string dir = Directory.CreateTempSubdirectory("sharpvm-boot-").FullName;
        try
        {
            string kernel = Path.Combine(dir, "vmlinuz"), initrd = Path.Combine(dir, "initrd");
            File.WriteAllBytes(kernel, TestKernels.BzImage(TestKernels.Lz4LegacyPayload(TestKernels.Elf(TestKernels.Code(0x4000)))));
            File.WriteAllBytes(initrd, new byte[10_000]);
            using var memory = GuestMemory.Create(128UL << 20);
            var setup = LinuxGuest.Prepare(memory, 2, kernel, initrd, "console=ttyS0");
            Assert.Equal(0xE0000ul, memory.Read<ulong>(setup.ZeroPage + BootParams.AcpiRsdpAddrOffset));
            Assert.True(memory.GetSpan(new GuestAddress(0xE0000), 8).SequenceEqual("RSD PTR "u8));
            Assert.Equal(10_000ul, setup.InitrdSize);
            Assert.Throws<BootLayoutException>(() => LinuxGuest.Prepare(memory, 2, kernel, Path.Combine(dir, "missing"), ""));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
