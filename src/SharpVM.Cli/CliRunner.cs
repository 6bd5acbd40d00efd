using System.CommandLine;

namespace SharpVM.Cli;

/// <summary>Parses and invokes a command line, turning known failures into one-line errors.</summary>
public static class CliRunner
{
    public static int Invoke(RootCommand root, string[] args)
    {
        var result = root.Parse(args);
        try
        {
            return result.Invoke();
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
    }
}

/// <summary>An error whose message is meant for the user as it stands (names the problem and the fix).</summary>
public class UserFacingException(string message, int exitCode = 1, Exception? inner = null) : Exception(message, inner)
{
    public int ExitCode { get; } = exitCode;
}
