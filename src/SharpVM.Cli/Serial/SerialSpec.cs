using System.Globalization;

namespace SharpVM.Cli.Serial;

/// <summary>
/// Where `sharpvm run --serial` connects COM1: stdio, file:PATH, unix:PATH, tcp:[HOST]:PORT or none.
/// The socket forms accept QEMU's suffixes ",server", ",server=on", ",nowait" and ",wait=off", which
/// describe what SharpVM always does (listen, and never wait for a client before booting).
/// </summary>
public abstract record SerialSpec
{
    public const string Syntax = "stdio, file:PATH, unix:PATH, tcp:[HOST]:PORT or none";

    /// <summary>The terminal: raw-mode keyboard in, stdout out.</summary>
    public sealed record Stdio : SerialSpec;
    /// <summary>Output discarded, no input.</summary>
    public sealed record None : SerialSpec;
    /// <summary>Output written to a file (created or truncated), no input.</summary>
    public sealed record File(string Path) : SerialSpec;
    /// <summary>SharpVM listens on a Unix domain socket at <paramref name="Path"/>.</summary>
    public sealed record UnixSocket(string Path) : SerialSpec;
    /// <summary>SharpVM listens on TCP; an empty <paramref name="Host"/> means every address, as in QEMU.</summary>
    public sealed record TcpSocket(string Host, int Port) : SerialSpec;

    /// <summary>Parses a `--serial` value; throws <see cref="FormatException"/> with a one-line reason naming the value.</summary>
    public static SerialSpec Parse(string value)
    {
        switch (value)
        {
            case "stdio": return new Stdio();
            case "none": return new None();
        }
        int colon = value.IndexOf(':');
        string scheme = colon < 0 ? value : value[..colon], rest = colon < 0 ? "" : value[(colon + 1)..];
        switch (scheme)
        {
            case "file" when rest.Length > 0:
                return new File(rest);
            case "file":
                throw Bad(value, "file: needs a path, as in file:/tmp/console.log");
            case "unix":
                {
                    string path = StripQemuServerOptions(value, rest);
                    if (path.Length == 0) throw Bad(value, "unix: needs a path, as in unix:/tmp/sharpvm.sock");
                    return new UnixSocket(path);
                }
            case "tcp":
                return ParseTcp(value, StripQemuServerOptions(value, rest));
            default:
                throw Bad(value, colon < 0 ? $"expected {Syntax}" : $"unknown kind '{scheme}:'; expected {Syntax}");
        }
    }

    private static TcpSocket ParseTcp(string value, string address)
    {
        int colon = address.LastIndexOf(':');
        if (colon < 0) throw Bad(value, "tcp: needs [HOST]:PORT, as in tcp::4444 or tcp:127.0.0.1:4444");
        string host = address[..colon], port = address[(colon + 1)..];
        if (host.StartsWith('[') && host.EndsWith(']')) host = host[1..^1]; // [::1]:4444, as in URLs
        else if (host.Contains(':')) throw Bad(value, "an IPv6 address goes in brackets, as in tcp:[::1]:4444");
        if (!int.TryParse(port, NumberStyles.None, CultureInfo.InvariantCulture, out int number) || number > 65535)
            throw Bad(value, $"bad port '{port}': expected a number from 0 to 65535");
        return new TcpSocket(host, number);
    }

    /// <summary>Drops QEMU's ",server[=on]" and ",nowait"/",wait=off"; rejects the options SharpVM cannot honour.</summary>
    private static string StripQemuServerOptions(string value, string rest)
    {
        var parts = rest.Split(',');
        foreach (var option in parts.Skip(1))
        {
            switch (option)
            {
                case "server" or "server=on" or "nowait" or "wait=off":
                    continue;
                case "server=off":
                    throw Bad(value, "SharpVM only listens (server=on); it does not connect out");
                case "wait" or "wait=on":
                    throw Bad(value, "SharpVM does not wait for a client (wait=off): the guest boots at once and output before a client connects is dropped");
                default:
                    throw Bad(value, $"unknown option '{option}' (SharpVM accepts server=on and wait=off, which it always does)");
            }
        }
        return parts[0];
    }

    private static FormatException Bad(string value, string reason) => new($"--serial {value}: {reason}");
}
