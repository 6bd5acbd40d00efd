using SharpVM.Devices.Interrupts;

namespace SharpVM.Devices.Tests.Interrupts;

public class IoApicTests
{
    private const ulong Level = 1UL << 15, Masked = 1UL << 16, Logical = 1UL << 11, RemoteIrr = 1UL << 14;
    private static ulong Dest(uint id) => (ulong)id << 56;

    private readonly ApicRig _rig = new(2);
    private readonly IoApic _ioapic;

    public IoApicTests() => _ioapic = new IoApic(_rig.Bus);

    [Fact]
    public void Registers_ResetMaskedAndVersion()
    {
        Assert.Equal(0x0017_0020u, _ioapic.ReadIndirect(0x01));
        for (int pin = 0; pin < IoApic.PinCount; pin++)
            Assert.Equal(Masked, _ioapic.GetRedirectionEntry(pin));
        _ioapic.Write32(0x00, 0x00);
        _ioapic.Write32(0x10, 0x0A00_0000);
        Assert.Equal(0x0A00_0000u, _ioapic.ReadIndirect(0x00));
        _ioapic.Write32(0x00, 0x01);
        _ioapic.Write32(0x10, 0xFFFF_FFFF); // version is read-only
        Assert.Equal(0x0017_0020u, _ioapic.ReadIndirect(0x01));
        Assert.Equal(0u, _ioapic.ReadIndirect(0x99)); // reserved index
    }

    [Fact]
    public void RedirectionEntry_ReadOnlyBitsIgnored()
    {
        _ioapic.SetRedirection(4, 0x0000_0000_0000_5031UL | Dest(1)); // tries to set delivery status + remote IRR
        ulong e = _ioapic.GetRedirectionEntry(4);
        Assert.Equal(0x31UL | Dest(1), e);
        Assert.Equal(0x31u, _ioapic.ReadIndirect(0x18));
        Assert.Equal(0x0100_0000u, _ioapic.ReadIndirect(0x19));
    }

    [Fact]
    public void Edge_RedirectionToLapicIrr_AcknowledgeAndEoi()
    {
        _ioapic.SetRedirection(3, 0x31 | Dest(1));
        _ioapic.SetPin(3, true);
        var apic = _rig.Apics[1];
        Assert.True(apic.IsRequested(0x31));
        Assert.False(_rig.Apics[0].IsRequested(0x31));
        Assert.Equal(0x31, apic.AcknowledgeInterrupt());
        Assert.True(apic.IsInService(0x31));
        Assert.Equal(0u, apic.ReadRegister(Reg.Tmr + 0x10) & (1u << 0x11));
        apic.WriteRegister(Reg.Eoi, 0);
        Assert.False(apic.IsInService(0x31));
        Assert.Equal(0UL, _ioapic.GetRedirectionEntry(3) & RemoteIrr);

        _ioapic.SetPin(3, true); // no new edge
        Assert.False(apic.IsRequested(0x31));
        _ioapic.SetPin(3, false);
        _ioapic.SetPin(3, true);
        Assert.True(apic.IsRequested(0x31));
    }

    [Fact]
    public void Level_RemoteIrrHoldsUntilEoi_ThenRedeliversWhileAsserted()
    {
        var apic = _rig.Apics[0];
        _ioapic.SetRedirection(9, 0x52 | Level | Dest(0));
        _ioapic.SetPin(9, true);
        Assert.True(apic.IsRequested(0x52));
        Assert.NotEqual(0UL, _ioapic.GetRedirectionEntry(9) & RemoteIrr);
        Assert.Equal(1u << (0x52 - 0x40), apic.ReadRegister(Reg.Tmr + 0x20)); // TMR marks it level

        Assert.Equal(0x52, apic.AcknowledgeInterrupt());
        _ioapic.SetPin(9, true);           // still asserted: coalesced while remote IRR is set
        Assert.False(apic.IsRequested(0x52));

        apic.WriteRegister(Reg.Eoi, 0);    // EOI broadcast clears remote IRR; line still high -> again
        Assert.True(apic.IsRequested(0x52));
        Assert.NotEqual(0UL, _ioapic.GetRedirectionEntry(9) & RemoteIrr);

        Assert.Equal(0x52, apic.AcknowledgeInterrupt());
        _ioapic.SetPin(9, false);          // device deasserts before the EOI
        apic.WriteRegister(Reg.Eoi, 0);
        Assert.False(apic.IsRequested(0x52));
        Assert.Equal(0UL, _ioapic.GetRedirectionEntry(9) & RemoteIrr);
        Assert.Equal(2, _ioapic.Delivered);
    }

    [Fact]
    public void Masking_EdgeLost_LevelDeliveredOnUnmask()
    {
        var apic = _rig.Apics[0];
        _ioapic.SetRedirection(5, 0x35 | Masked | Dest(0));
        _ioapic.SetRedirection(6, 0x36 | Level | Masked | Dest(0));
        _ioapic.SetPin(5, true);
        _ioapic.SetPin(5, false);
        _ioapic.SetPin(6, true);
        Assert.False(apic.HasPendingInterrupt);
        _ioapic.SetRedirection(5, 0x35 | Dest(0));
        _ioapic.SetRedirection(6, 0x36 | Level | Dest(0));
        Assert.False(apic.IsRequested(0x35));
        Assert.True(apic.IsRequested(0x36));
    }

    [Fact]
    public void DirectedEoi_WithBroadcastSuppressed_UsesTheEoiRegister()
    {
        var apic = _rig.Apics[0];
        apic.WriteRegister(Reg.Svr, 0x11FF); // enable + suppress EOI broadcast
        _ioapic.SetRedirection(10, 0x60 | Level | Dest(0));
        _ioapic.SetPin(10, true);
        Assert.Equal(0x60, apic.AcknowledgeInterrupt());
        apic.WriteRegister(Reg.Eoi, 0);
        Assert.NotEqual(0UL, _ioapic.GetRedirectionEntry(10) & RemoteIrr); // not broadcast
        _ioapic.Write32(0x40, 0x60);                                        // directed EOI
        Assert.True(apic.IsRequested(0x60));                                // still asserted: again
        _ioapic.SetPin(10, false);
        apic.AcknowledgeInterrupt();
        apic.WriteRegister(Reg.Eoi, 0);
        _ioapic.Write32(0x40, 0x60);
        Assert.Equal(0UL, _ioapic.GetRedirectionEntry(10) & RemoteIrr);
    }

    [Fact]
    public void LogicalDestination_AndNmiDeliveryMode()
    {
        _rig.Apics[0].WriteRegister(Reg.Ldr, 0x01u << 24);
        _rig.Apics[1].WriteRegister(Reg.Ldr, 0x02u << 24);
        _ioapic.SetRedirection(11, 0x70 | Logical | Dest(0x02));
        _ioapic.SetPin(11, true);
        Assert.True(_rig.Apics[1].IsRequested(0x70));
        Assert.False(_rig.Apics[0].IsRequested(0x70));

        _ioapic.SetRedirection(12, (4UL << 8) | Dest(0));
        _ioapic.SetPin(12, true);
        Assert.True(_rig.Apics[0].TakePendingNmi());
    }

    [Fact]
    public void IllegalVector_IsRejectedByTheLapic()
    {
        var apic = _rig.Apics[0];
        _ioapic.SetRedirection(13, 0x07 | Dest(0));
        _ioapic.SetPin(13, true);
        Assert.False(apic.HasPendingInterrupt);
        apic.WriteRegister(Reg.Esr, 0);
        Assert.Equal(LocalApic.EsrReceiveIllegalVector, apic.ReadRegister(Reg.Esr));
    }

    [Fact]
    public void GarbageAccesses_NeverThrow()
    {
        var rng = new Random(99);
        Span<byte> buf = stackalloc byte[8];
        for (int i = 0; i < 5000; i++)
        {
            int width = 1 << rng.Next(4);
            rng.NextBytes(buf);
            ulong offset = (ulong)rng.Next(0x100);
            if (rng.Next(2) == 0) _ioapic.Write(offset, buf[..width]);
            else _ioapic.Read(offset, buf[..width]);
            _ioapic.SetPin(rng.Next(-3, 30), rng.Next(2) == 0);
            foreach (var apic in _rig.Apics)
                for (int n = 0; n < 4 && apic.HasPendingInterrupt; n++) // a level pin re-fires after each EOI
                {
                    apic.AcknowledgeInterrupt();
                    apic.WriteRegister(Reg.Eoi, 0);
                }
        }
    }
}
