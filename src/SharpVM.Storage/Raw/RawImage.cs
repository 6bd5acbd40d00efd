namespace SharpVM.Storage;

/// <summary>A raw image: guest offset = file offset. Zeroing and discard punch holes so the file stays sparse.</summary>
public sealed class RawImage : IDiskImage
{
    private readonly ImageFile _file;
    private long _size;
    private bool _disposed;

    /// <param name="unsafeCache">qemu's cache=unsafe: Flush does not fsync.</param>
    public RawImage(string path, bool readOnly, bool unsafeCache = false)
    {
        _file = new ImageFile(path, readOnly) { IgnoreFlushes = unsafeCache };
        _size = _file.Length;
    }

    public static RawImage Create(string path, long size, bool unsafeCache = false)
    {
        using (var f = new FileStream(path, FileMode.Create, FileAccess.Write)) f.SetLength(size);
        return new RawImage(path, false, unsafeCache);
    }

    public string Format => "raw";
    public string Path => _file.Path;
    public long Size => _size;
    public bool ReadOnly => _file.ReadOnly;
    public int ClusterSize => 512;
    public IDiskImage? Backing => null;
    public long ActualSize => _file.AllocatedBytes;

    private void Check(long offset, long length)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (offset < 0 || length < 0 || offset > _size || length > _size - offset)
            throw new ArgumentOutOfRangeException(nameof(offset), $"range {offset}+{length} is outside the {_size}-byte disk");
    }

    public void Read(long offset, Span<byte> buffer) { Check(offset, buffer.Length); _file.Read(offset, buffer); }
    public void Write(long offset, ReadOnlySpan<byte> data) { Check(offset, data.Length); _file.Write(offset, data); }
    public void Flush() => _file.Flush();
    public void WriteZeroes(long offset, long length) { Check(offset, length); if (ReadOnly) throw new ImageReadOnlyException($"'{Path}' is open read-only"); _file.PunchHole(offset, length); }
    public void Discard(long offset, long length) => WriteZeroes(offset, length);

    public void Resize(long newSize) { _file.SetLength(newSize); _size = newSize; }

    public Extent GetExtent(long offset, long length)
    {
        Check(offset, length);
        // Holes of a sparse file read as zeros: report them as such so convert/map can skip them (SEEK_DATA/SEEK_HOLE).
        long end = offset + length;
        long data = _file.Seek(offset, true);
        if (data < 0 || data >= end) return new Extent(offset, length, ExtentKind.Zero, 0, offset, Path);
        if (data > offset) return new Extent(offset, data - offset, ExtentKind.Zero, 0, offset, Path);
        long hole = _file.Seek(offset, false);
        if (hole <= offset || hole > end) hole = end;
        return new Extent(offset, hole - offset, ExtentKind.Data, 0, offset, Path);
    }

    public ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken ct = default) { Read(offset, buffer.Span); return ValueTask.CompletedTask; }
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct = default) { Write(offset, data.Span); return ValueTask.CompletedTask; }
    public ValueTask FlushAsync(CancellationToken ct = default) { Flush(); return ValueTask.CompletedTask; }
    public ValueTask DiscardAsync(long offset, long length, CancellationToken ct = default) { Discard(offset, length); return ValueTask.CompletedTask; }
    public ValueTask WriteZeroesAsync(long offset, long length, CancellationToken ct = default) { WriteZeroes(offset, length); return ValueTask.CompletedTask; }

    public void Dispose() { if (_disposed) return; _disposed = true; _file.Dispose(); }
    public ValueTask DisposeAsync() { Dispose(); return ValueTask.CompletedTask; }
}
