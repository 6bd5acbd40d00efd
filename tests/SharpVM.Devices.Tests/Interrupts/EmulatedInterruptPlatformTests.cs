using SharpVM.Devices.Bus;
using SharpVM.Devices.Interrupts;
using SharpVM.Devices.Timers;

namespace SharpVM.Devices.Tests.Interrupts;

public class EmulatedInterruptPlatformTests
{
    private readonly ManualDeviceClock _clock = new();
    private readonly EmulatedInterruptPlatform _platform;
    private readonly PioBus _pio = new();
    private readonly MmioBus _mmio = new();

    public EmulatedInterruptPlatformTests()
    {
        _platform = new EmulatedInterruptPlatform(2, _clock);
        _platform.RegisterDevices(_pio, _mmio);
    }

    private void ProgramIoApic(int pin, ulong entry)
    {
        _mmio.Write32(IoApic.DefaultBaseAddress, (uint)(0x10 + 2 * pin));
        _mmio.Write32(IoApic.DefaultBaseAddress + 0x10, (uint)entry);
        _mmio.Write32(IoApic.DefaultBaseAddress, (uint)(0x11 + 2 * pin));
        _mmio.Write32(IoApic.DefaultBaseAddress + 0x10, (uint)(entry >> 32));
    }

    private void EnableApics()
    {
        foreach (var apic in _platform.LocalApics) apic.WriteRegister(Reg.Svr, 0x1FF);
    }

    private void InitPic()
    {
        _pio.Out8(0x20, 0x11); _pio.Out8(0x21, 0x20); _pio.Out8(0x21, 0x04); _pio.Out8(0x21, 0x01);
        _pio.Out8(0xA0, 0x11); _pio.Out8(0xA1, 0x28); _pio.Out8(0xA1, 0x02); _pio.Out8(0xA1, 0x01);
        _pio.Out8(0x21, 0x00); _pio.Out8(0xA1, 0x00);
    }

    [Fact]
    public void Registration_ClaimsTheUsualRanges()
    {
        string[] names = [.. _pio.Ranges.Select(r => r.Name)];
        Assert.Equal(["pic-master", "pic-slave", "pic-elcr", "pit", "port61"], names);
        Assert.NotNull(_mmio.Find(0xFEC0_0010));
        Assert.NotNull(_mmio.Find(0xFEE0_0300));
        Assert.NotNull(_mmio.Find(0xFEEF_F000));
        Assert.True(_platform.LocalApics[0].IsBootstrapProcessor);
        Assert.Equal(1u, _platform.LocalApics[1].ApicId);
    }

    [Fact]
    public void Gsi0_GoesToPicIrq0AndIoApicPin2()
    {
        EnableApics();
        InitPic();
        ProgramIoApic(2, 0x30);
        _pio.Out8(0x21, 0xFF); // PIC fully masked, as Linux leaves it in APIC mode
        _platform.GetInterruptLine(0).Pulse();
        Assert.True(_platform.LocalApics[0].IsRequested(0x30));
        Assert.Equal(1, _platform.Pic.Registers.Irr & 1);
    }

    [Fact]
    public void IsaGsi_GoesToBothControllers_PciGsiToIoApicOnly_Gsi2ToNeither()
    {
        EnableApics();
        InitPic();
        ProgramIoApic(4, 0x34 | (1UL << 56));
        ProgramIoApic(20, 0x54 | (1UL << 15) | (1UL << 56));
        ProgramIoApic(2, 0x32);
        _platform.GetInterruptLine(4).Pulse();
        Assert.True(_platform.LocalApics[1].IsRequested(0x34));
        Assert.Equal(1 << 4, _platform.Pic.Registers.Irr & (1 << 4));

        _platform.GetInterruptLine(20).SetLevel(true);
        Assert.True(_platform.LocalApics[1].IsRequested(0x54));
        Assert.Equal(1 << 4, _platform.Pic.Registers.Irr); // nothing new on the PIC

        _platform.GetInterruptLine(2).Pulse();
        Assert.False(_platform.LocalApics[0].IsRequested(0x32));
        Assert.Throws<ArgumentOutOfRangeException>(() => _platform.GetInterruptLine(24));
    }

    [Fact]
    public void LevelPciInterrupt_FullCycleThroughMmio()
    {
        EnableApics();
        var bsp = _platform.LocalApics[0];
        ProgramIoApic(17, 0x61 | (1UL << 15));
        var line = _platform.GetInterruptLine(17);
        line.SetLevel(true);
        bsp.BindCurrentThread();
        try
        {
            Assert.True(bsp.HasPendingInterrupt);
            Assert.Equal(0x61, bsp.AcknowledgeInterrupt());
            line.SetLevel(false); // the driver's handler quiets the device
            _mmio.Write32(LocalApic.DefaultBaseAddress + Reg.Eoi, 0);
            Assert.False(bsp.HasPendingInterrupt);
            line.SetLevel(true);
            Assert.True(bsp.HasPendingInterrupt);
        }
        finally
        {
            LocalApic.UnbindCurrentThread();
        }
    }

    [Fact]
    public void DeliverMsi_RoutesByAddressAndData()
    {
        EnableApics();
        Assert.Equal(1, _platform.DeliverMsi(0xFEE0_1000, 0x0000_0099));
        Assert.True(_platform.LocalApics[1].IsRequested(0x99));
        Assert.Equal(2, _platform.DeliverMsi(0xFEEF_F000, 0x0000_009A)); // broadcast
        Assert.Equal(0, _platform.DeliverMsi(0xFED0_0000, 0x9B));       // not an MSI address
        Assert.Equal(1, _platform.DeliverMsi(0xFEE0_0000, 0x0000_0400)); // NMI
        Assert.True(_platform.LocalApics[0].TakePendingNmi());
    }

    [Fact]
    public void LegacyPath_PitThroughPicToBspInVirtualWireMode()
    {
        // Power-on state: BSP APIC software-disabled, so PIC INTR reaches the CPU directly.
        InitPic();
        _pio.Out8(0x43, 0x34);
        _pio.Out8(0x40, 1193 & 0xFF);
        _pio.Out8(0x40, 1193 >> 8);
        var bsp = _platform.LocalApics[0];
        Assert.False(bsp.HasPendingInterrupt);
        int taken = 0;
        for (int i = 0; i < 50; i++)
        {
            _clock.Advance(100_000);
            if (bsp.HasPendingInterrupt)
            {
                Assert.Equal(0x20, bsp.AcknowledgeInterrupt());
                _pio.Out8(0x20, 0x20);
                taken++;
            }
        }
        Assert.Equal(5, taken);
        Assert.False(_platform.LocalApics[1].HasPendingInterrupt); // APs have no ExtINT path
    }

    [Fact]
    public void SystemClock_IsOwnedAndDisposed()
    {
        using var platform = new EmulatedInterruptPlatform(1);
        Assert.IsType<SystemDeviceClock>(platform.Clock);
    }

    [Fact]
    public void Concurrency_DevicesTimersAndVcpusTogether_NoDeadlock()
    {
        using var platform = new EmulatedInterruptPlatform(2); // real clock and timer thread
        var pio = new PioBus();
        var mmio = new MmioBus();
        platform.RegisterDevices(pio, mmio);
        foreach (var apic in platform.LocalApics)
        {
            apic.WriteRegister(Reg.Svr, 0x1FF);
            apic.WriteRegister(Reg.LvtTimer, 0x2_00EF);
            apic.WriteRegister(Reg.DivideConfig, 0xB);
            apic.WriteRegister(Reg.InitialCount, 100_000); // 100 us periodic
        }
        void Rte(int pin, ulong e)
        {
            mmio.Write32(IoApic.DefaultBaseAddress, (uint)(0x10 + 2 * pin));
            mmio.Write32(IoApic.DefaultBaseAddress + 0x10, (uint)e);
            mmio.Write32(IoApic.DefaultBaseAddress, (uint)(0x11 + 2 * pin));
            mmio.Write32(IoApic.DefaultBaseAddress + 0x10, (uint)(e >> 32));
        }
        Rte(16, 0x61 | (1UL << 15) | (0xFFUL << 56) | (1UL << 8) | (1UL << 11)); // level, lowest priority, logical all
        Rte(4, 0x34 | (1UL << 56));
        pio.Out8(0x43, 0x34); pio.Out8(0x40, 0x40); pio.Out8(0x40, 0x00); // PIT at ~18 kHz into IOAPIC pin 2 (masked)

        var stop = new ManualResetEventSlim();
        long handled = 0;
        var cpus = platform.LocalApics.Select((apic, i) => new Thread(() =>
        {
            apic.BindCurrentThread();
            var line16 = platform.GetInterruptLine(16);
            while (!stop.IsSet)
            {
                while (apic.HasPendingInterrupt)
                {
                    int v = apic.AcknowledgeInterrupt();
                    if (v == 0x61) line16.SetLevel(false); // the handler quiets the device
                    mmio.Write32(LocalApic.DefaultBaseAddress + Reg.Eoi, 0);
                    Interlocked.Increment(ref handled);
                }
                mmio.Write32(LocalApic.DefaultBaseAddress + Reg.IcrHigh, (uint)(1 - i) << 24);
                mmio.Write32(LocalApic.DefaultBaseAddress + Reg.IcrLow, 0x4080);
            }
        }) { IsBackground = true }).ToArray();
        var device = new Thread(() =>
        {
            var line16 = platform.GetInterruptLine(16);
            var line4 = platform.GetInterruptLine(4);
            while (!stop.IsSet)
            {
                line16.SetLevel(true);
                line4.Pulse();
                platform.DeliverMsi(0xFEE0_1000, 0x90);
            }
        }) { IsBackground = true };
        foreach (var t in cpus) t.Start();
        device.Start();
        Thread.Sleep(300);
        stop.Set();
        Assert.True(device.Join(TimeSpan.FromSeconds(10)), "device thread stuck");
        Assert.All(cpus, t => Assert.True(t.Join(TimeSpan.FromSeconds(10)), "vCPU thread stuck"));
        // On a loaded host the threads may barely overlap (IPIs then coalesce in the IRR): assert progress only.
        Assert.True(Interlocked.Read(ref handled) > 0);
        Assert.All(platform.LocalApics, a => Assert.True(a.IpisSent > 0));
        Assert.True(platform.LocalApics.All(a => a.TimerExpirations > 0));
        Assert.Equal(0, platform.Clock.CallbackFailures);
    }
}
