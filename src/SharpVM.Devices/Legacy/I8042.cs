using SharpVM.Devices.Bus;

namespace SharpVM.Devices.Legacy;

/// <summary>Snapshot state of an <see cref="I8042"/>.</summary>
public sealed record I8042State(byte Status, byte ControllerConfig, byte OutputPort, byte? PendingCommand, byte[] Output, bool[] OutputFromAux);

/// <summary>Counters for an <see cref="I8042"/>.</summary>
public sealed class I8042Metrics
{
    public long Commands;
    public long DeviceWrites;
    public long ResetRequests;
}

/// <summary>
/// An 8042 keyboard controller with no keyboard or mouse attached: enough for Linux's i8042 probe
/// (flush, self-test 0xAA → 0x55, controller configuration byte, AUX loopback and enable/disable)
/// and for the CPU reset Linux uses on reboot (command 0xFE, or output port bit 0 cleared through 0xD1),
/// which raises <see cref="PlatformEvent.Reset"/>. Bytes written to the keyboard or the AUX device
/// are answered with 0xFE (a PS/2 NAK) and the timeout status bit, so drivers give up at once instead of
/// waiting for timeouts.
/// Ports: 0x60 data, 0x64 status (read) / command (write).
/// </summary>
public sealed class I8042
{
    public const ushort DataPortNumber = 0x60, CommandPortNumber = 0x64;
    public const int KeyboardIrq = 1, AuxIrq = 12;

    // Status register bits.
    public const byte StatusOutputFull = 0x01, StatusInputFull = 0x02, StatusSystem = 0x04, StatusCommand = 0x08,
        StatusUnlocked = 0x10, StatusAuxData = 0x20, StatusTimeout = 0x40, StatusParity = 0x80;
    // Controller configuration byte bits.
    public const byte CtrKbdInt = 0x01, CtrAuxInt = 0x02, CtrSystem = 0x04, CtrKbdDisable = 0x10, CtrAuxDisable = 0x20, CtrXlate = 0x40;
    // Commands.
    public const byte CmdReadCtr = 0x20, CmdWriteCtr = 0x60, CmdAuxDisable = 0xA7, CmdAuxEnable = 0xA8, CmdAuxTest = 0xA9,
        CmdSelfTest = 0xAA, CmdKbdTest = 0xAB, CmdKbdDisable = 0xAD, CmdKbdEnable = 0xAE, CmdReadInput = 0xC0,
        CmdReadOutput = 0xD0, CmdWriteOutput = 0xD1, CmdWriteKbdOut = 0xD2, CmdWriteAuxOut = 0xD3, CmdWriteAux = 0xD4,
        CmdDisableA20 = 0xDD, CmdEnableA20 = 0xDF, CmdPulseReset = 0xFE;
    public const byte SelfTestOk = 0x55, PortTestOk = 0x00;

    /// <summary>What a write to the absent keyboard or mouse gets back: a PS/2 NAK (with the timeout status bit).</summary>
    public const byte NoDeviceReply = 0xFE;

    private readonly object _lock = new();
    private readonly IInterruptLine _kbdIrq, _auxIrq;
    private readonly Action<PlatformEvent> _platformEvent;
    private readonly Queue<(byte Value, bool Aux)> _output = new();

    private byte _status = StatusSystem | StatusUnlocked;
    private byte _ctr = CtrKbdInt | CtrSystem | CtrXlate | CtrAuxDisable;
    private byte _outputPort = 0x03; // bit 0: reset line inactive, bit 1: A20 enabled
    private byte? _pendingCommand;
    private bool _kbdLevel, _auxLevel;

    public I8042Metrics Metrics { get; } = new();

    /// <summary>The data port (0x60) as a bus device.</summary>
    public IBusDevice DataPort { get; }

    /// <summary>The status/command port (0x64) as a bus device.</summary>
    public IBusDevice CommandPort { get; }

    public I8042(Action<PlatformEvent> platformEvent, IInterruptLine? keyboardIrq = null, IInterruptLine? auxIrq = null)
    {
        _platformEvent = platformEvent;
        _kbdIrq = keyboardIrq ?? NullInterruptLine.Instance;
        _auxIrq = auxIrq ?? NullInterruptLine.Instance;
        DataPort = new Port(this, isCommand: false);
        CommandPort = new Port(this, isCommand: true);
    }

    /// <summary>Claims ports 0x60 and 0x64 on <paramref name="bus"/>.</summary>
    public void Attach(PioBus bus)
    {
        bus.Register(DataPortNumber, 1, DataPort, "i8042-data");
        bus.Register(CommandPortNumber, 1, CommandPort, "i8042-cmd");
    }

    public byte ReadData()
    {
        lock (_lock)
        {
            byte value = _output.Count > 0 ? _output.Dequeue().Value : (byte)0x00;
            UpdateStatus();
            return value;
        }
    }

    public byte ReadStatus()
    {
        lock (_lock) return _status;
    }

    public void WriteData(byte value)
    {
        bool reset = false;
        lock (_lock)
        {
            _status &= unchecked((byte)~StatusCommand);
            var cmd = _pendingCommand;
            _pendingCommand = null;
            switch (cmd)
            {
                case CmdWriteCtr:
                    _ctr = value;
                    if ((value & CtrSystem) != 0) _status |= StatusSystem; else _status &= unchecked((byte)~StatusSystem);
                    break;
                case CmdWriteOutput:
                    _outputPort = value;
                    if ((value & 0x01) == 0) reset = true; // the reset line is active low
                    break;
                case CmdWriteKbdOut: Push(value, aux: false); break;
                case CmdWriteAuxOut: Push(value, aux: true); break;
                case CmdWriteAux:
                    Metrics.DeviceWrites++;
                    Push(NoDeviceReply, aux: true, timeout: true); // no mouse
                    break;
                default:
                    Metrics.DeviceWrites++;
                    Push(NoDeviceReply, aux: false, timeout: true); // no keyboard
                    break;
            }
            UpdateStatus();
        }
        if (reset) RaiseReset();
    }

    public void WriteCommand(byte command)
    {
        bool reset = false;
        lock (_lock)
        {
            Metrics.Commands++;
            _status |= StatusCommand;
            _pendingCommand = null;
            switch (command)
            {
                case CmdReadCtr: Push(_ctr, aux: false); break;
                case CmdWriteCtr or CmdWriteOutput or CmdWriteKbdOut or CmdWriteAuxOut or CmdWriteAux:
                    _pendingCommand = command;
                    break;
                case CmdAuxDisable: _ctr |= CtrAuxDisable; break;
                case CmdAuxEnable: _ctr &= unchecked((byte)~CtrAuxDisable); break;
                case CmdAuxTest: Push(PortTestOk, aux: false); break;
                case CmdSelfTest:
                    _output.Clear();
                    Push(SelfTestOk, aux: false);
                    _status |= StatusSystem;
                    break;
                case CmdKbdTest: Push(PortTestOk, aux: false); break;
                case CmdKbdDisable: _ctr |= CtrKbdDisable; break;
                case CmdKbdEnable: _ctr &= unchecked((byte)~CtrKbdDisable); break;
                case CmdReadInput: Push(0x00, aux: false); break;
                case CmdReadOutput: Push(_outputPort, aux: false); break;
                case CmdDisableA20: _outputPort &= unchecked((byte)~0x02); break;
                case CmdEnableA20: _outputPort |= 0x02; break;
                case >= 0xF0:
                    // Pulse output port lines: bits 0-3 of the command, low = pulsed. Bit 0 is the CPU reset line.
                    if ((command & 0x01) == 0) reset = true;
                    break;
                default: break; // unknown commands are ignored, as on real controllers
            }
            UpdateStatus();
        }
        if (reset) RaiseReset();
    }

    private void RaiseReset()
    {
        Interlocked.Increment(ref Metrics.ResetRequests);
        _platformEvent(PlatformEvent.Reset);
    }

    private void Push(byte value, bool aux, bool timeout = false)
    {
        if (_output.Count >= 16) return;
        _output.Enqueue((value, aux));
        if (timeout) _status |= StatusTimeout; else _status &= unchecked((byte)~StatusTimeout);
    }

    private void UpdateStatus()
    {
        _status &= unchecked((byte)~(StatusOutputFull | StatusAuxData | StatusInputFull));
        bool kbd = false, aux = false;
        if (_output.Count > 0)
        {
            _status |= StatusOutputFull;
            if (_output.Peek().Aux) { _status |= StatusAuxData; aux = (_ctr & CtrAuxInt) != 0; }
            else kbd = (_ctr & CtrKbdInt) != 0;
        }
        else _status &= unchecked((byte)~StatusTimeout);
        if (kbd != _kbdLevel) { _kbdLevel = kbd; _kbdIrq.SetLevel(kbd); }
        if (aux != _auxLevel) { _auxLevel = aux; _auxIrq.SetLevel(aux); }
    }

    public I8042State SaveState()
    {
        lock (_lock)
            return new I8042State(_status, _ctr, _outputPort, _pendingCommand,
                _output.Select(o => o.Value).ToArray(), _output.Select(o => o.Aux).ToArray());
    }

    public void RestoreState(I8042State s)
    {
        lock (_lock)
        {
            (_status, _ctr, _outputPort, _pendingCommand) = (s.Status, s.ControllerConfig, s.OutputPort, s.PendingCommand);
            _output.Clear();
            for (int i = 0; i < Math.Min(s.Output.Length, s.OutputFromAux.Length); i++) _output.Enqueue((s.Output[i], s.OutputFromAux[i]));
            _kbdLevel = _auxLevel = false;
            UpdateStatus();
        }
    }

    private sealed class Port(I8042 owner, bool isCommand) : IBusDevice
    {
        public void Read(ulong offset, Span<byte> data)
        {
            data.Fill(0xFF);
            if (data.Length > 0) data[0] = isCommand ? owner.ReadStatus() : owner.ReadData();
        }

        public void Write(ulong offset, ReadOnlySpan<byte> data)
        {
            if (data.IsEmpty) return;
            if (isCommand) owner.WriteCommand(data[0]); else owner.WriteData(data[0]);
        }
    }
}
