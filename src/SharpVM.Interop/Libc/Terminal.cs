using System.Runtime.InteropServices;

namespace SharpVM.Interop.Libc;

/// <summary>
/// Raw mode for a terminal (the serial console's stdin): no line editing, no echo, no signals from
/// Ctrl-C, so every key reaches the guest. Disposing restores the saved settings.
/// </summary>
public sealed unsafe partial class RawTerminal : IDisposable
{
    // glibc's struct termios on x86-64 is 60 bytes; we only save, make raw (cfmakeraw) and restore
    // it, so its fields are never interpreted here.
    private const int TermiosSize = 60, TcsaNow = 0;
    private readonly int _fd;
    private readonly byte[] _saved = new byte[TermiosSize];
    private bool _restored;

    private RawTerminal(int fd) => _fd = fd;

    [LibraryImport("libc.so.6", SetLastError = true)]
    private static partial int tcgetattr(int fd, byte* termios);

    [LibraryImport("libc.so.6", SetLastError = true)]
    private static partial int tcsetattr(int fd, int action, byte* termios);

    [LibraryImport("libc.so.6")]
    private static partial void cfmakeraw(byte* termios);

    [LibraryImport("libc.so.6")]
    private static partial int isatty(int fd);

    /// <summary>True if <paramref name="fd"/> is a terminal.</summary>
    public static bool IsTerminal(int fd) => isatty(fd) == 1;

    /// <summary>Puts <paramref name="fd"/> in raw mode; null if it is not a terminal.</summary>
    public static RawTerminal? Enter(int fd = 0)
    {
        if (!IsTerminal(fd)) return null;
        var terminal = new RawTerminal(fd);
        byte* raw = stackalloc byte[TermiosSize];
        fixed (byte* saved = terminal._saved)
        {
            Errno.Check(tcgetattr(fd, saved), "tcgetattr");
            new ReadOnlySpan<byte>(saved, TermiosSize).CopyTo(new Span<byte>(raw, TermiosSize));
        }
        cfmakeraw(raw);
        Errno.Check(tcsetattr(fd, TcsaNow, raw), "tcsetattr");
        return terminal;
    }

    public void Dispose()
    {
        if (_restored) return;
        _restored = true;
        fixed (byte* saved = _saved) tcsetattr(_fd, TcsaNow, saved);
    }
}
