using SharpVM.Devices.Bus;
using SharpVM.Devices.Legacy;

namespace SharpVM.Devices.Tests.Legacy;

public class Serial16550Tests
{
    private readonly RecordingLine _irq = new();
    private readonly List<byte> _out = [];
    private readonly PioBus _bus = new();
    private readonly Serial16550 _uart;

    public Serial16550Tests()
    {
        _uart = new Serial16550(_irq, data => _out.AddRange(data.ToArray()));
        _uart.Attach(_bus);
    }

    private byte In(int reg)
    {
        Span<byte> b = stackalloc byte[1];
        _bus.Read(0x3F8 + (ulong)reg, b);
        return b[0];
    }

    private void Out(int reg, byte value) => _bus.Write(0x3F8 + (ulong)reg, [value]);

    [Fact]
    public void Reset_state_reads_like_an_idle_16550()
    {
        Assert.Equal(0x00, In(Serial16550.Ier));
        Assert.Equal(0x01, In(Serial16550.Iir));
        Assert.Equal(0x60, In(Serial16550.Lsr));
        Assert.Equal(0xB0, In(Serial16550.Msr));
        Assert.False(_irq.Level);
    }

    /// <summary>The sequence of drivers/tty/serial/8250/8250_port.c autoconfig() and autoconfig_16550a().</summary>
    [Fact]
    public void Linux_8250_autoconfig_probe_finds_a_16550A()
    {
        // IER test: only the low 4 bits are writable.
        byte scratch = In(Serial16550.Ier);
        Out(Serial16550.Ier, 0);
        byte scratch2 = (byte)(In(Serial16550.Ier) & 0x0F);
        Out(Serial16550.Ier, 0x0F);
        byte scratch3 = (byte)(In(Serial16550.Ier) & 0x0F);
        Out(Serial16550.Ier, scratch);
        Assert.Equal(0, scratch2);
        Assert.Equal(0x0F, scratch3);

        // Loopback test: MCR = LOOP | OUT2 | RTS -> MSR high nibble 0x90 (DCD | CTS).
        byte saveMcr = In(Serial16550.Mcr);
        Out(Serial16550.Mcr, 0x10 | 0x0A);
        Assert.Equal(0x90, In(Serial16550.Msr) & 0xF0);
        Out(Serial16550.Mcr, saveMcr);

        // FIFO test: enable the FIFO, IIR bits 7:6 must read 3 (16550A).
        Out(Serial16550.Lcr, 0xBF);
        Out(Serial16550.Fcr, 0); // EFR on enhanced parts; FCR here, harmless
        Out(Serial16550.Lcr, 0);
        Out(Serial16550.Fcr, Serial16550.FcrEnable);
        Assert.Equal(3, In(Serial16550.Iir) >> 6);

        // autoconfig_16550a: no EFR with LCR = 0x80 or 0xBF (reads IIR, nonzero).
        Out(Serial16550.Lcr, 0x80);
        Assert.NotEqual(0, In(Serial16550.Iir));
        Out(Serial16550.Lcr, 0xBF);
        Assert.NotEqual(0, In(Serial16550.Iir));
        // Not a National SuperIO: "EXCR1" (offset 2 with LCR 0xE0) does not follow MCR's loop bit.
        Out(Serial16550.Lcr, 0);
        byte status1 = In(Serial16550.Mcr);
        Out(Serial16550.Lcr, 0xE0);
        byte status2 = In(Serial16550.Iir);
        Assert.Equal(0, (status2 ^ status1) & Serial16550.McrLoop);
        Out(Serial16550.Lcr, 0);
        Out(Serial16550.Mcr, (byte)(status1 ^ Serial16550.McrLoop));
        Out(Serial16550.Lcr, 0xE0);
        status2 = In(Serial16550.Iir);
        Out(Serial16550.Lcr, 0);
        Out(Serial16550.Mcr, status1);
        Assert.Equal(0, (status2 ^ status1) & Serial16550.McrLoop);
        // Not a TI16750: IIR bit 5 never set.
        Out(Serial16550.Fcr, 0x21);
        Assert.Equal(6, In(Serial16550.Iir) >> 5);
        Out(Serial16550.Fcr, 0x01);
        // Not an XScale: IER bit 6 (UUE) is not writable.
        Out(Serial16550.Ier, 0x40);
        Assert.Equal(0, In(Serial16550.Ier) & 0x40);
        Out(Serial16550.Ier, 0);
        Assert.NotEqual(0xFF, In(Serial16550.Lsr));
    }

    /// <summary>serial8250_do_startup's THRE test: the interrupt must re-assert when THRI is re-enabled.</summary>
    [Fact]
    public void Thre_interrupt_reasserts_when_reenabled()
    {
        Out(Serial16550.Fcr, Serial16550.FcrEnable);
        Out(Serial16550.Ier, Serial16550.IerThre);
        Assert.True(_irq.Level);
        byte iir1 = In(Serial16550.Iir);
        Assert.Equal(Serial16550.IirThre | 0xC0, iir1);
        Assert.False(_irq.Level); // reading IIR cleared THRE
        Assert.Equal(0xC1, In(Serial16550.Iir));
        Out(Serial16550.Ier, 0);
        Out(Serial16550.Ier, Serial16550.IerThre);
        byte iir = In(Serial16550.Iir);
        Assert.Equal(0, iir & Serial16550.IirNoInterrupt); // re-asserted: no UART_BUG_THRE
    }

    [Fact]
    public void Transmitted_bytes_reach_the_output_and_thre_stays_set()
    {
        foreach (var b in "hi\n"u8.ToArray()) Out(Serial16550.Thr, b);
        Assert.Equal("hi\n"u8.ToArray(), _out.ToArray());
        Assert.Equal(0x60, In(Serial16550.Lsr) & 0x60);
        Assert.Equal(3, _uart.Metrics.BytesTransmitted);
    }

    [Fact]
    public void Thr_write_re_raises_thre_after_the_byte_leaves()
    {
        Out(Serial16550.Ier, Serial16550.IerThre);
        Assert.Equal(0xC2 & 0x0F, In(Serial16550.Iir) & 0x0F);
        Assert.False(_irq.Level);
        Out(Serial16550.Thr, (byte)'x');
        Assert.True(_irq.Level);
        Assert.Equal(2, _irq.RisingEdges);
    }

    [Fact]
    public void Loopback_sends_thr_to_the_receive_fifo_not_the_output()
    {
        Out(Serial16550.Fcr, Serial16550.FcrEnable);
        Out(Serial16550.Mcr, Serial16550.McrLoop);
        Out(Serial16550.Thr, 0x5A);
        Out(Serial16550.Thr, 0xA5);
        Assert.Empty(_out);
        Assert.Equal(Serial16550.LsrDataReady, In(Serial16550.Lsr) & Serial16550.LsrDataReady);
        Assert.Equal(0x5A, In(Serial16550.Rbr));
        Assert.Equal(0xA5, In(Serial16550.Rbr));
        Assert.Equal(0, In(Serial16550.Lsr) & Serial16550.LsrDataReady);
    }

    [Fact]
    public void Loopback_fifo_overrun_sets_oe_which_reading_lsr_clears()
    {
        Out(Serial16550.Fcr, Serial16550.FcrEnable);
        Out(Serial16550.Mcr, Serial16550.McrLoop);
        for (int i = 0; i < 17; i++) Out(Serial16550.Thr, (byte)i);
        byte lsr = In(Serial16550.Lsr);
        Assert.Equal(Serial16550.LsrOverrun, lsr & Serial16550.LsrOverrun);
        Assert.Equal(0, In(Serial16550.Lsr) & Serial16550.LsrOverrun);
        for (int i = 0; i < 16; i++) Assert.Equal(i, In(Serial16550.Rbr));
    }

    [Fact]
    public void Modem_status_deltas_in_loopback_raise_msi_and_clear_on_read()
    {
        Out(Serial16550.Mcr, Serial16550.McrLoop);
        In(Serial16550.Msr);
        Out(Serial16550.Ier, Serial16550.IerModemStatus);
        Out(Serial16550.Mcr, Serial16550.McrLoop | Serial16550.McrRts | Serial16550.McrDtr);
        Assert.True(_irq.Level);
        Assert.Equal(Serial16550.IirModemStatus, In(Serial16550.Iir) & 0x0F);
        byte msr = In(Serial16550.Msr);
        Assert.Equal(Serial16550.MsrCts | Serial16550.MsrDsr | 0x03, msr);
        Assert.Equal(0, In(Serial16550.Msr) & 0x0F);
        Assert.False(_irq.Level);
    }

    [Fact]
    public void Divisor_latch_is_reached_with_dlab()
    {
        Out(Serial16550.Ier, 0x05);
        Out(Serial16550.Lcr, 0x83);
        Out(Serial16550.Dll, 0x01);
        Out(Serial16550.Dlm, 0x00);
        Assert.Equal(0x01, In(Serial16550.Dll));
        Assert.Equal(0x00, In(Serial16550.Dlm));
        Out(Serial16550.Lcr, 0x03);
        Assert.Equal(0x05, In(Serial16550.Ier));
        Assert.Equal(0x03, In(Serial16550.Lcr));
        Assert.Equal(1, _uart.SaveState().Divisor);
        Assert.Empty(_out); // DLL writes are not data
    }

    [Fact]
    public void Input_raises_rx_interrupt_by_trigger_level_and_timeout()
    {
        Out(Serial16550.Fcr, Serial16550.FcrEnable | 0x80); // trigger 8
        Out(Serial16550.Ier, Serial16550.IerRxData);
        _uart.EnqueueInput("abc"u8);
        Assert.True(_irq.Level);
        Assert.Equal(Serial16550.IirRxTimeout, In(Serial16550.Iir) & 0x0F); // below trigger
        _uart.EnqueueInput("defgh"u8);
        Assert.Equal(Serial16550.IirRxData, In(Serial16550.Iir) & 0x0F);
        var got = new List<byte>();
        while ((In(Serial16550.Lsr) & Serial16550.LsrDataReady) != 0) got.Add(In(Serial16550.Rbr));
        Assert.Equal("abcdefgh"u8.ToArray(), got.ToArray());
        Assert.False(_irq.Level);
        Assert.Equal(0xC1, In(Serial16550.Iir));
    }

    [Fact]
    public void Input_larger_than_the_fifo_waits_and_flows_in_without_loss()
    {
        Out(Serial16550.Fcr, Serial16550.FcrEnable);
        var text = new byte[100];
        for (int i = 0; i < text.Length; i++) text[i] = (byte)('A' + i % 26);
        Assert.Equal(100, _uart.EnqueueInput(text));
        var got = new List<byte>();
        while ((In(Serial16550.Lsr) & Serial16550.LsrDataReady) != 0) got.Add(In(Serial16550.Rbr));
        Assert.Equal(text, got.ToArray());
        Assert.Equal(0, In(Serial16550.Lsr) & Serial16550.LsrOverrun);
    }

    [Fact]
    public void Fcr_clear_rx_empties_the_fifo()
    {
        Out(Serial16550.Fcr, Serial16550.FcrEnable);
        _uart.EnqueueInput("xyz"u8);
        Out(Serial16550.Fcr, Serial16550.FcrEnable | Serial16550.FcrClearRx);
        Assert.Equal(0, In(Serial16550.Lsr) & Serial16550.LsrDataReady);
    }

    [Fact]
    public void Line_status_interrupt_has_priority_over_data()
    {
        Out(Serial16550.Fcr, Serial16550.FcrEnable);
        Out(Serial16550.Mcr, Serial16550.McrLoop);
        for (int i = 0; i < 17; i++) Out(Serial16550.Thr, (byte)i);
        Out(Serial16550.Ier, Serial16550.IerRxData | Serial16550.IerLineStatus);
        Assert.Equal(Serial16550.IirLineStatus, In(Serial16550.Iir) & 0x0F);
        In(Serial16550.Lsr);
        Assert.Equal(Serial16550.IirRxData, In(Serial16550.Iir) & 0x0F); // 16 >= trigger 1
    }

    [Fact]
    public void Scratch_register_holds_a_value()
    {
        Out(Serial16550.Scr, 0xA5);
        Assert.Equal(0xA5, In(Serial16550.Scr));
    }

    [Fact]
    public void State_round_trips()
    {
        Out(Serial16550.Fcr, Serial16550.FcrEnable | 0x40);
        Out(Serial16550.Lcr, 0x03);
        Out(Serial16550.Scr, 0x42);
        Out(Serial16550.Ier, Serial16550.IerRxData);
        _uart.EnqueueInput(new byte[20]);
        var state = _uart.SaveState();
        var other = new Serial16550(new RecordingLine(), _ => { });
        other.RestoreState(state);
        var again = other.SaveState();
        Assert.Equal(state with { RxFifo = [], PendingInput = [] }, again with { RxFifo = [], PendingInput = [] });
        Assert.Equal(state.RxFifo, again.RxFifo);
        Assert.Equal(state.PendingInput, again.PendingInput);
        Assert.Equal(16, state.RxFifo.Length);
        Assert.Equal(4, state.PendingInput.Length);
    }

    [Fact]
    public void Concurrent_input_and_reads_lose_nothing()
    {
        Out(Serial16550.Fcr, Serial16550.FcrEnable);
        const int n = 20_000;
        var writer = new Thread(() =>
        {
            for (int i = 0; i < n; i++) _uart.EnqueueInput([(byte)i]);
        });
        writer.Start();
        var got = new List<byte>(n);
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (got.Count < n && DateTime.UtcNow < deadline)
            if ((In(Serial16550.Lsr) & Serial16550.LsrDataReady) != 0) got.Add(In(Serial16550.Rbr));
        writer.Join();
        Assert.Equal(n, got.Count);
        for (int i = 0; i < n; i++) Assert.Equal((byte)i, got[i]);
    }
}
