using System.Diagnostics;

namespace SharpVM.Integration.Tests.Infrastructure;

/// <summary>What a `sharpvm` process printed and how it exited.</summary>
public sealed record CliResult(int ExitCode, string StandardOutput, string StandardError)
{
    public override string ToString() => $"exit {ExitCode}\n--- stdout ---\n{StandardOutput}\n--- stderr ---\n{StandardError}";
}

/// <summary>Runs the real `sharpvm` command (the CLI assembly built next to the tests) as a child process, as a user would.</summary>
public static class SharpVmProcess
{
    public static CliResult Run(TimeSpan timeout, params string[] args)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "sharpvm.dll");
        Assert.True(File.Exists(dll), $"the CLI was not built next to the tests: {dll} is missing");
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        start.ArgumentList.Add(dll);
        foreach (var a in args) start.ArgumentList.Add(a);
        using var p = Process.Start(start) ?? throw new InvalidOperationException("cannot start dotnet");
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"sharpvm {string.Join(' ', args)} did not finish within {timeout.TotalSeconds} s");
        }
        return new CliResult(p.ExitCode, stdout.Result, stderr.Result);
    }
}

/// <summary>A `sharpvm` child process left running, for tests that talk to it while it runs; killed on dispose if still alive.</summary>
public sealed class RunningSharpVm : IDisposable
{
    private readonly Process _process;
    private readonly Task<string> _stdout, _stderr;

    public RunningSharpVm(params string[] args)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "sharpvm.dll");
        Assert.True(File.Exists(dll), $"the CLI was not built next to the tests: {dll} is missing");
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        start.ArgumentList.Add(dll);
        foreach (var a in args) start.ArgumentList.Add(a);
        _process = Process.Start(start) ?? throw new InvalidOperationException("cannot start dotnet");
        _process.StandardInput.Close();
        _stdout = _process.StandardOutput.ReadToEndAsync();
        _stderr = _process.StandardError.ReadToEndAsync();
    }

    public bool HasExited => _process.HasExited;

    /// <summary>Waits for the exit; null if it did not exit within <paramref name="timeout"/>.</summary>
    public CliResult? WaitForExit(TimeSpan timeout) =>
        _process.WaitForExit(timeout) ? new CliResult(_process.ExitCode, _stdout.Result, _stderr.Result) : null;

    public void Dispose()
    {
        if (!_process.HasExited) _process.Kill(entireProcessTree: true);
        _process.Dispose();
    }
}
