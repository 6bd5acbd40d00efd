namespace SharpVM.Vmm.Boot;

/// <summary>What kind of file a kernel image is.</summary>
public enum KernelFormat
{
    /// <summary>A bzImage: real-mode setup, the setup header, then the protected-mode (self-decompressing) kernel.</summary>
    BzImage,

    /// <summary>An uncompressed ELF vmlinux.</summary>
    Elf,
}

/// <summary>
/// A Linux kernel image, detected by content: a bzImage (setup header "HdrS" at 0x202, boot protocol
/// 2.06 or later) or a 64-bit ELF vmlinux. Anything else is an <see cref="InvalidKernelException"/>.
/// </summary>
public sealed class KernelImage
{
    public string Name { get; }
    public KernelFormat Format { get; }
    public ReadOnlyMemory<byte> Data { get; }

    /// <summary>The setup header, for a bzImage; null for an ELF.</summary>
    public SetupHeader? Header { get; }

    /// <summary>The parsed ELF, for an ELF kernel; null for a bzImage (see <see cref="Decompress"/>).</summary>
    public ElfKernel? Elf { get; }

    private KernelImage(string name, KernelFormat format, ReadOnlyMemory<byte> data, SetupHeader? header, ElfKernel? elf)
    {
        Name = name;
        Format = format;
        Data = data;
        Header = header;
        Elf = elf;
    }

    /// <summary>Reads and detects the kernel at <paramref name="path"/>.</summary>
    public static KernelImage Load(string path)
    {
        byte[] data;
        try { data = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidKernelException($"{path}: cannot read the kernel: {e.Message}", e);
        }
        return Parse(data, path);
    }

    /// <summary>Detects and parses a kernel image held in memory; <paramref name="name"/> is used in errors.</summary>
    public static KernelImage Parse(ReadOnlyMemory<byte> data, string name = "kernel image")
    {
        var span = data.Span;
        if (SetupHeader.HasMagic(span))
        {
            var header = SetupHeader.Parse(span, name);
            if ((header.Loadflags & SetupHeader.LoadedHigh) == 0)
                throw new InvalidKernelException($"{name}: a zImage (loaded low); only bzImage kernels are supported");
            if ((long)header.SetupSize >= span.Length)
                throw new InvalidKernelException($"{name}: setup ({header.SetupSize} bytes) is as large as the file ({span.Length} bytes)");
            return new KernelImage(name, KernelFormat.BzImage, data, header, null);
        }
        if (ElfKernel.IsElf(span))
            return new KernelImage(name, KernelFormat.Elf, data, null, ElfKernel.Parse(data, name));
        string what = span.Length < 0x206 ? $"only {span.Length} bytes" : "no \"HdrS\" setup header at 0x202 and no ELF magic";
        throw new InvalidKernelException($"{name} is not a Linux kernel: {what}");
    }

    /// <summary>The protected-mode part of a bzImage (what is loaded at 1 MiB / pref_address).</summary>
    public ReadOnlyMemory<byte> ProtectedModeKernel =>
        Header is null ? throw new InvalidOperationException("not a bzImage") : Data[Header.SetupSize..];

    /// <summary>The compressed payload inside a bzImage (protocol 2.08+).</summary>
    public ReadOnlyMemory<byte> Payload
    {
        get
        {
            var h = Header ?? throw new InvalidOperationException("not a bzImage");
            var pm = ProtectedModeKernel;
            if (h.Version < 0x0208 || h.PayloadLength == 0)
                throw new InvalidKernelException($"{Name}: boot protocol {h.VersionText} does not describe its payload (2.08+ does)");
            if ((ulong)h.PayloadOffset + h.PayloadLength > (ulong)pm.Length)
                throw new InvalidKernelException($"{Name}: payload [0x{h.PayloadOffset:x}+0x{h.PayloadLength:x}] lies outside the protected-mode kernel ({pm.Length} bytes)");
            return pm.Slice((int)h.PayloadOffset, (int)h.PayloadLength);
        }
    }

    /// <summary>The payload's compression, for a bzImage; <see cref="PayloadCompression.None"/> for an ELF.</summary>
    public PayloadCompression PayloadCompression =>
        Format == KernelFormat.Elf ? PayloadCompression.None : PayloadDecompressor.Detect(Payload.Span);

    /// <summary>
    /// The vmlinux ELF: for a bzImage, its payload decompressed on the host (gzip and LZ4 legacy);
    /// for an ELF kernel, itself.
    /// </summary>
    public ElfKernel Decompress()
    {
        if (Elf is not null) return Elf;
        var compression = PayloadCompression;
        if (compression == PayloadCompression.Unknown)
            throw new InvalidKernelException($"{Name}: unrecognised payload compression (first bytes {Convert.ToHexString(Payload.Span[..Math.Min(8, Payload.Length)])})");
        var vmlinux = PayloadDecompressor.Decompress(Payload.Span, compression, Name);
        return ElfKernel.Parse(vmlinux, $"{Name} (decompressed payload)");
    }
}
