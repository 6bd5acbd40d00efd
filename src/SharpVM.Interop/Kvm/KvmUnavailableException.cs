namespace SharpVM.Interop.Kvm;

/// <summary>/dev/kvm cannot be used; the message says why and how to fix it, in one line.</summary>
public sealed class KvmUnavailableException(string message, Exception? inner = null) : Exception(message, inner);
