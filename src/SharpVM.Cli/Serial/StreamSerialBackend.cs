namespace SharpVM.Cli.Serial;

/// <summary>`--serial file:PATH` and `--serial none`: output to a stream, no input.</summary>
internal sealed class StreamSerialBackend(Stream output, bool ownsOutput) : ISerialBackend
{
    public bool DropsOutputWhenBusy => false;

    public static StreamSerialBackend CreateFile(string spec, string path)
    {
        try { return new StreamSerialBackend(new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read), true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UserFacingException($"--serial {spec}: cannot open the file: {e.Message}");
        }
    }

    public void WriteOutput(ReadOnlySpan<byte> bytes)
    {
        output.Write(bytes);
        output.Flush();
    }

    public void StartInput(Action<ReadOnlySpan<byte>> toGuest, Action quit) { }

    public void Dispose()
    {
        if (ownsOutput) output.Dispose();
    }
}
