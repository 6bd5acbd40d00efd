using SharpVM.Integration.Tests.Infrastructure;

namespace SharpVM.Integration.Tests;

/// <summary>The `sharpvm` command as a user runs it: host report, demo guest, and clear errors for bad input.</summary>
public class CliTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(120);

    [Fact]
    public void InfoReportsTheKvmProviderAndTheAcceleratorChoice()
    {
        var r = SharpVmProcess.Run(Timeout, "info");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("KVM provider", r.StandardOutput);
        Assert.Contains("--accel auto picks", r.StandardOutput);
        Assert.Matches("kvm_intel|kvm_amd|kvm_pvm|no kvm module", r.StandardOutput);
    }

    [Fact]
    public void DemoBootsTheMicroGuestOnEveryVcpuAndPrintsExitStatistics()
    {
        var r = SharpVmProcess.Run(Timeout, "demo", "--cpus", "3", "--stats");
        Assert.True(r.ExitCode == 0, r.ToString());
        for (int i = 0; i < 3; i++) Assert.Contains($"Hello from SharpVM micro-guest vCPU {i:000}", r.StandardOutput);
        Assert.Contains("PioWrite", r.StandardOutput);
        Assert.Contains("debug-console", r.StandardOutput);
    }

    [Fact]
    public void StatisticsOfTheEmulatedCpuCountTheInstructionsItRan()
    {
        var r = SharpVmProcess.Run(Timeout, "demo", "--accel", "emu", "--cpus", "2", "--stats");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Contains("Emulated CPU", r.StandardOutput);
        Assert.Contains("Instructions retired", r.StandardOutput);
        // One row per vCPU, each with a non-zero count of instructions retired.
        var rows = r.StandardOutput.Split('\n').SkipWhile(l => !l.Contains("Emulated CPU")).Where(l => System.Text.RegularExpressions.Regex.IsMatch(l, @"^│ [01] ")).ToList();
        Assert.Equal(2, rows.Count);
        foreach (var row in rows) Assert.Matches(@"^│ [01]\s+│\s+[1-9][0-9,]*\s+│", row);
    }

    [Theory]
    [InlineData("run --bogus-flag", "--bogus-flag")]
    [InlineData("run --memory 12X --kernel /etc/hostname", "unknown size suffix")]
    [InlineData("run --memory 1M --kernel /etc/hostname", "at least 2 MiB")]
    [InlineData("run --cpus 0 --kernel /etc/hostname", "--cpus 0")]
    [InlineData("run --kernel /nonexistent/bzImage", "no such file")]
    [InlineData("run --kernel /etc/hostname", "not a Linux kernel")]
    [InlineData("run --kernel /etc/hostname --initrd /nonexistent/initrd", "--initrd")]
    [InlineData("run --serial bogus --kernel /etc/hostname", "--serial bogus")]
    [InlineData("run --serial tcp::99999 --kernel /etc/hostname", "--serial tcp::99999: bad port")]
    [InlineData("run --serial unix:/etc/hostname --kernel /etc/hostname", "exists and is not a socket")]
    [InlineData("run --accel warp", "warp")]
    [InlineData("demo --cpus 300", "--cpus 300")]
    public void BadArgumentsGiveAClearErrorAndANonZeroExit(string arguments, string expected)
    {
        var r = SharpVmProcess.Run(Timeout, arguments.Split(' '));
        Assert.True(r.ExitCode != 0, r.ToString());
        Assert.Contains(expected, r.StandardError + r.StandardOutput);
        Assert.DoesNotContain("   at ", r.StandardError); // no stack trace: a one-line message
    }
}
