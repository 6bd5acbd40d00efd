using System.Buffers.Binary;
using System.Text;

namespace SharpVM.Vmm.Acpi;

/// <summary>Helpers for ACPI system description tables: the 36-byte header and checksums.</summary>
public static class AcpiTable
{
    public const int HeaderSize = 36;
    public const string OemId = "SHRPVM";
    public const string OemTableId = "SHARPVM ";
    public const string CreatorId = "SHVM";
    public const uint OemRevision = 1, CreatorRevision = 1;

    /// <summary>Writes the standard header (length taken from <paramref name="table"/>) and fixes the checksum.</summary>
    public static void Finish(Span<byte> table, string signature, byte revision)
    {
        Encoding.ASCII.GetBytes(signature).CopyTo(table);
        BinaryPrimitives.WriteUInt32LittleEndian(table[4..], (uint)table.Length);
        table[8] = revision;
        Encoding.ASCII.GetBytes(OemId).CopyTo(table[10..]);
        Encoding.ASCII.GetBytes(OemTableId).CopyTo(table[16..]);
        BinaryPrimitives.WriteUInt32LittleEndian(table[24..], OemRevision);
        Encoding.ASCII.GetBytes(CreatorId).CopyTo(table[28..]);
        BinaryPrimitives.WriteUInt32LittleEndian(table[32..], CreatorRevision);
        SetChecksum(table, 9);
    }

    /// <summary>Sets the byte at <paramref name="checksumOffset"/> so that all of <paramref name="data"/> sums to 0 mod 256.</summary>
    public static void SetChecksum(Span<byte> data, int checksumOffset)
    {
        data[checksumOffset] = 0;
        data[checksumOffset] = (byte)(0x100 - Sum(data));
    }

    public static byte Sum(ReadOnlySpan<byte> data)
    {
        byte sum = 0;
        foreach (var b in data) sum += b;
        return sum;
    }

    /// <summary>A Generic Address Structure in system I/O space.</summary>
    public static void WriteIoGas(Span<byte> dest, ushort port, byte bitWidth, byte accessSize)
    {
        dest[0] = 1; // SystemIO
        dest[1] = bitWidth;
        dest[2] = 0;
        dest[3] = accessSize; // 1 = byte, 2 = word, 3 = dword
        BinaryPrimitives.WriteUInt64LittleEndian(dest[4..], port);
    }
}
