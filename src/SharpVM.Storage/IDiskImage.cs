namespace SharpVM.Storage;

/// <summary>How one guest range is backed, as `qemu-img map` reports it.</summary>
public enum ExtentKind { Data, Zero, Unallocated, Compressed }

/// <summary>One run of guest bytes with the same allocation state.</summary>
/// <param name="Depth">0 for this image, 1 for its backing file, ...</param>
/// <param name="HostOffset">Where the data lies in the file at <paramref name="Depth"/>, or -1.</param>
public readonly record struct Extent(long Start, long Length, ExtentKind Kind, int Depth, long HostOffset, string? File);

/// <summary>
/// A virtual disk at byte granularity. Every member is safe to call concurrently from several threads;
/// the implementation serialises metadata changes internally. Reads past <see cref="Size"/> are an error.
/// </summary>
public interface IDiskImage : IAsyncDisposable, IDisposable
{
    string Format { get; }
    string Path { get; }
    long Size { get; }
    bool ReadOnly { get; }
    /// <summary>Granularity below which discard/zero cannot free space (cluster size; 512 for raw).</summary>
    int ClusterSize { get; }
    IDiskImage? Backing { get; }

    ValueTask ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default);
    ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default);
    /// <summary>Makes every acknowledged write durable (fsync).</summary>
    ValueTask FlushAsync(CancellationToken cancellationToken = default);
    /// <summary>Frees the range where whole clusters allow it; contents become zero (or backing data with v2 overlays).</summary>
    ValueTask DiscardAsync(long offset, long length, CancellationToken cancellationToken = default);
    /// <summary>Makes the range read as zeros, without allocating data where the format allows.</summary>
    ValueTask WriteZeroesAsync(long offset, long length, CancellationToken cancellationToken = default);

    /// <summary>Allocation state from <paramref name="offset"/> on (at least one byte, at most <paramref name="length"/>).</summary>
    Extent GetExtent(long offset, long length);

    // Synchronous forms for tools (convert, check...) which drive one request at a time.
    void Read(long offset, Span<byte> buffer);
    void Write(long offset, ReadOnlySpan<byte> data);
    void Flush();
    void WriteZeroes(long offset, long length);
    void Discard(long offset, long length);
    /// <summary>Bytes the image occupies on the host file system.</summary>
    long ActualSize { get; }
}
