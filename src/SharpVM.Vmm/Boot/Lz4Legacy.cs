using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace SharpVM.Vmm.Boot;

/// <summary>
/// Decoder for LZ4 (block format, and the "legacy" frame that <c>lz4 -l</c> writes and Linux uses for
/// LZ4-compressed kernels): magic 0x184C2102, then blocks each prefixed by a little-endian 32-bit
/// compressed size, each block independent and at most 8 MiB uncompressed. A new magic may start a
/// concatenated frame; anything that does not parse is an error, never an out-of-range access.
/// </summary>
public static class Lz4Legacy
{
    public const uint Magic = 0x184C2102;
    public const int MaxBlockSize = 8 << 20;

    /// <summary>True if <paramref name="data"/> starts with the legacy frame magic.</summary>
    public static bool IsLegacyFrame(ReadOnlySpan<byte> data) =>
        data.Length >= 4 && BinaryPrimitives.ReadUInt32LittleEndian(data) == Magic;

    /// <summary>
    /// Decodes a legacy frame. <paramref name="expectedSize"/>, when known (Linux appends the
    /// uncompressed size to the payload), sizes the output exactly and is checked.
    /// A trailing 4-byte size field after the last block is tolerated.
    /// </summary>
    public static byte[] DecodeFrame(ReadOnlySpan<byte> data, int expectedSize = -1, int maxSize = int.MaxValue)
    {
        if (!IsLegacyFrame(data)) throw new InvalidDataException("not an LZ4 legacy frame (bad magic)");
        if (expectedSize > maxSize) throw new InvalidDataException($"LZ4 stream claims {expectedSize} bytes, more than the {maxSize} allowed");
        var output = new byte[expectedSize >= 0 ? expectedSize : (int)Math.Min(Math.Max(MaxBlockSize, data.Length * 4L), maxSize)];
        int outPos = 0;
        int pos = 4;
        while (data.Length - pos >= 4)
        {
            uint blockSize = BinaryPrimitives.ReadUInt32LittleEndian(data[pos..]);
            if (blockSize == Magic) { pos += 4; continue; }
            if (data.Length - pos == 4) break; // the size Linux appends after the stream
            pos += 4;
            if (blockSize == 0 || blockSize > (uint)(data.Length - pos))
                throw new InvalidDataException($"LZ4 block at offset {pos - 4} claims {blockSize} bytes, {data.Length - pos} remain");
            if (expectedSize < 0 && output.Length - outPos < MaxBlockSize && output.Length < maxSize)
                Array.Resize(ref output, (int)Math.Min(output.Length * 2L, maxSize));
            int room = Math.Min(output.Length - outPos, MaxBlockSize);
            int written = DecodeBlock(data.Slice(pos, (int)blockSize), output.AsSpan(outPos, room));
            outPos += written;
            pos += (int)blockSize;
        }
        if (expectedSize >= 0 && outPos != expectedSize)
            throw new InvalidDataException($"LZ4 stream decoded to {outPos} bytes, expected {expectedSize}");
        if (outPos != output.Length) Array.Resize(ref output, outPos);
        return output;
    }

    /// <summary>
    /// Decodes one LZ4 block into <paramref name="dest"/> and returns the number of bytes written.
    /// Throws <see cref="InvalidDataException"/> on any malformed input or if the output does not fit.
    /// Bytes of <paramref name="dest"/> after the returned count may be overwritten (the fast paths
    /// copy in 8- and 16-byte chunks when there is room).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int DecodeBlock(ReadOnlySpan<byte> src, Span<byte> dest)
    {
        ref byte s = ref MemoryMarshal.GetReference(src);
        ref byte d = ref MemoryMarshal.GetReference(dest);
        int srcLength = src.Length, destLength = dest.Length;
        int ip = 0, op = 0;
        while (true)
        {
            if (ip >= srcLength) throw new InvalidDataException("LZ4 block truncated (token)");
            int token = src[ip++];
            int literalLength = token >> 4;
            if (literalLength == 15) literalLength += ReadLength(src, ref ip);
            if (literalLength > srcLength - ip) throw new InvalidDataException("LZ4 literals run past the block");
            if (literalLength > destLength - op) throw new InvalidDataException("LZ4 output larger than its buffer");
            if (literalLength <= 16 && srcLength - ip >= 16 && destLength - op >= 16)
            {
                // SAFETY: ip + 16 <= src.Length and op + 16 <= dest.Length, checked just above.
                Unsafe.WriteUnaligned(ref Unsafe.Add(ref d, op), Unsafe.ReadUnaligned<Vector128<byte>>(ref Unsafe.Add(ref s, ip)));
            }
            else src.Slice(ip, literalLength).CopyTo(dest[op..]);
            ip += literalLength;
            op += literalLength;
            if (ip == srcLength) return op; // the last sequence has literals only
            if (srcLength - ip < 2) throw new InvalidDataException("LZ4 block truncated (offset)");
            int offset = src[ip] | (src[ip + 1] << 8);
            ip += 2;
            if (offset == 0 || offset > op) throw new InvalidDataException($"LZ4 match offset {offset} points before the output");
            int matchLength = token & 15;
            if (matchLength == 15) matchLength += ReadLength(src, ref ip);
            matchLength += 4;
            if (matchLength > destLength - op) throw new InvalidDataException("LZ4 output larger than its buffer");
            int from = op - offset;
            if (offset >= 8 && destLength - op >= matchLength + 8)
            {
                // SAFETY: every 8-byte store ends before op + matchLength + 8 <= dest.Length (checked above);
                // every load starts at from + i >= 0 and ends 8 bytes later, before op + i since offset >= 8,
                // so it reads bytes already written and never past dest.
                for (int i = 0; i < matchLength; i += 8)
                    Unsafe.WriteUnaligned(ref Unsafe.Add(ref d, op + i), Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref d, from + i)));
                op += matchLength;
            }
            else if (offset >= matchLength)
            {
                dest.Slice(from, matchLength).CopyTo(dest[op..]);
                op += matchLength;
            }
            else if (offset == 1)
            {
                dest.Slice(op, matchLength).Fill(dest[from]);
                op += matchLength;
            }
            else
            {
                // Overlapping match: copy in chunks of 'op - from' bytes (a multiple of offset), each already written.
                int remaining = matchLength;
                while (remaining > 0)
                {
                    int n = Math.Min(remaining, op - from);
                    dest.Slice(from, n).CopyTo(dest[op..]);
                    op += n;
                    remaining -= n;
                }
            }
        }
    }

    private static int ReadLength(ReadOnlySpan<byte> src, ref int ip)
    {
        int length = 0;
        byte b;
        do
        {
            if (ip >= src.Length) throw new InvalidDataException("LZ4 block truncated (length)");
            b = src[ip++];
            length = checked(length + b);
        } while (b == 255);
        return length;
    }
}
