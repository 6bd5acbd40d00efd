namespace SharpVM.Cli.Serial;

/// <summary>
/// The bytes COM1 has sent and the console's output thread has not written yet. vCPU threads add
/// to it and return at once, so a slow terminal, file or socket client never stalls the guest's
/// CPU inside a port write. When it is full, a lossless sink (terminal, file) makes the vCPU wait,
/// as a real UART would; a socket sink drops the new bytes instead (and counts them), since a
/// client that stops reading must not freeze the guest.
/// </summary>
public sealed class SerialOutputQueue(int capacity, bool dropWhenFull)
{
    private readonly byte[] _ring = new byte[capacity];
    private readonly object _lock = new();
    private int _head, _count, _inFlight;
    private bool _closed;

    /// <summary>Bytes dropped because the queue was full (socket sinks only).</summary>
    public long Dropped { get; private set; }

    public void Enqueue(ReadOnlySpan<byte> bytes)
    {
        lock (_lock)
        {
            while (bytes.Length > 0 && !_closed)
            {
                int space = _ring.Length - _count;
                if (space == 0)
                {
                    if (dropWhenFull) { Dropped += bytes.Length; return; }
                    Monitor.Wait(_lock);
                    continue;
                }
                int n = Math.Min(space, bytes.Length);
                for (int i = 0; i < n; i++) _ring[(_head + _count + i) % _ring.Length] = bytes[i];
                _count += n;
                bytes = bytes[n..];
                Monitor.PulseAll(_lock);
            }
        }
    }

    /// <summary>
    /// Waits for bytes and moves up to <paramref name="into"/>'s length of them out; 0 once closed and
    /// empty. The caller reports with <see cref="Written"/> when it has written them.
    /// </summary>
    public int Take(Span<byte> into)
    {
        lock (_lock)
        {
            while (_count == 0 && !_closed) Monitor.Wait(_lock);
            int n = Math.Min(_count, into.Length);
            for (int i = 0; i < n; i++) into[i] = _ring[(_head + i) % _ring.Length];
            _head = (_head + n) % _ring.Length;
            _count -= n;
            _inFlight = n;
            Monitor.PulseAll(_lock);
            return n;
        }
    }

    /// <summary>The bytes from the last <see cref="Take"/> have been written.</summary>
    public void Written()
    {
        lock (_lock)
        {
            _inFlight = 0;
            Monitor.PulseAll(_lock);
        }
    }

    /// <summary>Waits until every queued byte has been written; false on timeout.</summary>
    public bool WaitUntilDrained(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        lock (_lock)
        {
            while (_count + _inFlight > 0)
            {
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero || !Monitor.Wait(_lock, left)) return _count + _inFlight == 0;
            }
            return true;
        }
    }

    /// <summary>Wakes every waiter; later <see cref="Enqueue"/> calls are ignored.</summary>
    public void Close()
    {
        lock (_lock)
        {
            _closed = true;
            Monitor.PulseAll(_lock);
        }
    }
}
