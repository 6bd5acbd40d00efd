using SharpVM.Cli;

// The CLI writes to the process-wide Console, which each test captures: one test at a time.
[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace SharpVM.Cli.Tests;

/// <summary>
/// Runs `sharpvm` in-process: the real root command parses the real argument list (options, arguments, errors) and
/// runs the real action, with stdout and stderr captured. In-process keeps each call to milliseconds where a child
/// process would pay .NET start-up every time.
/// </summary>
public static class SharpVm
{
    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var (oldOut, oldErr) = (Console.Out, Console.Error);
        var (o, e) = (new StringWriter(), new StringWriter());
        Console.SetOut(o); Console.SetError(e);
        try
        {
            int code = CliRunner.Invoke(SharpVmCommand.Create(), args);
            return (code, o.ToString(), e.ToString());
        }
        finally { Console.SetOut(oldOut); Console.SetError(oldErr); }
    }

    /// <summary>`sharpvm img ARGS` that must succeed; returns its stdout.</summary>
    public static string Img(params string[] args)
    {
        var (c, o, e) = Run(["img", .. args]);
        if (c != 0) throw new Xunit.Sdk.XunitException($"sharpvm img {string.Join(' ', args)} failed ({c}): {e}{o}");
        return o;
    }
}
