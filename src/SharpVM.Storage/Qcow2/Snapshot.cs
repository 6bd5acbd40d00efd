using System.Buffers.Binary;
using System.Text;

namespace SharpVM.Storage.Qcow2;

/// <summary>One entry of the snapshot table (qcow2.rst "Snapshot table"), VM-state fields included.</summary>
public sealed class Snapshot
{
    public ulong L1TableOffset;
    public uint L1Size;
    public string Id = "";
    public string Name = "";
    public uint DateSec;
    public uint DateNsec;
    public ulong VmClockNsec;
    /// <summary>VM state size: the 32-bit field, or the 64-bit one from extra data when present.</summary>
    public ulong VmStateSize;
    /// <summary>Virtual disk size when the snapshot was taken (extra data; falls back to the image size).</summary>
    public ulong? DiskSize;
    public ulong? Icount;
    /// <summary>Extra data bytes beyond the ones we know (kept verbatim).</summary>
    public byte[] UnknownExtra = [];

    public static List<Snapshot> ReadTable(ReadOnlySpan<byte> buf, uint count, int clusterSize, long fileLength, uint l1SizeLimit)
    {
        var list = new List<Snapshot>();
        int off = 0;
        for (uint i = 0; i < count; i++)
        {
            if (off + 40 > buf.Length) throw new CorruptImageException($"snapshot table entry {i} runs past the end of the table");
            var s = new Snapshot
            {
                L1TableOffset = BinaryPrimitives.ReadUInt64BigEndian(buf[off..]),
                L1Size = BinaryPrimitives.ReadUInt32BigEndian(buf[(off + 8)..]),
                DateSec = BinaryPrimitives.ReadUInt32BigEndian(buf[(off + 16)..]),
                DateNsec = BinaryPrimitives.ReadUInt32BigEndian(buf[(off + 20)..]),
                VmClockNsec = BinaryPrimitives.ReadUInt64BigEndian(buf[(off + 24)..]),
                VmStateSize = BinaryPrimitives.ReadUInt32BigEndian(buf[(off + 32)..]),
            };
            int idLen = BinaryPrimitives.ReadUInt16BigEndian(buf[(off + 12)..]);
            int nameLen = BinaryPrimitives.ReadUInt16BigEndian(buf[(off + 14)..]);
            uint extra = BinaryPrimitives.ReadUInt32BigEndian(buf[(off + 36)..]);
            if (extra > 1024) throw new CorruptImageException($"snapshot {i} has {extra} bytes of extra data (limit 1024)");
            long total = 40L + extra + idLen + nameLen;
            if (off + total > buf.Length) throw new CorruptImageException($"snapshot table entry {i} runs past the end of the table");
            var ex = buf.Slice(off + 40, (int)extra);
            if (extra >= 8) s.VmStateSize = BinaryPrimitives.ReadUInt64BigEndian(ex);
            if (extra >= 16) s.DiskSize = BinaryPrimitives.ReadUInt64BigEndian(ex[8..]);
            if (extra >= 24) s.Icount = BinaryPrimitives.ReadUInt64BigEndian(ex[16..]);
            if (extra > 24) s.UnknownExtra = ex[24..].ToArray();
            s.Id = Encoding.UTF8.GetString(buf.Slice(off + 40 + (int)extra, idLen));
            s.Name = Encoding.UTF8.GetString(buf.Slice(off + 40 + (int)extra + idLen, nameLen));
            if (s.L1Size > l1SizeLimit) throw new CorruptImageException($"snapshot '{s.Name}' L1 table has {s.L1Size} entries (limit {l1SizeLimit})");
            if (s.L1TableOffset % (ulong)clusterSize != 0 || (s.L1Size > 0 && (s.L1TableOffset >= (ulong)fileLength || (ulong)s.L1Size * 8 > (ulong)fileLength - s.L1TableOffset)))
                throw new CorruptImageException($"snapshot '{s.Name}' L1 table at 0x{s.L1TableOffset:x} is misaligned or past the end of the file");
            list.Add(s);
            off += (int)((total + 7) & ~7L);
        }
        return list;
    }

    public static byte[] WriteTable(IReadOnlyList<Snapshot> snaps)
    {
        using var ms = new MemoryStream();
        Span<byte> fixedPart = stackalloc byte[40];
        foreach (var s in snaps)
        {
            var id = Encoding.UTF8.GetBytes(s.Id);
            var name = Encoding.UTF8.GetBytes(s.Name);
            var extra = new byte[24 + s.UnknownExtra.Length];
            BinaryPrimitives.WriteUInt64BigEndian(extra, s.VmStateSize);
            BinaryPrimitives.WriteUInt64BigEndian(extra.AsSpan(8), s.DiskSize ?? 0);
            // icount: 0 unless record/replay recorded one (what qemu-img writes).
            BinaryPrimitives.WriteUInt64BigEndian(extra.AsSpan(16), s.Icount ?? 0);
            s.UnknownExtra.CopyTo(extra, 24);
            BinaryPrimitives.WriteUInt64BigEndian(fixedPart, s.L1TableOffset);
            BinaryPrimitives.WriteUInt32BigEndian(fixedPart[8..], s.L1Size);
            BinaryPrimitives.WriteUInt16BigEndian(fixedPart[12..], (ushort)id.Length);
            BinaryPrimitives.WriteUInt16BigEndian(fixedPart[14..], (ushort)name.Length);
            BinaryPrimitives.WriteUInt32BigEndian(fixedPart[16..], s.DateSec);
            BinaryPrimitives.WriteUInt32BigEndian(fixedPart[20..], s.DateNsec);
            BinaryPrimitives.WriteUInt64BigEndian(fixedPart[24..], s.VmClockNsec);
            BinaryPrimitives.WriteUInt32BigEndian(fixedPart[32..], (uint)Math.Min(s.VmStateSize, uint.MaxValue));
            BinaryPrimitives.WriteUInt32BigEndian(fixedPart[36..], (uint)extra.Length);
            ms.Write(fixedPart);
            ms.Write(extra);
            ms.Write(id);
            ms.Write(name);
            while (ms.Length % 8 != 0) ms.WriteByte(0);
        }
        return ms.ToArray();
    }
}
