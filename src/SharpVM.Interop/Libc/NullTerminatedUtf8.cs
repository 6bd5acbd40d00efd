using System.Text;

namespace SharpVM.Interop.Libc;

/// <summary>
/// .NET strings as the NUL-terminated UTF-8 that libc takes. ASCII, what paths like /dev/kvm are, is
/// copied byte for byte: the runtime's first UTF-8 transcoding (what StringMarshalling.Utf8 does)
/// costs about 2 ms, a large part of setting up the first VM in a process (bench/README.md).
/// </summary>
internal static class NullTerminatedUtf8
{
    /// <summary>Bytes enough for <paramref name="text"/> encoded, plus the NUL.</summary>
    public static int MaxBytes(string text) => IsAscii(text) ? text.Length + 1 : Encoding.UTF8.GetMaxByteCount(text.Length) + 1;

    /// <summary>Writes <paramref name="text"/> and a NUL into <paramref name="destination"/> (at least <see cref="MaxBytes"/> long); returns the bytes before the NUL.</summary>
    public static int Encode(string text, Span<byte> destination)
    {
        int length;
        if (IsAscii(text))
        {
            for (int i = 0; i < text.Length; i++) destination[i] = (byte)text[i];
            length = text.Length;
        }
        else
        {
            length = Encoding.UTF8.GetBytes(text, destination);
        }
        destination[length] = 0;
        return length;
    }

    private static bool IsAscii(string text)
    {
        foreach (char c in text)
            if (c >= 0x80) return false;
        return true;
    }
}
