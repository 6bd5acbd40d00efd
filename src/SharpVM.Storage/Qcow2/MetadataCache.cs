using System.Diagnostics.CodeAnalysis;

namespace SharpVM.Storage.Qcow2;

/// <summary>
/// Bounded LRU of metadata clusters (L2 tables, refcount blocks) keyed by host offset. The cache is write-through:
/// callers write changed entries to the file immediately, so eviction never loses anything and the order in which
/// metadata reaches the file is exactly program order (what crash safety relies on).
/// </summary>
internal sealed class MetadataCache
{
    private readonly int _capacity;
    private readonly Dictionary<long, LinkedListNode<(long Offset, byte[] Data)>> _map = [];
    private readonly LinkedList<(long Offset, byte[] Data)> _lru = new();

    public MetadataCache(int capacity) => _capacity = Math.Max(2, capacity);

    public int Count => _map.Count;

    public byte[] Get(long offset, Func<long, byte[]> load)
    {
        if (TryGet(offset, out var cached)) return cached;
        var data = load(offset);
        Put(offset, data);
        return data;
    }

    /// <summary>The cached cluster at <paramref name="offset"/>, now the most recently used; false when not cached.</summary>
    public bool TryGet(long offset, [MaybeNullWhen(false)] out byte[] data)
    {
        if (_map.TryGetValue(offset, out var node))
        {
            _lru.Remove(node);
            _lru.AddFirst(node);
            data = node.Value.Data;
            return true;
        }
        data = null;
        return false;
    }

    public void Put(long offset, byte[] data)
    {
        if (_map.TryGetValue(offset, out var old)) { _lru.Remove(old); _map.Remove(offset); }
        var node = _lru.AddFirst((offset, data));
        _map[offset] = node;
        while (_map.Count > _capacity)
        {
            var last = _lru.Last!;
            _lru.RemoveLast();
            _map.Remove(last.Value.Offset);
        }
    }

    public void Invalidate(long offset)
    {
        if (_map.Remove(offset, out var node)) _lru.Remove(node);
    }

    public void Clear() { _map.Clear(); _lru.Clear(); }
}
