namespace SharpVM.Vmm.Boot;

/// <summary>The file handed to the loader is not a kernel we can boot, or is damaged.</summary>
public sealed class InvalidKernelException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>The kernel, initrd and boot structures do not fit in the guest's RAM.</summary>
public sealed class BootLayoutException(string message) : Exception(message);
