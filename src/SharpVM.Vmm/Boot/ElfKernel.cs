using System.Buffers.Binary;

namespace SharpVM.Vmm.Boot;

/// <summary>A PT_LOAD segment: <see cref="FileSize"/> bytes from the file, zero-filled up to <see cref="MemorySize"/>.</summary>
public readonly record struct ElfSegment(ulong PhysicalAddress, ulong VirtualAddress, long FileOffset, ulong FileSize, ulong MemorySize);

/// <summary>
/// A 64-bit x86 ELF kernel (a vmlinux): its loadable segments at their physical addresses, its
/// entry point (physical, as x86 vmlinux links <c>ENTRY(phys_startup_64)</c>), and the PVH entry
/// from the Xen ELF note, if any. Every offset and size is checked against the file.
/// </summary>
public sealed class ElfKernel
{
    private const ushort EtExec = 2, EtDyn = 3, EmX86_64 = 62;
    private const uint PtLoad = 1, PtNote = 4;

    /// <summary>XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit PVH entry point.</summary>
    public const uint XenElfNotePhys32Entry = 18;

    public ReadOnlyMemory<byte> Image { get; }
    public ulong Entry { get; }
    public IReadOnlyList<ElfSegment> Segments { get; }

    /// <summary>The PVH 32-bit entry (physical) from the "Xen" note of type 18, or null.</summary>
    public ulong? PvhEntry { get; }

    /// <summary>Lowest and one-past-highest physical address of the loadable segments.</summary>
    public ulong LowestAddress { get; }
    public ulong EndAddress { get; }

    private ElfKernel(ReadOnlyMemory<byte> image, ulong entry, ElfSegment[] segments, ulong? pvhEntry)
    {
        Image = image;
        Entry = entry;
        Segments = segments;
        PvhEntry = pvhEntry;
        LowestAddress = segments.Min(s => s.PhysicalAddress);
        EndAddress = segments.Max(s => s.PhysicalAddress + s.MemorySize);
    }

    public static bool IsElf(ReadOnlySpan<byte> data) =>
        data.Length >= 4 && data[0] == 0x7F && data[1] == (byte)'E' && data[2] == (byte)'L' && data[3] == (byte)'F';

    /// <summary>Parses an ELF64 little-endian x86-64 executable; <paramref name="what"/> names it in errors.</summary>
    public static ElfKernel Parse(ReadOnlyMemory<byte> image, string what)
    {
        var d = image.Span;
        if (!IsElf(d)) throw new InvalidKernelException($"{what} is not a Linux kernel: no ELF magic");
        if (d.Length < 64) throw new InvalidKernelException($"{what} is not a Linux kernel: ELF header truncated");
        if (d[4] != 2) throw new InvalidKernelException($"{what} is not a Linux kernel: a 32-bit ELF (only 64-bit x86 kernels are supported)");
        if (d[5] != 1) throw new InvalidKernelException($"{what} is not a Linux kernel: a big-endian ELF");
        ushort type = U16(d, 16), machine = U16(d, 18);
        if (machine != EmX86_64) throw new InvalidKernelException($"{what} is not a Linux kernel: ELF machine {machine}, not x86-64 (62)");
        if (type != EtExec && type != EtDyn) throw new InvalidKernelException($"{what} is not a Linux kernel: ELF type {type} is not an executable");
        ulong entry = U64(d, 24);
        ulong phoff = U64(d, 32);
        ushort phentsize = U16(d, 54), phnum = U16(d, 56);
        if (phnum == 0) throw new InvalidKernelException($"{what}: ELF has no program headers");
        if (phentsize < 56) throw new InvalidKernelException($"{what}: ELF program header size {phentsize} is too small");
        if (phoff > (ulong)d.Length || (ulong)phentsize * phnum > (ulong)d.Length - phoff)
            throw new InvalidKernelException($"{what}: ELF program headers lie outside the file");

        var segments = new List<ElfSegment>();
        ulong? pvh = null;
        for (int i = 0; i < phnum; i++)
        {
            var ph = d.Slice((int)phoff + i * phentsize, phentsize);
            uint ptype = U32(ph, 0);
            ulong offset = U64(ph, 8), vaddr = U64(ph, 16), paddr = U64(ph, 24), filesz = U64(ph, 32), memsz = U64(ph, 40);
            if (ptype != PtLoad && ptype != PtNote) continue;
            if (offset > (ulong)d.Length || filesz > (ulong)d.Length - offset)
                throw new InvalidKernelException($"{what}: ELF segment {i} [0x{offset:x}+0x{filesz:x}] lies outside the file ({d.Length} bytes)");
            if (ptype == PtNote)
            {
                pvh ??= FindPvhNote(d.Slice((int)offset, (int)filesz));
                continue;
            }
            if (memsz < filesz) throw new InvalidKernelException($"{what}: ELF segment {i} has memsz < filesz");
            if (memsz == 0) continue;
            if (paddr + memsz < paddr) throw new InvalidKernelException($"{what}: ELF segment {i} wraps around the address space");
            segments.Add(new ElfSegment(paddr, vaddr, (long)offset, filesz, memsz));
        }
        if (segments.Count == 0) throw new InvalidKernelException($"{what}: ELF has no loadable segments");
        return new ElfKernel(image, entry, segments.ToArray(), pvh);
    }

    private static ulong? FindPvhNote(ReadOnlySpan<byte> notes)
    {
        int pos = 0;
        while (notes.Length - pos >= 12)
        {
            uint namesz = U32(notes, pos), descsz = U32(notes, pos + 4), type = U32(notes, pos + 8);
            pos += 12;
            long nameEnd = pos + (long)Align4(namesz), descEnd = nameEnd + (long)Align4(descsz);
            if (descEnd > notes.Length || namesz > int.MaxValue || descsz > int.MaxValue) return null;
            var name = notes.Slice(pos, (int)namesz);
            var desc = notes.Slice((int)nameEnd, (int)descsz);
            if (type == XenElfNotePhys32Entry && name.SequenceEqual("Xen\0"u8))
                return desc.Length >= 8 ? U64(desc, 0) : desc.Length >= 4 ? U32(desc, 0) : null;
            pos = (int)descEnd;
        }
        return null;
    }

    private static ulong Align4(uint x) => ((ulong)x + 3) & ~3UL;
    private static ushort U16(ReadOnlySpan<byte> d, int o) => BinaryPrimitives.ReadUInt16LittleEndian(d[o..]);
    private static uint U32(ReadOnlySpan<byte> d, int o) => BinaryPrimitives.ReadUInt32LittleEndian(d[o..]);
    private static ulong U64(ReadOnlySpan<byte> d, int o) => BinaryPrimitives.ReadUInt64LittleEndian(d[o..]);
}
