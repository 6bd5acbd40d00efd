using System.CommandLine;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace SharpVM.Cli;

/// <summary>
/// `--log-level` on every command: what the VM and its devices log (start, stop, a device that failed and was
/// taken off the bus, first accesses to ports nobody serves) goes to standard error at that level and above.
/// </summary>
public static class CliLogging
{
    public static readonly Option<LogLevel> LevelOption = new("--log-level")
    {
        Description = "What to log on stderr: Trace, Debug, Information, Warning (default), Error, Critical, None.",
        DefaultValueFactory = _ => LogLevel.Warning,
        Recursive = true,
    };

    /// <summary>The factory commands hand to the VM; set by <see cref="Configure"/> before a command runs.</summary>
    public static ILoggerFactory Factory { get; private set; } = NullLoggerFactory.Instance;

    /// <summary>Builds <see cref="Factory"/> for the parsed level. Dispose the result after the command: it flushes.</summary>
    public static IDisposable Configure(ParseResult parse)
    {
        var level = parse.Errors.Count == 0 ? parse.GetValue(LevelOption) : LogLevel.Warning;
        var factory = LoggerFactory.Create(b => b
            .SetMinimumLevel(level)
            .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace) // stdout is the guest's console
            .AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss.fff "; }));
        Factory = factory;
        return factory;
    }
}
