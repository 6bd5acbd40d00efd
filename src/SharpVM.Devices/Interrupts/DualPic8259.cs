using SharpVM.Devices.Bus;

namespace SharpVM.Devices.Interrupts;

/// <summary>
/// The two cascaded 8259A programmable interrupt controllers of a PC: master at ports 0x20/0x21, slave at
/// 0xA0/0xA1 on the master's IR2, and the edge/level control registers (ELCR) at 0x4D0/0x4D1.
/// Implements ICW1-ICW4 initialisation, OCW1 masking, OCW2 EOI/rotation commands, OCW3 IRR/ISR reads,
/// poll mode and special mask mode, auto-EOI, special fully nested mode, and the INTA sequence including
/// spurious IRQ7/IRQ15. The master's INT output is the INTR wire the BSP's local APIC polls (ExtINT).
/// </summary>
/// <remarks>Thread-safe with one lock for both chips. It never calls another device while holding it: a
/// rising INTR is announced through <see cref="InterruptRequestRaised"/> after releasing the lock.</remarks>
public sealed class DualPic8259 : IExtIntSource
{
    public const ushort MasterBase = 0x20, SlaveBase = 0xA0, ElcrBase = 0x4D0;

    private readonly object _lock = new();
    private readonly Chip _master = new(isMaster: true), _slave = new(isMaster: false);
    private long _acknowledged, _spurious;
    private volatile bool _intr; // the INTR output, refreshed under the lock, read lock-free by the CPU poll

    /// <inheritdoc/>
    public event Action? InterruptRequestRaised;

    /// <summary>INTA cycles served.</summary>
    public long Acknowledged => Interlocked.Read(ref _acknowledged);

    /// <summary>INTA cycles that found nothing to serve (spurious IRQ7/IRQ15 vectors returned).</summary>
    public long Spurious => Interlocked.Read(ref _spurious);

    /// <summary>Bus device for the master's two ports (register at <see cref="MasterBase"/>, length 2).</summary>
    public IBusDevice MasterPorts => _masterPorts ??= new Ports(this, _master);
    /// <summary>Bus device for the slave's two ports (register at <see cref="SlaveBase"/>, length 2).</summary>
    public IBusDevice SlavePorts => _slavePorts ??= new Ports(this, _slave);
    /// <summary>Bus device for ELCR1/ELCR2 (register at <see cref="ElcrBase"/>, length 2).</summary>
    public IBusDevice ElcrPorts => _elcrPorts ??= new Elcr(this);
    private IBusDevice? _masterPorts, _slavePorts, _elcrPorts;

    /// <summary>Drives IRQ line <paramref name="irq"/> (0..15); IRQ2 is the cascade input and is ignored.</summary>
    public void SetIrq(int irq, bool level)
    {
        if ((uint)irq > 15 || irq == 2) return;
        bool raised;
        lock (_lock)
        {
            bool before = IntrLocked();
            if (irq < 8) _master.SetInput(irq, level);
            else _slave.SetInput(irq - 8, level);
            UpdateCascadeLocked();
            raised = !before && IntrLocked();
        }
        if (raised) InterruptRequestRaised?.Invoke();
    }

    /// <inheritdoc/>
    public bool InterruptRequested => _intr;

    private bool IntrLocked() => _master.PendingIrq() >= 0;

    // The slave's INT output is wired to the master's IR2 and is treated as level-sensitive there, so a
    // slave request that goes away (a level IRQ deasserted before INTA) also withdraws IR2.
    private void UpdateCascadeLocked()
    {
        _master.SetCascadeInput(_slave.PendingIrq() >= 0);
        _intr = IntrLocked();
    }

    /// <inheritdoc/>
    public int AcknowledgeInterrupt()
    {
        bool raised;
        int vector;
        lock (_lock)
        {
            Interlocked.Increment(ref _acknowledged);
            int irq = _master.PendingIrq();
            if (irq < 0)
            {
                Interlocked.Increment(ref _spurious);
                vector = _master.VectorBase + 7;
            }
            else
            {
                _master.Acknowledge(irq);
                if (irq == 2)
                {
                    int slaveIrq = _slave.PendingIrq();
                    if (slaveIrq < 0)
                    {
                        Interlocked.Increment(ref _spurious);
                        vector = _slave.VectorBase + 7;
                    }
                    else
                    {
                        _slave.Acknowledge(slaveIrq);
                        vector = _slave.VectorBase + slaveIrq;
                    }
                }
                else
                {
                    vector = _master.VectorBase + irq;
                }
            }
            UpdateCascadeLocked();
            raised = IntrLocked();
        }
        if (raised) InterruptRequestRaised?.Invoke();
        return vector;
    }

    /// <summary>Master and slave IRR, ISR and IMR, master in the low byte (for tests and debugging).</summary>
    public (ushort Irr, ushort Isr, ushort Imr) Registers
    {
        get
        {
            lock (_lock)
                return ((ushort)(_master.Irr | (_slave.Irr << 8)), (ushort)(_master.Isr | (_slave.Isr << 8)),
                    (ushort)(_master.Imr | (_slave.Imr << 8)));
        }
    }

    private void PortWrite(Chip chip, ulong offset, byte value)
    {
        bool raised;
        lock (_lock)
        {
            bool before = IntrLocked();
            if (offset == 0) chip.WriteCommand(value);
            else chip.WriteData(value);
            UpdateCascadeLocked();
            raised = !before && IntrLocked();
        }
        if (raised) InterruptRequestRaised?.Invoke();
    }

    private byte PortRead(Chip chip, ulong offset)
    {
        lock (_lock)
        {
            if (offset != 0) return chip.Imr;
            if (!chip.Poll) return chip.ReadIsr ? chip.Isr : chip.Irr;
            // Poll command: the read acts as an INTA (without a vector cycle).
            chip.Poll = false;
            int irq = chip.PendingIrq();
            if (irq < 0) return 0;
            chip.Acknowledge(irq);
            if (chip == _master && irq == 2)
            {
                int s = _slave.PendingIrq();
                if (s >= 0) _slave.Acknowledge(s);
            }
            UpdateCascadeLocked();
            return (byte)(0x80 | irq);
        }
    }

    /// <summary>Captures both chips' state for a snapshot.</summary>
    public DualPic8259State SaveState()
    {
        lock (_lock) return new DualPic8259State(_master.Save(), _slave.Save());
    }

    /// <summary>Restores a saved state (INTR is re-evaluated; a raised INTR is announced).</summary>
    public void RestoreState(DualPic8259State state)
    {
        ArgumentNullException.ThrowIfNull(state);
        bool raised;
        lock (_lock)
        {
            _master.Restore(state.Master);
            _slave.Restore(state.Slave);
            UpdateCascadeLocked();
            raised = _intr;
        }
        if (raised) InterruptRequestRaised?.Invoke();
    }

    private sealed class Ports(DualPic8259 pic, Chip chip) : IBusDevice
    {
        public void Read(ulong offset, Span<byte> data)
        {
            data.Clear();
            if (data.Length > 0 && offset < 2) data[0] = pic.PortRead(chip, offset);
        }

        public void Write(ulong offset, ReadOnlySpan<byte> data)
        {
            if (data.Length > 0 && offset < 2) pic.PortWrite(chip, offset, data[0]);
        }
    }

    private sealed class Elcr(DualPic8259 pic) : IBusDevice
    {
        public void Read(ulong offset, Span<byte> data)
        {
            data.Clear();
            lock (pic._lock)
                for (int i = 0; i < data.Length && offset + (ulong)i < 2; i++)
                    data[i] = (offset + (ulong)i == 0 ? pic._master : pic._slave).Elcr;
        }

        public void Write(ulong offset, ReadOnlySpan<byte> data)
        {
            bool raised;
            lock (pic._lock)
            {
                bool before = pic.IntrLocked();
                for (int i = 0; i < data.Length && offset + (ulong)i < 2; i++)
                    (offset + (ulong)i == 0 ? pic._master : pic._slave).SetElcr(data[i]);
                pic.UpdateCascadeLocked();
                raised = !before && pic.IntrLocked();
            }
            if (raised) pic.InterruptRequestRaised?.Invoke();
        }
    }

    /// <summary>One 8259A. All members are called under the pair's lock.</summary>
    private sealed class Chip(bool isMaster)
    {
        public byte Irr, Isr, Imr, Elcr;
        private byte _inputs;          // current input levels (for edge detection)
        private readonly byte _elcrMask = isMaster ? (byte)0xF8 : (byte)0xDE; // IRQ0-2, IRQ8 and IRQ13 are always edge
        public int VectorBase;
        private int _priorityAdd;      // IR with the lowest priority is (_priorityAdd + 7) & 7
        private int _initStep;         // 0 = operational, 1..3 = expecting ICW2..ICW4
        private bool _needIcw4, _single, _autoEoi, _rotateOnAutoEoi, _specialFullyNested, _specialMask;
        public bool ReadIsr, Poll;
        private readonly bool _isMaster = isMaster;

        public Pic8259ChipState Save() => new(Irr, Isr, Imr, Elcr, _inputs, (byte)VectorBase, _priorityAdd, _initStep,
            _needIcw4, _single, _autoEoi, _rotateOnAutoEoi, _specialFullyNested, _specialMask, ReadIsr, Poll);

        public void Restore(Pic8259ChipState s)
        {
            Irr = s.Irr;
            Isr = s.Isr;
            Imr = s.Imr;
            Elcr = (byte)(s.Elcr & _elcrMask);
            _inputs = s.Inputs;
            VectorBase = s.VectorBase & 0xF8;
            _priorityAdd = s.PriorityAdd & 7;
            _initStep = s.InitStep is >= 0 and <= 3 ? s.InitStep : 0;
            _needIcw4 = s.NeedIcw4;
            _single = s.Single;
            _autoEoi = s.AutoEoi;
            _rotateOnAutoEoi = s.RotateOnAutoEoi;
            _specialFullyNested = s.SpecialFullyNested;
            _specialMask = s.SpecialMask;
            ReadIsr = s.ReadIsr;
            Poll = s.Poll;
        }

        public void SetElcr(byte value)
        {
            Elcr = (byte)(value & _elcrMask);
            // A pin switched to level mode reflects its level immediately.
            for (int i = 0; i < 8; i++)
            {
                byte m = (byte)(1 << i);
                if ((Elcr & m) != 0)
                {
                    if ((_inputs & m) != 0) Irr |= m; else Irr &= (byte)~m;
                }
            }
        }

        public void SetCascadeInput(bool level)
        {
            const byte m = 1 << 2;
            if (level) { Irr |= m; _inputs |= m; }
            else { Irr &= unchecked((byte)~m); _inputs &= unchecked((byte)~m); }
        }

        public void SetInput(int irq, bool level)
        {
            byte m = (byte)(1 << irq);
            if ((Elcr & m) != 0)
            {
                if (level) Irr |= m; else Irr &= (byte)~m;
            }
            else if (level && (_inputs & m) == 0)
            {
                Irr |= m; // rising edge
            }
            if (level) _inputs |= m; else _inputs &= (byte)~m;
        }

        // Priority 0 is the highest; IR n has priority (n - _priorityAdd) & 7.
        private int HighestPriority(byte mask)
        {
            if (mask == 0) return 8;
            int p = 0;
            while ((mask & (1 << ((p + _priorityAdd) & 7))) == 0) p++;
            return p;
        }

        /// <summary>The IR that would be served next, or -1 (what drives this chip's INT output).</summary>
        public int PendingIrq()
        {
            int p = HighestPriority((byte)(Irr & ~Imr));
            if (p == 8) return -1;
            byte inService = Isr;
            // Special fully nested: the master lets a higher-priority slave IR through while IR2 is in service.
            if (_specialFullyNested && _isMaster) inService &= unchecked((byte)~(1 << 2));
            // Special mask mode: masked IRs do not block lower priorities.
            if (_specialMask) inService &= (byte)~Imr;
            int current = HighestPriority(inService);
            return p < current ? (p + _priorityAdd) & 7 : -1;
        }

        public void Acknowledge(int irq)
        {
            byte m = (byte)(1 << irq);
            if (_autoEoi)
            {
                if (_rotateOnAutoEoi) _priorityAdd = (irq + 1) & 7;
            }
            else
            {
                Isr |= m;
            }
            // Edge requests are consumed by INTA; level requests follow the line.
            if ((Elcr & m) == 0) Irr &= (byte)~m;
        }

        public void WriteCommand(byte value)
        {
            if ((value & 0x10) != 0)
            {
                // ICW1: start initialisation.
                _initStep = 1;
                _needIcw4 = (value & 0x01) != 0;
                _single = (value & 0x02) != 0;
                Imr = 0;
                Isr = 0;
                Irr = (byte)(Irr & Elcr); // the edge-sense latch is reset
                _inputs &= Elcr;
                _priorityAdd = 0;
                _specialMask = false;
                ReadIsr = false;
                Poll = false;
                _autoEoi = _rotateOnAutoEoi = _specialFullyNested = false;
                return;
            }
            if ((value & 0x08) != 0)
            {
                // OCW3.
                if ((value & 0x04) != 0) Poll = true;
                if ((value & 0x02) != 0) ReadIsr = (value & 0x01) != 0;
                if ((value & 0x40) != 0) _specialMask = (value & 0x20) != 0;
                return;
            }
            // OCW2.
            int cmd = value >> 5;
            switch (cmd)
            {
                case 0: // rotate in automatic EOI mode: clear
                case 4: // rotate in automatic EOI mode: set
                    _rotateOnAutoEoi = cmd == 4;
                    break;
                case 1: // non-specific EOI
                case 5: // rotate on non-specific EOI
                {
                    int p = HighestPriority(Isr);
                    if (p == 8) break;
                    int irq = (p + _priorityAdd) & 7;
                    Isr &= (byte)~(1 << irq);
                    if (cmd == 5) _priorityAdd = (irq + 1) & 7;
                    break;
                }
                case 3: // specific EOI
                case 7: // rotate on specific EOI
                {
                    int irq = value & 7;
                    Isr &= (byte)~(1 << irq);
                    if (cmd == 7) _priorityAdd = (irq + 1) & 7;
                    break;
                }
                case 6: // set priority: IR (value & 7) becomes the lowest
                    _priorityAdd = (value + 1) & 7;
                    break;
                // 2: no operation
            }
        }

        public void WriteData(byte value)
        {
            switch (_initStep)
            {
                case 0:
                    Imr = value; // OCW1
                    break;
                case 1:
                    VectorBase = value & 0xF8; // ICW2 (x86 mode: T7-T3)
                    _initStep = _single ? (_needIcw4 ? 3 : 0) : 2;
                    break;
                case 2:
                    _initStep = _needIcw4 ? 3 : 0; // ICW3: the cascade wiring is fixed (slave on IR2)
                    break;
                case 3:
                    _autoEoi = (value & 0x02) != 0; // ICW4
                    _specialFullyNested = (value & 0x10) != 0;
                    _initStep = 0;
                    break;
            }
        }
    }
}

/// <summary>One 8259A's state for snapshots.</summary>
public sealed record Pic8259ChipState(
    byte Irr, byte Isr, byte Imr, byte Elcr, byte Inputs, byte VectorBase, int PriorityAdd, int InitStep,
    bool NeedIcw4, bool Single, bool AutoEoi, bool RotateOnAutoEoi, bool SpecialFullyNested, bool SpecialMask,
    bool ReadIsr, bool Poll);

/// <summary>The 8259 pair's state for snapshots.</summary>
public sealed record DualPic8259State(Pic8259ChipState Master, Pic8259ChipState Slave);
