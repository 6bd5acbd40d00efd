using Microsoft.Win32.SafeHandles;
using SharpVM.Interop.Libc;

namespace SharpVM.Cli.Serial;

/// <summary>
/// `--serial stdio`: output to stdout; input from the terminal in raw mode (restored on exit), where
/// Ctrl-A x quits and Ctrl-A Ctrl-A sends a literal Ctrl-A, as in QEMU. Input is read only when the
/// console is interactive (no guest command given), from a terminal or a pipe.
/// </summary>
internal sealed class StdioSerialBackend(bool interactive) : ISerialBackend
{
    private const byte CtrlA = 0x01;
    private readonly Stream _stdout = Console.OpenStandardOutput();
    private RawTerminal? _raw;
    private volatile bool _closed;

    public bool DropsOutputWhenBusy => false;

    public void WriteOutput(ReadOnlySpan<byte> bytes)
    {
        _stdout.Write(bytes);
        _stdout.Flush();
    }

    public void StartInput(Action<ReadOnlySpan<byte>> toGuest, Action quit)
    {
        if (!interactive) return;
        _raw = RawTerminal.Enter(0);
        new Thread(() => ReadInput(toGuest, quit)) { IsBackground = true, Name = "serial-stdin" }.Start();
    }

    private void ReadInput(Action<ReadOnlySpan<byte>> toGuest, Action quit)
    {
        // Not Console.OpenStandardInput(): on a terminal .NET reads through its own line editor, which
        // echoes on the host and hands over nothing until Enter (so Ctrl-A x would never arrive).
        using var stdin = new FileStream(new SafeFileHandle(0, ownsHandle: false), FileAccess.Read, bufferSize: 0);
        var buffer = new byte[256];
        var forward = new byte[256];
        bool escape = false;
        while (!_closed)
        {
            int n;
            try { n = stdin.Read(buffer); }
            catch (IOException) { return; }
            if (n <= 0) return;
            int count = 0;
            for (int i = 0; i < n; i++)
            {
                byte b = buffer[i];
                if (escape)
                {
                    escape = false;
                    if (b == 'x' || b == 'X') { quit(); return; }
                    forward[count++] = b;
                }
                else if (b == CtrlA && _raw is not null) escape = true;
                else forward[count++] = b;
            }
            if (count > 0) toGuest(forward.AsSpan(0, count));
        }
    }

    public void Dispose()
    {
        _closed = true;
        _raw?.Dispose();
    }
}
