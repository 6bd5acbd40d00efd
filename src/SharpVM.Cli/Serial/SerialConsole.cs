using SharpVM.Devices.Legacy;

namespace SharpVM.Cli.Serial;

/// <summary>
/// Connects COM1 to the user through one <see cref="ISerialBackend"/> (terminal, file, socket, none).
/// vCPU threads only put COM1's output in a queue; an output thread writes it to the backend, and
/// the backend's own threads feed input to the UART, so no host I/O ever happens on a vCPU thread.
/// The console outlives a guest reboot: <see cref="ConnectInput"/> points it at each new UART.
/// </summary>
public sealed class SerialConsole : IDisposable
{
    private const int OutputQueueBytes = 1 << 20;
    private readonly ISerialBackend _backend;
    private readonly SerialOutputQueue _output;
    private readonly Thread _outputThread;
    private volatile Serial16550? _uart;

    /// <summary>Set when the user typed Ctrl-A x on the terminal.</summary>
    public event Action? QuitRequested;

    /// <summary>For sockets, where clients connect (as `unix:PATH` or `tcp:ADDRESS:PORT`); null otherwise.</summary>
    public string? ListenAddress { get; }

    /// <summary>Bytes of output dropped because a socket client was missing or not reading fast enough.</summary>
    public long DroppedOutputBytes => _output.Dropped;

    private SerialConsole(ISerialBackend backend)
    {
        _backend = backend;
        _output = new SerialOutputQueue(OutputQueueBytes, dropWhenFull: backend.DropsOutputWhenBusy);
        ListenAddress = (backend as SocketSerialBackend)?.Address;
        _outputThread = new Thread(PumpOutput) { IsBackground = true, Name = "serial-output" };
        _outputThread.Start();
        backend.StartInput(bytes => _uart?.EnqueueInput(bytes), () => QuitRequested?.Invoke());
    }

    /// <summary>
    /// Opens `--serial <paramref name="spec"/>`. <paramref name="interactive"/>: read the terminal's
    /// keys (stdio only; sockets always take input). Socket addresses are announced on <paramref name="notices"/>.
    /// </summary>
    public static SerialConsole Open(string spec, bool interactive, TextWriter notices)
    {
        SerialSpec parsed;
        try { parsed = SerialSpec.Parse(spec); }
        catch (FormatException e) { throw new UserFacingException(e.Message); }
        ISerialBackend backend = parsed switch
        {
            SerialSpec.Stdio => new StdioSerialBackend(interactive),
            SerialSpec.None => new StreamSerialBackend(Stream.Null, ownsOutput: false),
            SerialSpec.File f => StreamSerialBackend.CreateFile(spec, f.Path),
            SerialSpec.UnixSocket u => SocketSerialBackend.ListenUnix(spec, u.Path),
            SerialSpec.TcpSocket t => SocketSerialBackend.ListenTcp(spec, t.Host, t.Port),
            _ => throw new UserFacingException($"--serial {spec}: expected {SerialSpec.Syntax}"),
        };
        if (backend is SocketSerialBackend socket)
            notices.WriteLine($"sharpvm: COM1 is on {socket.Address} (connect with: {socket.ConnectHint})");
        return new SerialConsole(backend);
    }

    /// <summary>COM1's output, from a vCPU thread: queued, never written here.</summary>
    public void Write(ReadOnlySpan<byte> bytes) => _output.Enqueue(bytes);

    /// <summary>Sends host input to <paramref name="uart"/> from now on (the UART of the VM being booted).</summary>
    public void ConnectInput(Serial16550 uart) => _uart = uart;

    /// <summary>Waits until the output queued so far has been written (so a closing message follows it); false on timeout.</summary>
    public bool Flush(TimeSpan timeout) => _output.WaitUntilDrained(timeout);

    private void PumpOutput()
    {
        var buffer = new byte[16 * 1024];
        while (true)
        {
            int n = _output.Take(buffer);
            if (n == 0) return;
            try { _backend.WriteOutput(buffer.AsSpan(0, n)); }
            catch (IOException) { } // stdout closed, disk full: the guest goes on without a console
            finally { _output.Written(); }
        }
    }

    public void Dispose()
    {
        _output.Close();
        _outputThread.Join(TimeSpan.FromSeconds(5));
        _backend.Dispose();
    }
}
