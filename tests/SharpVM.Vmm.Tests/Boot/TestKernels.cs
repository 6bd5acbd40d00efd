using System.Buffers.Binary;
using System.IO.Compression;
using SharpVM.Vmm.Boot;

namespace SharpVM.Vmm.Tests.Boot;

/// <summary>Synthesises minimal ELF vmlinux and bzImage files, so most tests need no real kernel.</summary>
internal static class TestKernels
{
    public const ulong LoadAddress = 0x100_0000;

    /// <summary>
    /// An ELF64 x86-64 executable with one PT_LOAD at <paramref name="paddr"/> (file bytes
    /// <paramref name="code"/>, memsz = code + <paramref name="bss"/>) and, optionally, a Xen PVH note.
    /// </summary>
    public static byte[] Elf(byte[] code, ulong paddr = LoadAddress, ulong bss = 0x1000, ulong? pvhEntry = null, ulong entryOffset = 0)
    {
        const int ehsize = 64, phentsize = 56;
        int phnum = pvhEntry is null ? 1 : 2;
        byte[] note = [];
        if (pvhEntry is { } pvh)
        {
            note = new byte[12 + 4 + 8];
            BinaryPrimitives.WriteUInt32LittleEndian(note, 4);       // namesz "Xen\0"
            BinaryPrimitives.WriteUInt32LittleEndian(note.AsSpan(4), 8);  // descsz
            BinaryPrimitives.WriteUInt32LittleEndian(note.AsSpan(8), ElfKernel.XenElfNotePhys32Entry);
            "Xen\0"u8.CopyTo(note.AsSpan(12));
            BinaryPrimitives.WriteUInt64LittleEndian(note.AsSpan(16), pvh);
        }
        int codeOffset = 0x1000;
        int noteOffset = ehsize + phnum * phentsize;
        var f = new byte[codeOffset + code.Length];
        f[0] = 0x7F; f[1] = (byte)'E'; f[2] = (byte)'L'; f[3] = (byte)'F'; f[4] = 2; f[5] = 1; f[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(16), 2);   // ET_EXEC
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(18), 62);  // EM_X86_64
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(20), 1);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(24), paddr + entryOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(32), ehsize);
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(52), ehsize);
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(54), phentsize);
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(56), (ushort)phnum);
        var ph = f.AsSpan(ehsize, phentsize);
        BinaryPrimitives.WriteUInt32LittleEndian(ph, 1); // PT_LOAD
        BinaryPrimitives.WriteUInt32LittleEndian(ph[4..], 5);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[8..], (ulong)codeOffset);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[16..], 0xFFFF_FFFF_8000_0000 + paddr);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[24..], paddr);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[32..], (ulong)code.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(ph[40..], (ulong)code.Length + bss);
        if (phnum == 2)
        {
            var nh = f.AsSpan(ehsize + phentsize, phentsize);
            BinaryPrimitives.WriteUInt32LittleEndian(nh, 4); // PT_NOTE
            BinaryPrimitives.WriteUInt64LittleEndian(nh[8..], (ulong)noteOffset);
            BinaryPrimitives.WriteUInt64LittleEndian(nh[32..], (ulong)note.Length);
            note.CopyTo(f.AsSpan(noteOffset));
        }
        code.CopyTo(f.AsSpan(codeOffset));
        return f;
    }

    /// <summary>An LZ4 block holding <paramref name="data"/> as literals only (valid, if not compressed).</summary>
    public static byte[] Lz4LiteralBlock(ReadOnlySpan<byte> data)
    {
        var ms = new MemoryStream();
        int n = data.Length;
        ms.WriteByte((byte)(Math.Min(n, 15) << 4));
        if (n >= 15)
        {
            int rest = n - 15;
            while (rest >= 255) { ms.WriteByte(255); rest -= 255; }
            ms.WriteByte((byte)rest);
        }
        ms.Write(data);
        return ms.ToArray();
    }

    /// <summary>An LZ4 legacy frame (as <c>lz4 -l</c> writes) of literal-only blocks of at most <paramref name="blockSize"/>, plus the appended size.</summary>
    public static byte[] Lz4LegacyPayload(ReadOnlySpan<byte> data, int blockSize = 1 << 16)
    {
        var ms = new MemoryStream();
        Span<byte> u32 = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(u32, Lz4Legacy.Magic);
        ms.Write(u32);
        for (int off = 0; off < data.Length; off += blockSize)
        {
            var block = Lz4LiteralBlock(data.Slice(off, Math.Min(blockSize, data.Length - off)));
            BinaryPrimitives.WriteUInt32LittleEndian(u32, (uint)block.Length);
            ms.Write(u32);
            ms.Write(block);
        }
        BinaryPrimitives.WriteUInt32LittleEndian(u32, (uint)data.Length);
        ms.Write(u32);
        return ms.ToArray();
    }

    public static byte[] GzipPayload(ReadOnlySpan<byte> data)
    {
        var ms = new MemoryStream();
        using (var gz = new GZipStream(ms, CompressionLevel.Fastest, leaveOpen: true)) gz.Write(data);
        Span<byte> u32 = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(u32, (uint)data.Length);
        ms.Write(u32);
        return ms.ToArray();
    }

    /// <summary>
    /// A bzImage: 2 setup sectors (1 KiB with the boot sector) holding a protocol-2.15 header, then a
    /// protected-mode part whose first 0x200 bytes are a stand-in for the 64-bit entry stub, followed by the payload.
    /// </summary>
    public static byte[] BzImage(byte[] payload, ushort version = 0x020F, ushort xloadflags = 0x7F, uint initSize = 0x40_0000,
        uint cmdlineSize = 0x7FF, ulong prefAddress = LoadAddress)
    {
        const int setupSects = 1;
        int setupSize = (setupSects + 1) * 512;
        int payloadOffset = 0x300;
        var pm = new byte[payloadOffset + payload.Length];
        pm[0x200] = 0xF4; // hlt at the 64-bit entry
        payload.CopyTo(pm, payloadOffset);
        var f = new byte[setupSize + pm.Length];
        f[0x1F1] = setupSects;
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(0x1F4), (uint)((pm.Length + 15) / 16));
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(0x1FE), 0xAA55);
        f[0x200] = 0xEB; f[0x201] = 0x6A; // jmp to 0x26C: the end of a 2.15 header
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(0x202), 0x53726448);
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(0x206), version);
        f[0x211] = 0x01; // LOADED_HIGH
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(0x214), 0x100000);
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(0x22C), 0x7FFF_FFFF);
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(0x230), 0x20_0000);
        f[0x234] = 1;
        f[0x235] = 21;
        BinaryPrimitives.WriteUInt16LittleEndian(f.AsSpan(0x236), xloadflags);
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(0x238), cmdlineSize);
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(0x248), (uint)payloadOffset);
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(0x24C), (uint)payload.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(0x258), prefAddress);
        BinaryPrimitives.WriteUInt32LittleEndian(f.AsSpan(0x260), initSize);
        pm.CopyTo(f, setupSize);
        return f;
    }

    /// <summary>Recognisable "kernel code": a counting pattern.</summary>
    public static byte[] Code(int length)
    {
        var b = new byte[length];
        for (int i = 0; i < b.Length; i++) b[i] = (byte)(i * 7 + 3);
        return b;
    }
}
