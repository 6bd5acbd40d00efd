using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace SharpVM.Devices.Bus;

/// <summary>
/// An address space of device ranges: the port I/O space or the MMIO space. Registration refuses
/// overlaps; lookups are a binary search over a sorted, immutable snapshot so vCPU threads never lock.
/// </summary>
public class DeviceBus(string name)
{
    private readonly object _registrationLock = new();
    private BusRange[] _ranges = [];
    private readonly List<BusRange> _byIndex = [];
    private long _unclaimedReads, _unclaimedWrites;
    // Made when Debug logging first needs it: a generic collection over a value type would be JIT-compiled
    // (ReadyToRun cannot pregenerate it) on the VM-setup path, which bench/kvm keeps JIT-free.
    private HashSet<ulong>? _unclaimedSeen;

    /// <summary>How many distinct unclaimed addresses are logged (each once); guests probe many.</summary>
    private const int MaxUnclaimedLogged = 64;

    public string Name { get; } = name;

    /// <summary>Where device failures (errors) and first accesses to unclaimed addresses (debug) are logged.</summary>
    public ILogger Logger { get; set; } = NullLogger.Instance;

    /// <summary>All ranges, in registration order (index = <see cref="BusRange.Index"/>).</summary>
    public IReadOnlyList<BusRange> Ranges
    {
        get { lock (_registrationLock) return _byIndex.ToArray(); }
    }

    public long UnclaimedReads => Interlocked.Read(ref _unclaimedReads);
    public long UnclaimedWrites => Interlocked.Read(ref _unclaimedWrites);

    /// <summary>Claims [start, start+length) for <paramref name="device"/>; throws if any part is already claimed.</summary>
    public BusRange Register(ulong start, ulong length, IBusDevice device, string deviceName)
    {
        if (length == 0) throw new ArgumentException("a bus range cannot be empty", nameof(length));
        if (start + length < start) throw new ArgumentException($"range 0x{start:x}+0x{length:x} wraps around", nameof(length));
        lock (_registrationLock)
        {
            foreach (var r in _ranges)
                if (start < r.End && r.Start < start + length)
                    throw new InvalidOperationException(
                        $"{Name} bus: {deviceName} [0x{start:x}-0x{start + length - 1:x}] overlaps {r}");
            var range = new BusRange(start, length, device, deviceName, _byIndex.Count);
            _byIndex.Add(range);
            Volatile.Write(ref _ranges, InsertSorted(_ranges, range));
            return range;
        }
    }

    /// <summary>
    /// A copy of <paramref name="sorted"/> with <paramref name="range"/> inserted by start address.
    /// By hand rather than LINQ's OrderBy: OrderBy over a ulong key is a generic instantiation that
    /// ReadyToRun does not pregenerate, JIT-compiled while the first VM is wired up (bench/README.md).
    /// </summary>
    private static BusRange[] InsertSorted(BusRange[] sorted, BusRange range)
    {
        int at = 0;
        while (at < sorted.Length && sorted[at].Start < range.Start) at++;
        var next = new BusRange[sorted.Length + 1];
        Array.Copy(sorted, 0, next, 0, at);
        next[at] = range;
        Array.Copy(sorted, at, next, at + 1, sorted.Length - at);
        return next;
    }

    /// <summary>The range containing <paramref name="address"/>, or null.</summary>
    public BusRange? Find(ulong address)
    {
        var ranges = Volatile.Read(ref _ranges);
        int lo = 0, hi = ranges.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            var r = ranges[mid];
            if (address < r.Start) hi = mid - 1;
            else if (address - r.Start >= r.Length) lo = mid + 1;
            else return r;
        }
        return null;
    }

    /// <summary>
    /// Dispatches a read. Unclaimed addresses read as all ones, as on real hardware with nothing
    /// driving the bus, and are counted. Returns the range that served it, or null.
    /// </summary>
    public BusRange? Read(ulong address, Span<byte> data)
    {
        var r = Find(address);
        if (r is null)
        {
            data.Fill(0xFF);
            Interlocked.Increment(ref _unclaimedReads);
            NoteUnclaimed(address, "read", data.Length);
            return null;
        }
        if (r.Failure is not null) { data.Fill(0xFF); return r; }
        try
        {
            r.Device.Read(address - r.Start, data);
        }
        catch (Exception e)
        {
            data.Fill(0xFF);
            TakeOffTheBus(r, address, "read", data.Length, e);
        }
        return r;
    }

    /// <summary>Dispatches a write; writes to unclaimed addresses are dropped and counted.</summary>
    public BusRange? Write(ulong address, ReadOnlySpan<byte> data)
    {
        var r = Find(address);
        if (r is null)
        {
            Interlocked.Increment(ref _unclaimedWrites);
            NoteUnclaimed(address, "write", data.Length);
            return null;
        }
        if (r.Failure is not null) return r;
        try
        {
            r.Device.Write(address - r.Start, data);
        }
        catch (Exception e)
        {
            TakeOffTheBus(r, address, "write", data.Length, e);
        }
        return r;
    }

    /// <summary>
    /// A device that throws has met a state it does not handle (a bug, or a guest programming it with nonsense).
    /// It must not take the vCPU thread, and with it the VM, down: every range of that device is marked broken,
    /// the reason is logged once, and the guest from then on sees an empty slot.
    /// </summary>
    private void TakeOffTheBus(BusRange failed, ulong address, string access, int width, Exception e)
    {
        string why = $"{access} of {width} byte(s) at 0x{address:x} failed: {e.GetType().Name}: {e.Message}";
        bool first = false;
        foreach (var r in Volatile.Read(ref _ranges))
            if (ReferenceEquals(r.Device, failed.Device)) first |= r.MarkBroken(why);
        if (first)
            Logger.LogError(e, "{Bus} device {Device} is broken and now ignored (reads all ones, writes dropped); the VM goes on: {Why}",
                Name, failed.Name, why);
    }

    private void NoteUnclaimed(ulong address, string access, int width)
    {
        if (!Logger.IsEnabled(LogLevel.Debug)) return;
        lock (_registrationLock)
        {
            _unclaimedSeen ??= [];
            if (_unclaimedSeen.Count >= MaxUnclaimedLogged || !_unclaimedSeen.Add(address)) return;
        }
        Logger.LogDebug("{Bus} {Access} of {Width} byte(s) at 0x{Address:x}: no device there (reads all ones, writes dropped)",
            Name, access, width, address);
    }
}

/// <summary>The x86 port I/O space (64 Ki ports).</summary>
public sealed class PioBus() : DeviceBus("PIO");

/// <summary>The memory-mapped I/O space: guest-physical addresses that are not RAM.</summary>
public sealed class MmioBus() : DeviceBus("MMIO");
