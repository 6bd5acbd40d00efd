using SharpVM.Devices.Bus;
using SharpVM.Devices.Legacy;

namespace SharpVM.Devices.Tests.Legacy;

public class I8042Tests
{
    private readonly List<PlatformEvent> _events = [];
    private readonly RecordingLine _kbd = new(), _aux = new();
    private readonly PioBus _bus = new();
    private readonly I8042 _kbc;

    public I8042Tests()
    {
        _kbc = new I8042(_events.Add, _kbd, _aux);
        _kbc.Attach(_bus);
    }

    private byte In(ushort port)
    {
        Span<byte> b = stackalloc byte[1];
        _bus.Read(port, b);
        return b[0];
    }

    private void Out(ushort port, byte v) => _bus.Write(port, [v]);

    /// <summary>i8042_command: write the command, then read the reply once OBF is set.</summary>
    private byte Command(byte cmd, byte? param = null, bool expectReply = true)
    {
        Out(0x64, cmd);
        if (param is { } p) Out(0x60, p);
        if (!expectReply) return 0;
        Assert.Equal(I8042.StatusOutputFull, In(0x64) & I8042.StatusOutputFull);
        return In(0x60);
    }

    [Fact]
    public void Self_test_answers_0x55_and_sets_the_system_flag()
    {
        Assert.Equal(0, In(0x64) & I8042.StatusOutputFull); // flush finds nothing
        Assert.Equal(0x55, Command(I8042.CmdSelfTest));
        Assert.Equal(I8042.StatusSystem, In(0x64) & I8042.StatusSystem);
        Assert.Equal(0, In(0x64) & I8042.StatusOutputFull);
    }

    [Fact]
    public void Controller_config_byte_reads_back_what_was_written()
    {
        byte ctr = Command(I8042.CmdReadCtr);
        Assert.Equal(ctr, Command(I8042.CmdReadCtr)); // i8042_controller_init reads twice and compares
        Command(I8042.CmdWriteCtr, 0x47, expectReply: false);
        Assert.Equal(0x47, Command(I8042.CmdReadCtr));
    }

    [Fact]
    public void Aux_enable_and_disable_toggle_the_ctr_bit_and_loopback_echoes()
    {
        Command(I8042.CmdAuxDisable, expectReply: false);
        Assert.Equal(I8042.CtrAuxDisable, Command(I8042.CmdReadCtr) & I8042.CtrAuxDisable);
        Command(I8042.CmdAuxEnable, expectReply: false);
        Assert.Equal(0, Command(I8042.CmdReadCtr) & I8042.CtrAuxDisable);
        Out(0x64, I8042.CmdWriteAuxOut);
        Out(0x60, 0x5A);
        Assert.Equal(I8042.StatusAuxData, In(0x64) & I8042.StatusAuxData);
        Assert.Equal(0x5A, In(0x60));
    }

    [Fact]
    public void Keyboard_reply_interrupts_on_irq1_when_enabled()
    {
        Command(I8042.CmdWriteCtr, I8042.CtrKbdInt | I8042.CtrSystem, expectReply: false);
        Out(0x64, I8042.CmdWriteKbdOut);
        Out(0x60, 0x1C);
        Assert.True(_kbd.Level);
        Assert.Equal(0x1C, In(0x60));
        Assert.False(_kbd.Level);
    }

    [Fact]
    public void Writes_to_the_absent_keyboard_are_nakked_with_timeout()
    {
        Out(0x60, 0xF2); // GET ID
        byte status = In(0x64);
        Assert.Equal(I8042.StatusOutputFull | I8042.StatusTimeout, status & (I8042.StatusOutputFull | I8042.StatusTimeout));
        Assert.Equal(I8042.NoDeviceReply, In(0x60));
        Assert.Equal(0, In(0x64) & I8042.StatusTimeout);
    }

    [Fact]
    public void Command_0xFE_pulses_reset()
    {
        Out(0x64, I8042.CmdPulseReset);
        Assert.Equal([PlatformEvent.Reset], _events);
        Out(0x64, 0xFF); // pulses nothing
        Assert.Single(_events);
    }

    [Fact]
    public void Writing_the_output_port_with_bit0_clear_resets()
    {
        Assert.Equal(0x03, Command(I8042.CmdReadOutput) & 0x03);
        Out(0x64, I8042.CmdWriteOutput);
        Out(0x60, 0x02);
        Assert.Equal([PlatformEvent.Reset], _events);
    }

    [Fact]
    public void State_round_trips()
    {
        Command(I8042.CmdWriteCtr, 0x65, expectReply: false);
        Out(0x64, I8042.CmdReadOutput);
        var s = _kbc.SaveState();
        var other = new I8042(_ => { });
        other.RestoreState(s);
        var t = other.SaveState();
        Assert.Equal(s.ControllerConfig, t.ControllerConfig);
        Assert.Equal(s.Output, t.Output);
        Assert.Equal(s.Status, t.Status);
        Assert.Equal(0x65, s.ControllerConfig);
    }
}
