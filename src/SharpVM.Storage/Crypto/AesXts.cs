using System.Security.Cryptography;

namespace SharpVM.Storage.Crypto;

/// <summary>
/// AES-XTS (IEEE 1619) over 512-byte sectors with the plain64 IV (little-endian sector number), built on .NET's
/// AES-ECB: the tweak for block j is E_K2(iv) * alpha^j in GF(2^128); sector size is a multiple of 16, so no
/// ciphertext stealing is ever needed.
/// </summary>
public sealed class AesXts : IDisposable
{
    private readonly Aes _data, _tweak;

    public AesXts(ReadOnlySpan<byte> key)
    {
        if (key.Length is not (32 or 64)) throw new ArgumentException("XTS key must be 32 or 64 bytes (AES-128/256)");
        int half = key.Length / 2;
        _data = Aes.Create(); _data.Key = key[..half].ToArray();
        _tweak = Aes.Create(); _tweak.Key = key[half..].ToArray();
    }

    public void Encrypt(Span<byte> buf, long firstSector) => Process(buf, firstSector, true);
    public void Decrypt(Span<byte> buf, long firstSector) => Process(buf, firstSector, false);

    private void Process(Span<byte> buf, long sector, bool encrypt)
    {
        if (buf.Length % 512 != 0) throw new ArgumentException("XTS buffers must be whole 512-byte sectors");
        Span<byte> tweaks = stackalloc byte[512];
        Span<byte> iv = stackalloc byte[16];
        for (int off = 0; off < buf.Length; off += 512, sector++)
        {
            iv.Clear();
            System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(iv, sector);
            _tweak.EncryptEcb(iv, tweaks[..16], PaddingMode.None);
            for (int j = 16; j < 512; j += 16) MulAlpha(tweaks.Slice(j - 16, 16), tweaks.Slice(j, 16));
            var s = buf.Slice(off, 512);
            Xor(s, tweaks);
            if (encrypt) _data.EncryptEcb(s, s, PaddingMode.None);
            else _data.DecryptEcb(s, s, PaddingMode.None);
            Xor(s, tweaks);
        }
    }

    private static void MulAlpha(ReadOnlySpan<byte> src, Span<byte> dst)
    {
        int carry = 0;
        for (int i = 0; i < 16; i++)
        {
            int b = src[i];
            dst[i] = (byte)((b << 1) | carry);
            carry = b >> 7;
        }
        if (carry != 0) dst[0] ^= 0x87;
    }

    private static void Xor(Span<byte> a, ReadOnlySpan<byte> b)
    {
        var va = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(a);
        var vb = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(b);
        for (int i = 0; i < va.Length; i++) va[i] ^= vb[i];
    }

    public void Dispose() { _data.Dispose(); _tweak.Dispose(); }
}
