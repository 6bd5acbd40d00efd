using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace SharpVM.Storage.Crypto;

/// <summary>
/// LUKS1 header (as embedded in qcow2 by encrypt.format=luks): 592-byte phdr, 8 key slots holding the master key
/// anti-forensically split into 4000 stripes, each slot encrypted with a PBKDF2-derived key. Data sectors are
/// AES-XTS-plain64 encrypted with the master key; in qcow2 the IV is the host sector number.
/// </summary>
public sealed class LuksCrypto : IDisposable
{
    private const uint SlotActive = 0x00AC71F3, SlotInactive = 0x0000DEAD;
    private const int Stripes = 4000;
    private static readonly byte[] LuksMagic = [(byte)'L', (byte)'U', (byte)'K', (byte)'S', 0xba, 0xbe];
    private readonly AesXts _xts;
    public string CipherName { get; }
    public string CipherMode { get; }
    public string HashSpec { get; }
    public int KeyBytes { get; }
    public int ActiveSlots { get; }

    private LuksCrypto(byte[] masterKey, string cipher, string mode, string hash, int activeSlots)
    {
        _xts = new AesXts(masterKey);
        CipherName = cipher; CipherMode = mode; HashSpec = hash; KeyBytes = masterKey.Length; ActiveSlots = activeSlots;
    }

    public void Encrypt(Span<byte> buf, long sector) => _xts.Encrypt(buf, sector);
    public void Decrypt(Span<byte> buf, long sector) => _xts.Decrypt(buf, sector);

    private static string Str(ReadOnlySpan<byte> b) => Encoding.ASCII.GetString(b).TrimEnd('\0');

    private static HashAlgorithmName Hash(string spec) => spec.ToLowerInvariant() switch
    {
        "sha1" => HashAlgorithmName.SHA1,
        "sha256" => HashAlgorithmName.SHA256,
        "sha384" => HashAlgorithmName.SHA384,
        "sha512" => HashAlgorithmName.SHA512,
        _ => throw new UnsupportedImageException($"LUKS hash '{spec}' is not supported (sha1, sha256, sha384, sha512)"),
    };

    public static LuksCrypto Unlock(byte[] hdr, string secret)
    {
        if (hdr.Length < 592 || !hdr.AsSpan(0, 6).SequenceEqual(LuksMagic))
            throw new CorruptImageException("LUKS header has bad magic");
        if (BinaryPrimitives.ReadUInt16BigEndian(hdr.AsSpan(6)) != 1) throw new UnsupportedImageException("only LUKS version 1 headers are supported");
        string cipher = Str(hdr.AsSpan(8, 32)), mode = Str(hdr.AsSpan(40, 32)), hash = Str(hdr.AsSpan(72, 32));
        if (cipher != "aes" || mode != "xts-plain64") throw new UnsupportedImageException($"LUKS cipher {cipher}-{mode} is not supported (aes-xts-plain64)");
        var halg = Hash(hash);
        int keyBytes = (int)BinaryPrimitives.ReadUInt32BigEndian(hdr.AsSpan(108));
        if (keyBytes is not (32 or 64)) throw new CorruptImageException($"LUKS key size {keyBytes} is invalid for AES-XTS");
        var mkDigest = hdr.AsSpan(112, 20).ToArray();
        var mkSalt = hdr.AsSpan(132, 32).ToArray();
        int mkIter = (int)Math.Min(BinaryPrimitives.ReadUInt32BigEndian(hdr.AsSpan(164)), int.MaxValue);
        var pw = Encoding.UTF8.GetBytes(secret);
        int active = 0;
        for (int s = 0; s < 8; s++)
        {
            int o = 208 + s * 48;
            uint state = BinaryPrimitives.ReadUInt32BigEndian(hdr.AsSpan(o));
            if (state != SlotActive) continue;
            active++;
            int iter = (int)Math.Min(BinaryPrimitives.ReadUInt32BigEndian(hdr.AsSpan(o + 4)), 100_000_000);
            var salt = hdr.AsSpan(o + 8, 32).ToArray();
            long kmOff = BinaryPrimitives.ReadUInt32BigEndian(hdr.AsSpan(o + 40)) * 512L;
            int stripes = (int)BinaryPrimitives.ReadUInt32BigEndian(hdr.AsSpan(o + 44));
            long kmLen = ((long)keyBytes * stripes + 511) & ~511L;
            if (stripes < 1 || stripes > 1 << 16 || kmOff + kmLen > hdr.Length)
                throw new CorruptImageException($"LUKS key slot {s} material lies outside the header area");
            var slotKey = Rfc2898DeriveBytes.Pbkdf2(pw, salt, iter, halg, keyBytes);
            var km = hdr.AsSpan((int)kmOff, (int)kmLen).ToArray();
            using (var x = new AesXts(slotKey)) x.Decrypt(km, 0);
            var candidate = AfMerge(km.AsSpan(0, keyBytes * stripes), keyBytes, stripes, halg);
            var digest = Rfc2898DeriveBytes.Pbkdf2(candidate, mkSalt, mkIter, halg, 20);
            if (CryptographicOperations.FixedTimeEquals(digest, mkDigest))
                return new LuksCrypto(candidate, cipher, mode, hash, 0) { };
        }
        if (active == 0) throw new ImageKeyException("LUKS header has no active key slot");
        throw new ImageKeyException("invalid password: the secret does not unlock any LUKS key slot");
    }

    /// <summary>A LUKS1 header with key slot 0 holding a fresh random master key (AES-256-XTS, sha256).</summary>
    public static byte[] CreateHeader(string secret, int iterTimeMs)
    {
        const int keyBytes = 64;
        var halg = HashAlgorithmName.SHA256;
        var mk = RandomNumberGenerator.GetBytes(keyBytes);
        int splitSectors = (keyBytes * Stripes + 511) / 512;
        int slotStride = (splitSectors + 7) & ~7; // 4 KiB aligned like QEMU/cryptsetup
        int headerSectors = 4096 / 512;
        int payloadSectors = headerSectors + 8 * slotStride;
        var hdr = new byte[payloadSectors * 512L];
        LuksMagic.CopyTo(hdr, 0);
        BinaryPrimitives.WriteUInt16BigEndian(hdr.AsSpan(6), 1);
        Encoding.ASCII.GetBytes("aes").CopyTo(hdr, 8);
        Encoding.ASCII.GetBytes("xts-plain64").CopyTo(hdr, 40);
        Encoding.ASCII.GetBytes("sha256").CopyTo(hdr, 72);
        BinaryPrimitives.WriteUInt32BigEndian(hdr.AsSpan(104), (uint)payloadSectors);
        BinaryPrimitives.WriteUInt32BigEndian(hdr.AsSpan(108), keyBytes);
        var mkSalt = RandomNumberGenerator.GetBytes(32);
        // Iteration counts scale with iter-time; ~1000 iterations per ms is a conservative sha256 rate.
        int slotIter = Math.Max(1000, iterTimeMs * 1000);
        int mkIter = Math.Max(1000, slotIter / 8);
        Rfc2898DeriveBytes.Pbkdf2(mk, mkSalt, mkIter, halg, 20).CopyTo(hdr, 112);
        mkSalt.CopyTo(hdr, 132);
        BinaryPrimitives.WriteUInt32BigEndian(hdr.AsSpan(164), (uint)mkIter);
        Encoding.ASCII.GetBytes(Guid.NewGuid().ToString()).CopyTo(hdr, 168);
        for (int s = 0; s < 8; s++)
        {
            int o = 208 + s * 48;
            BinaryPrimitives.WriteUInt32BigEndian(hdr.AsSpan(o), s == 0 ? SlotActive : SlotInactive);
            BinaryPrimitives.WriteUInt32BigEndian(hdr.AsSpan(o + 40), (uint)(headerSectors + s * slotStride));
            BinaryPrimitives.WriteUInt32BigEndian(hdr.AsSpan(o + 44), Stripes);
        }
        {
            int o = 208;
            var salt = RandomNumberGenerator.GetBytes(32);
            BinaryPrimitives.WriteUInt32BigEndian(hdr.AsSpan(o + 4), (uint)slotIter);
            salt.CopyTo(hdr, o + 8);
            var slotKey = Rfc2898DeriveBytes.Pbkdf2(Encoding.UTF8.GetBytes(secret), salt, slotIter, halg, keyBytes);
            var km = new byte[splitSectors * 512];
            AfSplit(mk, Stripes, halg).CopyTo(km, 0);
            using (var x = new AesXts(slotKey)) x.Encrypt(km, 0);
            km.CopyTo(hdr, headerSectors * 512);
        }
        return hdr;
    }

    private static byte[] AfSplit(byte[] key, int stripes, HashAlgorithmName h)
    {
        int n = key.Length;
        var outb = RandomNumberGenerator.GetBytes(n * stripes);
        var buf = new byte[n];
        for (int i = 0; i < stripes - 1; i++)
        {
            for (int j = 0; j < n; j++) buf[j] ^= outb[i * n + j];
            Diffuse(buf, h);
        }
        for (int j = 0; j < n; j++) outb[(stripes - 1) * n + j] = (byte)(buf[j] ^ key[j]);
        return outb;
    }

    private static byte[] AfMerge(ReadOnlySpan<byte> split, int n, int stripes, HashAlgorithmName h)
    {
        var buf = new byte[n];
        for (int i = 0; i < stripes - 1; i++)
        {
            for (int j = 0; j < n; j++) buf[j] ^= split[i * n + j];
            Diffuse(buf, h);
        }
        for (int j = 0; j < n; j++) buf[j] ^= split[(stripes - 1) * n + j];
        return buf;
    }

    /// <summary>LUKS AF diffusion: each digest-sized chunk i becomes H(be32(i) || chunk), truncated for the tail.</summary>
    private static void Diffuse(byte[] buf, HashAlgorithmName h)
    {
        using var ih = IncrementalHash.CreateHash(h);
        int ds = ih.HashLengthInBytes;
        Span<byte> iv = stackalloc byte[4];
        Span<byte> digest = stackalloc byte[64];
        for (int i = 0, off = 0; off < buf.Length; i++, off += ds)
        {
            int len = Math.Min(ds, buf.Length - off);
            BinaryPrimitives.WriteInt32BigEndian(iv, i);
            ih.AppendData(iv);
            ih.AppendData(buf, off, len);
            ih.GetHashAndReset(digest);
            digest[..len].CopyTo(buf.AsSpan(off));
        }
    }

    public void Dispose() => _xts.Dispose();
}
