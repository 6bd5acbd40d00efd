using System.Globalization;

namespace SharpVM.Cli;

/// <summary>Sizes as QEMU's -m takes them: a plain number is MiB; K, M, G, T suffixes (binary).</summary>
public static class SizeParser
{
    public static bool TryParseMemory(string text, out ulong bytes, out string? error)
    {
        bytes = 0;
        error = null;
        string t = text.Trim();
        if (t.Length == 0) { error = "empty size"; return false; }
        ulong unit = 1UL << 20;
        char last = char.ToUpperInvariant(t[^1]);
        if (char.IsLetter(last))
        {
            unit = last switch { 'K' => 1UL << 10, 'M' => 1UL << 20, 'G' => 1UL << 30, 'T' => 1UL << 40, _ => 0 };
            if (unit == 0) { error = $"unknown size suffix '{t[^1]}' (use K, M, G or T)"; return false; }
            t = t[..^1];
            if (t.EndsWith('i') || t.EndsWith('I')) t = t[..^1];
        }
        if (!ulong.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out ulong n)) { error = $"'{text}' is not a size"; return false; }
        try { bytes = checked(n * unit); }
        catch (OverflowException) { error = $"'{text}' is too large"; return false; }
        return true;
    }
}
