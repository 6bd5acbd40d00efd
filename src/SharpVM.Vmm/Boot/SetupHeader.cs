using System.Buffers.Binary;

namespace SharpVM.Vmm.Boot;

/// <summary>
/// The x86 Linux boot protocol's setup header (Documentation/arch/x86/boot.rst), as found at offset
/// 0x1F1 of a bzImage and of the zero page. Offsets below are from the start of the image / zero page.
/// </summary>
public sealed record SetupHeader
{
    public const int Offset = 0x1F1;
    public const uint HdrSMagic = 0x53726448; // "HdrS"
    public const ushort BootFlagMagic = 0xAA55;
    public const ushort MinimumProtocol = 0x0206;

    // Field offsets (absolute, within the image or zero page).
    public const int SetupSectsOffset = 0x1F1, SyssizeOffset = 0x1F4, BootFlagOffset = 0x1FE, JumpOffset = 0x200,
        HeaderOffset = 0x202, VersionOffset = 0x206, TypeOfLoaderOffset = 0x210, LoadflagsOffset = 0x211,
        Code32StartOffset = 0x214, RamdiskImageOffset = 0x218, RamdiskSizeOffset = 0x21C, HeapEndPtrOffset = 0x224,
        CmdLinePtrOffset = 0x228, InitrdAddrMaxOffset = 0x22C, KernelAlignmentOffset = 0x230,
        RelocatableKernelOffset = 0x234, MinAlignmentOffset = 0x235, XloadflagsOffset = 0x236, CmdlineSizeOffset = 0x238,
        PayloadOffsetOffset = 0x248, PayloadLengthOffset = 0x24C, SetupDataOffset = 0x250, PrefAddressOffset = 0x258,
        InitSizeOffset = 0x260, HandoverOffsetOffset = 0x264;

    // loadflags
    public const byte LoadedHigh = 0x01, KaslrFlag = 0x02, QuietFlag = 0x20, KeepSegments = 0x40, CanUseHeap = 0x80;
    // xloadflags
    public const ushort XlfKernel64 = 0x01, XlfCanBeLoadedAbove4G = 0x02;

    public required byte SetupSects { get; init; }
    public required uint Syssize { get; init; }
    public required ushort Version { get; init; }
    public required byte Loadflags { get; init; }
    public required uint InitrdAddrMax { get; init; }
    public required uint KernelAlignment { get; init; }
    public required bool RelocatableKernel { get; init; }
    public required ushort Xloadflags { get; init; }
    public required uint CmdlineSize { get; init; }
    public required uint PayloadOffset { get; init; }
    public required uint PayloadLength { get; init; }
    public required ulong PrefAddress { get; init; }
    public required uint InitSize { get; init; }

    /// <summary>The raw header bytes from 0x1F1 to its end (0x202 + byte at 0x201), for copying into the zero page.</summary>
    public required byte[] Raw { get; init; }

    /// <summary>Size of the real-mode setup code, in bytes (setup_sects, 0 meaning 4, plus the boot sector).</summary>
    public int SetupSize => ((SetupSects == 0 ? 4 : SetupSects) + 1) * 512;

    public string VersionText => $"{Version >> 8}.{Version & 0xFF:D2}";

    /// <summary>True if the image has the "HdrS" magic of a bzImage.</summary>
    public static bool HasMagic(ReadOnlySpan<byte> image) =>
        image.Length >= HeaderOffset + 4 && BinaryPrimitives.ReadUInt32LittleEndian(image[HeaderOffset..]) == HdrSMagic;

    /// <summary>Parses and validates the header; <paramref name="what"/> names the file in errors.</summary>
    public static SetupHeader Parse(ReadOnlySpan<byte> image, string what)
    {
        if (!HasMagic(image)) throw new InvalidKernelException($"{what} is not a Linux kernel: no \"HdrS\" setup header at 0x202");
        if (image.Length < 0x270) throw new InvalidKernelException($"{what} is not a Linux kernel: truncated setup header ({image.Length} bytes)");
        ushort version = U16(image, VersionOffset);
        if (version < MinimumProtocol)
            throw new InvalidKernelException($"{what}: boot protocol {version >> 8}.{version & 0xFF:D2} is too old (2.06 or later is needed)");
        int end = 0x202 + image[0x201];
        end = Math.Clamp(end, 0x23C, 0x290); // 2.06 headers end at 0x23C, 2.15 ones before 0x290
        if (image.Length < end)
            throw new InvalidKernelException($"{what} is not a Linux kernel: truncated setup header ({image.Length} bytes, the header says it ends at 0x{end:x})");
        return new SetupHeader
        {
            SetupSects = image[SetupSectsOffset],
            Syssize = U32(image, SyssizeOffset),
            Version = version,
            Loadflags = image[LoadflagsOffset],
            InitrdAddrMax = U32(image, InitrdAddrMaxOffset),
            KernelAlignment = U32(image, KernelAlignmentOffset),
            RelocatableKernel = image[RelocatableKernelOffset] != 0,
            Xloadflags = version >= 0x020C ? U16(image, XloadflagsOffset) : (ushort)0,
            CmdlineSize = version >= 0x0206 ? U32(image, CmdlineSizeOffset) : 255,
            PayloadOffset = version >= 0x0208 ? U32(image, PayloadOffsetOffset) : 0,
            PayloadLength = version >= 0x0208 ? U32(image, PayloadLengthOffset) : 0,
            PrefAddress = version >= 0x020A ? U64(image, PrefAddressOffset) : 0x100000,
            InitSize = version >= 0x020A ? U32(image, InitSizeOffset) : 0,
            Raw = image[Offset..end].ToArray(),
        };
    }

    private static ushort U16(ReadOnlySpan<byte> d, int o) => BinaryPrimitives.ReadUInt16LittleEndian(d[o..]);
    private static uint U32(ReadOnlySpan<byte> d, int o) => BinaryPrimitives.ReadUInt32LittleEndian(d[o..]);
    private static ulong U64(ReadOnlySpan<byte> d, int o) => BinaryPrimitives.ReadUInt64LittleEndian(d[o..]);
}
