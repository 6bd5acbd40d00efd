using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using SharpVM.Memory;
using SharpVM.Vmm.Acpi;
using SharpVM.Vmm.Boot;
using Xunit.Abstractions;

namespace SharpVM.Vmm.Tests.Acpi;

public sealed class AcpiTablesTests(ITestOutputHelper output)
{
    private static readonly AcpiConfig Config = new()
    {
        VcpuCount = 4,
        PciRoutes = [new PciInterruptRoute(1, 0, 16), new PciInterruptRoute(2, 1, 17)],
    };

    private static Dictionary<string, AcpiTableBlob> Tables(AcpiConfig? c = null) =>
        AcpiTables.Build(c ?? Config).ToDictionary(t => t.Signature);

    [Fact]
    public void Every_table_has_a_valid_checksum_and_length()
    {
        foreach (var t in AcpiTables.Build(Config))
        {
            if (t.Signature == "RSD PTR ")
            {
                Assert.Equal(0, AcpiTable.Sum(t.Bytes.AsSpan(0, 20)));
                Assert.Equal(0, AcpiTable.Sum(t.Bytes));
                Assert.Equal(36u, BinaryPrimitives.ReadUInt32LittleEndian(t.Bytes.AsSpan(20)));
                continue;
            }
            Assert.Equal(t.Signature, Encoding.ASCII.GetString(t.Bytes, 0, 4));
            Assert.Equal((uint)t.Bytes.Length, BinaryPrimitives.ReadUInt32LittleEndian(t.Bytes.AsSpan(4)));
            if (t.Signature != "FACS") Assert.Equal(0, AcpiTable.Sum(t.Bytes));
        }
    }

    [Fact]
    public void Rsdp_points_to_xsdt_which_points_to_fadt_and_madt_and_fadt_to_dsdt_and_facs()
    {
        using var memory = GuestMemory.Create(64UL << 20);
        var rsdpAt = AcpiTables.Write(memory, Config);
        Assert.Equal(new GuestAddress(0xE0000), rsdpAt);
        Assert.Equal(0u, rsdpAt.Value % 16);
        var rsdp = memory.GetSpan(rsdpAt, 36);
        Assert.True(rsdp[..8].SequenceEqual("RSD PTR "u8));
        Assert.Equal(2, rsdp[15]);
        var xsdtAt = new GuestAddress(BinaryPrimitives.ReadUInt64LittleEndian(rsdp[24..]));
        var xsdt = ReadTable(memory, xsdtAt);
        Assert.Equal("XSDT", Encoding.ASCII.GetString(xsdt[..4]));
        var sigs = new List<string>();
        GuestAddress fadtAt = default;
        for (int o = 36; o < xsdt.Length; o += 8)
        {
            var at = new GuestAddress(BinaryPrimitives.ReadUInt64LittleEndian(xsdt.AsSpan(o)));
            var sig = Encoding.ASCII.GetString(memory.GetSpan(at, 4));
            sigs.Add(sig);
            if (sig == "FACP") fadtAt = at;
        }
        Assert.Equal(["FACP", "APIC"], sigs);
        var fadt = ReadTable(memory, fadtAt);
        Assert.Equal(276, fadt.Length);
        var dsdtAt = new GuestAddress(BinaryPrimitives.ReadUInt64LittleEndian(fadt.AsSpan(AcpiTables.FadtXDsdt)));
        Assert.Equal((uint)dsdtAt.Value, BinaryPrimitives.ReadUInt32LittleEndian(fadt.AsSpan(AcpiTables.FadtDsdt)));
        Assert.Equal("DSDT", Encoding.ASCII.GetString(memory.GetSpan(dsdtAt, 4)));
        var facsAt = new GuestAddress(BinaryPrimitives.ReadUInt64LittleEndian(fadt.AsSpan(AcpiTables.FadtXFirmwareCtrl)));
        Assert.Equal(0u, facsAt.Value % 64);
        Assert.Equal("FACS", Encoding.ASCII.GetString(memory.GetSpan(facsAt, 4)));
        // Everything is in the BIOS area that the e820 map reserves.
        foreach (var t in AcpiTables.Build(Config))
            Assert.True(t.Address >= BootLayout.BiosAreaStart && t.Address + (ulong)t.Bytes.Length <= BootLayout.BiosAreaEnd);
    }

    private static byte[] ReadTable(GuestMemory memory, GuestAddress at)
    {
        uint length = memory.Read<uint>(at + 4);
        var t = memory.GetSpan(at, (int)length).ToArray();
        Assert.Equal(0, AcpiTable.Sum(t));
        return t;
    }

    [Fact]
    public void Fadt_describes_the_pm_blocks_sci_reset_register_and_is_not_hardware_reduced()
    {
        var f = Tables()["FACP"].Bytes.AsSpan();
        Assert.Equal(6, f[8]);
        Assert.Equal(9, BinaryPrimitives.ReadUInt16LittleEndian(f[AcpiTables.FadtSciInt..]));
        Assert.Equal(0x600u, BinaryPrimitives.ReadUInt32LittleEndian(f[AcpiTables.FadtPm1aEvtBlk..]));
        Assert.Equal(0x604u, BinaryPrimitives.ReadUInt32LittleEndian(f[AcpiTables.FadtPm1aCntBlk..]));
        Assert.Equal(0x608u, BinaryPrimitives.ReadUInt32LittleEndian(f[AcpiTables.FadtPmTmrBlk..]));
        Assert.Equal(4, f[AcpiTables.FadtPm1EvtLen]);
        Assert.Equal(2, f[AcpiTables.FadtPm1CntLen]);
        Assert.Equal(4, f[AcpiTables.FadtPmTmrLen]);
        uint flags = BinaryPrimitives.ReadUInt32LittleEndian(f[AcpiTables.FadtFlags..]);
        Assert.Equal(0u, flags & AcpiTables.FlagHwReducedAcpi);
        Assert.NotEqual(0u, flags & AcpiTables.FlagResetRegSup);
        // Reset register: SystemIO byte at 0xCF9, value 6.
        Assert.Equal(1, f[AcpiTables.FadtResetReg]);
        Assert.Equal(8, f[AcpiTables.FadtResetReg + 1]);
        Assert.Equal(0xCF9ul, BinaryPrimitives.ReadUInt64LittleEndian(f[(AcpiTables.FadtResetReg + 4)..]));
        Assert.Equal(6, f[AcpiTables.FadtResetValue]);
        // X_PM1a_CNT_BLK agrees with the 32-bit field.
        Assert.Equal(0x604ul, BinaryPrimitives.ReadUInt64LittleEndian(f[(AcpiTables.FadtXPm1aCntBlk + 4)..]));
        Assert.Equal(16, f[AcpiTables.FadtXPm1aCntBlk + 1]);
        Assert.Equal(0x32, f[AcpiTables.FadtCentury]);
        Assert.Equal(AcpiTables.BootArch8042, BinaryPrimitives.ReadUInt16LittleEndian(f[AcpiTables.FadtIapcBootArch..]) & AcpiTables.BootArch8042);
    }

    [Fact]
    public void Madt_has_one_local_apic_per_vcpu_an_ioapic_overrides_and_nmi()
    {
        var m = Tables()["APIC"].Bytes;
        Assert.Equal(0xFEE0_0000u, BinaryPrimitives.ReadUInt32LittleEndian(m.AsSpan(36)));
        Assert.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(m.AsSpan(40)) & 1);
        var entries = new List<byte[]>();
        for (int o = 44; o < m.Length; o += m[o + 1])
        {
            Assert.True(m[o + 1] >= 2, "entry length");
            entries.Add(m[o..(o + m[o + 1])]);
        }
        var lapics = entries.Where(e => e[0] == 0).ToList();
        Assert.Equal(4, lapics.Count);
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(8, lapics[i].Length);
            Assert.Equal(i, lapics[i][3]); // APIC ID
            Assert.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(lapics[i].AsSpan(4)) & 1);
        }
        var ioapic = Assert.Single(entries, e => e[0] == 1);
        Assert.Equal(0xFEC0_0000u, BinaryPrimitives.ReadUInt32LittleEndian(ioapic.AsSpan(4)));
        Assert.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(ioapic.AsSpan(8)));
        var overrides = entries.Where(e => e[0] == 2).ToList();
        Assert.Contains(overrides, e => e[3] == 0 && BinaryPrimitives.ReadUInt32LittleEndian(e.AsSpan(4)) == 2);
        Assert.Contains(overrides, e => e[3] == 9 && BinaryPrimitives.ReadUInt32LittleEndian(e.AsSpan(4)) == 9);
        var nmi = Assert.Single(entries, e => e[0] == 4);
        Assert.Equal(0xFF, nmi[2]);
        Assert.Equal(1, nmi[5]);
    }

    [Fact]
    public void Dsdt_aml_contains_s5_pci_root_and_com1()
    {
        var aml = AcpiTables.BuildDsdtAml(Config);
        // \_S5_ package {5, 5, 0, 0}
        byte[] s5 = [0x08, 0x5C, (byte)'_', (byte)'S', (byte)'5', (byte)'_', 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00];
        Assert.True(aml.AsSpan().IndexOf(s5) >= 0, "\\_S5_ package");
        Assert.True(aml.AsSpan().IndexOf(Aml.Name("_HID", Aml.EisaId("PNP0A03"))) >= 0, "PCI root _HID");
        Assert.True(aml.AsSpan().IndexOf(Aml.Name("_HID", Aml.EisaId("PNP0501"))) >= 0, "COM1 _HID");
        Assert.True(aml.AsSpan().IndexOf("COM1"u8) >= 0);
        Assert.True(aml.AsSpan().IndexOf((ReadOnlySpan<byte>)[0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08]) >= 0, "COM1 IO resource");
        Assert.True(aml.AsSpan().IndexOf((ReadOnlySpan<byte>)[0x22, 0x10, 0x00]) >= 0, "IRQ 4");
    }

    [Theory]
    [InlineData("PNP0A03", 0x030AD041u)]
    [InlineData("PNP0501", 0x0105D041u)]
    [InlineData("PNP0C0C", 0x0C0CD041u)]
    public void EisaId_matches_asl_compiler_encoding(string id, uint expected)
    {
        Assert.Equal(expected, Aml.EisaIdValue(id));
    }

    [Theory]
    [InlineData(0, new byte[] { 0x01 })]
    [InlineData(62, new byte[] { 0x3F })]
    [InlineData(63, new byte[] { 0x41, 0x04 })]      // 65 total: lead 0x40 | 1, then 65 >> 4 = 4
    [InlineData(4000, new byte[] { 0x42, 0xFA })]    // 4002 = 0xFA2
    [InlineData(5000, new byte[] { 0x8B, 0x38, 0x01 })] // 5003 = 0x138B
    public void PkgLength_encoding(int content, byte[] expected)
    {
        Assert.Equal(expected, Aml.PkgLength(content));
    }

    [Fact]
    public void Integers_use_the_smallest_encoding()
    {
        Assert.Equal(new byte[] { 0x00 }, Aml.Integer(0));
        Assert.Equal(new byte[] { 0x01 }, Aml.Integer(1));
        Assert.Equal([0x0A, 0x05], Aml.Integer(5));
        Assert.Equal([0x0B, 0x34, 0x12], Aml.Integer(0x1234));
        Assert.Equal([0x0C, 0x78, 0x56, 0x34, 0x12], Aml.Integer(0x12345678));
        Assert.Equal(9, Aml.Integer(0x1_0000_0000).Length);
        Assert.Throws<ArgumentException>(() => Aml.NameString("toolong"));
        Assert.Equal([0x5C, 0x2E, (byte)'_', (byte)'S', (byte)'B', (byte)'_', (byte)'P', (byte)'C', (byte)'I', (byte)'0'], Aml.NameString("\\_SB.PCI0"));
    }

    [Fact]
    public void Too_many_vcpus_for_xapic_is_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => AcpiTables.Build(new AcpiConfig { VcpuCount = 256 }));
    }

    /// <summary>
    /// The proof the tables are well-formed: ACPICA's own disassembler (iasl, Debian package
    /// acpica-tools) must read every table without errors, and the DSDT must decompile to what we meant.
    /// </summary>
    [Fact]
    public void Iasl_disassembles_every_table_cleanly()
    {
        string? iasl = new[] { "/usr/bin/iasl", "/usr/local/bin/iasl" }.FirstOrDefault(File.Exists);
        Assert.True(iasl is not null, "iasl is not installed: apt-get install acpica-tools (this test is the proof the ACPI tables are well-formed)");
        var dir = Directory.CreateTempSubdirectory("sharpvm-acpi-");
        try
        {
            var dsl = new Dictionary<string, string>();
            // The RSDP is not a table iasl disassembles from a file (it is checked field by field above).
            foreach (var t in AcpiTables.Build(Config).Where(t => t.Signature != "RSD PTR "))
            {
                string name = t.Signature.ToLowerInvariant();
                string dat = Path.Combine(dir.FullName, name + ".dat");
                File.WriteAllBytes(dat, t.Bytes);
                var (code, text) = Run(iasl!, $"-d {name}.dat", dir.FullName);
                output.WriteLine($"--- iasl -d {name}.dat: exit {code}\n{text}");
                Assert.Equal(0, code);
                Assert.DoesNotContain("Error", text, StringComparison.OrdinalIgnoreCase);
                string dslText = File.ReadAllText(Path.Combine(dir.FullName, name + ".dsl"));
                Assert.DoesNotContain("**** ", dslText); // iasl marks bad checksums/lengths and unknown fields so
                dsl[t.Signature] = dslText;
            }
            string dsdt = dsl["DSDT"];
            output.WriteLine(dsdt);
            output.WriteLine(dsl["FACP"]);
            output.WriteLine(dsl["APIC"]);
            Assert.Contains("Name (\\_S5, Package (0x04)", dsdt);
            Assert.Contains("EisaId (\"PNP0A03\")", dsdt);
            Assert.Contains("EisaId (\"PNP0501\")", dsdt);
            Assert.Contains("IRQNoFlags ()", dsdt);
            Assert.Contains("Name (_PRT, Package (0x02)", dsdt);
            Assert.Contains("[Multiple APIC Description Table (MADT)]", dsl["APIC"]);
            Assert.Contains("Local Apic ID : 03", dsl["APIC"].Replace("  ", " ").Replace("  ", " ").Replace("  ", " "));
            Assert.Contains("PM1A Control Block Address : 00000604", Squash(dsl["FACP"]));
            Assert.Contains("Reset Register Supported (V2) : 1", Squash(dsl["FACP"]));

            // Recompile the disassembled DSDT: iasl's compiler must accept it.
            var (cc, ctext) = Run(iasl!, "-tc dsdt.dsl", dir.FullName);
            output.WriteLine($"--- iasl -tc dsdt.dsl: exit {cc}\n{ctext}");
            Assert.Equal(0, cc);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    private static string Squash(string s)
    {
        while (s.Contains("  ")) s = s.Replace("  ", " ");
        return s;
    }

    private static (int ExitCode, string Output) Run(string file, string args, string workingDirectory)
    {
        var psi = new ProcessStartInfo(file, args)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout.Result + stderr);
    }
}
