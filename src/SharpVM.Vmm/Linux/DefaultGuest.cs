using System.Diagnostics;

namespace SharpVM.Vmm.Linux;

/// <summary>
/// The default guest: Debian's cloud kernel and a busybox initramfs, built from Debian packages by
/// guest/build-default-guest.sh into the user's cache directory on first use, never committed.
/// </summary>
public static class DefaultGuest
{
    public const string ScriptRelativePath = "guest/build-default-guest.sh";

    public static string CacheDirectory =>
        Path.Combine(Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg ? xdg
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"), "sharpvm", "guest");

    public static string KernelPath => Path.Combine(CacheDirectory, "vmlinuz");
    public static string InitrdPath => Path.Combine(CacheDirectory, "initramfs.cpio.gz");

    public static bool IsBuilt => File.Exists(KernelPath) && File.Exists(InitrdPath);

    /// <summary>Builds the default guest if it is not in the cache yet; returns (kernel, initrd).</summary>
    public static (string Kernel, string Initrd) Ensure(TextWriter log)
    {
        if (IsBuilt) return (KernelPath, InitrdPath);
        string script = FindScript() ?? throw new FileNotFoundException(
            $"the default guest is not built ({KernelPath} is missing) and {ScriptRelativePath} was not found next to SharpVM: run it from a SharpVM checkout, or pass --kernel and --initrd");
        log.WriteLine($"sharpvm: building the default guest with {script} (first use only)...");
        using var p = Process.Start(new ProcessStartInfo("bash", [script]) { RedirectStandardOutput = true })
            ?? throw new InvalidOperationException($"cannot start {script}");
        p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0 || !IsBuilt)
            throw new InvalidOperationException($"{script} failed (exit code {p.ExitCode}); run it by hand to see why");
        return (KernelPath, InitrdPath);
    }

    /// <summary>The build script, looked for upwards from SharpVM's binary and from the current directory.</summary>
    public static string? FindScript()
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, ScriptRelativePath);
                if (File.Exists(candidate)) return candidate;
            }
        }
        return null;
    }
}
