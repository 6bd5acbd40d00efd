using SharpVM.Devices.Bus;
using SharpVM.Devices.Interrupts;

namespace SharpVM.Devices.Tests.Interrupts;

public class LocalApicTests
{
    private static ApicMessage Fixed(byte vector, uint dest = 0, bool level = false) =>
        new(ApicDeliveryMode.Fixed, vector, dest, LogicalDestination: false, LevelTriggered: level);

    [Fact]
    public void ResetState_MatchesTheSdm()
    {
        var rig = new ApicRig(2, enable: false);
        var apic = rig.Apics[1];
        Assert.Equal(1u << 24, apic.ReadRegister(Reg.Id));
        Assert.Equal(LocalApic.VersionRegister, apic.ReadRegister(Reg.Version));
        Assert.Equal(0xFFu, apic.ReadRegister(Reg.Svr));
        Assert.Equal(0xFFFF_FFFFu, apic.ReadRegister(Reg.Dfr));
        for (uint lvt = 0x320; lvt <= 0x370; lvt += 0x10) Assert.Equal(0x1_0000u, apic.ReadRegister(lvt));
        Assert.True(apic.TryReadMsr(LocalApic.MsrApicBase, out ulong b));
        Assert.Equal(0xFEE0_0800UL, b); // AP: enabled, not BSP
        Assert.True(rig.Apics[0].TryReadMsr(LocalApic.MsrApicBase, out b));
        Assert.Equal(0xFEE0_0900UL, b);
        Assert.True(apic.IsWaitingForStartup);
        Assert.False(rig.Apics[0].IsWaitingForStartup);
    }

    [Fact]
    public void SoftwareDisabled_DropsFixedInterrupts()
    {
        var rig = new ApicRig(1, enable: false);
        var apic = rig.Apics[0];
        Assert.False(apic.Accept(Fixed(0x40)));
        Assert.False(apic.HasPendingInterrupt);
        apic.WriteRegister(Reg.Svr, 0x1FF);
        Assert.True(apic.Accept(Fixed(0x40)));
        Assert.True(apic.HasPendingInterrupt);
        Assert.Equal(1, rig.Wakes[0]);
    }

    [Fact]
    public void AcknowledgeAndEoi_FollowPriorityClasses()
    {
        var apic = new ApicRig(1).Apics[0];
        apic.Accept(Fixed(0x41));
        apic.Accept(Fixed(0x81));
        Assert.Equal(0x81, apic.AcknowledgeInterrupt());
        Assert.True(apic.IsInService(0x81));
        Assert.Equal(0x80u, apic.ReadRegister(Reg.Ppr));
        Assert.False(apic.HasPendingInterrupt); // 0x41 is below the in-service class
        apic.Accept(Fixed(0x92));
        Assert.True(apic.HasPendingInterrupt);  // a higher class nests
        Assert.Equal(0x92, apic.AcknowledgeInterrupt());
        apic.WriteRegister(Reg.Eoi, 0);          // EOI goes to the highest in service: 0x92
        Assert.False(apic.IsInService(0x92));
        Assert.True(apic.IsInService(0x81));
        apic.WriteRegister(Reg.Eoi, 0);
        Assert.Equal(0x41, apic.AcknowledgeInterrupt());
        apic.WriteRegister(Reg.Eoi, 0);
        Assert.Equal(0u, apic.ReadRegister(Reg.Ppr));
    }

    [Fact]
    public void TaskPriority_MasksLowerClasses()
    {
        var apic = new ApicRig(1).Apics[0];
        apic.WriteRegister(Reg.Tpr, 0x60);
        apic.Accept(Fixed(0x55));
        apic.Accept(Fixed(0x65));
        Assert.False(apic.HasPendingInterrupt); // class 6 is not above TPR class 6
        Assert.Equal(0x60u, apic.ReadRegister(Reg.Ppr));
        Assert.Equal(0xFF, apic.AcknowledgeInterrupt()); // nothing deliverable: spurious vector
        Assert.True(apic.IsRequested(0x65));
        apic.WriteRegister(Reg.Tpr, 0x50);
        Assert.True(apic.HasPendingInterrupt);
        Assert.Equal(0x65, apic.AcknowledgeInterrupt());
    }

    [Fact]
    public void IrrAndIsrRegisters_ExposeBits()
    {
        var apic = new ApicRig(1).Apics[0];
        apic.Accept(Fixed(0x31, level: true));
        Assert.Equal(1u << 0x11, apic.ReadRegister(Reg.Irr + 0x10));
        Assert.Equal(1u << 0x11, apic.ReadRegister(Reg.Tmr + 0x10));
        apic.AcknowledgeInterrupt();
        Assert.Equal(0u, apic.ReadRegister(Reg.Irr + 0x10));
        Assert.Equal(1u << 0x11, apic.ReadRegister(Reg.Isr + 0x10));
    }

    [Fact]
    public void IllegalVector_SetsErrorStatusAndFiresErrorLvt()
    {
        var apic = new ApicRig(1).Apics[0];
        apic.WriteRegister(Reg.LvtError, 0xFE);
        Assert.False(apic.Accept(Fixed(5)));
        Assert.Equal(0u, apic.ReadRegister(Reg.Esr));  // latched into ESR only by a write
        apic.WriteRegister(Reg.Esr, 0);
        Assert.Equal(LocalApic.EsrReceiveIllegalVector, apic.ReadRegister(Reg.Esr));
        Assert.True(apic.IsRequested(0xFE));
        apic.WriteRegister(Reg.Esr, 0);
        Assert.Equal(0u, apic.ReadRegister(Reg.Esr));

        // Sending an IPI with vector 3: send illegal vector, nothing sent.
        apic.WriteRegister(Reg.IcrLow, 0x0004_0003); // self, fixed, vector 3
        apic.WriteRegister(Reg.Esr, 0);
        Assert.Equal(LocalApic.EsrSendIllegalVector, apic.ReadRegister(Reg.Esr));
        Assert.False(apic.IsRequested(3));
    }

    [Fact]
    public void ReservedAndReadOnlyRegisters_AreIgnoredWithIllegalRegisterError()
    {
        var apic = new ApicRig(1).Apics[0];
        apic.WriteRegister(Reg.Version, 0x1234);
        apic.WriteRegister(Reg.Ppr, 0xFF);
        apic.WriteRegister(0x3C0, 0xFF);      // reserved slot
        apic.WriteRegister(Reg.Irr, 0xFFFF_FFFF);
        Assert.Equal(LocalApic.VersionRegister, apic.ReadRegister(Reg.Version));
        Assert.Equal(0u, apic.ReadRegister(Reg.Ppr));
        Assert.False(apic.HasPendingInterrupt);
        apic.WriteRegister(Reg.Esr, 0);
        Assert.Equal(LocalApic.EsrIllegalRegisterAddress, apic.ReadRegister(Reg.Esr));

        // Sub-dword and misaligned writes are ignored; reads of any width work.
        apic.WriteMmio(Reg.Tpr, [0x70]);
        apic.WriteMmio(Reg.Tpr + 4, [0x70, 0, 0, 0]);
        Assert.Equal(0u, apic.ReadRegister(Reg.Tpr));
        Span<byte> b = stackalloc byte[1];
        apic.ReadMmio(Reg.Version + 2, b);
        Assert.Equal(0x05, b[0]);
    }

    [Fact]
    public void SoftwareDisable_MasksLvtEntries()
    {
        var apic = new ApicRig(1).Apics[0];
        apic.WriteRegister(Reg.LvtTimer, 0x30);
        Assert.Equal(0x30u, apic.ReadRegister(Reg.LvtTimer));
        apic.WriteRegister(Reg.Svr, 0xFF);
        Assert.Equal(0x1_0030u, apic.ReadRegister(Reg.LvtTimer));
        apic.WriteRegister(Reg.LvtTimer, 0x30);
        Assert.Equal(0x1_0030u, apic.ReadRegister(Reg.LvtTimer)); // mask cannot be cleared while disabled
    }

    [Fact]
    public void FixedIpi_ReachesTargetAndWakesIt()
    {
        var rig = new ApicRig(2);
        rig.Apics[0].WriteRegister(Reg.IcrHigh, 1u << 24);
        rig.Apics[0].WriteRegister(Reg.IcrLow, 0x4050); // fixed, assert, vector 0x50
        Assert.Equal(0u, rig.Apics[0].ReadRegister(Reg.IcrLow) & (1u << 12)); // delivery status idle
        Assert.True(rig.Apics[1].IsRequested(0x50));
        Assert.False(rig.Apics[0].IsRequested(0x50));
        Assert.Equal(1, rig.Wakes[1]);
        Assert.Equal(0x50, rig.Apics[1].AcknowledgeInterrupt());
    }

    [Fact]
    public void Shorthands_SelectSelfOthersAndAll()
    {
        var rig = new ApicRig(3);
        rig.Apics[1].WriteRegister(Reg.IcrLow, 0x000C_0061); // all excluding self
        Assert.True(rig.Apics[0].IsRequested(0x61));
        Assert.False(rig.Apics[1].IsRequested(0x61));
        Assert.True(rig.Apics[2].IsRequested(0x61));
        rig.Apics[1].WriteRegister(Reg.IcrLow, 0x0004_0062); // self
        Assert.True(rig.Apics[1].IsRequested(0x62));
        Assert.False(rig.Apics[0].IsRequested(0x62));
        rig.Apics[2].WriteRegister(Reg.IcrLow, 0x0008_0063); // all including self
        Assert.All(rig.Apics, a => Assert.True(a.IsRequested(0x63)));
        rig.Apics[0].WriteRegister(Reg.IcrHigh, 0xFFu << 24);
        rig.Apics[0].WriteRegister(Reg.IcrLow, 0x0064);      // physical broadcast
        Assert.All(rig.Apics, a => Assert.True(a.IsRequested(0x64)));
    }

    [Fact]
    public void LogicalDestination_FlatAndClusterModels()
    {
        var rig = new ApicRig(3);
        for (int i = 0; i < 3; i++) rig.Apics[i].WriteRegister(Reg.Ldr, (1u << i) << 24);
        rig.Apics[0].WriteRegister(Reg.IcrHigh, 0x06u << 24); // CPUs 1 and 2
        rig.Apics[0].WriteRegister(Reg.IcrLow, 0x0870);       // logical, fixed
        Assert.False(rig.Apics[0].IsRequested(0x70));
        Assert.True(rig.Apics[1].IsRequested(0x70));
        Assert.True(rig.Apics[2].IsRequested(0x70));

        // Cluster model: high nibble is the cluster, low nibble a bit mask inside it.
        rig.Apics[0].WriteRegister(Reg.Dfr, 0x0FFF_FFFF);
        rig.Apics[1].WriteRegister(Reg.Dfr, 0x0FFF_FFFF);
        rig.Apics[0].WriteRegister(Reg.Ldr, 0x11u << 24);
        rig.Apics[1].WriteRegister(Reg.Ldr, 0x21u << 24);
        Assert.True(rig.Apics[1].MatchesDestination(0x21, logical: true, x2ApicFormat: false));
        Assert.False(rig.Apics[0].MatchesDestination(0x21, logical: true, x2ApicFormat: false));
        Assert.True(rig.Apics[0].MatchesDestination(0x13, logical: true, x2ApicFormat: false));
    }

    [Fact]
    public void LowestPriority_PrefersTheLowerProcessorPriority()
    {
        var rig = new ApicRig(2);
        rig.Apics[0].WriteRegister(Reg.Tpr, 0x40);
        for (int i = 0; i < 10; i++)
        {
            var msg = new ApicMessage(ApicDeliveryMode.LowestPriority, 0x90, 0xFF, false, false);
            Assert.Equal(1, rig.Bus.Deliver(msg));
        }
        Assert.True(rig.Apics[1].IsRequested(0x90));
        Assert.False(rig.Apics[0].IsRequested(0x90));
    }

    [Fact]
    public void InitAndStartupIpis_StartAnApplicationProcessor()
    {
        var rig = new ApicRig(2);
        var bsp = rig.Apics[0];
        var ap = rig.Apics[1];
        ap.Accept(Fixed(0x77));
        bsp.WriteRegister(Reg.IcrHigh, 1u << 24);
        bsp.WriteRegister(Reg.IcrLow, 0xC500);  // INIT, level, assert
        bsp.WriteRegister(Reg.IcrLow, 0x8500);  // INIT level de-assert: no effect
        Assert.True(ap.TakePendingInit());
        Assert.False(ap.TakePendingInit());
        Assert.False(ap.IsRequested(0x77));     // INIT reset the APIC
        Assert.Equal(0xFFu, ap.ReadRegister(Reg.Svr));
        Assert.Equal(1u << 24, ap.ReadRegister(Reg.Id));
        Assert.True(ap.IsWaitingForStartup);

        bsp.WriteRegister(Reg.IcrLow, 0x0000_0698); // SIPI vector 0x98
        bsp.WriteRegister(Reg.IcrLow, 0x0000_0699); // second SIPI while one is pending: ignored
        Assert.True(ap.TryTakeStartupIpi(out byte vector));
        Assert.Equal(0x98, vector);
        Assert.False(ap.IsWaitingForStartup);
        bsp.WriteRegister(Reg.IcrLow, 0x0000_069A); // AP is running: ignored
        Assert.False(ap.TryTakeStartupIpi(out _));
        Assert.True(rig.Wakes[1] >= 2);
    }

    [Fact]
    public void StartupIpi_IgnoredByRunningBsp()
    {
        var rig = new ApicRig(2);
        rig.Apics[1].WriteRegister(Reg.IcrHigh, 0);
        rig.Apics[1].WriteRegister(Reg.IcrLow, 0x0610);
        Assert.False(rig.Apics[0].TryTakeStartupIpi(out _));
    }

    [Fact]
    public void NmiIpi_IsTakenOnce()
    {
        var rig = new ApicRig(2);
        rig.Apics[0].WriteRegister(Reg.IcrHigh, 1u << 24);
        rig.Apics[0].WriteRegister(Reg.IcrLow, 0x0400);
        Assert.True(rig.Apics[1].HasPendingWakeEvent);
        Assert.False(rig.Apics[1].HasPendingInterrupt);
        Assert.True(rig.Apics[1].TakePendingNmi());
        Assert.False(rig.Apics[1].TakePendingNmi());
        Assert.False(rig.Apics[1].HasPendingWakeEvent);
        Assert.False(rig.Apics[0].TakePendingNmi());
    }

    [Fact]
    public void Lint1_ProgrammedNmi_RaisesNmiOnRisingEdge()
    {
        var apic = new ApicRig(1).Apics[0];
        apic.WriteRegister(Reg.LvtLint1, 0x400);
        apic.SetLocalInterruptPin(1, true);
        apic.SetLocalInterruptPin(1, true);
        Assert.True(apic.TakePendingNmi());
        Assert.False(apic.TakePendingNmi());
    }

    [Fact]
    public void ExtInt_FromPic_WhenDisabledOrVirtualWire()
    {
        var rig = new ApicRig(1, enable: false);
        var apic = rig.Apics[0];
        var pic = new DualPic8259();
        apic.ConnectExtIntSource(pic);
        var pio = new PioBus();
        pio.Register(0x20, 2, pic.MasterPorts, "pic1");
        pio.Out8(0x20, 0x11); pio.Out8(0x21, 0x08); pio.Out8(0x21, 0x04); pio.Out8(0x21, 0x01); pio.Out8(0x21, 0);

        pic.SetIrq(1, true);
        Assert.True(rig.Wakes[0] > 0);
        Assert.True(apic.HasPendingInterrupt);          // software-disabled: virtual wire
        Assert.Equal(0x09, apic.AcknowledgeInterrupt());
        pio.Out8(0x20, 0x20);

        apic.WriteRegister(Reg.Svr, 0x1FF);             // enabled, LINT0 masked
        pic.SetIrq(1, false);
        pic.SetIrq(1, true);
        Assert.False(apic.HasPendingInterrupt);
        apic.WriteRegister(Reg.LvtLint0, 0x700);        // LINT0 = ExtINT, unmasked
        Assert.True(apic.HasPendingInterrupt);
        Assert.Equal(0x09, apic.AcknowledgeInterrupt());
        Assert.False(apic.IsInService(0x09));           // ExtINT bypasses the ISR
    }

    [Fact]
    public void X2Apic_MsrInterface()
    {
        var rig = new ApicRig(2);
        var a = rig.Apics[0];
        var b = rig.Apics[1];
        Assert.False(a.TryReadMsr(0x802, out _));                 // x2APIC MSRs #GP in xAPIC mode
        Assert.False(a.TryWriteMsr(LocalApic.MsrApicBase, 0xFEE0_0500)); // EXTD without EN: invalid
        Assert.True(a.TryWriteMsr(LocalApic.MsrApicBase, 0xFEE0_0D00));
        Assert.True(b.TryWriteMsr(LocalApic.MsrApicBase, 0xFEE0_0C00));
        Assert.True(a.IsX2ApicMode);
        Assert.True(a.TryReadMsr(0x802, out ulong id));
        Assert.Equal(0UL, id);
        Assert.True(b.TryReadMsr(0x80D, out ulong ldr));
        Assert.Equal(1UL << 1, ldr);                              // cluster 0, bit 1
        Assert.False(a.TryWriteMsr(0x802, 5));                    // ID is read-only
        Assert.False(a.TryReadMsr(0x80E, out _));                 // no DFR in x2APIC mode

        Assert.True(a.TryWriteMsr(0x830, (1UL << 32) | 0x4055));  // fixed IPI to APIC ID 1
        Assert.True(b.IsRequested(0x55));
        Assert.True(b.TryWriteMsr(0x83F, 0x66));                  // SELF IPI
        Assert.True(b.IsRequested(0x66));
        Assert.True(b.TryWriteMsr(0x830, (0x0000_0001UL << 32) | 0x0877)); // logical: cluster 0, bit 0 -> APIC 0
        Assert.True(a.IsRequested(0x77));
        Assert.Equal(0x77, a.AcknowledgeInterrupt());
        Assert.False(a.TryWriteMsr(0x80B, 1));                    // x2APIC EOI must write 0
        Assert.True(a.TryWriteMsr(0x80B, 0));
        Assert.False(a.IsInService(0x77));

        // The MMIO page is not decoded in x2APIC mode.
        Span<byte> data = stackalloc byte[4];
        a.ReadMmio(Reg.Version, data);
        Assert.Equal(0xFF, data[0]);
        // x2APIC -> xAPIC directly is invalid; via disabled it is allowed.
        Assert.False(a.TryWriteMsr(LocalApic.MsrApicBase, 0xFEE0_0900));
        Assert.True(a.TryWriteMsr(LocalApic.MsrApicBase, 0xFEE0_0100));
        Assert.True(a.TryWriteMsr(LocalApic.MsrApicBase, 0xFEE0_0900));
        Assert.False(a.IsX2ApicMode);
    }

    [Fact]
    public void MmioDevice_ServesTheApicBoundToTheCallingThread()
    {
        var rig = new ApicRig(2);
        var mmio = new MmioBus();
        mmio.Register(LocalApic.DefaultBaseAddress, LocalApicMmioDevice.RangeSize, new LocalApicMmioDevice(rig.Bus), "lapic");
        uint[] ids = new uint[2];
        var threads = Enumerable.Range(0, 2).Select(i => new Thread(() =>
        {
            rig.Apics[i].BindCurrentThread();
            ids[i] = mmio.Read32(LocalApic.DefaultBaseAddress + Reg.Id);
            mmio.Write32(LocalApic.DefaultBaseAddress + Reg.Tpr, (uint)(0x10 * (i + 1)));
            LocalApic.UnbindCurrentThread();
        })).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        Assert.Equal([0u, 1u << 24], ids);
        Assert.Equal(0x10u, rig.Apics[0].ReadRegister(Reg.Tpr));
        Assert.Equal(0x20u, rig.Apics[1].ReadRegister(Reg.Tpr));

        // An unbound thread (a device) writing into the page sends an MSI.
        mmio.Write32(LocalApic.DefaultBaseAddress | (1u << 12), 0x0000_0045);
        Assert.True(rig.Apics[1].IsRequested(0x45));
        Assert.Equal(0xFFFF_FFFFu, mmio.Read32(LocalApic.DefaultBaseAddress + Reg.Id));
    }

    [Fact]
    public void ConcurrentIpis_DoNotDeadlockOrLoseInterrupts()
    {
        var rig = new ApicRig(4);
        const int perThread = 2000;
        var acked = new int[4];
        var stop = false;
        var threads = Enumerable.Range(0, 4).Select(i => new Thread(() =>
        {
            var me = rig.Apics[i];
            for (int n = 0; n < perThread; n++)
            {
                int target = (i + 1 + n % 3) % 4;
                me.TryReadMsr(LocalApic.MsrApicBase, out _);
                me.WriteRegister(Reg.IcrHigh, (uint)target << 24);
                me.WriteRegister(Reg.IcrLow, 0x4040u + (uint)(n % 16));
                while (me.HasPendingInterrupt)
                {
                    me.AcknowledgeInterrupt();
                    me.WriteRegister(Reg.Eoi, 0);
                    acked[i]++;
                }
            }
            while (!Volatile.Read(ref stop))
            {
                while (me.HasPendingInterrupt)
                {
                    me.AcknowledgeInterrupt();
                    me.WriteRegister(Reg.Eoi, 0);
                    acked[i]++;
                }
                Thread.Yield();
                if (me.IpisSent == perThread && rig.Apics.All(a => a.IpisSent == perThread)) break;
            }
        })).ToArray();
        foreach (var t in threads) t.Start();
        Assert.True(threads.All(t => t.Join(TimeSpan.FromSeconds(20))), "IPI storm deadlocked");
        Volatile.Write(ref stop, true);
        Assert.All(rig.Apics, a => Assert.Equal(perThread, a.IpisSent));
        Assert.Equal(4L * perThread, rig.Apics.Sum(a => a.InterruptsAccepted));
    }

    [Fact]
    public void GarbageRegisterAndMsrAccesses_NeverThrow()
    {
        var rig = new ApicRig(2);
        var rng = new Random(4242);
        Span<byte> buf = stackalloc byte[8];
        for (int i = 0; i < 20_000; i++)
        {
            var apic = rig.Apics[rng.Next(2)];
            ulong offset = (ulong)rng.Next(0x1010);
            int width = 1 << rng.Next(4);
            rng.NextBytes(buf);
            switch (rng.Next(6))
            {
                case 0: apic.WriteMmio(offset & ~0xFUL, buf[..4]); break;
                case 1: apic.WriteMmio(offset, buf[..width]); break;
                case 2: apic.ReadMmio(offset, buf[..width]); break;
                case 3: apic.TryWriteMsr((uint)(0x800 + rng.Next(0x100)), (ulong)rng.NextInt64()); break;
                case 4: apic.TryWriteMsr(rng.Next(4) == 0 ? LocalApic.MsrApicBase : LocalApic.MsrTscDeadline, (ulong)rng.NextInt64()); break;
                case 5: apic.TryReadMsr((uint)(0x800 + rng.Next(0x100)), out _); break;
            }
            if (apic.HasPendingInterrupt) apic.AcknowledgeInterrupt();
            apic.TakePendingNmi();
            apic.TakePendingInit();
            apic.TryTakeStartupIpi(out _);
            rig.Clock.Advance(rng.Next(1000));
        }
    }
}
