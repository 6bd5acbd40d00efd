using SharpVM.Devices.Bus;
using SharpVM.Devices.Interrupts;

namespace SharpVM.Devices.Tests.Interrupts;

public class DualPic8259Tests
{
    private readonly DualPic8259 _pic = new();
    private readonly PioBus _pio = new();

    public DualPic8259Tests()
    {
        _pio.Register(0x20, 2, _pic.MasterPorts, "pic1");
        _pio.Register(0xA0, 2, _pic.SlavePorts, "pic2");
        _pio.Register(0x4D0, 2, _pic.ElcrPorts, "elcr");
    }

    /// <summary>The PC BIOS / Linux init sequence: ICW1 0x11, ICW2 base, ICW3 cascade, ICW4 8086 mode.</summary>
    private void Init(byte masterBase = 0x20, byte slaveBase = 0x28, byte masterIcw4 = 0x01)
    {
        _pio.Out8(0x20, 0x11);
        _pio.Out8(0x21, masterBase);
        _pio.Out8(0x21, 0x04);
        _pio.Out8(0x21, masterIcw4);
        _pio.Out8(0xA0, 0x11);
        _pio.Out8(0xA1, slaveBase);
        _pio.Out8(0xA1, 0x02);
        _pio.Out8(0xA1, 0x01);
        _pio.Out8(0x21, 0x00);
        _pio.Out8(0xA1, 0x00);
    }

    private void Pulse(int irq)
    {
        _pic.SetIrq(irq, true);
        _pic.SetIrq(irq, false);
    }

    [Fact]
    public void InitSequence_ProgramsVectorBaseAndMask()
    {
        Init(0x30, 0x38);
        _pio.Out8(0x21, 0xFA);
        Assert.Equal(0xFA, _pio.In8(0x21));
        Assert.False(_pic.InterruptRequested);

        Pulse(1);
        Assert.False(_pic.InterruptRequested); // masked

        Pulse(0);
        Assert.True(_pic.InterruptRequested);
        Assert.Equal(0x30, _pic.AcknowledgeInterrupt());
        Assert.Equal(0x01, _pic.Registers.Isr);
        Assert.False(_pic.InterruptRequested);
        _pio.Out8(0x20, 0x20); // non-specific EOI
        Assert.Equal(0, _pic.Registers.Isr);
    }

    [Fact]
    public void Icw1_ClearsMaskAndInService()
    {
        Init();
        _pio.Out8(0x21, 0xFF);
        _pio.Out8(0x21, 0x00);
        Pulse(3);
        _pic.AcknowledgeInterrupt();
        Assert.NotEqual(0, _pic.Registers.Isr);
        Init();
        Assert.Equal(0, _pic.Registers.Isr);
        Assert.Equal(0, _pio.In8(0x21));
    }

    [Fact]
    public void Priority_LowerIrqWinsAndInServiceBlocksLowerPriority()
    {
        Init();
        Pulse(5);
        Pulse(3);
        Assert.Equal(0x23, _pic.AcknowledgeInterrupt());
        // IRQ5 has lower priority than IRQ3 in service: INTR stays low until EOI.
        Assert.False(_pic.InterruptRequested);
        // A higher-priority request (IRQ1) nests.
        Pulse(1);
        Assert.True(_pic.InterruptRequested);
        Assert.Equal(0x21, _pic.AcknowledgeInterrupt());
        _pio.Out8(0x20, 0x20); // EOI IRQ1
        Assert.False(_pic.InterruptRequested);
        _pio.Out8(0x20, 0x20); // EOI IRQ3
        Assert.True(_pic.InterruptRequested);
        Assert.Equal(0x25, _pic.AcknowledgeInterrupt());
    }

    [Fact]
    public void Masking_HoldsRequestUntilUnmasked()
    {
        Init();
        _pio.Out8(0x21, 1 << 4);
        Pulse(4);
        Assert.False(_pic.InterruptRequested);
        Assert.Equal(1 << 4, _pic.Registers.Irr);
        _pio.Out8(0x21, 0);
        Assert.True(_pic.InterruptRequested);
        Assert.Equal(0x24, _pic.AcknowledgeInterrupt());
    }

    [Fact]
    public void Cascade_SlaveIrqDeliveredThroughMasterIr2()
    {
        Init();
        int raised = 0;
        _pic.InterruptRequestRaised += () => raised++;
        Pulse(10);
        Assert.True(_pic.InterruptRequested);
        Assert.True(raised > 0);
        Assert.Equal(0x2A, _pic.AcknowledgeInterrupt());
        var regs = _pic.Registers;
        Assert.Equal((1 << 2) | (1 << 10), regs.Isr);
        // Linux EOIs the slave, then the master.
        _pio.Out8(0xA0, 0x20);
        _pio.Out8(0x20, 0x20);
        Assert.Equal(0, _pic.Registers.Isr);
    }

    [Fact]
    public void Cascade_MaskedSlaveOrCascadePinBlocks()
    {
        Init();
        _pio.Out8(0x21, 1 << 2); // mask the cascade input
        Pulse(12);
        Assert.False(_pic.InterruptRequested);
        _pio.Out8(0x21, 0);
        Assert.True(_pic.InterruptRequested);
        Assert.Equal(0x2C, _pic.AcknowledgeInterrupt());
    }

    [Fact]
    public void SpuriousAcknowledge_ReturnsIrq7Vectors()
    {
        Init();
        Assert.Equal(0x27, _pic.AcknowledgeInterrupt());
        Assert.Equal(0, _pic.Registers.Isr);
        Assert.Equal(1, _pic.Spurious);
    }

    [Fact]
    public void EdgeTriggered_RequestConsumedByAcknowledge_RetriggersOnlyOnNewEdge()
    {
        Init();
        _pic.SetIrq(4, true);
        Assert.Equal(0x24, _pic.AcknowledgeInterrupt());
        _pio.Out8(0x20, 0x20);
        Assert.False(_pic.InterruptRequested); // line still high, but no new edge
        _pic.SetIrq(4, false);
        _pic.SetIrq(4, true);
        Assert.True(_pic.InterruptRequested);
    }

    [Fact]
    public void LevelTriggered_ViaElcr_FollowsTheLine()
    {
        Init();
        _pio.Out8(0x4D1, 1 << (11 - 8));
        Assert.Equal(1 << 3, _pio.In8(0x4D1));
        _pic.SetIrq(11, true);
        Assert.Equal(0x2B, _pic.AcknowledgeInterrupt());
        _pio.Out8(0xA0, 0x20);
        _pio.Out8(0x20, 0x20);
        // Still asserted: requested again.
        Assert.True(_pic.InterruptRequested);
        _pic.SetIrq(11, false);
        Assert.False(_pic.InterruptRequested);
    }

    [Fact]
    public void Elcr_ReservedBitsStayEdge()
    {
        _pio.Out8(0x4D0, 0xFF);
        _pio.Out8(0x4D1, 0xFF);
        Assert.Equal(0xF8, _pio.In8(0x4D0));
        Assert.Equal(0xDE, _pio.In8(0x4D1));
    }

    [Fact]
    public void Ocw3_ReadsIrrAndIsr()
    {
        Init();
        _pio.Out8(0x21, 0xFF);
        Pulse(6);
        _pio.Out8(0x20, 0x0A); // read IRR
        Assert.Equal(1 << 6, _pio.In8(0x20));
        _pio.Out8(0x21, 0x00);
        _pic.AcknowledgeInterrupt();
        _pio.Out8(0x20, 0x0B); // read ISR
        Assert.Equal(1 << 6, _pio.In8(0x20));
    }

    [Fact]
    public void PollCommand_AcknowledgesHighestRequest()
    {
        Init();
        Pulse(5);
        _pio.Out8(0x20, 0x0C); // OCW3 poll
        Assert.Equal(0x85, _pio.In8(0x20));
        Assert.Equal(1 << 5, _pic.Registers.Isr);
        _pio.Out8(0x20, 0x0C);
        Assert.Equal(0x00, _pio.In8(0x20));
    }

    [Fact]
    public void AutoEoi_LeavesIsrClear()
    {
        Init(masterIcw4: 0x03);
        Pulse(1);
        Assert.Equal(0x21, _pic.AcknowledgeInterrupt());
        Assert.Equal(0, _pic.Registers.Isr);
    }

    [Fact]
    public void SpecificEoiAndRotation_ChangePriority()
    {
        Init();
        Pulse(1);
        Assert.Equal(0x21, _pic.AcknowledgeInterrupt());
        _pio.Out8(0x20, 0xE1); // rotate on specific EOI for IR1: IR1 becomes lowest, IR2 highest
        Assert.Equal(0, _pic.Registers.Isr);
        Pulse(1);
        Pulse(3);
        Assert.Equal(0x23, _pic.AcknowledgeInterrupt()); // IR3 now outranks IR1
        _pio.Out8(0x20, 0x63);                            // specific EOI IR3
        Assert.Equal(0x21, _pic.AcknowledgeInterrupt());
    }

    [Fact]
    public void SpecialMaskMode_LetsLowerPriorityThrough()
    {
        Init();
        Pulse(1);
        _pic.AcknowledgeInterrupt(); // IR1 in service
        Pulse(4);
        Assert.False(_pic.InterruptRequested);
        _pio.Out8(0x21, 1 << 1);     // mask IR1
        _pio.Out8(0x20, 0x68);       // OCW3: set special mask mode
        Assert.True(_pic.InterruptRequested);
        Assert.Equal(0x24, _pic.AcknowledgeInterrupt());
    }

    [Fact]
    public void GarbageWrites_NeverThrow()
    {
        var rng = new Random(1234);
        for (int i = 0; i < 5000; i++)
        {
            ushort[] ports = [0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1];
            _pio.Out8(ports[rng.Next(ports.Length)], (byte)rng.Next(256));
            _pic.SetIrq(rng.Next(-2, 18), rng.Next(2) == 0);
            if (_pic.InterruptRequested) _pic.AcknowledgeInterrupt();
            _pio.In8(ports[rng.Next(ports.Length)]);
        }
    }
}
