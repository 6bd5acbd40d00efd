using System.Buffers.Binary;
using SharpVM.Hypervisor;
using SharpVM.Hypervisor.Kvm;
using SharpVM.Interop.Kvm;
using SharpVM.Vmm.Acpi;
using SharpVM.Vmm.X86;

namespace SharpVM.Vmm.Tests.X86;

/// <summary>
/// What SharpVM hands KVM for a Linux guest, checked without running one: the topology in CPUID, the
/// GSI routing against the MADT's overrides, the LAPIC LINT pins. (Hardware KVM itself is not needed.)
/// </summary>
public class KvmGuestPlatformTests
{
    // A host with 2 threads per core and 32 cores (what KVM_GET_SUPPORTED_CPUID passes through),
    // whose 0x1F also lists a die level.
    private static readonly CpuidEntry[] IntelHost =
    [
        new(0, 0, 0x1F, 0x756E_6547, 0x6C65_746E, 0x4965_6E69),
        new(1, 0, 0x806F8, 0xAB40_0800, 0x7FFA_FBFF, 0x0FAB_FBFF),
        new(4, 0, 0x7C00_4121, 0x01C0_003F, 0x3F, 0, Indexed: true), // L1d, 2 threads sharing, 32 cores
        new(4, 1, 0x7C00_4122, 0x01C0_003F, 0x3F, 0, Indexed: true), // L1i
        new(4, 2, 0x7C00_4143, 0x03C0_003F, 0x7FF, 0, Indexed: true), // L2
        new(4, 3, 0x7C0F_C163, 0x0380_003F, 0xFFFF, 4, Indexed: true), // L3, 64 sharing
        new(4, 4, 0, 0, 0, 0, Indexed: true),
        new(0xB, 0, 1, 2, 0x100, 9, Indexed: true),
        new(0xB, 1, 6, 64, 0x201, 9, Indexed: true),
        new(0xB, 2, 0, 0, 2, 9, Indexed: true),
        new(0x1F, 0, 1, 2, 0x100, 9, Indexed: true),
        new(0x1F, 1, 6, 64, 0x201, 9, Indexed: true),
        new(0x1F, 2, 7, 64, 0x502, 9, Indexed: true), // die level
        new(0x1F, 3, 0, 0, 3, 9, Indexed: true),
        new(0x4000_0000, 0, 0x4000_0001, 0x4B4D_564B, 0x564B_4D56, 0x4D),
        new(0x4000_0001, 0, 0x0100_7AFB, 0, 0, 0),
        new(0x8000_0008, 0, 0x3030, 0, 0, 0),
    ];

    private static CpuidEntry Leaf(IReadOnlyList<CpuidEntry> leaves, uint function, uint index = 0) =>
        leaves.Single(e => e.Function == function && e.Index == index);

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(8)]
    public void EveryVcpuSeesOnePackageOfSingleThreadedCoresWithItsOwnApicId(int count)
    {
        uint coreBits = CpuidPolicy.CoreIdBits(count);
        Assert.True((1 << (int)coreBits) >= count && (count == 1 || (1 << (int)coreBits - 1) < count));
        for (int id = 0; id < count; id++)
        {
            var leaves = CpuidPolicy.ForVcpu(IntelHost, id, count);
            Assert.Equal((uint)id, Leaf(leaves, 1).Ebx >> 24);
            foreach (uint function in new uint[] { 0xB, 0x1F })
            {
                var smt = Leaf(leaves, function, 0);
                var core = Leaf(leaves, function, 1);
                // SMT level: no APIC ID bits, one thread; type 1.
                Assert.Equal((0u, 1u, 0x100u, (uint)id), (smt.Eax, smt.Ebx, smt.Ecx, smt.Edx));
                // Core level: all vCPUs, shift covering every APIC ID; type 2.
                Assert.Equal((coreBits, (uint)count, 0x201u, (uint)id), (core.Eax, core.Ebx, core.Ecx, core.Edx));
                Assert.True((uint)id >> (int)core.Eax == 0, "every vCPU is in package 0");
            }
            // The host's die level and terminator are invalid levels (type 0) that keep their level number.
            Assert.Equal((0u, 0u, 2u), (Leaf(leaves, 0x1F, 2).Eax, Leaf(leaves, 0x1F, 2).Ebx, Leaf(leaves, 0x1F, 2).Ecx));
            Assert.Equal(0u, Leaf(leaves, 0x1F, 3).Ecx >> 8);

            // Leaf 4: L1/L2 private to the vCPU, L3 shared by all; cores per package = count; the rest kept.
            for (uint cache = 0; cache < 3; cache++)
            {
                var l = Leaf(leaves, 4, cache);
                Assert.Equal(0u, (l.Eax >> 14) & 0xFFF);
                Assert.Equal((uint)count - 1, l.Eax >> 26);
                Assert.Equal(IntelHost[2 + cache].Eax & 0x3FFF, l.Eax & 0x3FFF);
                Assert.Equal(IntelHost[2 + cache].Ebx, l.Ebx);
            }
            Assert.Equal((uint)count - 1, (Leaf(leaves, 4, 3).Eax >> 14) & 0xFFF);
            Assert.Equal(IntelHost[6], Leaf(leaves, 4, 4)); // the terminator is untouched

            // Intel: AMD's leaf is left alone.
            Assert.Equal(IntelHost[^1], Leaf(leaves, 0x8000_0008));
        }
    }

    [Fact]
    public void TheKvmHypervisorLeavesPassThroughUnchanged()
    {
        var leaves = CpuidPolicy.ForVcpu(IntelHost, 2, 4);
        Assert.Equal("KVMKVMKVM", CpuidPolicy.HypervisorSignature(leaves));
        Assert.Equal(IntelHost[^3], Leaf(leaves, 0x4000_0000));
        Assert.Equal(IntelHost[^2], Leaf(leaves, 0x4000_0001)); // kvmclock (bits 0, 3) and stable bit 24 kept
        Assert.True((Leaf(leaves, 1).Ecx & (1u << 31)) != 0);
    }

    [Fact]
    public void AmdHostsGetTheirCoreCountAndExtendedApicIds()
    {
        CpuidEntry[] amd =
        [
            new(0, 0, 0x10, 0x6874_7541, 0x444D_4163, 0x6974_6E65), // AuthenticAMD
            new(1, 0, 0xA00F11, 0x0010_0800, 0x7ED8_320B, 0x178B_FBFF),
            new(0x8000_0008, 0, 0x3030, 0x0100_D219, 0x0003_703F, 0),
            new(0x8000_001E, 0, 0, 0, 0, 0),
        ];
        var leaves = CpuidPolicy.ForVcpu(amd, 5, 6);
        var sizes = Leaf(leaves, 0x8000_0008);
        Assert.Equal(5u, sizes.Ecx & 0xFF);              // 6 cores
        Assert.Equal(3u, (sizes.Ecx >> 12) & 0xF);       // 3 bits of APIC ID number them
        Assert.Equal(0x0003_0000u, sizes.Ecx & 0xFFFF_0000); // PerfTscSize etc. kept
        var ext = Leaf(leaves, 0x8000_001E);
        Assert.Equal((5u, 5u, 0u), (ext.Eax, ext.Ebx, ext.Ecx)); // APIC ID 5, core 5 with 1 thread, node 0
    }

    [Fact]
    public void TheMadtListsTheApicIdsCpuidGives()
    {
        const int count = 4;
        var madt = AcpiTables.BuildMadt(new AcpiConfig { VcpuCount = count });
        var apicIds = new List<int>();
        for (int at = 44; at < madt.Length; at += madt[at + 1])
            if (madt[at] == 0) apicIds.Add(madt[at + 3]);
        var cpuidIds = Enumerable.Range(0, count).Select(i => (int)(Leaf(CpuidPolicy.ForVcpu(IntelHost, i, count), 1).Ebx >> 24));
        Assert.Equal(cpuidIds, apicIds);
    }

    [Fact]
    public void TheKvmLeafOneGetsTheTscDeadlineTimerOnlyWhenKvmHasIt()
    {
        var with = KvmHypervisor.WithTscDeadlineTimer((CpuidEntry[])IntelHost.Clone(), supported: true);
        var without = KvmHypervisor.WithTscDeadlineTimer((CpuidEntry[])IntelHost.Clone(), supported: false);
        Assert.Equal(IntelHost[1].Ecx | (1u << 24), Leaf(with, 1).Ecx);
        Assert.Equal(IntelHost[1].Ecx, Leaf(without, 1).Ecx);
        Assert.Equal(IntelHost.Where(e => e.Function != 1), with.Where(e => e.Function != 1));
    }

    [Fact]
    public void GsiRoutingAgreesWithTheMadtOverrides()
    {
        var routes = PcIrqRouting.Entries();
        (uint Chip, uint Pin)[] To(uint gsi) => routes.Where(r => r.Gsi == gsi)
            .Select(r => (r.IrqchipOrAddressLo, r.PinOrAddressHi)).OrderBy(x => x.IrqchipOrAddressLo).ToArray();
        const uint master = KvmIrqRoutingEntry.IrqchipPicMaster, slave = KvmIrqRoutingEntry.IrqchipPicSlave, ioapic = KvmIrqRoutingEntry.IrqchipIoapic;
        Assert.All(routes, r => Assert.Equal(KvmIrqRoutingEntry.TypeIrqchip, r.Type));

        // The PIT raises GSI 0: PIC IRQ0 and IOAPIC pin 2, as the MADT's "IRQ0 -> GSI 2" override says.
        Assert.Equal([(master, 0u), (ioapic, 2u)], To(0));
        Assert.Empty(To(2));
        Assert.Equal([(master, 4u), (ioapic, 4u)], To(4));   // COM1
        Assert.Equal([(slave, 1u), (ioapic, 9u)], To(9));    // ACPI SCI
        Assert.Equal([(slave, 4u), (ioapic, 12u)], To(12));  // i8042 AUX
        for (uint gsi = 16; gsi < 24; gsi++) Assert.Equal([(ioapic, gsi)], To(gsi));
        // Every IOAPIC pin but 0 (nothing is wired there once IRQ0 moves to pin 2) has exactly one GSI.
        var pins = routes.Where(r => r.IrqchipOrAddressLo == ioapic).Select(r => r.PinOrAddressHi).Order().ToArray();
        Assert.Equal(Enumerable.Range(1, PcIrqRouting.IoapicPins - 1).Select(i => (uint)i), pins);

        // Each interrupt source override in the MADT: its source IRQ's GSI reaches the IOAPIC pin it names.
        var madt = AcpiTables.BuildMadt(new AcpiConfig { VcpuCount = 1 });
        int overrides = 0;
        for (int at = 44; at < madt.Length; at += madt[at + 1])
        {
            if (madt[at] != 2) continue;
            overrides++;
            uint source = madt[at + 3], gsi = BinaryPrimitives.ReadUInt32LittleEndian(madt.AsSpan(at + 4));
            Assert.Contains((ioapic, gsi), To(source));
        }
        Assert.Equal(2, overrides);
    }

    [Fact]
    public unsafe void LocalApicPinsBecomeExtIntAndNmiKeepingTheMask()
    {
        const uint masked = 1u << 16;
        var lapic = new KvmLapicState();
        BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(lapic.Regs, 1024)[KvmFirmwareState.LapicLvtLint0..], masked);
        BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(lapic.Regs, 1024)[KvmFirmwareState.LapicLvtLint1..], masked | 0x200);
        KvmFirmwareState.SetLocalInterruptPins(ref lapic);
        Assert.Equal(masked | 0x700, KvmFirmwareState.ReadRegister(lapic, KvmFirmwareState.LapicLvtLint0));
        Assert.Equal(masked | 0x400, KvmFirmwareState.ReadRegister(lapic, KvmFirmwareState.LapicLvtLint1));
        Assert.Equal(0x0u, KvmFirmwareState.WithDeliveryMode(0x700, 0));
        var copy = lapic;
        Assert.Throws<ArgumentOutOfRangeException>(() => KvmFirmwareState.ReadRegister(copy, 1022));
    }
}
