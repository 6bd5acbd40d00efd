using System.Runtime.InteropServices;

namespace SharpVM.Interop.Libc;

/// <summary>
/// The real-time signal used to kick a vCPU thread out of KVM_RUN. It is never delivered to a
/// handler: vCPU threads keep it blocked, KVM_RUN unblocks it through KVM_SET_SIGNAL_MASK, so a
/// pending kick makes KVM_RUN return EINTR and is then drained with sigtimedwait. No managed code
/// ever runs in signal context. SIGRTMIN itself belongs to the .NET runtime, so we take SIGRTMIN+4.
/// </summary>
public static unsafe class ThreadSignals
{
    private const int SigBlock = 0;

    public static int KickSignal { get; } = Native.__libc_current_sigrtmin() + 4;

    /// <summary>The kernel's 64-bit sigset with only the kick signal set.</summary>
    public static ulong KickSet => 1UL << (KickSignal - 1);

    /// <summary>Identity of the calling thread, for <see cref="Kick"/>.</summary>
    public static nuint CurrentThread() => Native.pthread_self();

    /// <summary>Blocks the kick signal on the calling thread (call first thing on a vCPU thread).</summary>
    public static void BlockKickOnCurrentThread()
    {
        ulong set = KickSet;
        int rc = Native.pthread_sigmask(SigBlock, &set, null);
        if (rc != 0) throw new SystemCallException("pthread_sigmask", rc);
    }

    /// <summary>The calling thread's signal mask (kernel sigset layout, low 64 signals).</summary>
    public static ulong CurrentMask()
    {
        ulong old;
        int rc = Native.pthread_sigmask(SigBlock, null, &old);
        if (rc != 0) throw new SystemCallException("pthread_sigmask", rc);
        return old;
    }

    /// <summary>Sends the kick signal to <paramref name="thread"/>. Safe from any thread.</summary>
    public static void Kick(nuint thread)
    {
        int rc = Native.pthread_kill(thread, KickSignal);
        if (rc != 0) throw new SystemCallException("pthread_kill", rc);
    }

    /// <summary>Consumes a pending kick on the calling thread, if any. Returns whether one was pending.</summary>
    public static bool DrainKick()
    {
        ulong set = KickSet;
        var zero = new Timespec();
        int sig = Native.sigtimedwait(&set, null, &zero);
        if (sig >= 0) return true;
        int errno = Marshal.GetLastPInvokeError();
        if (errno == Errno.EAGAIN || errno == Errno.EINTR) return false;
        throw new SystemCallException("sigtimedwait", errno);
    }
}
