using System.Buffers.Binary;
using SharpVM.Vmm.Boot;

namespace SharpVM.Vmm.Tests.Boot;

public class Lz4LegacyTests
{
    [Fact]
    public void Literal_only_block_round_trips()
    {
        var data = TestKernels.Code(1000);
        var dest = new byte[1000];
        Assert.Equal(1000, Lz4Legacy.DecodeBlock(TestKernels.Lz4LiteralBlock(data), dest));
        Assert.Equal(data, dest);
    }

    [Fact]
    public void Matches_including_overlapping_ones_are_expanded()
    {
        // "abc" then a match of length 4+5=9 at offset 3 (overlapping), then literals "XY".
        byte[] block = [0x35, (byte)'a', (byte)'b', (byte)'c', 3, 0, 0x20, (byte)'X', (byte)'Y'];
        var dest = new byte[64];
        int n = Lz4Legacy.DecodeBlock(block, dest);
        Assert.Equal("abcabcabcabcXY", System.Text.Encoding.ASCII.GetString(dest, 0, n));
    }

    [Fact]
    public void Run_length_match_with_offset_one_and_long_length()
    {
        // literal 'z', match offset 1, length 15 + 255 + 10 + 4 = 284, then an empty last literal run.
        byte[] block = [0x1F, (byte)'z', 1, 0, 255, 10, 0x00];
        var dest = new byte[300];
        int n = Lz4Legacy.DecodeBlock(block, dest);
        Assert.Equal(285, n);
        Assert.All(dest[..n], b => Assert.Equal((byte)'z', b));
    }

    [Theory]
    [InlineData(new byte[] { 0x10 })]                         // literal promised, none there
    [InlineData(new byte[] { 0x10, 0x41, 0x05 })]             // truncated offset
    [InlineData(new byte[] { 0x10, 0x41, 0x05, 0x00 })]       // offset 5 before the output start
    [InlineData(new byte[] { 0x10, 0x41, 0x00, 0x00 })]       // offset 0
    [InlineData(new byte[] { 0xF0, 0xFF })]                    // literal length runs off the end
    public void Malformed_blocks_throw_rather_than_read_or_write_out_of_range(byte[] block)
    {
        Assert.Throws<InvalidDataException>(() => Lz4Legacy.DecodeBlock(block, new byte[64]));
    }

    [Fact]
    public void Output_larger_than_the_buffer_throws()
    {
        var block = TestKernels.Lz4LiteralBlock(TestKernels.Code(100));
        Assert.Throws<InvalidDataException>(() => Lz4Legacy.DecodeBlock(block, new byte[99]));
    }

    [Fact]
    public void Legacy_frame_with_several_blocks_and_appended_size_decodes()
    {
        var data = TestKernels.Code(300_000);
        var frame = TestKernels.Lz4LegacyPayload(data, blockSize: 65536);
        Assert.Equal(data, Lz4Legacy.DecodeFrame(frame, data.Length));
        Assert.Equal(data, Lz4Legacy.DecodeFrame(frame)); // size unknown: grows its buffer
    }

    [Fact]
    public void Frame_with_wrong_expected_size_or_truncated_block_throws()
    {
        var data = TestKernels.Code(5000);
        var frame = TestKernels.Lz4LegacyPayload(data);
        Assert.Throws<InvalidDataException>(() => Lz4Legacy.DecodeFrame(frame, data.Length + 1));
        var cut = frame[..^100];
        Assert.Throws<InvalidDataException>(() => Lz4Legacy.DecodeFrame(cut, data.Length));
        var badMagic = (byte[])frame.Clone();
        BinaryPrimitives.WriteUInt32LittleEndian(badMagic, 0x184D2204); // the modern frame magic
        Assert.Throws<InvalidDataException>(() => Lz4Legacy.DecodeFrame(badMagic));
    }
}
