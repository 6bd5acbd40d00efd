using System.Buffers.Binary;
using System.Text;

namespace SharpVM.Vmm.Boot;

/// <summary>
/// The zero page (struct boot_params, Documentation/arch/x86/zero-page.rst) as a 4 KiB buffer:
/// offsets, and setters for the fields a boot loader fills in.
/// </summary>
public sealed class BootParams
{
    public const int Size = 4096;
    public const int AcpiRsdpAddrOffset = 0x070;
    public const int ExtRamdiskImageOffset = 0x0C0, ExtRamdiskSizeOffset = 0x0C4, ExtCmdLinePtrOffset = 0x0C8;
    public const int E820EntriesOffset = 0x1E8, SentinelOffset = 0x1EF, E820TableOffset = 0x2D0;
    public const byte LoaderTypeUndefined = 0xFF;

    public byte[] Bytes { get; } = new byte[Size];

    /// <summary>Copies a bzImage's setup header to 0x1F1.</summary>
    public void SetHeader(SetupHeader header) => header.Raw.CopyTo(Bytes.AsSpan(SetupHeader.Offset));

    /// <summary>A minimal header for an ELF kernel that has none of its own (protocol 2.15, "HdrS", 0xAA55).</summary>
    public void SetSyntheticHeader()
    {
        U16(SetupHeader.BootFlagOffset, SetupHeader.BootFlagMagic);
        U32(SetupHeader.HeaderOffset, SetupHeader.HdrSMagic);
        U16(SetupHeader.VersionOffset, 0x020F);
        U32(SetupHeader.KernelAlignmentOffset, 0x0100_0000);
        U32(SetupHeader.InitrdAddrMaxOffset, 0x7FFF_FFFF);
        U32(SetupHeader.CmdlineSizeOffset, LinuxBoot.DefaultCommandLineSize);
        Bytes[SetupHeader.Offset] = 0; // setup_sects
        U16(0x1FA, 0xFFFF); // vid_mode: "normal"
    }

    public void SetLoader()
    {
        Bytes[SetupHeader.TypeOfLoaderOffset] = LoaderTypeUndefined;
        byte flags = Bytes[SetupHeader.LoadflagsOffset];
        flags |= SetupHeader.LoadedHigh;
        flags &= unchecked((byte)~SetupHeader.KaslrFlag); // set by the kernel, not by loaders
        Bytes[SetupHeader.LoadflagsOffset] = flags;
    }

    public void SetCode32Start(uint address) => U32(SetupHeader.Code32StartOffset, address);

    public void SetCommandLine(ulong address)
    {
        U32(SetupHeader.CmdLinePtrOffset, (uint)address);
        U32(ExtCmdLinePtrOffset, (uint)(address >> 32));
    }

    public void SetRamdisk(ulong address, ulong size)
    {
        U32(SetupHeader.RamdiskImageOffset, (uint)address);
        U32(SetupHeader.RamdiskSizeOffset, (uint)size);
        U32(ExtRamdiskImageOffset, (uint)(address >> 32));
        U32(ExtRamdiskSizeOffset, (uint)(size >> 32));
    }

    /// <summary>The physical address of the first setup_data entry (boot protocol 2.09+), a linked list the kernel walks early.</summary>
    public void SetSetupData(ulong address) => BinaryPrimitives.WriteUInt64LittleEndian(Bytes.AsSpan(SetupHeader.SetupDataOffset), address);

    public void SetAcpiRsdp(ulong address) => BinaryPrimitives.WriteUInt64LittleEndian(Bytes.AsSpan(AcpiRsdpAddrOffset), address);

    public void SetE820(IReadOnlyList<E820Entry> entries)
    {
        if (entries.Count > E820Map.MaxEntries) throw new BootLayoutException($"{entries.Count} e820 entries; boot_params holds {E820Map.MaxEntries}");
        Bytes[E820EntriesOffset] = (byte)entries.Count;
        for (int i = 0; i < entries.Count; i++)
            entries[i].WriteTo(Bytes.AsSpan(E820TableOffset + i * E820Entry.EncodedSize, E820Entry.EncodedSize));
    }

    // Readers, for tests and diagnostics.
    public ushort ReadU16(int offset) => BinaryPrimitives.ReadUInt16LittleEndian(Bytes.AsSpan(offset));
    public uint ReadU32(int offset) => BinaryPrimitives.ReadUInt32LittleEndian(Bytes.AsSpan(offset));
    public ulong ReadU64(int offset) => BinaryPrimitives.ReadUInt64LittleEndian(Bytes.AsSpan(offset));

    public static IReadOnlyList<E820Entry> ReadE820(ReadOnlySpan<byte> zeroPage)
    {
        int n = zeroPage[E820EntriesOffset];
        var list = new E820Entry[n];
        for (int i = 0; i < n; i++)
        {
            var e = zeroPage.Slice(E820TableOffset + i * E820Entry.EncodedSize);
            list[i] = new E820Entry(BinaryPrimitives.ReadUInt64LittleEndian(e), BinaryPrimitives.ReadUInt64LittleEndian(e[8..]),
                (E820Type)BinaryPrimitives.ReadUInt32LittleEndian(e[16..]));
        }
        return list;
    }

    public static string ReadCommandLine(ReadOnlySpan<byte> nulTerminated)
    {
        int n = nulTerminated.IndexOf((byte)0);
        return Encoding.ASCII.GetString(n < 0 ? nulTerminated : nulTerminated[..n]);
    }

    private void U16(int o, ushort v) => BinaryPrimitives.WriteUInt16LittleEndian(Bytes.AsSpan(o), v);
    private void U32(int o, uint v) => BinaryPrimitives.WriteUInt32LittleEndian(Bytes.AsSpan(o), v);
}
