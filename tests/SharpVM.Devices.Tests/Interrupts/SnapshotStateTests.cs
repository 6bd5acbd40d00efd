using SharpVM.Devices.Bus;
using SharpVM.Devices.Interrupts;
using SharpVM.Devices.Timers;

namespace SharpVM.Devices.Tests.Interrupts;

/// <summary>Save/restore round trips of every interrupt/timer device state record.</summary>
public class SnapshotStateTests
{
    [Fact]
    public void LocalApic_RoundTripKeepsRegistersAndTimerPosition()
    {
        var rig = new ApicRig(2);
        var apic = rig.Apics[1];
        apic.WriteRegister(Reg.Tpr, 0x20);
        apic.WriteRegister(Reg.Ldr, 0x02u << 24);
        apic.WriteRegister(Reg.LvtLint0, 0x700);
        apic.Accept(new ApicMessage(ApicDeliveryMode.Fixed, 0x90, 1, false, true));
        apic.Accept(new ApicMessage(ApicDeliveryMode.Fixed, 0x41, 1, false, false));
        Assert.Equal(0x90, apic.AcknowledgeInterrupt());
        apic.WriteRegister(Reg.LvtTimer, 0x2_0050);
        apic.WriteRegister(Reg.DivideConfig, 0xB);
        apic.WriteRegister(Reg.InitialCount, 100_000);
        rig.Clock.Advance(130_000);
        var saved = apic.SaveState();

        // A fresh platform whose clock is at a different time.
        var other = new ApicRig(2);
        other.Clock.Advance(5_000_000_000);
        var copy = other.Apics[1];
        copy.RestoreState(saved);
        Assert.Equivalent(saved, copy.SaveState(), strict: true);
        Assert.Equal(70_000u, copy.ReadRegister(Reg.CurrentCount));
        Assert.True(copy.IsInService(0x90));
        Assert.True(copy.IsRequested(0x41));
        Assert.Equal(saved.Tmr, copy.SaveState().Tmr);
        long before = copy.TimerExpirations;
        other.Clock.Advance(69_999);
        Assert.Equal(before, copy.TimerExpirations);
        other.Clock.Advance(1);
        Assert.Equal(before + 1, copy.TimerExpirations);

        Assert.Throws<ArgumentException>(() => copy.RestoreState(saved with { Irr = new uint[3] }));
    }

    [Fact]
    public void IoApic_RoundTrip()
    {
        var rig = new ApicRig(1);
        var ioapic = new IoApic(rig.Bus);
        ioapic.SetRedirection(9, 0x52 | (1UL << 15));
        ioapic.SetRedirection(4, 0x34 | (1UL << 16) | (3UL << 56));
        ioapic.SetPin(9, true);
        var saved = ioapic.SaveState();
        Assert.NotEqual(0UL, saved.Redirection[9] & (1UL << 14));

        var rig2 = new ApicRig(1);
        var copy = new IoApic(rig2.Bus);
        copy.RestoreState(saved);
        Assert.Equivalent(saved, copy.SaveState(), strict: true);
        // Remote IRR survives: the EOI for the restored vector redelivers the still-asserted line.
        rig2.Apics[0].RestoreState(rig.Apics[0].SaveState());
        Assert.Equal(0x52, rig2.Apics[0].AcknowledgeInterrupt());
        rig2.Apics[0].WriteRegister(Reg.Eoi, 0);
        Assert.True(rig2.Apics[0].IsRequested(0x52));
        Assert.Throws<ArgumentException>(() => copy.RestoreState(saved with { PinLevels = [] }));
    }

    [Fact]
    public void DualPic_RoundTrip()
    {
        var pic = new DualPic8259();
        var pio = new PioBus();
        pio.Register(0x20, 2, pic.MasterPorts, "m");
        pio.Register(0xA0, 2, pic.SlavePorts, "s");
        pio.Out8(0x20, 0x11); pio.Out8(0x21, 0x30); pio.Out8(0x21, 0x04); pio.Out8(0x21, 0x01);
        pio.Out8(0xA0, 0x11); pio.Out8(0xA1, 0x38); pio.Out8(0xA1, 0x02); pio.Out8(0xA1, 0x01);
        pio.Out8(0x21, 0x10);
        pic.SetIrq(3, true);
        Assert.Equal(0x33, pic.AcknowledgeInterrupt());
        pic.SetIrq(9, true);
        var saved = pic.SaveState();

        var copy = new DualPic8259();
        int raised = 0;
        copy.InterruptRequestRaised += () => raised++;
        copy.RestoreState(saved);
        Assert.Equivalent(saved, copy.SaveState(), strict: true);
        Assert.Equal(1, raised);
        Assert.Equal(0x39, copy.AcknowledgeInterrupt()); // IRQ9 (on IR2) outranks IR3 in service
    }

    [Fact]
    public void Pit_RoundTripKeepsCountsAndIrqSchedule()
    {
        var clock = new ManualDeviceClock();
        var line = new RecordingLine();
        var pit = new Pit8254(clock, line);
        pit.CounterPorts.Out8(3, 0x34);
        pit.CounterPorts.Out8(0, 1193 & 0xFF);
        pit.CounterPorts.Out8(0, 1193 >> 8);
        pit.SystemControlPortDevice.Out8(0, 0x01);
        pit.CounterPorts.Out8(3, 0xB0);
        pit.CounterPorts.Out8(2, 0x00);
        pit.CounterPorts.Out8(2, 0x40);
        clock.Advance(3_500_000);
        Assert.Equal(3, line.RisingEdges);
        var saved = pit.SaveState();

        var clock2 = new ManualDeviceClock();
        clock2.Advance(123_456_789);
        var line2 = new RecordingLine();
        var copy = new Pit8254(clock2, line2);
        copy.RestoreState(saved);
        Assert.Equivalent(saved, copy.SaveState(), strict: true);
        Assert.Equal(pit.GetCount(2), copy.GetCount(2));
        Assert.Equal(pit.GetCount(0), copy.GetCount(0));
        clock2.Advance(600_000); // crosses the 4th period boundary (~4.0 ms since load)
        Assert.Equal(1, line2.RisingEdges);
        Assert.Throws<ArgumentException>(() => copy.RestoreState(saved with { Counters = [] }));
    }
}
