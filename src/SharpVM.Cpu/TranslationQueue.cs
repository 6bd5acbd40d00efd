namespace SharpVM.Cpu;

/// <summary>
/// Blocks waiting for the background translator, handed out hottest first: the one the interpreter has run most
/// often (<see cref="Block.Runs"/> goes on counting while a block waits). The translator is busy for seconds of a
/// boot while the guest moves from phase to phase; first-come-first-served made blocks that became hot wait behind
/// blocks whose phase was already over, and the interpreter ran them all the while.
/// </summary>
internal sealed class TranslationQueue(int capacity)
{
    private readonly List<Block> _waiting = [];
    private readonly Lock _lock = new();
    private readonly SemaphoreSlim _available = new(0);

    /// <summary>Adds a block; false (nothing added) when <paramref name="capacity"/> blocks are waiting already.</summary>
    public bool TryAdd(Block b)
    {
        lock (_lock)
        {
            if (_waiting.Count >= capacity) return false;
            _waiting.Add(b);
        }
        _available.Release();
        return true;
    }

    /// <summary>Waits for a block and removes the one run most often so far.</summary>
    public Block TakeHottest()
    {
        _available.Wait();
        lock (_lock)
        {
            int best = 0;
            for (int k = 1; k < _waiting.Count; k++)
                if (Volatile.Read(ref _waiting[k].Runs) > Volatile.Read(ref _waiting[best].Runs)) best = k;
            var b = _waiting[best];
            _waiting[best] = _waiting[^1];
            _waiting.RemoveAt(_waiting.Count - 1);
            return b;
        }
    }
}
