using System.Buffers.Binary;
using SharpVM.Vmm.Boot;

namespace SharpVM.Vmm.Tests.Boot;

public class KernelImageTests
{
    [Fact]
    public void BzImage_header_is_parsed()
    {
        var elf = TestKernels.Elf(TestKernels.Code(0x3000));
        var k = KernelImage.Parse(TestKernels.BzImage(TestKernels.Lz4LegacyPayload(elf), initSize: 0x123000), "bz");
        Assert.Equal(KernelFormat.BzImage, k.Format);
        var h = k.Header!;
        Assert.Equal(0x020F, h.Version);
        Assert.Equal("2.15", h.VersionText);
        Assert.Equal(1024, h.SetupSize);
        Assert.Equal(0x7Fu, h.Xloadflags);
        Assert.Equal(0x20_0000u, h.KernelAlignment);
        Assert.True(h.RelocatableKernel);
        Assert.Equal(0x100_0000ul, h.PrefAddress);
        Assert.Equal(0x123000u, h.InitSize);
        Assert.Equal(0x7FFu, h.CmdlineSize);
        Assert.Equal(0x300u, h.PayloadOffset);
        Assert.Equal(0x26C - 0x1F1, h.Raw.Length);
        Assert.Equal(PayloadCompression.Lz4Legacy, k.PayloadCompression);
    }

    [Theory]
    [InlineData("lz4")]
    [InlineData("gzip")]
    public void BzImage_payload_decompresses_to_the_embedded_elf(string kind)
    {
        var elf = TestKernels.Elf(TestKernels.Code(0x5000), pvhEntry: 0x1000123);
        var payload = kind == "lz4" ? TestKernels.Lz4LegacyPayload(elf) : TestKernels.GzipPayload(elf);
        var k = KernelImage.Parse(TestKernels.BzImage(payload), "bz");
        Assert.Equal(kind == "lz4" ? PayloadCompression.Lz4Legacy : PayloadCompression.Gzip, k.PayloadCompression);
        var vmlinux = k.Decompress();
        Assert.Equal(elf, vmlinux.Image.ToArray());
        Assert.Equal(TestKernels.LoadAddress, vmlinux.Entry);
        Assert.Equal(0x1000123ul, vmlinux.PvhEntry);
        var seg = Assert.Single(vmlinux.Segments);
        Assert.Equal(TestKernels.LoadAddress, seg.PhysicalAddress);
        Assert.Equal(0x5000ul, seg.FileSize);
        Assert.Equal(0x6000ul, seg.MemorySize);
    }

    [Theory]
    [InlineData(new byte[] { 0xFD, (byte)'7', (byte)'z', (byte)'X', (byte)'Z', 0, 1, 2 }, PayloadCompression.Xz)]
    [InlineData(new byte[] { 0x28, 0xB5, 0x2F, 0xFD, 0, 0, 0, 0 }, PayloadCompression.Zstd)]
    [InlineData(new byte[] { (byte)'B', (byte)'Z', (byte)'h', (byte)'9', 0, 0, 0, 0 }, PayloadCompression.Bzip2)]
    [InlineData(new byte[] { 0x5D, 0, 0, 0x80, 0, 0, 0, 0 }, PayloadCompression.Lzma)]
    [InlineData(new byte[] { 0x89, (byte)'L', (byte)'Z', (byte)'O', 0, 0, 0, 0 }, PayloadCompression.Lzo)]
    [InlineData(new byte[] { 0x1F, 0x8B, 8, 0, 0, 0, 0, 0 }, PayloadCompression.Gzip)]
    [InlineData(new byte[] { 1, 2, 3, 4, 5, 6, 7, 8 }, PayloadCompression.Unknown)]
    public void Payload_compression_is_detected_by_magic(byte[] payload, PayloadCompression expected)
    {
        Assert.Equal(expected, PayloadDecompressor.Detect(payload));
    }

    [Fact]
    public void Unsupported_compression_names_it_and_the_fallback()
    {
        byte[] xz = [0xFD, (byte)'7', (byte)'z', (byte)'X', (byte)'Z', 0, 1, 2, 3, 4];
        var k = KernelImage.Parse(TestKernels.BzImage(xz), "xz-kernel");
        var e = Assert.Throws<InvalidKernelException>(() => k.Decompress());
        Assert.Contains("Xz", e.Message);
        Assert.Contains("GuestDecompress", e.Message);
    }

    [Fact]
    public void Elf_vmlinux_is_detected_with_its_pvh_note()
    {
        var k = KernelImage.Parse(TestKernels.Elf(TestKernels.Code(64), pvhEntry: 0x1000040), "vmlinux");
        Assert.Equal(KernelFormat.Elf, k.Format);
        Assert.Null(k.Header);
        Assert.Equal(0x1000040ul, k.Elf!.PvhEntry);
        Assert.Null(KernelImage.Parse(TestKernels.Elf(TestKernels.Code(64)), "x").Elf!.PvhEntry);
    }

    [Theory]
    [InlineData("empty")]
    [InlineData("text")]
    [InlineData("random")]
    public void Anything_else_is_not_a_linux_kernel(string what)
    {
        byte[] data = what switch
        {
            "empty" => [],
            "text" => "#!/bin/sh\necho hello\n"u8.ToArray(),
            _ => TestKernels.Code(100_000),
        };
        var e = Assert.Throws<InvalidKernelException>(() => KernelImage.Parse(data, "thing.bin"));
        Assert.StartsWith("thing.bin is not a Linux kernel: ", e.Message);
    }

    [Fact]
    public void Old_boot_protocol_is_refused()
    {
        var bz = TestKernels.BzImage(TestKernels.Lz4LegacyPayload(TestKernels.Elf(TestKernels.Code(16))), version: 0x0205);
        var e = Assert.Throws<InvalidKernelException>(() => KernelImage.Parse(bz, "old"));
        Assert.Contains("2.05", e.Message);
    }

    [Fact]
    public void Elf_with_segments_outside_the_file_is_refused()
    {
        var elf = TestKernels.Elf(TestKernels.Code(64));
        BinaryPrimitives.WriteUInt64LittleEndian(elf.AsSpan(64 + 32), 0x10_0000); // filesz far past the end
        Assert.Throws<InvalidKernelException>(() => KernelImage.Parse(elf, "bad"));
        var elf32 = TestKernels.Elf(TestKernels.Code(64));
        elf32[4] = 1;
        Assert.Contains("32-bit", Assert.Throws<InvalidKernelException>(() => KernelImage.Parse(elf32, "x")).Message);
    }

    [Fact]
    public void Missing_file_is_a_clear_error()
    {
        var e = Assert.Throws<InvalidKernelException>(() => KernelImage.Load("/nonexistent/vmlinuz"));
        Assert.Contains("/nonexistent/vmlinuz", e.Message);
    }
}
