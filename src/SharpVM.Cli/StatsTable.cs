using Spectre.Console;
using SharpVM.Vmm;
using SharpVM.Vmm.Exits;

namespace SharpVM.Cli;

/// <summary>`--stats`: VM exits by reason, port and MMIO range, per vCPU, as tables; with the emulated CPU, what it ran.</summary>
public static class StatsTable
{
    public static void Write(VirtualMachine vm, IAnsiConsole console)
    {
        var reasons = new Table().Border(TableBorder.Rounded).Title($"VM exits ({vm.Backend})").AddColumn("vCPU").AddColumn("Reason").AddColumn(new TableColumn("Count").RightAligned()).AddColumn(new TableColumn("Handling time").RightAligned()).AddColumn(new TableColumn("Mean").RightAligned());
        foreach (var v in vm.Vcpus)
            foreach (var kind in Enum.GetValues<ExitKind>())
            {
                long n = v.Statistics.Count(kind);
                if (n == 0) continue;
                var t = v.Statistics.Time(kind);
                reasons.AddRow(v.Id.ToString(), kind.ToString(), n.ToString("N0"), Format(t), Format(t / n));
            }
        console.Write(reasons);

        var places = new Table().Border(TableBorder.Rounded).Title("Exits by port / MMIO range").AddColumn("vCPU").AddColumn("Where").AddColumn(new TableColumn("Count").RightAligned()).AddColumn(new TableColumn("Handling time").RightAligned());
        var pioNames = vm.Pio.Ranges;
        var mmioRanges = vm.Mmio.Ranges;
        foreach (var v in vm.Vcpus)
        {
            foreach (var (port, n, t) in v.Statistics.Ports())
            {
                var owner = vm.Pio.Find(port);
                places.AddRow(v.Id.ToString(), Markup.Escape($"port 0x{port:x} ({owner?.Name ?? "unclaimed"})"), n.ToString("N0"), Format(t));
            }
            foreach (var (index, n, t) in v.Statistics.MmioRanges())
                places.AddRow(v.Id.ToString(), Markup.Escape(mmioRanges[index].ToString()), n.ToString("N0"), Format(t));
            if (v.Statistics.UnclaimedMmio > 0)
                places.AddRow(v.Id.ToString(), "MMIO (unclaimed)", v.Statistics.UnclaimedMmio.ToString("N0"), "");
        }
        _ = pioNames;
        console.Write(places);

        // SharpVM's own CPU (--accel emu) has no VM exits for its instructions: what it ran instead.
        var emulated = new Table().Border(TableBorder.Rounded).Title("Emulated CPU").AddColumn("vCPU")
            .AddColumn(new TableColumn("Instructions retired").RightAligned()).AddColumn(new TableColumn("Translated block entries").RightAligned())
            .AddColumn(new TableColumn("Exceptions").RightAligned()).AddColumn(new TableColumn("Interrupts").RightAligned());
        foreach (var v in vm.Vcpus)
            if (v.Vcpu is SharpVM.Cpu.EmulatorVcpu e)
                emulated.AddRow(v.Id.ToString(), e.InstructionsRetired.ToString("N0"), e.TranslatedBlockRuns.ToString("N0"),
                    e.ExceptionsDelivered.ToString("N0"), e.InterruptsDelivered.ToString("N0"));
        if (emulated.Rows.Count > 0) console.Write(emulated);
    }

    private static string Format(TimeSpan t) => t.TotalMilliseconds >= 1 ? $"{t.TotalMilliseconds:F2} ms" : $"{t.TotalMicroseconds:F1} µs";
}
