using System.Buffers.Binary;
using System.IO.Compression;

namespace SharpVM.Vmm.Boot;

/// <summary>How a bzImage's payload (the compressed vmlinux) is compressed.</summary>
public enum PayloadCompression
{
    Unknown,
    None,
    Gzip,
    Bzip2,
    Lzma,
    Xz,
    Lzo,
    Lz4Legacy,
    Zstd,
}

/// <summary>Detects the payload compression by magic and decompresses the kinds SharpVM supports.</summary>
public static class PayloadDecompressor
{
    /// <summary>No Linux kernel is this large uncompressed; a payload that claims or expands to more is refused.</summary>
    public const int MaxKernelSize = 1 << 30;

    public static PayloadCompression Detect(ReadOnlySpan<byte> p)
    {
        if (p.Length < 6) return PayloadCompression.Unknown;
        if (p[0] == 0x1F && (p[1] == 0x8B || p[1] == 0x9E)) return PayloadCompression.Gzip;
        if (p[0] == (byte)'B' && p[1] == (byte)'Z' && p[2] == (byte)'h') return PayloadCompression.Bzip2;
        if (p[0] == 0x5D && p[1] == 0x00 && p[2] == 0x00) return PayloadCompression.Lzma;
        if (p[..6].SequenceEqual((ReadOnlySpan<byte>)[0xFD, (byte)'7', (byte)'z', (byte)'X', (byte)'Z', 0x00])) return PayloadCompression.Xz;
        if (p[0] == 0x89 && p[1] == (byte)'L' && p[2] == (byte)'Z' && p[3] == (byte)'O') return PayloadCompression.Lzo;
        if (Lz4Legacy.IsLegacyFrame(p)) return PayloadCompression.Lz4Legacy;
        if (BinaryPrimitives.ReadUInt32LittleEndian(p) == 0xFD2FB528) return PayloadCompression.Zstd;
        if (ElfKernel.IsElf(p)) return PayloadCompression.None;
        return PayloadCompression.Unknown;
    }

    public static bool CanDecompress(PayloadCompression c) =>
        c is PayloadCompression.None or PayloadCompression.Gzip or PayloadCompression.Lz4Legacy;

    /// <summary>
    /// Decompresses a payload. Linux appends the uncompressed size (32-bit LE) to every compressed
    /// payload; it is used to size the output and to check it.
    /// </summary>
    public static byte[] Decompress(ReadOnlySpan<byte> payload, PayloadCompression compression, string what)
    {
        long expected = payload.Length >= 4 ? BinaryPrimitives.ReadUInt32LittleEndian(payload[^4..]) : -1;
        // The appended size is only a hint (the file may be hostile): never let it size an allocation
        // beyond what the data could possibly expand to (LZ4 and deflate both stay under 1:1100).
        if (expected > MaxKernelSize || expected > payload.Length * 1100L) expected = -1;
        try
        {
            switch (compression)
            {
                case PayloadCompression.None:
                    return payload.ToArray();
                case PayloadCompression.Lz4Legacy:
                    {
                        var result = Lz4Legacy.DecodeFrame(payload, (int)expected, MaxKernelSize);
                        return result;
                    }
                case PayloadCompression.Gzip:
                    {
                        using var input = new MemoryStream(payload.ToArray(), writable: false);
                        using var gz = new GZipStream(input, CompressionMode.Decompress);
                        using var output = new MemoryStream(expected > 0 ? (int)expected : payload.Length * 4);
                        var buffer = new byte[1 << 16];
                        int n;
                        while ((n = gz.Read(buffer)) > 0)
                        {
                            if (output.Length + n > MaxKernelSize)
                                throw new InvalidDataException($"gzip payload expands past {MaxKernelSize >> 20} MiB");
                            output.Write(buffer, 0, n);
                        }
                        var result = output.ToArray();
                        if (expected > 0 && result.Length != expected)
                            throw new InvalidDataException($"gzip payload decompressed to {result.Length} bytes, the kernel says {expected}");
                        return result;
                    }
                default:
                    throw new InvalidKernelException(
                        $"{what}: the kernel payload is {compression}-compressed; SharpVM decompresses only gzip and LZ4 on the host " +
                        "(boot it with the guest's own decompressor instead: KernelLoadMode.GuestDecompress)");
            }
        }
        catch (InvalidDataException e)
        {
            throw new InvalidKernelException($"{what}: the {compression} kernel payload is corrupt: {e.Message}", e);
        }
    }
}
