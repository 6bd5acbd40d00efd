using System.Net;
using System.Net.Sockets;
using SharpVM.Interop.Libc;

namespace SharpVM.Cli.Serial;

/// <summary>
/// `--serial unix:PATH` and `--serial tcp:[HOST]:PORT`: SharpVM listens, like QEMU's
/// `-serial unix:PATH,server=on,wait=off`. One client at a time gets COM1's output and its bytes go
/// to the UART's receive FIFO; further clients wait in the listen backlog until it disconnects.
/// Output while no client is connected is dropped. A Unix socket file is removed on exit.
/// </summary>
internal sealed class SocketSerialBackend : ISerialBackend
{
    private readonly Socket _listener;
    private readonly string? _unixPath;
    private volatile Socket? _client;
    private volatile bool _closed;

    /// <summary>Where clients connect, as `unix:PATH` or `tcp:ADDRESS:PORT` (with the real port when 0 was asked for).</summary>
    public string Address { get; }

    /// <summary>A command line that connects a terminal to it.</summary>
    public string ConnectHint { get; }

    public bool DropsOutputWhenBusy => true;

    private SocketSerialBackend(Socket listener, string? unixPath, string address, string connectHint)
    {
        _listener = listener;
        _unixPath = unixPath;
        Address = address;
        ConnectHint = connectHint;
    }

    public static SocketSerialBackend ListenUnix(string spec, string path)
    {
        path = Path.GetFullPath(path);
        UnixDomainSocketEndPoint endpoint;
        try { endpoint = new UnixDomainSocketEndPoint(path); }
        catch (ArgumentOutOfRangeException) { throw new UserFacingException($"--serial {spec}: the path is too long for a Unix socket (at most 107 bytes)"); }

        if (FileNode.IsSocket(path))
        {
            // A socket file is left behind when its owner dies without cleaning up; one that still
            // answers belongs to a live process.
            using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                probe.Connect(endpoint);
                throw new UserFacingException($"--serial {spec}: {path} is in use: another process is listening on it");
            }
            catch (SocketException) { File.Delete(path); }
        }
        else if (File.Exists(path) || Directory.Exists(path))
            throw new UserFacingException($"--serial {spec}: {path} exists and is not a socket; remove it or choose another path");

        string directory = Path.GetDirectoryName(path)!;
        if (!Directory.Exists(directory))
            throw new UserFacingException($"--serial {spec}: the directory {directory} does not exist");

        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(endpoint);
            listener.Listen(4);
        }
        catch (SocketException e)
        {
            listener.Dispose();
            throw new UserFacingException($"--serial {spec}: cannot listen on {path}: {e.Message}");
        }
        return new SocketSerialBackend(listener, path, $"unix:{path}", $"socat -,rawer,escape=0x1d UNIX-CONNECT:{path}");
    }

    public static SocketSerialBackend ListenTcp(string spec, string host, int port)
    {
        IPAddress address;
        // An empty host listens on every address, as QEMU does (it opens 0.0.0.0 and [::]; one dual-stack socket on
        // [::] reaches the same clients). Anyone who can reach the port gets the guest's console, often a root shell:
        // tcp:127.0.0.1:PORT keeps it on this machine.
        bool everyAddress = host.Length == 0;
        if (everyAddress) address = Socket.OSSupportsIPv6 ? IPAddress.IPv6Any : IPAddress.Any;
        else if (!IPAddress.TryParse(host, out address!))
        {
            try { address = Dns.GetHostAddresses(host).First(); }
            catch (Exception e) when (e is SocketException or InvalidOperationException or ArgumentException)
            {
                throw new UserFacingException($"--serial {spec}: cannot resolve host '{host}'");
            }
        }
        string where = everyAddress ? "every address" : address.ToString();
        var listener = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (everyAddress && address.AddressFamily == AddressFamily.InterNetworkV6) listener.DualMode = true; // IPv4 clients too
            // No SO_REUSEADDR: .NET sets SO_REUSEPORT with it on Linux, which would let a second
            // listener share the port instead of reporting it in use.
            listener.Bind(new IPEndPoint(address, port));
            listener.Listen(4);
        }
        catch (SocketException e)
        {
            listener.Dispose();
            throw new UserFacingException(e.SocketErrorCode == SocketError.AddressAlreadyInUse
                ? $"--serial {spec}: port {port} on {where} is in use"
                : $"--serial {spec}: cannot listen on {where} port {port}: {e.Message}");
        }
        var bound = (IPEndPoint)listener.LocalEndPoint!;
        string shown = bound.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{bound.Address}]" : bound.Address.ToString();
        // A wildcard address is where the socket listens, not an address to connect to: the hint uses loopback.
        string connectTo = everyAddress ? "127.0.0.1" : shown;
        return new SocketSerialBackend(listener, null, $"tcp:{shown}:{bound.Port}",
            $"socat -,rawer,escape=0x1d TCP:{connectTo}:{bound.Port}");
    }

    public void StartInput(Action<ReadOnlySpan<byte>> toGuest, Action quit) =>
        new Thread(() => ServeClients(toGuest)) { IsBackground = true, Name = "serial-socket" }.Start();

    private void ServeClients(Action<ReadOnlySpan<byte>> toGuest)
    {
        var buffer = new byte[4096];
        while (!_closed)
        {
            Socket client;
            try { client = _listener.Accept(); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { if (_closed) return; continue; }
            if (client.ProtocolType == ProtocolType.Tcp) client.NoDelay = true; // keystrokes and echoes are single bytes
            _client = client;
            try
            {
                while (!_closed)
                {
                    int n = client.Receive(buffer);
                    if (n <= 0) break;
                    toGuest(buffer.AsSpan(0, n));
                }
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
            finally
            {
                _client = null;
                client.Dispose();
            }
        }
    }

    public void WriteOutput(ReadOnlySpan<byte> bytes)
    {
        var client = _client;
        if (client is null) return;
        try
        {
            while (bytes.Length > 0) bytes = bytes[client.Send(bytes)..];
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // The client went away; its reader thread notices and waits for the next one.
        }
    }

    public void Dispose()
    {
        _closed = true;
        _listener.Dispose();
        var client = _client;
        if (client is not null)
        {
            try { client.Shutdown(SocketShutdown.Both); } catch (SocketException) { }
            client.Dispose();
        }
        if (_unixPath is not null && FileNode.IsSocket(_unixPath)) File.Delete(_unixPath);
    }
}
