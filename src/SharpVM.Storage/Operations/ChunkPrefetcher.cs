using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;

namespace SharpVM.Storage.Operations;

/// <summary>
/// Reads a source image ahead of its consumer, on its own thread: while convert writes one chunk, the next one is
/// being read (or decompressed). qemu-img convert overlaps reads and writes the same way with its coroutines. Chunks
/// come back in order; a chunk that reads as zero carries no buffer. Only this thread touches the source.
/// </summary>
internal sealed class ChunkPrefetcher : IDisposable
{
    /// <summary>One step of the walk: [Pos, Pos+Length) either reads as zero or is in Buffer[..Length].</summary>
    public readonly record struct Chunk(long Pos, int Length, bool Zero, byte[]? Buffer, ExceptionDispatchInfo? Error);

    private const int Depth = 2; // chunks read ahead
    private readonly BlockingCollection<Chunk> _ready = new(Depth);
    private readonly BlockingCollection<byte[]> _free = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _thread;

    public ChunkPrefetcher(IDiskImage src, long size, int chunkSize)
    {
        for (int i = 0; i < Depth + 2; i++) _free.Add(new byte[chunkSize]);
        _thread = new Thread(() => Run(src, size, chunkSize)) { IsBackground = true, Name = "convert-read" };
        _thread.Start();
    }

    private void Run(IDiskImage src, long size, int chunkSize)
    {
        try
        {
            long pos = 0;
            while (pos < size)
            {
                int n = (int)Math.Min(chunkSize - pos % chunkSize, size - pos);
                var ext = src.GetExtent(pos, n);
                n = (int)ext.Length;
                if (ext.Kind is ExtentKind.Zero or ExtentKind.Unallocated)
                    _ready.Add(new Chunk(pos, n, true, null, null), _stop.Token);
                else
                {
                    var buf = _free.Take(_stop.Token);
                    src.Read(pos, buf.AsSpan(0, n));
                    _ready.Add(new Chunk(pos, n, false, buf, null), _stop.Token);
                }
                pos += n;
            }
            _ready.CompleteAdding();
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested) { }
        catch (Exception e)
        {
            // Handed to the consumer, which rethrows it with its type (DiskImageException stays one).
            try { _ready.Add(new Chunk(0, 0, true, null, ExceptionDispatchInfo.Capture(e)), _stop.Token); _ready.CompleteAdding(); }
            catch (OperationCanceledException) { }
        }
    }

    /// <summary>The chunks in order; give each buffer back with <see cref="Return"/> once written.</summary>
    public IEnumerable<Chunk> Chunks()
    {
        foreach (var c in _ready.GetConsumingEnumerable())
        {
            c.Error?.Throw();
            yield return c;
        }
    }

    public void Return(byte[]? buffer)
    {
        if (buffer != null) _free.Add(buffer);
    }

    public void Dispose()
    {
        _stop.Cancel();
        _thread.Join();
        _stop.Dispose();
        _ready.Dispose();
        _free.Dispose();
    }
}
