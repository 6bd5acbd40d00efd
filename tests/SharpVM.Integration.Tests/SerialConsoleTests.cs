using System.Net;
using System.Net.Sockets;
using System.Text;
using SharpVM.Cli;
using SharpVM.Cli.Serial;
using SharpVM.Devices;
using SharpVM.Devices.Legacy;

namespace SharpVM.Integration.Tests;

/// <summary>`--serial` values, the output queue between vCPU threads and the console, and the socket backends, without a guest.</summary>
public class SerialConsoleTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);

    [Fact]
    public void ParsesEveryKindOfSerialValue()
    {
        Assert.IsType<SerialSpec.Stdio>(SerialSpec.Parse("stdio"));
        Assert.IsType<SerialSpec.None>(SerialSpec.Parse("none"));
        Assert.Equal(new SerialSpec.File("/tmp/log"), SerialSpec.Parse("file:/tmp/log"));
        Assert.Equal(new SerialSpec.UnixSocket("/tmp/vm.sock"), SerialSpec.Parse("unix:/tmp/vm.sock"));
        Assert.Equal(new SerialSpec.UnixSocket("/tmp/vm.sock"), SerialSpec.Parse("unix:/tmp/vm.sock,server=on,wait=off"));
        Assert.Equal(new SerialSpec.UnixSocket("rel.sock"), SerialSpec.Parse("unix:rel.sock,server,nowait"));
        Assert.Equal(new SerialSpec.TcpSocket("", 4444), SerialSpec.Parse("tcp::4444"));
        Assert.Equal(new SerialSpec.TcpSocket("0.0.0.0", 0), SerialSpec.Parse("tcp:0.0.0.0:0"));
        Assert.Equal(new SerialSpec.TcpSocket("::1", 65535), SerialSpec.Parse("tcp:[::1]:65535,server=on,wait=off"));
        Assert.Equal(new SerialSpec.TcpSocket("localhost", 23), SerialSpec.Parse("tcp:localhost:23"));
    }

    [Theory]
    [InlineData("bogus", "expected stdio, file:PATH, unix:PATH, tcp:[HOST]:PORT or none")]
    [InlineData("pty:/dev/pts/1", "unknown kind 'pty:'")]
    [InlineData("file:", "file: needs a path")]
    [InlineData("unix:", "unix: needs a path")]
    [InlineData("unix:/tmp/s,wait=on", "does not wait for a client")]
    [InlineData("unix:/tmp/s,server=off", "only listens")]
    [InlineData("unix:/tmp/s,telnet=on", "unknown option 'telnet=on'")]
    [InlineData("tcp:4444", "tcp: needs [HOST]:PORT")]
    [InlineData("tcp::", "bad port ''")]
    [InlineData("tcp::65536", "bad port '65536'")]
    [InlineData("tcp::-1", "bad port '-1'")]
    [InlineData("tcp::44x", "bad port '44x'")]
    [InlineData("tcp:::1:4444", "IPv6 address goes in brackets")]
    public void BadSerialValuesAreOneLineErrorsNamingTheValue(string value, string reason)
    {
        var e = Assert.Throws<FormatException>(() => SerialSpec.Parse(value));
        Assert.StartsWith($"--serial {value}: ", e.Message);
        Assert.Contains(reason, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void OutputQueueDropsWhatDoesNotFitWhenItMayAndKeepsOrder()
    {
        var queue = new SerialOutputQueue(8, dropWhenFull: true);
        queue.Enqueue("abcde"u8);
        queue.Enqueue("fghij"u8); // only "fgh" fits
        Assert.Equal(2, queue.Dropped);
        var buffer = new byte[16];
        int n = queue.Take(buffer);
        Assert.Equal("abcdefgh", Encoding.ASCII.GetString(buffer, 0, n));
        Assert.False(queue.WaitUntilDrained(TimeSpan.FromMilliseconds(50))); // taken but not yet written
        queue.Written();
        Assert.True(queue.WaitUntilDrained(TimeSpan.Zero));
    }

    [Fact]
    public void LosslessOutputQueueMakesTheWriterWaitForSpaceAndWrapsAround()
    {
        var queue = new SerialOutputQueue(4, dropWhenFull: false);
        var writer = new Thread(() => queue.Enqueue("0123456789"u8));
        writer.Start();
        var received = new StringBuilder();
        var buffer = new byte[3];
        while (received.Length < 10)
        {
            int n = queue.Take(buffer);
            received.Append(Encoding.ASCII.GetString(buffer, 0, n));
            queue.Written();
        }
        Assert.True(writer.Join(Wait));
        Assert.Equal("0123456789", received.ToString());
        Assert.Equal(0, queue.Dropped);
        queue.Close();
        Assert.Equal(0, queue.Take(buffer));
    }

    [Fact]
    public void UnixSocketCarriesOutputAndInputForOneClientAfterAnotherAndIsRemovedOnExit()
    {
        string path = TempSocketPath();
        var notices = new StringWriter();
        var uart = new Serial16550(new NoInterrupts(), _ => { });
        using (var console = SerialConsole.Open($"unix:{path}", interactive: false, notices))
        {
            console.ConnectInput(uart);
            Assert.Equal($"unix:{path}", console.ListenAddress);
            Assert.Contains($"unix:{path}", notices.ToString());
            Assert.True(File.Exists(path));
            console.Write("lost: nobody is connected\n"u8);
            Assert.True(console.Flush(Wait)); // written to nobody, i.e. dropped, before the first client comes

            foreach (string name in new[] { "first", "second" })
            {
                using var client = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                client.Connect(new UnixDomainSocketEndPoint(path));
                client.Send(Encoding.ASCII.GetBytes($"typed by {name}\n"));
                Assert.Equal($"typed by {name}\n", ReadUart(uart, $"typed by {name}\n".Length));
                // The backend knows of the client once its first bytes arrived; output now reaches it.
                console.Write(Encoding.ASCII.GetBytes($"hello {name}\n"));
                Assert.Equal($"hello {name}\n", ReceiveLine(client));
                client.Shutdown(SocketShutdown.Both);
            }
        }
        Assert.False(File.Exists(path), "the socket file must be removed on exit");
    }

    [Fact]
    public void UnixSocketPathInUseIsAnErrorButAStaleSocketIsReplaced()
    {
        string path = TempSocketPath();
        using (var first = SerialConsole.Open($"unix:{path}", interactive: false, TextWriter.Null))
        {
            var e = Assert.Throws<UserFacingException>(() => SerialConsole.Open($"unix:{path}", interactive: false, TextWriter.Null));
            Assert.Contains("is in use", e.Message);
        }

        // A socket file whose owner died without removing it: nobody answers, so it is reused. (.NET
        // removes the file when a bound socket is disposed, so a process that does not makes the leftover.)
        using (var owner = System.Diagnostics.Process.Start("python3", ["-c", "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", path]))
            Assert.True(owner.WaitForExit(Wait) && owner.ExitCode == 0, "python3 could not bind the leftover socket");
        Assert.True(File.Exists(path));
        using (SerialConsole.Open($"unix:{path}", interactive: false, TextWriter.Null)) { }
        Assert.False(File.Exists(path));

        string file = Path.GetTempFileName();
        try
        {
            var e = Assert.Throws<UserFacingException>(() => SerialConsole.Open($"unix:{file}", interactive: false, TextWriter.Null));
            Assert.Contains("exists and is not a socket", e.Message);
            Assert.True(File.Exists(file), "a file that is not a socket must never be deleted");
        }
        finally { File.Delete(file); }
    }

    /// <summary>
    /// tcp::PORT listens on every address, as QEMU's does. 127.0.0.2 tells the two apart on any host: it is a loopback
    /// address, so always reachable here, but a listener bound to 127.0.0.1 alone refuses it.
    /// </summary>
    [Fact]
    public void TcpSocketWithAnEmptyHostListensOnEveryAddressAndReportsAPortInUse()
    {
        var uart = new Serial16550(new NoInterrupts(), _ => { });
        using var console = SerialConsole.Open("tcp::0", interactive: false, TextWriter.Null);
        console.ConnectInput(uart);
        Assert.Matches(@"^tcp:(\[::\]|0\.0\.0\.0):[0-9]+$", console.ListenAddress);
        int port = int.Parse(console.ListenAddress![(console.ListenAddress!.LastIndexOf(':') + 1)..]);
        Assert.NotEqual(0, port);

        var addresses = new List<IPAddress> { IPAddress.Parse("127.0.0.2"), IPAddress.Loopback };
        if (Socket.OSSupportsIPv6) addresses.Add(IPAddress.IPv6Loopback);
        foreach (var address in addresses)
        {
            // One client at a time: the next one is served once this one has hung up.
            using var client = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            client.Connect(new IPEndPoint(address, port));
            client.Send("ls\n"u8.ToArray());
            Assert.Equal("ls\n", ReadUart(uart, 3));
            console.Write("bin\n"u8);
            Assert.Equal("bin\n", ReceiveLine(client));
        }

        var e = Assert.Throws<UserFacingException>(() => SerialConsole.Open($"tcp:127.0.0.1:{port}", interactive: false, TextWriter.Null));
        Assert.Equal($"--serial tcp:127.0.0.1:{port}: port {port} on 127.0.0.1 is in use", e.Message);
        e = Assert.Throws<UserFacingException>(() => SerialConsole.Open($"tcp::{port}", interactive: false, TextWriter.Null));
        Assert.Equal($"--serial tcp::{port}: port {port} on every address is in use", e.Message);
    }

    /// <summary>tcp:127.0.0.1:PORT keeps the console on the loopback address it names.</summary>
    [Fact]
    public void TcpSocketOnAnExplicitLoopbackHostListensThereOnly()
    {
        var uart = new Serial16550(new NoInterrupts(), _ => { });
        using var console = SerialConsole.Open("tcp:127.0.0.1:0", interactive: false, TextWriter.Null);
        console.ConnectInput(uart);
        Assert.StartsWith("tcp:127.0.0.1:", console.ListenAddress);
        int port = int.Parse(console.ListenAddress!.Split(':')[2]);

        using (var outside = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            var refused = Assert.Throws<SocketException>(() => outside.Connect(new IPEndPoint(IPAddress.Parse("127.0.0.2"), port)));
            Assert.Equal(SocketError.ConnectionRefused, refused.SocketErrorCode);
        }
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(new IPEndPoint(IPAddress.Loopback, port));
        client.Send("ls\n"u8.ToArray());
        Assert.Equal("ls\n", ReadUart(uart, 3));
    }

    [Fact]
    public void UnresolvableHostAndMissingDirectoryAreClearErrors()
    {
        var e = Assert.Throws<UserFacingException>(() => SerialConsole.Open("tcp:no-such-host.invalid:4444", interactive: false, TextWriter.Null));
        Assert.Contains("cannot resolve host 'no-such-host.invalid'", e.Message);
        e = Assert.Throws<UserFacingException>(() => SerialConsole.Open("unix:/nonexistent-dir/vm.sock", interactive: false, TextWriter.Null));
        Assert.Contains("the directory /nonexistent-dir does not exist", e.Message);
    }

    private static string TempSocketPath() => Path.Combine(Path.GetTempPath(), $"sharpvm-test-{Guid.NewGuid():N}.sock");

    /// <summary>Reads the UART's receive buffer as the guest's driver would, until <paramref name="count"/> bytes came.</summary>
    private static string ReadUart(Serial16550 uart, int count)
    {
        var text = new StringBuilder();
        var deadline = DateTime.UtcNow + Wait;
        Span<byte> reg = stackalloc byte[1];
        while (text.Length < count && DateTime.UtcNow < deadline)
        {
            uart.Read(Serial16550.Lsr, reg);
            if ((reg[0] & Serial16550.LsrDataReady) == 0) { Thread.Sleep(5); continue; }
            uart.Read(Serial16550.Rbr, reg);
            text.Append((char)reg[0]);
        }
        return text.ToString();
    }

    private static string ReceiveLine(Socket client)
    {
        client.ReceiveTimeout = (int)Wait.TotalMilliseconds;
        var text = new StringBuilder();
        var buffer = new byte[256];
        while (!text.ToString().EndsWith('\n'))
        {
            int n = client.Receive(buffer);
            if (n == 0) break;
            text.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }
        return text.ToString();
    }

    private sealed class NoInterrupts : IInterruptLine
    {
        public void SetLevel(bool asserted) { }
    }
}
