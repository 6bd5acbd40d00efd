using System.Net.Sockets;
using System.Text;
using SharpVM.Integration.Tests.Infrastructure;

namespace SharpVM.Integration.Tests;

/// <summary>
/// `sharpvm run --serial unix:PATH` with the default guest on the emulated CPU, used the way a person
/// with socat would: connect, wait for the guest, type into its busybox shell, read the answer, power off.
/// </summary>
[Collection("LinuxBoot")]
public class SerialSocketBootTests
{
    private static readonly TimeSpan BootTimeout = TimeSpan.FromSeconds(240);

    [Fact]
    public void ShellOnTheUnixSocketRunsATypedCommandAndPowersOff()
    {
        LinuxGuestBoot.RequireDefaultGuest();
        string path = Path.Combine(Path.GetTempPath(), $"sharpvm-boot-{Guid.NewGuid():N}.sock");
        using var vm = new RunningSharpVm("run", "--accel", "emu", "--serial", $"unix:{path}", "--timeout", "300");
        var deadline = DateTime.UtcNow + BootTimeout;

        using var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        while (true)
        {
            Assert.False(vm.HasExited, $"sharpvm ended before its socket could be reached: {vm.WaitForExit(TimeSpan.Zero)}");
            Assert.True(DateTime.UtcNow < deadline, $"{path} never accepted a connection");
            try { client.Connect(new UnixDomainSocketEndPoint(path)); break; }
            catch (SocketException) { Thread.Sleep(100); }
        }

        var console = new StringBuilder();
        string WaitFor(string text, int from = 0)
        {
            var buffer = new byte[4096];
            while (console.ToString().IndexOf(text, from, StringComparison.Ordinal) < 0)
            {
                var left = deadline - DateTime.UtcNow;
                Assert.True(left > TimeSpan.Zero, $"no '{text}' on the socket in time{Environment.NewLine}--- console ---{Environment.NewLine}{console}");
                client.ReceiveTimeout = (int)Math.Max(1, left.TotalMilliseconds);
                int n;
                try { n = client.Receive(buffer); }
                catch (SocketException) { continue; }
                Assert.True(n > 0, $"the socket closed before '{text}'{Environment.NewLine}--- console ---{Environment.NewLine}{console}");
                console.Append(Encoding.ASCII.GetString(buffer, 0, n));
            }
            return console.ToString();
        }

        int marker = WaitFor(LinuxGuestBoot.Marker).IndexOf(LinuxGuestBoot.Marker, StringComparison.Ordinal);
        WaitFor("# ", marker); // busybox sh's prompt: the shell is reading the console
        int typed = console.Length;
        client.Send("echo SOCKET-$((6*7))-$(uname -m)\n"u8.ToArray());
        // The tty echoes the line as typed; only the shell's answer has the expanded result.
        WaitFor("SOCKET-42-x86_64", typed);
        client.Send("poweroff -f\n"u8.ToArray());

        var result = vm.WaitForExit(TimeSpan.FromSeconds(60));
        Assert.True(result is not null, $"sharpvm did not end after poweroff -f{Environment.NewLine}--- console ---{Environment.NewLine}{console}");
        Assert.True(result.ExitCode == 0, $"{result}{Environment.NewLine}--- console ---{Environment.NewLine}{console}");
        Assert.Contains($"unix:{path}", result.StandardError); // the address is announced
        Assert.False(File.Exists(path), "the socket file must be removed when sharpvm ends");
    }
}
