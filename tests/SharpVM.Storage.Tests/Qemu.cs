using System.Diagnostics;

namespace SharpVM.Storage.Tests;

/// <summary>Runs the real qemu-img / qemu-io. Tests fail (not skip) when they are missing: the project's test script installs qemu-utils.</summary>
public static class Qemu
{
    public static (int Code, string Out, string Err) Run(string tool, params string[] args)
    {
        var psi = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        Process p;
        try { p = Process.Start(psi)!; }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException($"'{tool}' is not on PATH; install qemu-utils (apt-get install -y qemu-utils) to run the interop tests", e);
        }
        var so = p.StandardOutput.ReadToEndAsync();
        var se = p.StandardError.ReadToEndAsync();
        p.WaitForExit();
        return (p.ExitCode, so.Result, se.Result);
    }

    public static string Img(params string[] args)
    {
        var (c, o, e) = Run("qemu-img", args);
        if (c != 0) throw new Xunit.Sdk.XunitException($"qemu-img {string.Join(' ', args)} failed ({c}): {e}{o}");
        return o;
    }

    public static string Io(params string[] args)
    {
        var (c, o, e) = Run("qemu-io", args);
        if (c != 0 || o.Contains("error", StringComparison.OrdinalIgnoreCase) || o.Contains("fail", StringComparison.OrdinalIgnoreCase))
            throw new Xunit.Sdk.XunitException($"qemu-io {string.Join(' ', args)} failed ({c}): {e}{o}");
        return o;
    }

    /// <summary>qemu-img check must report no errors and no leaks.</summary>
    public static void AssertClean(string path, params string[] extra)
    {
        var (c, o, e) = Run("qemu-img", ["check", .. extra, path]);
        if (c != 0) throw new Xunit.Sdk.XunitException($"qemu-img check {path} exit {c}:\n{o}\n{e}");
    }
}

/// <summary>A temp directory removed after the test.</summary>
public sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("sharpvm-storage-").FullName;
    public string this[string name] => System.IO.Path.Combine(Path, name);
    public void Dispose() { try { Directory.Delete(Path, true); } catch (IOException) { } }
}
