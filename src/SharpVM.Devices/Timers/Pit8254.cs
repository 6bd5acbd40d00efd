using SharpVM.Devices.Bus;

namespace SharpVM.Devices.Timers;

/// <summary>
/// The 8254 programmable interval timer: three 16-bit counters clocked at <see cref="InputFrequencyHz"/>,
/// ports 0x40-0x42 (counters) and 0x43 (control word, counter latch, read-back), all six modes, binary and
/// BCD counting, LSB/MSB/LSB-then-MSB access. Counter 0's OUT drives IRQ0 (a pulse on each rising edge);
/// counter 2's GATE and OUT are bits 0 and 5 of port 0x61 (<see cref="SystemControlPort"/>), which Linux
/// uses to calibrate the TSC. Counter values are computed from the device clock, so a read is exact to
/// the input clock regardless of when the timer thread runs.
/// </summary>
/// <remarks>Register <see cref="CounterPorts"/> at <see cref="BasePort"/> (length 4) and
/// <see cref="SystemControlPortDevice"/> at 0x61 (length 1). Thread-safe with one lock; IRQ0 is pulsed
/// after releasing it.</remarks>
public sealed class Pit8254
{
    public const long InputFrequencyHz = 1_193_182;
    public const ushort BasePort = 0x40, SystemControlPort = 0x61;

    /// <summary>IRQ0 pulses no faster than this (a guest loading a count of 1 in mode 2 gets ~20 kHz, not 1.19 MHz).</summary>
    public const long MinimumIrqPeriodNanoseconds = 50_000;

    private const long RefreshToggleNanoseconds = 15_085; // port 0x61 bit 4 toggles at ~66 kHz

    private readonly object _lock = new();
    private readonly DeviceClock _clock;
    private readonly IInterruptLine? _irq0;
    private readonly DeviceTimer _irqTimer;
    private readonly Counter[] _counters = [new(), new(), new()];
    private byte _portB; // bits 0-3 of port 0x61 as written
    private long _irqK;  // channel 0: OUT rising edges already signalled since the count was loaded
    private bool _oneShotFired;
    private long _irqPulses, _irqMissed;

    public Pit8254(DeviceClock clock, IInterruptLine? irq0)
    {
        ArgumentNullException.ThrowIfNull(clock);
        _clock = clock;
        _irq0 = irq0;
        _irqTimer = clock.CreateTimer(OnIrqTimer);
        _counters[0].Gate = true;
        _counters[1].Gate = true;
        CounterPorts = new PortsDevice(this);
        SystemControlPortDevice = new PortBDevice(this);
    }

    /// <summary>Ports 0x40-0x43.</summary>
    public IBusDevice CounterPorts { get; }

    /// <summary>Port 0x61 (system control port B): speaker gate/data, refresh toggle, OUT2.</summary>
    public IBusDevice SystemControlPortDevice { get; }

    /// <summary>IRQ0 pulses delivered.</summary>
    public long Irq0Pulses => Interlocked.Read(ref _irqPulses);

    /// <summary>Counter 0 periods that elapsed without their own pulse (the timer thread was late; coalesced).</summary>
    public long Irq0Missed => Interlocked.Read(ref _irqMissed);

    /// <summary>Counter <paramref name="channel"/>'s OUT pin now.</summary>
    public bool GetOut(int channel)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan((uint)channel, 2u, nameof(channel));
        lock (_lock) return _counters[channel].Out(_clock.NowNanoseconds);
    }

    /// <summary>Counter <paramref name="channel"/>'s current count (what an unlatched read would return).</summary>
    public int GetCount(int channel)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan((uint)channel, 2u, nameof(channel));
        lock (_lock) return _counters[channel].Value(_clock.NowNanoseconds);
    }

    // ---------------------------------------------------------------- Port handlers

    private byte ReadCounterPort(int channel)
    {
        lock (_lock) return _counters[channel].ReadByte(_clock.NowNanoseconds);
    }

    private void WriteCounterPort(int channel, byte value)
    {
        lock (_lock)
        {
            long now = _clock.NowNanoseconds;
            if (_counters[channel].WriteByte(value, now) && channel == 0) RestartIrqLocked(now);
        }
    }

    private void WriteControl(byte value)
    {
        lock (_lock)
        {
            long now = _clock.NowNanoseconds;
            int select = value >> 6;
            if (select == 3)
            {
                // Read-back: bit 5 clear latches counts, bit 4 clear latches status, bits 3:1 select counters 2..0.
                for (int ch = 0; ch < 3; ch++)
                {
                    if ((value & (2 << ch)) == 0) continue;
                    if ((value & 0x20) == 0) _counters[ch].LatchCount(now);
                    if ((value & 0x10) == 0) _counters[ch].LatchStatus(now);
                }
                return;
            }
            var c = _counters[select];
            if ((value & 0x30) == 0)
            {
                c.LatchCount(now); // counter latch command
                return;
            }
            c.SetControl(value);
            if (select == 0)
            {
                _irqTimer.Cancel();
            }
        }
    }

    private byte ReadPortB()
    {
        lock (_lock)
        {
            long now = _clock.NowNanoseconds;
            int value = _portB & 0x0F;
            if ((now / RefreshToggleNanoseconds & 1) != 0) value |= 0x10;
            if (_counters[2].Out(now)) value |= 0x20;
            return (byte)value;
        }
    }

    private void WritePortB(byte value)
    {
        lock (_lock)
        {
            _portB = (byte)(value & 0x0F);
            _counters[2].SetGate((value & 1) != 0, _clock.NowNanoseconds);
        }
    }

    // ---------------------------------------------------------------- Snapshot

    /// <summary>Captures the PIT's state (times relative to the device clock's now).</summary>
    public Pit8254State SaveState()
    {
        lock (_lock)
        {
            long now = _clock.NowNanoseconds;
            return new Pit8254State([.. _counters.Select(c => c.Save(now))], _portB, _irqK, _oneShotFired);
        }
    }

    /// <summary>Restores a saved state and re-arms counter 0's interrupt schedule.</summary>
    public void RestoreState(Pit8254State state)
    {
        ArgumentNullException.ThrowIfNull(state);
        if (state.Counters.Length != 3) throw new ArgumentException("PIT state must have three counters", nameof(state));
        lock (_lock)
        {
            long now = _clock.NowNanoseconds;
            for (int i = 0; i < 3; i++) _counters[i].Restore(state.Counters[i], now);
            _counters[0].Gate = _counters[1].Gate = true;
            _portB = (byte)(state.PortB & 0x0F);
            _irqK = Math.Max(0, state.Irq0PeriodsSignalled);
            _oneShotFired = state.Irq0OneShotFired;
            _irqTimer.Cancel();
            ScheduleIrqLocked(now);
        }
    }

    // ---------------------------------------------------------------- Counter 0 -> IRQ0

    private void RestartIrqLocked(long now)
    {
        _irqK = 0;
        _oneShotFired = false;
        ScheduleIrqLocked(now);
    }

    private void ScheduleIrqLocked(long now)
    {
        var c = _counters[0];
        if (!c.Counting) return;
        long n = c.Reload;
        switch (c.Mode)
        {
            case 0:
            case 4:
                if (!_oneShotFired) _irqTimer.Arm(c.TimeOfClock(n));
                break;
            case 2:
            case 3:
            {
                long periodNs = Math.Max(1, n * 1_000_000_000 / InputFrequencyHz);
                long step = Math.Max(1, (MinimumIrqPeriodNanoseconds + periodNs - 1) / periodNs);
                long next = Math.Max(_irqK + 1, c.ElapsedClocks(now) / n + 1);
                next = ((next + step - 1) / step) * step;
                _irqTimer.Arm(c.TimeOfClock(next * n));
                break;
            }
        }
    }

    private void OnIrqTimer()
    {
        bool pulse = false;
        lock (_lock)
        {
            long now = _clock.NowNanoseconds;
            var c = _counters[0];
            if (!c.Counting) return;
            long d = c.ElapsedClocks(now);
            long n = c.Reload;
            switch (c.Mode)
            {
                case 0:
                case 4:
                    if (!_oneShotFired && d >= n)
                    {
                        _oneShotFired = true;
                        pulse = true;
                    }
                    break;
                case 2:
                case 3:
                    long k = d / n;
                    if (k > _irqK)
                    {
                        Interlocked.Add(ref _irqMissed, Math.Max(0, k - _irqK - 1));
                        _irqK = k;
                        pulse = true;
                    }
                    break;
            }
            ScheduleIrqLocked(now);
        }
        if (pulse)
        {
            Interlocked.Increment(ref _irqPulses);
            _irq0?.Pulse();
        }
    }

    // ---------------------------------------------------------------- One counter

    private sealed class Counter
    {
        public int Mode;          // 0..5 (6 and 7 alias 2 and 3)
        public bool Bcd;
        public int Access = 3;    // 1 = LSB, 2 = MSB, 3 = LSB then MSB
        public long Reload;       // N: 1..0x10000 (binary) or 1..10000 (BCD)
        public bool Gate;
        public bool Counting;     // a count is loaded and (for modes 1/5) triggered
        private bool _hasCount;   // a count was written since the control word
        private long _loadTime;   // ns when counting (re)started
        private long _pausedAt = -1; // gate low in a mode that stops counting
        private bool _writeLow;   // LSB-then-MSB: the LSB has been written
        private byte _writeLatch;
        private bool _readHigh;   // LSB-then-MSB: the next unlatched read returns the MSB
        private int _latchedBytes; // 0, or bytes of _latchedValue still to read (1 or 2)
        private bool _latchedMsbFirst;
        private int _latchedValue;
        private bool _statusLatched;
        private byte _status;

        private int Modulus => Bcd ? 10000 : 0x10000;

        public Pit8254CounterState Save(long now) => new(Mode, Bcd, Access, Reload, Gate, Counting, _hasCount,
            now - _loadTime, _pausedAt >= 0 ? now - _pausedAt : -1, _writeLow, _writeLatch, _readHigh,
            _latchedBytes, _latchedMsbFirst, _latchedValue, _statusLatched, _status);

        public void Restore(Pit8254CounterState s, long now)
        {
            Mode = s.Mode is >= 0 and <= 5 ? s.Mode : 0;
            Bcd = s.Bcd;
            Access = s.Access is >= 1 and <= 3 ? s.Access : 3;
            Reload = Math.Clamp(s.Reload, 0, Modulus);
            Gate = s.Gate;
            Counting = s.Counting && Reload != 0; // never divide by a zero count
            _hasCount = s.HasCount;
            _loadTime = now - Math.Max(0, s.SinceLoadNanoseconds);
            _pausedAt = s.SincePausedNanoseconds >= 0 ? now - s.SincePausedNanoseconds : -1;
            _writeLow = s.WriteLow;
            _writeLatch = s.WriteLatch;
            _readHigh = s.ReadHigh;
            _latchedBytes = Math.Clamp(s.LatchedBytes, 0, 2);
            _latchedMsbFirst = s.LatchedMsbFirst;
            _latchedValue = s.LatchedValue & 0xFFFF;
            _statusLatched = s.StatusLatched;
            _status = s.Status;
        }



        public long ElapsedClocks(long now)
        {
            if (!Counting) return 0;
            long end = _pausedAt >= 0 ? _pausedAt : now;
            long ns = Math.Max(0, end - _loadTime);
            return (long)((Int128)ns * InputFrequencyHz / 1_000_000_000);
        }

        /// <summary>The device-clock time at which <paramref name="clocks"/> input clocks have elapsed.</summary>
        public long TimeOfClock(long clocks) =>
            _loadTime + (long)(((Int128)clocks * 1_000_000_000 + InputFrequencyHz - 1) / InputFrequencyHz);

        public int Value(long now)
        {
            if (!Counting) return (int)(Reload % Modulus);
            long d = ElapsedClocks(now);
            long n = Reload;
            long v = Mode switch
            {
                2 => n - d % n,
                3 => n - 2 * d % n,
                _ => ((n - d) % Modulus + Modulus) % Modulus,
            };
            return (int)(v % Modulus);
        }

        public bool Out(long now)
        {
            if (!_hasCount) return Mode != 0;
            if (!Counting) return Mode != 0; // modes 1/5 wait for a trigger with OUT high; mode 0 holds OUT low
            if (Mode is 2 or 3 && !Gate) return true;
            long d = ElapsedClocks(now);
            long n = Reload;
            return Mode switch
            {
                0 or 1 => d >= n,
                2 => d % n != n - 1,
                3 => d % n < (n + 1) / 2,
                _ => d != n, // 4, 5: low for one clock at terminal count
            };
        }

        public void SetControl(byte value)
        {
            Access = (value >> 4) & 3;
            Mode = (value >> 1) & 7;
            if (Mode > 5) Mode -= 4;
            Bcd = (value & 1) != 0;
            Counting = false;
            _hasCount = false;
            _writeLow = false;
            _readHigh = false;
            _latchedBytes = 0;
            _statusLatched = false;
            _pausedAt = -1;
        }

        /// <summary>Writes one byte of a count; returns true when a new count was loaded.</summary>
        public bool WriteByte(byte value, long now)
        {
            int count;
            switch (Access)
            {
                case 1: count = value; break;
                case 2: count = value << 8; break;
                default:
                    if (!_writeLow)
                    {
                        _writeLatch = value;
                        _writeLow = true;
                        if (Mode == 0) Counting = false; // mode 0: the first byte stops the count
                        return false;
                    }
                    _writeLow = false;
                    count = _writeLatch | (value << 8);
                    break;
            }
            if (Bcd) count = FromBcd(count);
            Reload = count == 0 ? Modulus : count;
            _hasCount = true;
            _loadTime = now;
            _pausedAt = !Gate && Mode is 0 or 2 or 3 or 4 ? now : -1;
            Counting = Mode is not (1 or 5);
            return Counting;
        }

        public void SetGate(bool gate, long now)
        {
            bool rising = gate && !Gate;
            bool falling = !gate && Gate;
            Gate = gate;
            if (!_hasCount) return;
            if (rising)
            {
                switch (Mode)
                {
                    case 0:
                    case 4:
                        if (_pausedAt >= 0) _loadTime += now - _pausedAt;
                        _pausedAt = -1;
                        break;
                    default: // 1, 2, 3, 5: a trigger (re)loads the count
                        _loadTime = now;
                        _pausedAt = -1;
                        Counting = true;
                        break;
                }
            }
            else if (falling && Mode is 0 or 2 or 3 or 4 && Counting)
            {
                _pausedAt = now;
            }
        }

        public void LatchCount(long now)
        {
            if (_latchedBytes != 0) return; // a latched count is held until read
            _latchedValue = Bcd ? ToBcd(Value(now)) : Value(now) & 0xFFFF;
            _latchedBytes = Access == 3 ? 2 : 1;
            _latchedMsbFirst = Access == 2;
        }

        public void LatchStatus(long now)
        {
            if (_statusLatched) return;
            _status = (byte)((Out(now) ? 0x80 : 0) | (Access << 4) | (Mode << 1) | (Bcd ? 1 : 0));
            _statusLatched = true;
        }

        public byte ReadByte(long now)
        {
            if (_statusLatched)
            {
                _statusLatched = false;
                return _status;
            }
            if (_latchedBytes != 0)
            {
                byte b;
                if (_latchedMsbFirst) b = (byte)(_latchedValue >> 8);
                else if (Access == 3 && _latchedBytes == 1) b = (byte)(_latchedValue >> 8);
                else b = (byte)_latchedValue;
                _latchedBytes--;
                return b;
            }
            int v = Bcd ? ToBcd(Value(now)) : Value(now) & 0xFFFF;
            switch (Access)
            {
                case 1: return (byte)v;
                case 2: return (byte)(v >> 8);
                default:
                    _readHigh = !_readHigh;
                    return _readHigh ? (byte)v : (byte)(v >> 8);
            }
        }

        private static int FromBcd(int bcd)
        {
            int result = 0, scale = 1;
            for (int i = 0; i < 4; i++, bcd >>= 4, scale *= 10) result += Math.Min(bcd & 0xF, 9) * scale;
            return result;
        }

        private static int ToBcd(int value)
        {
            int result = 0;
            for (int i = 0; i < 4; i++, value /= 10) result |= (value % 10) << (4 * i);
            return result;
        }
    }

    private sealed class PortsDevice(Pit8254 pit) : IBusDevice
    {
        public void Read(ulong offset, Span<byte> data)
        {
            data.Fill(0xFF);
            if (data.Length > 0 && offset < 3) data[0] = pit.ReadCounterPort((int)offset);
        }

        public void Write(ulong offset, ReadOnlySpan<byte> data)
        {
            if (data.Length == 0) return;
            if (offset < 3) pit.WriteCounterPort((int)offset, data[0]);
            else if (offset == 3) pit.WriteControl(data[0]);
        }
    }

    private sealed class PortBDevice(Pit8254 pit) : IBusDevice
    {
        public void Read(ulong offset, Span<byte> data)
        {
            data.Clear();
            if (data.Length > 0 && offset == 0) data[0] = pit.ReadPortB();
        }

        public void Write(ulong offset, ReadOnlySpan<byte> data)
        {
            if (data.Length > 0 && offset == 0) pit.WritePortB(data[0]);
        }
    }
}

/// <summary>One 8254 counter's state for snapshots (times relative to when it was saved).</summary>
public sealed record Pit8254CounterState(
    int Mode, bool Bcd, int Access, long Reload, bool Gate, bool Counting, bool HasCount,
    long SinceLoadNanoseconds, long SincePausedNanoseconds, bool WriteLow, byte WriteLatch, bool ReadHigh,
    int LatchedBytes, bool LatchedMsbFirst, int LatchedValue, bool StatusLatched, byte Status);

/// <summary>The PIT's state for snapshots.</summary>
public sealed record Pit8254State(Pit8254CounterState[] Counters, byte PortB, long Irq0PeriodsSignalled, bool Irq0OneShotFired);
