namespace SharpVM.Devices.Interrupts;

/// <summary>APIC delivery modes (ICR, LVT, IOAPIC redirection entry and MSI data bits 10:8).</summary>
public enum ApicDeliveryMode
{
    Fixed = 0,
    LowestPriority = 1,
    Smi = 2,
    Reserved3 = 3,
    Nmi = 4,
    Init = 5,
    StartUp = 6,
    ExtInt = 7,
}

/// <summary>ICR destination shorthand (bits 19:18).</summary>
public enum ApicShorthand
{
    None = 0,
    Self = 1,
    AllIncludingSelf = 2,
    AllExcludingSelf = 3,
}

/// <summary>
/// An interrupt message on the APIC bus: an IPI, an IOAPIC redirection, or an MSI.
/// <paramref name="Destination"/> is 8 bits for xAPIC-format messages (IOAPIC, MSI, xAPIC ICR) and 32
/// bits for x2APIC ICR writes (<paramref name="X2ApicFormat"/>).
/// </summary>
public readonly record struct ApicMessage(
    ApicDeliveryMode Mode,
    byte Vector,
    uint Destination,
    bool LogicalDestination,
    bool LevelTriggered,
    bool Assert = true,
    ApicShorthand Shorthand = ApicShorthand.None,
    bool X2ApicFormat = false)
{
    /// <summary>Decodes an MSI (address 0xFEExxxxx, data): the Intel SDM 10.11 format.</summary>
    public static bool TryDecodeMsi(ulong address, uint data, out ApicMessage message)
    {
        message = default;
        if ((address & 0xFFF0_0000UL) != 0xFEE0_0000UL || (address >> 32) != 0) return false;
        var mode = (ApicDeliveryMode)((data >> 8) & 7);
        bool level = (data & (1u << 15)) != 0;
        message = new ApicMessage(
            mode,
            (byte)data,
            (uint)((address >> 12) & 0xFF),
            LogicalDestination: (address & (1u << 2)) != 0,
            LevelTriggered: level,
            // Edge messages always assert; a level message with bit 14 clear is a de-assert.
            Assert: !level || (data & (1u << 14)) != 0);
        return true;
    }
}

/// <summary>
/// The APIC bus: the set of local APICs and the IOAPIC EOI broadcast. Resolves a message's destination
/// (physical ID, logical flat/cluster, x2APIC cluster, broadcast, shorthand, lowest priority) and hands
/// it to the accepting local APICs. Thread-safe; it holds no lock of its own while delivering.
/// </summary>
public sealed class ApicBus
{
    private readonly object _attachLock = new();
    private LocalApic[] _apics = [];
    private int _lowestPriorityCursor;

    /// <summary>Raised after a local APIC EOIs a level-triggered vector (unless suppressed): the IOAPIC listens.</summary>
    public event Action<int>? EndOfInterruptBroadcast;

    public IReadOnlyList<LocalApic> LocalApics => Volatile.Read(ref _apics);

    internal void Attach(LocalApic apic)
    {
        lock (_attachLock)
        {
            var next = new LocalApic[_apics.Length + 1];
            _apics.CopyTo(next, 0);
            next[^1] = apic;
            Volatile.Write(ref _apics, next);
        }
    }

    internal void BroadcastEoi(int vector) => EndOfInterruptBroadcast?.Invoke(vector);

    /// <summary>
    /// Delivers <paramref name="message"/>; <paramref name="source"/> is the sending local APIC for IPIs
    /// (needed for shorthands), null for the IOAPIC and MSIs. Returns the number of APICs that accepted it.
    /// </summary>
    public int Deliver(in ApicMessage message, LocalApic? source = null)
    {
        var apics = Volatile.Read(ref _apics);
        if (message.Mode == ApicDeliveryMode.LowestPriority && message.Shorthand == ApicShorthand.None)
        {
            var target = PickLowestPriority(apics, message);
            return target is not null && target.Accept(message) ? 1 : 0;
        }
        int accepted = 0;
        foreach (var apic in apics)
        {
            bool match = message.Shorthand switch
            {
                ApicShorthand.Self => ReferenceEquals(apic, source),
                ApicShorthand.AllIncludingSelf => true,
                ApicShorthand.AllExcludingSelf => !ReferenceEquals(apic, source),
                _ => apic.MatchesDestination(message.Destination, message.LogicalDestination, message.X2ApicFormat),
            };
            if (match && apic.Accept(message)) accepted++;
        }
        return accepted;
    }

    // Lowest priority: among the destination set, the APIC with the lowest processor priority; ties go
    // round-robin so a flood of lowest-priority interrupts spreads out.
    private LocalApic? PickLowestPriority(LocalApic[] apics, in ApicMessage message)
    {
        if (apics.Length == 0) return null;
        int start = (int)((uint)Interlocked.Increment(ref _lowestPriorityCursor) % (uint)apics.Length);
        LocalApic? best = null;
        int bestPriority = int.MaxValue;
        for (int i = 0; i < apics.Length; i++)
        {
            var apic = apics[(start + i) % apics.Length];
            if (!apic.CanAcceptFixed) continue;
            if (!apic.MatchesDestination(message.Destination, message.LogicalDestination, message.X2ApicFormat)) continue;
            int p = apic.ArbitrationPriority;
            if (p < bestPriority)
            {
                best = apic;
                bestPriority = p;
            }
        }
        return best;
    }
}
