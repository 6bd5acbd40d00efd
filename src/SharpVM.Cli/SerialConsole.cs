using SharpVM.Devices.Legacy;
using SharpVM.Interop.Libc;

namespace SharpVM.Cli;

/// <summary>
/// Connects COM1 to the user: output to stdout or a file; input from the terminal in raw mode
/// (restored on exit), where Ctrl-A x quits and Ctrl-A Ctrl-A sends a literal Ctrl-A, as in QEMU.
/// </summary>
public sealed class SerialConsole : IDisposable
{
    private const byte CtrlA = 0x01;
    private readonly Stream _output;
    private readonly bool _ownsOutput;
    private RawTerminal? _raw;
    private Thread? _input;
    private volatile bool _closed;

    /// <summary>Set when the user typed Ctrl-A x.</summary>
    public event Action? QuitRequested;

    private SerialConsole(Stream output, bool ownsOutput)
    {
        _output = output;
        _ownsOutput = ownsOutput;
    }

    /// <summary>`--serial stdio|file:PATH|none`.</summary>
    public static SerialConsole Open(string spec)
    {
        if (spec == "stdio") return new SerialConsole(Console.OpenStandardOutput(), false);
        if (spec == "none") return new SerialConsole(Stream.Null, false);
        if (spec.StartsWith("file:", StringComparison.Ordinal) && spec.Length > 5)
        {
            try { return new SerialConsole(new FileStream(spec[5..], FileMode.Create, FileAccess.Write, FileShare.Read), true); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new UserFacingException($"--serial {spec}: cannot open the file: {e.Message}");
            }
        }
        throw new UserFacingException($"--serial {spec}: expected stdio, file:PATH or none");
    }

    public void Write(ReadOnlySpan<byte> bytes)
    {
        if (_closed) return;
        lock (_output)
        {
            _output.Write(bytes);
            _output.Flush();
        }
    }

    /// <summary>Feeds the terminal's keystrokes to <paramref name="uart"/> (stdio only, when stdin is a terminal or a pipe).</summary>
    public void ConnectInput(Serial16550 uart, bool interactive)
    {
        if (!interactive) return;
        _raw = RawTerminal.Enter(0);
        _input = new Thread(() => ReadInput(uart)) { IsBackground = true, Name = "serial-input" };
        _input.Start();
    }

    private void ReadInput(Serial16550 uart)
    {
        using var stdin = Console.OpenStandardInput();
        var buffer = new byte[256];
        bool escape = false;
        while (!_closed)
        {
            int n;
            try { n = stdin.Read(buffer); }
            catch (IOException) { return; }
            if (n <= 0) return;
            var forward = new List<byte>(n);
            for (int i = 0; i < n; i++)
            {
                byte b = buffer[i];
                if (escape)
                {
                    escape = false;
                    if (b == 'x' || b == 'X') { QuitRequested?.Invoke(); return; }
                    forward.Add(b == CtrlA ? CtrlA : b);
                }
                else if (b == CtrlA && _raw is not null) escape = true;
                else forward.Add(b);
            }
            if (forward.Count > 0) uart.EnqueueInput(forward.ToArray());
        }
    }

    public void Dispose()
    {
        _closed = true;
        _raw?.Dispose();
        if (_ownsOutput) _output.Dispose();
    }
}
