using System.Buffers.Binary;
using System.Text;
using SharpVM.Devices.Legacy;
using SharpVM.Memory;
using SharpVM.Vmm.Boot;

namespace SharpVM.Vmm.Acpi;

/// <summary>A legacy serial port to describe in the DSDT (a PNP0501 device).</summary>
public sealed record AcpiSerialPort(string Name, ushort Port, int Irq);

/// <summary>One PCI INTx route for the root bridge's _PRT: device <paramref name="Slot"/>, pin 0..3 (INTA..INTD) → GSI.</summary>
public sealed record PciInterruptRoute(int Slot, int Pin, uint Gsi);

/// <summary>What the ACPI tables describe. Defaults match SharpVM's legacy devices.</summary>
public sealed record AcpiConfig
{
    public required int VcpuCount { get; init; }
    public ushort PmBasePort { get; init; } = AcpiPmDevice.DefaultBasePort;
    public ushort SciIrq { get; init; } = AcpiPmDevice.DefaultSciIrq;
    public ushort ResetPort { get; init; } = AcpiPmDevice.ResetControlPort;
    public byte ResetValue { get; init; } = AcpiPmDevice.ResetControlValue;
    public byte SleepTypeS5 { get; init; } = AcpiPmDevice.SleepTypeS5;

    /// <summary>Tell the guest an i8042 is present (FADT IAPC_BOOT_ARCH bit 1); Linux then probes ports 0x60/0x64.</summary>
    public bool HasI8042 { get; init; } = true;

    /// <summary>The CMOS index of the century register (FADT CENTURY); 0 for none.</summary>
    public byte CmosCenturyIndex { get; init; } = Cmos.CenturyIndex;

    public IReadOnlyList<AcpiSerialPort> SerialPorts { get; init; } = [new("COM1", Serial16550.Com1Port, Serial16550.Com1Irq)];
    public IReadOnlyList<PciInterruptRoute> PciRoutes { get; init; } = [];
    public ulong IoApicAddress { get; init; } = BootLayout.IoApicAddress;
    public byte IoApicId { get; init; }
    public ulong LocalApicAddress { get; init; } = BootLayout.LocalApicAddress;
}

/// <summary>One built table: its signature, guest address and bytes.</summary>
public sealed record AcpiTableBlob(string Signature, GuestAddress Address, byte[] Bytes);

/// <summary>
/// Builds SharpVM's ACPI tables (ACPI 6.5): RSDP → XSDT → {FADT → (FACS, DSDT), MADT}, laid out in the
/// BIOS area from 0xE0000 so Linux finds the RSDP by scanning and also through boot_params.acpi_rsdp_addr.
/// </summary>
public static class AcpiTables
{
    public static GuestAddress RsdpAddress => BootLayout.BiosAreaStart;

    public const int RsdpSize = 36, FadtSize = 276, FacsSize = 64;
    public const byte FadtRevision = 6, FadtMinorRevision = 5, MadtRevision = 5, DsdtRevision = 2, XsdtRevision = 1;

    /// <summary>Builds all tables at their final addresses. The first is the RSDP.</summary>
    public static IReadOnlyList<AcpiTableBlob> Build(AcpiConfig config)
    {
        if (config.VcpuCount is < 1 or > 255) throw new ArgumentOutOfRangeException(nameof(config), $"{config.VcpuCount} vCPUs: xAPIC MADT entries allow 1..255");
        ulong next = RsdpAddress.Value + 64;
        GuestAddress Place(int size, int alignment)
        {
            next = (next + (ulong)alignment - 1) & ~((ulong)alignment - 1);
            var at = new GuestAddress(next);
            next += (ulong)size;
            return at;
        }

        var dsdt = BuildDsdt(config);
        var dsdtAt = Place(dsdt.Length, 16);
        var facs = BuildFacs();
        var facsAt = Place(facs.Length, 64);
        var fadtAt = Place(FadtSize, 16);
        var fadt = BuildFadt(config, facsAt, dsdtAt);
        var madt = BuildMadt(config);
        var madtAt = Place(madt.Length, 16);
        var xsdt = BuildXsdt([fadtAt, madtAt]);
        var xsdtAt = Place(xsdt.Length, 16);
        var rsdp = BuildRsdp(xsdtAt);
        if (next > BootLayout.BiosAreaEnd.Value)
            throw new InvalidOperationException($"ACPI tables end at 0x{next:x}, past the BIOS area");
        return
        [
            new("RSD PTR ", RsdpAddress, rsdp),
            new("XSDT", xsdtAt, xsdt),
            new("FACP", fadtAt, fadt),
            new("FACS", facsAt, facs),
            new("DSDT", dsdtAt, dsdt),
            new("APIC", madtAt, madt),
        ];
    }

    /// <summary>Builds the tables and writes them into guest memory; returns the RSDP's address for boot_params.</summary>
    public static GuestAddress Write(GuestMemory memory, AcpiConfig config)
    {
        memory.GetWritableSpan(BootLayout.BiosAreaStart, (int)(BootLayout.BiosAreaEnd - BootLayout.BiosAreaStart)).Clear();
        foreach (var t in Build(config)) memory.Write(t.Address, t.Bytes);
        return RsdpAddress;
    }

    public static byte[] BuildRsdp(GuestAddress xsdt)
    {
        var r = new byte[RsdpSize];
        Encoding.ASCII.GetBytes("RSD PTR ").CopyTo(r, 0);
        Encoding.ASCII.GetBytes(AcpiTable.OemId).CopyTo(r, 9);
        r[15] = 2; // revision: ACPI 2.0+
        BinaryPrimitives.WriteUInt32LittleEndian(r.AsSpan(16), 0); // no RSDT: XSDT only
        BinaryPrimitives.WriteUInt32LittleEndian(r.AsSpan(20), RsdpSize);
        BinaryPrimitives.WriteUInt64LittleEndian(r.AsSpan(24), xsdt.Value);
        AcpiTable.SetChecksum(r.AsSpan(0, 20), 8);
        AcpiTable.SetChecksum(r, 32);
        return r;
    }

    public static byte[] BuildXsdt(IReadOnlyList<GuestAddress> entries)
    {
        var t = new byte[AcpiTable.HeaderSize + 8 * entries.Count];
        for (int i = 0; i < entries.Count; i++)
            BinaryPrimitives.WriteUInt64LittleEndian(t.AsSpan(AcpiTable.HeaderSize + 8 * i), entries[i].Value);
        AcpiTable.Finish(t, "XSDT", XsdtRevision);
        return t;
    }

    public static byte[] BuildFacs()
    {
        var t = new byte[FacsSize];
        Encoding.ASCII.GetBytes("FACS").CopyTo(t, 0);
        BinaryPrimitives.WriteUInt32LittleEndian(t.AsSpan(4), FacsSize);
        t[32] = 2; // version
        return t;
    }

    // FADT field offsets (ACPI 6.5 Table 5.9).
    public const int FadtFirmwareCtrl = 36, FadtDsdt = 40, FadtSciInt = 46, FadtSmiCmd = 48, FadtPm1aEvtBlk = 56,
        FadtPm1aCntBlk = 64, FadtPmTmrBlk = 76, FadtPm1EvtLen = 88, FadtPm1CntLen = 89, FadtPmTmrLen = 91, FadtCentury = 108,
        FadtIapcBootArch = 109, FadtFlags = 112, FadtResetReg = 116, FadtResetValue = 128, FadtMinorVersion = 131,
        FadtXFirmwareCtrl = 132, FadtXDsdt = 140, FadtXPm1aEvtBlk = 148, FadtXPm1aCntBlk = 172, FadtXPmTmrBlk = 208;

    // FADT flags.
    public const uint FlagWbinvd = 1 << 0, FlagProcC1 = 1 << 2, FlagSlpButton = 1 << 5, FlagFixRtc = 1 << 6,
        FlagTmrValExt = 1 << 8, FlagResetRegSup = 1 << 10, FlagHwReducedAcpi = 1 << 20;

    // IAPC_BOOT_ARCH.
    public const ushort BootArchLegacyDevices = 1 << 0, BootArch8042 = 1 << 1, BootArchVgaNotPresent = 1 << 2;

    public static byte[] BuildFadt(AcpiConfig c, GuestAddress facs, GuestAddress dsdt)
    {
        var t = new byte[FadtSize];
        var s = t.AsSpan();
        ushort evt = (ushort)(c.PmBasePort + AcpiPmDevice.EventBlockOffset);
        ushort cnt = (ushort)(c.PmBasePort + AcpiPmDevice.ControlBlockOffset);
        ushort tmr = (ushort)(c.PmBasePort + AcpiPmDevice.TimerOffset);
        BinaryPrimitives.WriteUInt32LittleEndian(s[FadtFirmwareCtrl..], (uint)facs.Value);
        BinaryPrimitives.WriteUInt32LittleEndian(s[FadtDsdt..], (uint)dsdt.Value);
        t[45] = 0; // preferred PM profile: unspecified
        BinaryPrimitives.WriteUInt16LittleEndian(s[FadtSciInt..], c.SciIrq);
        BinaryPrimitives.WriteUInt32LittleEndian(s[FadtSmiCmd..], 0); // no SMI: always in ACPI mode
        BinaryPrimitives.WriteUInt32LittleEndian(s[FadtPm1aEvtBlk..], evt);
        BinaryPrimitives.WriteUInt32LittleEndian(s[FadtPm1aCntBlk..], cnt);
        BinaryPrimitives.WriteUInt32LittleEndian(s[FadtPmTmrBlk..], tmr);
        t[FadtPm1EvtLen] = AcpiPmDevice.EventBlockLength;
        t[FadtPm1CntLen] = AcpiPmDevice.ControlBlockLength;
        t[FadtPmTmrLen] = AcpiPmDevice.TimerLength;
        BinaryPrimitives.WriteUInt16LittleEndian(s[96..], 101);  // P_LVL2_LAT > 100: C2 not supported
        BinaryPrimitives.WriteUInt16LittleEndian(s[98..], 1001); // P_LVL3_LAT > 1000: C3 not supported
        t[FadtCentury] = c.CmosCenturyIndex;
        ushort bootArch = (ushort)(BootArchLegacyDevices | BootArchVgaNotPresent | (c.HasI8042 ? BootArch8042 : 0));
        BinaryPrimitives.WriteUInt16LittleEndian(s[FadtIapcBootArch..], bootArch);
        BinaryPrimitives.WriteUInt32LittleEndian(s[FadtFlags..],
            FlagWbinvd | FlagProcC1 | FlagSlpButton | FlagFixRtc | FlagTmrValExt | FlagResetRegSup);
        AcpiTable.WriteIoGas(s[FadtResetReg..], c.ResetPort, 8, 1);
        t[FadtResetValue] = c.ResetValue;
        t[FadtMinorVersion] = FadtMinorRevision;
        BinaryPrimitives.WriteUInt64LittleEndian(s[FadtXFirmwareCtrl..], facs.Value);
        BinaryPrimitives.WriteUInt64LittleEndian(s[FadtXDsdt..], dsdt.Value);
        AcpiTable.WriteIoGas(s[FadtXPm1aEvtBlk..], evt, AcpiPmDevice.EventBlockLength * 8, 2);
        AcpiTable.WriteIoGas(s[FadtXPm1aCntBlk..], cnt, AcpiPmDevice.ControlBlockLength * 8, 2);
        AcpiTable.WriteIoGas(s[FadtXPmTmrBlk..], tmr, AcpiPmDevice.TimerLength * 8, 3);
        AcpiTable.Finish(t, "FACP", FadtRevision);
        return t;
    }

    public const uint MadtPcatCompat = 1;

    public static byte[] BuildMadt(AcpiConfig c)
    {
        var body = new List<byte>();
        for (int i = 0; i < c.VcpuCount; i++)
            body.AddRange([0, 8, (byte)i, (byte)i, 1, 0, 0, 0]); // Processor Local APIC: UID i, APIC ID i, enabled
        body.AddRange([1, 12, c.IoApicId, 0, .. BitConverter.GetBytes((uint)c.IoApicAddress), 0, 0, 0, 0]); // IOAPIC, GSI base 0
        body.AddRange([2, 10, 0, 0, 2, 0, 0, 0, 0, 0]); // ISA IRQ0 -> GSI2, conforming
        body.AddRange([2, 10, 0, (byte)c.SciIrq, (byte)c.SciIrq, 0, 0, 0, 0x0D, 0x00]); // SCI: active high, level
        body.AddRange([4, 6, 0xFF, 0x05, 0x00, 1]); // Local APIC NMI: all processors, active high edge, LINT1
        var t = new byte[AcpiTable.HeaderSize + 8 + body.Count];
        BinaryPrimitives.WriteUInt32LittleEndian(t.AsSpan(36), (uint)c.LocalApicAddress);
        BinaryPrimitives.WriteUInt32LittleEndian(t.AsSpan(40), MadtPcatCompat);
        body.CopyTo(t, 44);
        AcpiTable.Finish(t, "APIC", MadtRevision);
        return t;
    }

    /// <summary>The DSDT's AML: \_SB_.PCI0 (PNP0A03, with _PRT if routes are given), the serial ports (PNP0501), \_S5_.</summary>
    public static byte[] BuildDsdtAml(AcpiConfig c)
    {
        var pci = new List<byte[]>
        {
            Aml.Name("_HID", Aml.EisaId("PNP0A03")),
            Aml.Name("_ADR", Aml.Integer(0)),
            Aml.Name("_UID", Aml.Integer(0)),
            Aml.Name("_BBN", Aml.Integer(0)),
        };
        if (c.PciRoutes.Count > 0)
            pci.Add(Aml.Name("_PRT", Aml.Package(c.PciRoutes.Select(r =>
                Aml.Package(Aml.Integer(((ulong)(uint)r.Slot << 16) | 0xFFFF), Aml.Integer((ulong)r.Pin), Aml.Integer(0), Aml.Integer(r.Gsi))).ToArray())));
        var sb = new List<byte[]> { Aml.Device("PCI0", pci.ToArray()) };
        int uid = 1;
        foreach (var port in c.SerialPorts)
            sb.Add(Aml.Device(port.Name,
                Aml.Name("_HID", Aml.EisaId("PNP0501")),
                Aml.Name("_UID", Aml.Integer((ulong)uid++)),
                Aml.Method("_STA", Aml.Return(Aml.Integer(0x0F))),
                Aml.Name("_CRS", Aml.Resource.Template(
                    Aml.Resource.Io(port.Port, port.Port, 1, 8),
                    Aml.Resource.IrqNoFlags(port.Irq)))));
        // \_S5_: {PM1a SLP_TYP, PM1b SLP_TYP, reserved, reserved}
        var s5 = Aml.Name("\\_S5_", Aml.Package(Aml.Integer(c.SleepTypeS5), Aml.Integer(c.SleepTypeS5), Aml.Integer(0), Aml.Integer(0)));
        return [.. Aml.Scope("\\_SB_", sb.ToArray()), .. s5];
    }

    public static byte[] BuildDsdt(AcpiConfig c)
    {
        var aml = BuildDsdtAml(c);
        var t = new byte[AcpiTable.HeaderSize + aml.Length];
        aml.CopyTo(t, AcpiTable.HeaderSize);
        AcpiTable.Finish(t, "DSDT", DsdtRevision);
        return t;
    }
}
