using System.CommandLine;
using Spectre.Console;
using SharpVM.Vmm.Host;

namespace SharpVM.Cli;

/// <summary>`sharpvm info`: what the host offers for virtualization, what is missing, and how to fix it.</summary>
public static class InfoCommand
{
    public static Command Create()
    {
        var command = new Command("info", "Report what this host offers SharpVM: CPU, /dev/kvm and its provider, capabilities, KSM and huge pages, and which accelerator `--accel auto` picks.");
        command.SetAction(_ => Run());
        return command;
    }

    private static int Run()
    {
        var host = HostProbe.Probe();
        var table = new Table().Border(TableBorder.Rounded).AddColumn("Host").AddColumn("Value");
        table.AddRow("CPU", Markup.Escape($"{host.CpuModel} ({host.CpuVendor})"));
        table.AddRow("Hardware virtualization", host.Vmx ? "[green]VMX (Intel VT-x)[/]" : host.Svm ? "[green]SVM (AMD-V)[/]" : "[yellow]none: no vmx/svm flag in /proc/cpuinfo[/]");
        table.AddRow("/dev/kvm", host.DevKvmExists ? "present" : "[red]missing[/]");
        table.AddRow("KVM provider", Markup.Escape(AcceleratorPolicy.Describe(host.Provider)));
        table.AddRow("KVM API version", host.ApiVersion?.ToString() ?? Markup.Escape($"unavailable: {host.KvmError}"));
        table.AddRow("Nested virtualization", Markup.Escape(host.Nested ?? "n/a (not kvm_intel/kvm_amd)"));
        table.AddRow("KSM (/sys/kernel/mm/ksm/run)", Markup.Escape(host.KsmRun switch { "1" => "running", "0" => "stopped (echo 1 > /sys/kernel/mm/ksm/run to merge guest pages)", null => "not available", var v => v }));
        table.AddRow("Transparent huge pages", Markup.Escape(host.TransparentHugePages ?? "not available"));
        table.AddRow("Reserved huge pages", host.HugePagesTotal?.ToString() ?? "not available");
        var choice = AcceleratorPolicy.Resolve(Accelerator.Auto, host);
        table.AddRow("--accel auto picks", Markup.Escape($"{AcceleratorPolicy.OptionValue(choice.Chosen)}: {choice.Reason}"));
        AnsiConsole.Write(table);

        if (host.Capabilities.Count > 0)
        {
            var caps = new Table().Border(TableBorder.Rounded).AddColumn("KVM capability SharpVM uses").AddColumn("Value");
            foreach (var (name, value) in host.Capabilities)
                caps.AddRow(name, value == 0 ? "[red]absent[/]" : value.ToString());
            AnsiConsole.Write(caps);
        }

        var problems = Problems(host).ToList();
        foreach (var p in problems) AnsiConsole.MarkupLine($"[yellow]![/] {Markup.Escape(p)}");
        if (problems.Count == 0) AnsiConsole.MarkupLine("[green]Everything SharpVM uses is available.[/]");
        return 0;
    }

    private static IEnumerable<string> Problems(HostReport host)
    {
        if (host.KvmError is not null) yield return host.KvmError;
        if (!host.Vmx && !host.Svm)
            yield return "No VMX/SVM: hardware KVM is impossible here; guests run on SharpVM's own CPU (--accel emu). Enable VT-x/AMD-V in firmware, or on a cloud VM ask for nested virtualization.";
        if (host.Provider == KvmProvider.KvmPvm)
            yield return "/dev/kvm is kvm_pvm: guest user code runs at host speed but guest kernel code is emulated ~750x slower and some instructions fail, so Linux guests use --accel emu.";
        foreach (var (name, value) in host.Capabilities)
            if (value == 0) yield return $"KVM capability {name} is absent: features that need it are off.";
    }
}
