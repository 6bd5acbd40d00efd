using System.Buffers.Binary;
using System.Text;

namespace SharpVM.Storage.Crypto;

/// <summary>One LUKS1 key slot as `qemu-img info` shows it: offsets in bytes from the start of the LUKS header.</summary>
public readonly record struct LuksSlotInfo(bool Active, uint Iterations, long KeyOffset, uint Stripes);

/// <summary>
/// The public part of a LUKS1 header (no secret needed): what `qemu-img info` reports under encrypt. The cipher is
/// given as qemu names it: "aes" with a 64-byte XTS key is aes-256, the mode "xts-plain64" is mode xts, ivgen plain64.
/// </summary>
public sealed record LuksHeaderInfo(string CipherAlg, string CipherMode, string IvgenAlg, string? IvgenHashAlg, string HashAlg,
    long PayloadOffset, uint MasterKeyIterations, string Uuid, IReadOnlyList<LuksSlotInfo> Slots)
{
    private const uint SlotActive = 0x00AC71F3;
    public const int HeaderBytes = 592;

    public static LuksHeaderInfo Parse(ReadOnlySpan<byte> hdr)
    {
        ReadOnlySpan<byte> magic = [(byte)'L', (byte)'U', (byte)'K', (byte)'S', 0xba, 0xbe];
        if (hdr.Length < HeaderBytes || !hdr[..6].SequenceEqual(magic))
            throw new CorruptImageException("LUKS header has bad magic");
        static string Str(ReadOnlySpan<byte> b) => Encoding.ASCII.GetString(b).TrimEnd('\0');
        string cipher = Str(hdr.Slice(8, 32)), mode = Str(hdr.Slice(40, 32)), hash = Str(hdr.Slice(72, 32));
        uint keyBytes = BinaryPrimitives.ReadUInt32BigEndian(hdr[108..]);
        // XTS splits the key in two; the cipher's own key size is half of it.
        var (modeName, ivgen) = mode.Split('-', 2) is [var m, var iv] ? (m, iv) : (mode, "plain");
        uint cipherKeyBits = (modeName == "xts" ? keyBytes / 2 : keyBytes) * 8;
        string? ivgenHash = null;
        if (ivgen.Split(':', 2) is [var ivName, var ivHash]) { ivgen = ivName; ivgenHash = ivHash; }
        var slots = new LuksSlotInfo[8];
        for (int s = 0; s < 8; s++)
        {
            var k = hdr.Slice(208 + s * 48, 48);
            slots[s] = new LuksSlotInfo(BinaryPrimitives.ReadUInt32BigEndian(k) == SlotActive, BinaryPrimitives.ReadUInt32BigEndian(k[4..]),
                BinaryPrimitives.ReadUInt32BigEndian(k[40..]) * 512L, BinaryPrimitives.ReadUInt32BigEndian(k[44..]));
        }
        return new LuksHeaderInfo($"{cipher}-{cipherKeyBits}", modeName, ivgen, ivgenHash, hash,
            BinaryPrimitives.ReadUInt32BigEndian(hdr[104..]) * 512L, BinaryPrimitives.ReadUInt32BigEndian(hdr[164..]), Str(hdr.Slice(168, 40)), slots);
    }
}
