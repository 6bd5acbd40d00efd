using SharpVM.Memory;

namespace SharpVM.Memory.Tests;

public class GuestMemoryTests
{
    [Fact]
    public void SmallGuestsGetOneRegionFromZero()
    {
        using var m = GuestMemory.Create(64UL << 20);
        var r = Assert.Single(m.Regions);
        Assert.Equal(new GuestAddress(0), r.Start);
        Assert.Equal(64UL << 20, m.Size);
    }

    [Fact]
    public void LargeGuestsSplitAroundTheMmioHole()
    {
        using var m = GuestMemory.Create(4UL << 30);
        Assert.Equal(2, m.Regions.Count);
        Assert.Equal(MemoryLayout.MmioHoleStart, m.Regions[0].Size);
        Assert.Equal(new GuestAddress(MemoryLayout.MmioHoleEnd), m.Regions[1].Start);
        Assert.Equal(1UL << 30, m.Regions[1].Size);
        Assert.False(m.IsRam(new GuestAddress(0xD000_0000), 1));
        m.Write(new GuestAddress(MemoryLayout.MmioHoleEnd + 8), 0x1234_5678UL);
        Assert.Equal(0x1234_5678UL, m.Read<ulong>(new GuestAddress(MemoryLayout.MmioHoleEnd + 8)));
    }

    [Theory]
    [InlineData(2UL << 20)]
    [InlineData(0xC000_0000UL)]            // exactly up to the hole: one region
    [InlineData(0xC000_0000UL + 4096)]     // one page more: a second region at 4 GiB
    [InlineData(6UL << 30)]
    public void RegionsAreTheLayoutsRamRanges(ulong ramBytes)
    {
        using var m = GuestMemory.Create(ramBytes);
        var ranges = MemoryLayout.RamRanges(ramBytes);
        Assert.Equal(ranges.Count, m.Regions.Count);
        for (int i = 0; i < ranges.Count; i++)
        {
            Assert.Equal(ranges[i].Start, m.Regions[i].Start);
            Assert.Equal(ranges[i].Size, m.Regions[i].Size);
            Assert.Equal((ulong)m.Regions[i].Backing.Length, m.Regions[i].Size);
        }
        Assert.Equal(ramBytes, m.Size);
    }

    [Theory]
    [InlineData(0UL)]
    [InlineData((2UL << 20) + 1)]
    public void BadRamSizesAreRefusedByName(ulong ramBytes)
    {
        var e = Assert.Throws<ArgumentException>(() => GuestMemory.Create(ramBytes));
        Assert.Contains($"guest RAM size {ramBytes}", e.Message);
        Assert.Throws<ArgumentException>(() => MemoryLayout.RamRanges(ramBytes));
    }

    [Fact]
    public void TypedReadsAndWritesRoundTripUnaligned()
    {
        using var m = GuestMemory.Create(1UL << 20);
        m.Write(new GuestAddress(0x1001), 0xAABB_CCDD_EEFF_0011UL);
        Assert.Equal(0xAABB_CCDD_EEFF_0011UL, m.Read<ulong>(new GuestAddress(0x1001)));
        Assert.Equal((byte)0x11, m.Read<byte>(new GuestAddress(0x1001)));
    }

    [Theory]
    [InlineData(0x10_0000UL, 1)]         // one past the end
    [InlineData(0xF_FFFCUL, 8)]          // straddles the end
    [InlineData(ulong.MaxValue - 3, 8)]  // would wrap around
    public void AccessesOutsideRamAreRefused(ulong address, int length)
    {
        using var m = GuestMemory.Create(1UL << 20);
        var e = Assert.Throws<GuestMemoryException>(() => m.GetSpan(new GuestAddress(address), length));
        Assert.Contains("outside guest RAM", e.Message);
        Assert.Throws<GuestMemoryException>(() => m.Read(new GuestAddress(address), new byte[length]));
    }

    [Fact]
    public void GuestAddressArithmeticIsChecked()
    {
        Assert.Throws<OverflowException>(() => new GuestAddress(ulong.MaxValue) + 1);
        Assert.False(new GuestAddress(ulong.MaxValue).TryAdd(1, out _));
        Assert.Equal(new GuestAddress(0x1000), new GuestAddress(0x1FFF).AlignDown(0x1000));
    }

    [Fact]
    public void SpanCopiesAcrossRegionsOnlyThroughRam()
    {
        using var m = GuestMemory.Create(4UL << 30);
        var tail = new GuestAddress(MemoryLayout.MmioHoleStart - 4);
        Assert.Throws<GuestMemoryException>(() => m.Write(tail, new byte[8]));
    }

    [Fact]
    public void SoftwareDirtyLogRecordsWrittenPages()
    {
        using var m = GuestMemory.Create(1UL << 20);
        m.EnableSoftwareDirtyLog();
        m.Write(new GuestAddress(0x3FFE), 0xFFFF_FFFFu); // spans pages 3 and 4
        m.Write(new GuestAddress(0x9000), new byte[] { 1, 2, 3 });
        _ = m.Read<uint>(new GuestAddress(0x20000));
        Assert.Equal([0x3000UL, 0x4000UL, 0x9000UL], m.SoftwareDirtyLog!.DirtyPages().Select(p => p.Value));
    }

    [Fact]
    public void MergeableAndHugePageAdviceReachTheKernel()
    {
        using var m = GuestMemory.Create(8UL << 20, new GuestMemoryOptions(HugePages: true, Mergeable: true));
        m.Write(new GuestAddress(0), 1UL);
        Assert.Equal(1UL, m.Read<ulong>(new GuestAddress(0)));
        // The kernel records madvise advice in the mapping's VmFlags: hg = MADV_HUGEPAGE, mg = MADV_MERGEABLE.
        var flags = VmFlagsOf(HostAddressOf(m.GetSpan(new GuestAddress(0), 1)));
        Assert.Contains("hg", flags);
        Assert.Contains("mg", flags);

        using var plain = GuestMemory.Create(8UL << 20);
        var plainFlags = VmFlagsOf(HostAddressOf(plain.GetSpan(new GuestAddress(0), 1)));
        Assert.DoesNotContain("mg", plainFlags);
    }

    private static unsafe ulong HostAddressOf(Span<byte> span)
    {
        fixed (byte* p = span) return (ulong)p;
    }

    /// <summary>The VmFlags of the mapping in /proc/self/smaps that contains <paramref name="address"/>.</summary>
    private static string[] VmFlagsOf(ulong address)
    {
        bool inside = false;
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            int dash = line.IndexOf('-');
            int space = line.IndexOf(' ');
            if (dash > 0 && space > dash && ulong.TryParse(line.AsSpan(0, dash), System.Globalization.NumberStyles.HexNumber, null, out ulong start)
                && ulong.TryParse(line.AsSpan(dash + 1, space - dash - 1), System.Globalization.NumberStyles.HexNumber, null, out ulong end))
                inside = address >= start && address < end;
            else if (inside && line.StartsWith("VmFlags:", StringComparison.Ordinal))
                return line["VmFlags:".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        }
        throw new InvalidOperationException($"no mapping in /proc/self/smaps contains 0x{address:x}");
    }
}

public class DirtyBitmapTests
{
    [Fact]
    public void KvmWordsMapToPages()
    {
        var bitmap = new DirtyBitmap(new GuestAddress(0x1_0000_0000), 128 * 4096, [0b1010, 1UL << 63]);
        Assert.Equal(3, bitmap.CountDirty());
        Assert.Equal([0x1_0000_1000UL, 0x1_0000_3000UL, 0x1_0000_0000UL + 127 * 4096], bitmap.DirtyPages().Select(p => p.Value));
        bitmap.Clear();
        Assert.Equal(0, bitmap.CountDirty());
    }

    [Fact]
    public void MergeOrsLogsOfTheSameRange()
    {
        var a = new DirtyBitmap(new GuestAddress(0), 64 * 4096);
        var b = new DirtyBitmap(new GuestAddress(0), 64 * 4096);
        a.MarkPage(1);
        b.MarkPage(5);
        a.Merge(b);
        Assert.True(a.IsDirty(1) && a.IsDirty(5) && !a.IsDirty(2));
        Assert.Throws<ArgumentException>(() => a.Merge(new DirtyBitmap(new GuestAddress(4096), 64 * 4096)));
    }
}
