namespace SharpVM.Cli.Serial;

/// <summary>
/// One end of the serial console on the host: where COM1's output goes and where its input comes
/// from. Output is written by the console's output thread only; input is read on threads of the
/// backend's own; neither ever runs on a vCPU thread.
/// </summary>
internal interface ISerialBackend : IDisposable
{
    /// <summary>True if output may be dropped rather than make the guest wait (no reader, or one that stopped reading).</summary>
    bool DropsOutputWhenBusy { get; }

    /// <summary>Writes COM1's output; called on the console's output thread.</summary>
    void WriteOutput(ReadOnlySpan<byte> bytes);

    /// <summary>Starts delivering host input to <paramref name="toGuest"/>; <paramref name="quit"/> if the user asks to quit.</summary>
    void StartInput(Action<ReadOnlySpan<byte>> toGuest, Action quit);
}
