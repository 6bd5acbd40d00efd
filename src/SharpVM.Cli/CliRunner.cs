using System.CommandLine;
using System.CommandLine.Parsing;

namespace SharpVM.Cli;

/// <summary>Parses and invokes a command line, turning failures into one-line errors and exit codes.</summary>
public static class CliRunner
{
    public static int Invoke(RootCommand root, string[] args)
    {
        var result = root.Parse(args);
        // An unknown "--flag" would otherwise be taken for a filename ("Could not open '--bogus'") or push the real
        // filename out as an extra argument; name it the way getopt does. "-1G" (resize) is a value, not an option,
        // and after "--" everything is a value (`sharpvm run -- ls -l`).
        var unknownOption = args.Contains("--") ? null : result.CommandResult.Children.OfType<ArgumentResult>().SelectMany(a => a.Tokens)
            .Select(t => t.Value).FirstOrDefault(v => v.Length > 1 && v[0] == '-' && !char.IsAsciiDigit(v[1]));
        if (unknownOption != null)
        {
            Console.Error.WriteLine($"sharpvm: unrecognized option '{unknownOption}' (see '{CommandPath(result)} --help')");
            return 1;
        }
        if (result.Errors.Count > 0)
        {
            // System.CommandLine's default would print the errors and then the whole help text; like qemu-img,
            // say what is wrong in one line and where to look.
            Console.Error.WriteLine($"sharpvm: {string.Join("; ", result.Errors.Select(e => e.Message.TrimEnd('.')))} (see '{CommandPath(result)} --help')");
            return 1;
        }
        using var logging = CliLogging.Configure(result);
        // Spectre.Console decides on colours from TERM alone: piped into a file or another program, tables and
        // messages would carry escape sequences. Plain text there, as with NO_COLOR.
        if (Console.IsOutputRedirected)
            Spectre.Console.AnsiConsole.Console = Spectre.Console.AnsiConsole.Create(new Spectre.Console.AnsiConsoleSettings
            {
                Ansi = Spectre.Console.AnsiSupport.No,
                ColorSystem = Spectre.Console.ColorSystemSupport.NoColors,
                Out = new Spectre.Console.AnsiConsoleOutput(Console.Out),
            });
        try
        {
            // Our own handler below: System.CommandLine's default one prints stack traces.
            return result.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (UserFacingException e)
        {
            Console.Error.WriteLine($"sharpvm: {e.Message}");
            return e.ExitCode;
        }
        catch (SharpVM.Interop.Kvm.KvmUnavailableException e)
        {
            // No /dev/kvm, no permission, wrong API version: one line naming the fix, from every command.
            Console.Error.WriteLine($"sharpvm: {e.Message}");
            return 1;
        }
        catch (Exception e)
        {
            // A bug, not bad input: still one line, with the details on request.
            Console.Error.WriteLine($"sharpvm: internal error: {e.GetType().Name}: {e.Message}");
            if (Environment.GetEnvironmentVariable("SHARPVM_DEBUG") == "1") Console.Error.WriteLine(e);
            else Console.Error.WriteLine("sharpvm: set SHARPVM_DEBUG=1 for the stack trace, and please report it");
            return 70; // EX_SOFTWARE
        }
    }

    /// <summary>"sharpvm img info": the root's own name is the host process's (testhost under xunit), so it is spelled out.</summary>
    private static string CommandPath(ParseResult result)
    {
        var names = new List<string>();
        for (var r = result.CommandResult; r.Parent is CommandResult parent; r = parent) names.Insert(0, r.Command.Name);
        return string.Join(' ', names.Prepend("sharpvm"));
    }
}

/// <summary>An error whose message is meant for the user as it stands (names the problem and the fix).</summary>
public class UserFacingException(string message, int exitCode = 1, Exception? inner = null) : Exception(message, inner)
{
    public int ExitCode { get; } = exitCode;
}
