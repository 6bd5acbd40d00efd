using System.Diagnostics;
using System.Text;

namespace SharpVM.Integration.Tests;

/// <summary>
/// `sharpvm run` on a real terminal (a pty from util-linux's `script`): keys reach the guest raw,
/// with no echo or line buffering on the host, and Ctrl-A x quits. Only the start of a boot is needed.
/// </summary>
[Collection("LinuxBoot")]
public class TerminalConsoleTests
{
    [Fact]
    public void CtrlAXQuitsAtOnceAndTypedKeysAreNotEchoedByTheHost()
    {
        LinuxGuestBoot.RequireDefaultGuest();
        string dll = Path.Combine(AppContext.BaseDirectory, "sharpvm.dll");
        var start = new ProcessStartInfo("script") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "-q", "-e", "-c", $"exec dotnet '{dll}' run --accel emu --timeout 120", "/dev/null" }) start.ArgumentList.Add(a);
        using var p = Process.Start(start) ?? throw new InvalidOperationException("cannot start script");
        var output = new StringBuilder();
        var reader = new Thread(() =>
        {
            var buffer = new byte[4096];
            int n;
            while ((n = p.StandardOutput.BaseStream.Read(buffer)) > 0)
                lock (output) output.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }) { IsBackground = true };
        reader.Start();
        string Output() { lock (output) return output.ToString(); }
        try
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
            while (!Output().Contains("Linux version", StringComparison.Ordinal))
            {
                Assert.True(DateTime.UtcNow < deadline && !p.HasExited, $"the kernel's banner did not come{Environment.NewLine}{Output()}");
                Thread.Sleep(50);
            }
            // Early in the boot nobody in the guest reads or echoes COM1, so any echo would be the host's.
            p.StandardInput.Write("typed-on-the-host\u0001x");
            p.StandardInput.Flush();
            Assert.True(p.WaitForExit(TimeSpan.FromSeconds(30)), $"Ctrl-A x did not end sharpvm{Environment.NewLine}{Output()}");
            reader.Join(TimeSpan.FromSeconds(5));
            Assert.True(p.ExitCode == 0, $"exit {p.ExitCode}{Environment.NewLine}{Output()}");
            Assert.DoesNotContain("typed-on-the-host", Output());
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }
    }
}
