using SharpVM.Devices;

namespace SharpVM.Devices.Tests.Legacy;

/// <summary>An interrupt line that records its level and the number of rising edges.</summary>
internal sealed class RecordingLine : IInterruptLine
{
    public bool Level { get; private set; }
    public int RisingEdges { get; private set; }

    public void SetLevel(bool asserted)
    {
        if (asserted && !Level) RisingEdges++;
        Level = asserted;
    }
}
