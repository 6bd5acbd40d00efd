using System.Text;

namespace SharpVM.Vmm.Acpi;

/// <summary>
/// A tiny AML (ACPI Machine Language) encoder, enough for a static DSDT: names, scopes, devices,
/// packages, integers, strings, EISA IDs and resource-template buffers (ACPI 6.5 §20.2).
/// Each method returns encoded bytes; containers take their already-encoded children.
/// </summary>
public static class Aml
{
    private const byte ZeroOp = 0x00, OneOp = 0x01, OnesOp = 0xFF, NameOp = 0x08, ScopeOp = 0x10, BufferOp = 0x11,
        PackageOp = 0x12, MethodOp = 0x14, ReturnOp = 0xA4, BytePrefix = 0x0A, WordPrefix = 0x0B, DWordPrefix = 0x0C,
        StringPrefix = 0x0D, QWordPrefix = 0x0E, ExtOpPrefix = 0x5B, DeviceOp = 0x82, RootChar = 0x5C,
        DualNamePrefix = 0x2E, MultiNamePrefix = 0x2F;

    /// <summary>
    /// A NameString: "\_SB_.PCI0", "_HID", "\_S5_". Segments are padded with '_' to 4 characters;
    /// a leading '\' is the root.
    /// </summary>
    public static byte[] NameString(string path)
    {
        var result = new List<byte>();
        if (path.StartsWith('\\')) { result.Add(RootChar); path = path[1..]; }
        var segments = path.Length == 0 ? [] : path.Split('.');
        foreach (var s in segments)
            if (s.Length is 0 or > 4 || !IsLeadChar(s[0]) || !s.All(c => IsLeadChar(c) || char.IsAsciiDigit(c)))
                throw new ArgumentException($"'{s}' is not an ACPI name segment", nameof(path));
        if (segments.Length == 2) result.Add(DualNamePrefix);
        else if (segments.Length > 2) { result.Add(MultiNamePrefix); result.Add((byte)segments.Length); }
        else if (segments.Length == 0) result.Add(0x00); // NullName
        foreach (var s in segments) result.AddRange(Encoding.ASCII.GetBytes(s.PadRight(4, '_')));
        return result.ToArray();
    }

    private static bool IsLeadChar(char c) => c == '_' || char.IsAsciiLetterUpper(c);

    /// <summary>PkgLength for <paramref name="contentLength"/> bytes following it (the encoding counts itself).</summary>
    public static byte[] PkgLength(int contentLength)
    {
        if (contentLength + 1 <= 0x3F) return [(byte)(contentLength + 1)];
        for (int extra = 1; extra <= 3; extra++)
        {
            int total = contentLength + 1 + extra;
            if (total < 1 << (4 + 8 * extra))
            {
                var b = new byte[1 + extra];
                b[0] = (byte)((extra << 6) | (total & 0xF));
                for (int i = 0; i < extra; i++) b[1 + i] = (byte)(total >> (4 + 8 * i));
                return b;
            }
        }
        throw new ArgumentOutOfRangeException(nameof(contentLength), "AML package too large");
    }

    public static byte[] Integer(ulong value) => value switch
    {
        0 => [ZeroOp],
        1 => [OneOp],
        <= 0xFF => [BytePrefix, (byte)value],
        <= 0xFFFF => [WordPrefix, (byte)value, (byte)(value >> 8)],
        <= 0xFFFF_FFFF => [DWordPrefix, .. BitConverter.GetBytes((uint)value)],
        _ => [QWordPrefix, .. BitConverter.GetBytes(value)],
    };

    public static byte[] Ones => [OnesOp];

    public static byte[] String(string s) => [StringPrefix, .. Encoding.ASCII.GetBytes(s), 0];

    /// <summary>A compressed EISA ID ("PNP0A03") as a DWordConst, as ASL's EisaId() produces.</summary>
    public static byte[] EisaId(string id)
    {
        if (id.Length != 7 || !id[..3].All(char.IsAsciiLetterUpper) || !id[3..].All(char.IsAsciiHexDigit))
            throw new ArgumentException($"'{id}' is not an EISA ID like PNP0A03", nameof(id));
        uint v = EisaIdValue(id);
        return [DWordPrefix, .. BitConverter.GetBytes(v)];
    }

    public static uint EisaIdValue(string id)
    {
        int c1 = id[0] - 0x40, c2 = id[1] - 0x40, c3 = id[2] - 0x40;
        byte b0 = (byte)((c1 << 2) | (c2 >> 3));
        byte b1 = (byte)(((c2 & 7) << 5) | c3);
        byte b2 = Convert.ToByte(id.Substring(3, 2), 16), b3 = Convert.ToByte(id.Substring(5, 2), 16);
        return (uint)(b0 | b1 << 8 | b2 << 16 | b3 << 24);
    }

    public static byte[] Name(string name, byte[] value) => [NameOp, .. NameString(name), .. value];

    public static byte[] Scope(string name, params byte[][] body) => Container([ScopeOp], NameString(name), body);

    public static byte[] Device(string name, params byte[][] body) => Container([ExtOpPrefix, DeviceOp], NameString(name), body);

    /// <summary>A method with no arguments, not serialized.</summary>
    public static byte[] Method(string name, params byte[][] body) => Container([MethodOp], [.. NameString(name), 0x00], body);

    public static byte[] Return(byte[] value) => [ReturnOp, .. value];

    public static byte[] Package(params byte[][] elements)
    {
        if (elements.Length > 255) throw new ArgumentOutOfRangeException(nameof(elements), "use a VarPackage for more than 255 elements");
        return Container([PackageOp], [(byte)elements.Length], elements);
    }

    public static byte[] Buffer(ReadOnlySpan<byte> data) => Container([BufferOp], Integer((ulong)data.Length), [data.ToArray()]);

    private static byte[] Container(byte[] op, byte[] header, byte[][] body)
    {
        int contentLength = header.Length + body.Sum(b => b.Length);
        var result = new List<byte>(op.Length + 4 + contentLength);
        result.AddRange(op);
        result.AddRange(PkgLength(contentLength));
        result.AddRange(header);
        foreach (var b in body) result.AddRange(b);
        return result.ToArray();
    }

    /// <summary>Resource descriptors for a ResourceTemplate (ACPI 6.5 §6.4).</summary>
    public static class Resource
    {
        /// <summary>IO(Decode16, min, max, alignment, length).</summary>
        public static byte[] Io(ushort min, ushort max, byte alignment, byte length) =>
            [0x47, 0x01, (byte)min, (byte)(min >> 8), (byte)max, (byte)(max >> 8), alignment, length];

        /// <summary>IRQNoFlags(){irq}: edge-triggered, active-high, exclusive.</summary>
        public static byte[] IrqNoFlags(int irq)
        {
            if (irq is < 0 or > 15) throw new ArgumentOutOfRangeException(nameof(irq));
            ushort mask = (ushort)(1 << irq);
            return [0x22, (byte)mask, (byte)(mask >> 8)];
        }

        /// <summary>Memory32Fixed(ReadWrite, base, length).</summary>
        public static byte[] Memory32Fixed(uint @base, uint length) =>
            [0x86, 0x09, 0x00, 0x01, .. BitConverter.GetBytes(@base), .. BitConverter.GetBytes(length)];

        /// <summary>A ResourceTemplate: the descriptors followed by an end tag, as a Buffer.</summary>
        public static byte[] Template(params byte[][] descriptors)
        {
            var bytes = descriptors.SelectMany(d => d).Concat(new byte[] { 0x79, 0x00 }).ToArray();
            return Buffer(bytes);
        }
    }
}
