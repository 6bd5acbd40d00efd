namespace SharpVM.Vmm.Vcpus;

/// <summary>The life of a vCPU thread: Created → Running ⇄ Paused → Stopped (Stopped is final).</summary>
public enum VcpuState { Created, Running, Paused, Stopped }
