using SharpVM.Memory;
using SharpVM.Vmm.Boot;

namespace SharpVM.Vmm.Tests.Boot;

/// <summary>
/// Mutation fuzzing of the kernel parsers and loader with a fixed seed: whatever the bytes, the only
/// failures allowed are <see cref="InvalidKernelException"/> and <see cref="BootLayoutException"/>
/// (and <see cref="InvalidDataException"/> from the raw LZ4 block decoder), never an out-of-range access.
/// </summary>
public sealed class KernelParserFuzzTests : IDisposable
{
    private readonly GuestMemory _memory = GuestMemory.Create(64UL << 20);

    public void Dispose() => _memory.Dispose();

    private void ParseAndLoad(byte[] image)
    {
        try
        {
            var k = KernelImage.Parse(image, "fuzz");
            LinuxBoot.Load(_memory, k, new LinuxBootOptions("console=ttyS0", new byte[4096], KernelLoadMode.Auto));
        }
        catch (InvalidKernelException) { }
        catch (BootLayoutException) { }
    }

    private static void Mutate(byte[] data, Random rng, int regionStart, int regionLength)
    {
        int flips = rng.Next(1, 8);
        for (int i = 0; i < flips; i++)
        {
            int at = regionStart + rng.Next(regionLength);
            data[at] = rng.Next(3) switch { 0 => (byte)rng.Next(256), 1 => 0xFF, _ => 0x00 };
        }
    }

    [Theory]
    [InlineData("lz4")]
    [InlineData("gzip")]
    [InlineData("elf")]
    public void Mutated_kernels_fail_only_with_kernel_errors(string kind)
    {
        var elf = TestKernels.Elf(TestKernels.Code(0x2000), pvhEntry: 0x1000100);
        byte[] original = kind switch
        {
            "lz4" => TestKernels.BzImage(TestKernels.Lz4LegacyPayload(elf, blockSize: 2048)),
            "gzip" => TestKernels.BzImage(TestKernels.GzipPayload(elf)),
            _ => elf,
        };
        // A seed per kind that is the same in every run (string.GetHashCode is randomized per process: with it, each
        // run fuzzed other inputs, and a truncated header reached an out-of-range read only now and then).
        var rng = new Random(kind switch { "lz4" => 1, "gzip" => 2, _ => 3 } ^ 12345);
        for (int iteration = 0; iteration < 1500; iteration++)
        {
            var image = (byte[])original.Clone();
            // Half the time aim at the headers, where the structure is; otherwise anywhere.
            if (rng.Next(2) == 0) Mutate(image, rng, 0, Math.Min(image.Length, kind == "elf" ? 0x100 : 0x600));
            else Mutate(image, rng, 0, image.Length);
            if (rng.Next(10) == 0) Array.Resize(ref image, rng.Next(image.Length));
            ParseAndLoad(image);
        }
    }

    [Fact]
    public void A_setup_header_longer_than_the_file_is_a_kernel_error()
    {
        // The header's own length byte (0x201) says it runs to 0x290; the file ends before that.
        var image = TestKernels.BzImage(TestKernels.Lz4LegacyPayload(TestKernels.Elf(TestKernels.Code(0x100)), blockSize: 2048));
        image[0x201] = 0x8E;
        Array.Resize(ref image, 0x280);
        var e = Assert.Throws<InvalidKernelException>(() => KernelImage.Parse(image, "short"));
        Assert.Contains("truncated setup header", e.Message);
    }

    [Fact]
    public void Random_lz4_blocks_fail_only_with_invalid_data()
    {
        var rng = new Random(777);
        var dest = new byte[4096];
        for (int i = 0; i < 20_000; i++)
        {
            var block = new byte[rng.Next(1, 64)];
            rng.NextBytes(block);
            try { Lz4Legacy.DecodeBlock(block, dest); }
            catch (InvalidDataException) { }
        }
    }

    [Fact]
    public void Huge_claimed_size_does_not_allocate_it()
    {
        var elf = TestKernels.Elf(TestKernels.Code(0x100));
        var payload = TestKernels.Lz4LegacyPayload(elf);
        BitConverter.GetBytes(0xFFFF_FFF0u).CopyTo(payload, payload.Length - 4); // "4 GiB uncompressed"
        var k = KernelImage.Parse(TestKernels.BzImage(payload), "liar");
        // The hint is ignored; the real stream still decodes (its length differs from the hint, so it is not trusted).
        Assert.Equal(elf, k.Decompress().Image.ToArray());
    }
}
