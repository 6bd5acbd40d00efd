using System.CommandLine;

namespace SharpVM.Cli;

/// <summary>Parses and invokes a command line, turning failures into one-line errors and exit codes.</summary>
public static class CliRunner
{
    public static int Invoke(RootCommand root, string[] args)
    {
        var result = root.Parse(args);
        using var logging = CliLogging.Configure(result);
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
}

/// <summary>An error whose message is meant for the user as it stands (names the problem and the fix).</summary>
public class UserFacingException(string message, int exitCode = 1, Exception? inner = null) : Exception(message, inner)
{
    public int ExitCode { get; } = exitCode;
}
