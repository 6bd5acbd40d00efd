using System.Buffers.Binary;
using SharpVM.Memory;

namespace SharpVM.Vmm.Boot;

public enum E820Type : uint
{
    Ram = 1,
    Reserved = 2,
    Acpi = 3,
    Nvs = 4,
    Unusable = 5,
}

/// <summary>One entry of the BIOS e820 memory map: [Address, Address+Size) of <see cref="Type"/>.</summary>
public readonly record struct E820Entry(ulong Address, ulong Size, E820Type Type)
{
    public const int EncodedSize = 20;
    public ulong End => Address + Size;

    public void WriteTo(Span<byte> dest)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(dest, Address);
        BinaryPrimitives.WriteUInt64LittleEndian(dest[8..], Size);
        BinaryPrimitives.WriteUInt32LittleEndian(dest[16..], (uint)Type);
    }

    public override string ToString() => $"[0x{Address:x12}-0x{End - 1:x12}] {Type}";
}

/// <summary>Builds the e820 map the guest sees from the RAM regions of <see cref="MemoryLayout"/>.</summary>
public static class E820Map
{
    /// <summary>boot_params holds at most 128 entries.</summary>
    public const int MaxEntries = 128;

    /// <summary>
    /// RAM [0, EBDA), reserved EBDA, reserved BIOS area 0xE0000-0xFFFFF (ACPI tables), RAM from 1 MiB
    /// to the end of low RAM, reserved platform area below 4 GiB, RAM above 4 GiB. Sorted, non-overlapping.
    /// </summary>
    public static IReadOnlyList<E820Entry> Build(GuestMemory memory) =>
        Build(memory.Regions.Select(r => (r.Start, r.Size)).ToArray());

    public static IReadOnlyList<E820Entry> Build(IReadOnlyList<(GuestAddress Start, ulong Size)> ramRegions)
    {
        var entries = new List<E820Entry>();
        foreach (var (start, size) in ramRegions.OrderBy(r => r.Start.Value))
        {
            ulong s = start.Value, e = start.Value + size;
            if (s < BootLayout.HighMemory.Value)
            {
                if (e < BootLayout.HighMemory.Value)
                    throw new BootLayoutException($"guest RAM region {start}+0x{size:x} ends below 1 MiB; a Linux guest needs more");
                ulong ebda = BootLayout.EbdaStart.Value;
                if (s < ebda) entries.Add(new E820Entry(s, ebda - s, E820Type.Ram));
                entries.Add(new E820Entry(ebda, BootLayout.VgaHoleStart.Value - ebda, E820Type.Reserved));
                entries.Add(new E820Entry(BootLayout.BiosAreaStart.Value, BootLayout.BiosAreaEnd.Value - BootLayout.BiosAreaStart.Value, E820Type.Reserved));
                s = BootLayout.HighMemory.Value;
            }
            if (e > s) entries.Add(new E820Entry(s, e - s, E820Type.Ram));
        }
        entries.Add(new E820Entry(BootLayout.PlatformReservedStart, MemoryLayout.MmioHoleEnd - BootLayout.PlatformReservedStart, E820Type.Reserved));
        entries.Sort((a, b) => a.Address.CompareTo(b.Address));
        return entries;
    }
}
