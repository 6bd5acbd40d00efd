using System.Runtime.InteropServices;
using SharpVM.Interop.Libc;

namespace SharpVM.Interop.Kvm;

/// <summary>A vCPU fd and its mmap'd kvm_run page. Methods are the vCPU ioctls.</summary>
public sealed unsafe class KvmVcpu : IDisposable
{
    private readonly FileDescriptor _fd;
    private readonly MappedMemory _run;

    public int Id { get; }

    internal KvmVcpu(int id, FileDescriptor fd, MappedMemory run)
    {
        Id = id;
        _fd = fd;
        _run = run;
    }

    /// <summary>The shared kvm_run structure (valid while this object lives).</summary>
    public ref KvmRun RunState => ref *(KvmRun*)_run.Pointer;

    /// <summary>Bytes of the kvm_run mapping at <paramref name="offset"/> (PIO data lives there).</summary>
    public Span<byte> RunBytes(ulong offset, int length)
    {
        if (offset > _run.Length || (ulong)length > _run.Length - offset)
            throw new ArgumentOutOfRangeException(nameof(offset), $"kvm_run data at {offset}+{length} is outside its {_run.Length}-byte mapping");
        return new Span<byte>(_run.Pointer + offset, length);
    }

    /// <summary>kvm_run.immediate_exit: when set, KVM_RUN returns EINTR at once instead of entering the guest.</summary>
    public bool ImmediateExit
    {
        get => Volatile.Read(ref RunState.ImmediateExit) != 0;
        set => Volatile.Write(ref RunState.ImmediateExit, value ? (byte)1 : (byte)0);
    }

    private void Ioctl(nuint request, void* arg, string name) => Errno.Check(Native.ioctl(_fd.Number, request, (nint)arg), name);

    /// <summary>KVM_RUN. Returns false if interrupted (EINTR/EAGAIN: a kick or immediate_exit), true on a VM exit.</summary>
    public bool Run()
    {
        int rc = Native.ioctl_without_errno(_fd.Number, KvmIoctls.Run, 0);
        if (rc >= 0) return true;
        int errno = Marshal.GetLastSystemError();
        if (errno == Errno.EINTR || errno == Errno.EAGAIN) return false;
        throw new SystemCallException("KVM_RUN", errno);
    }

    public KvmRegs GetRegs() { KvmRegs r; Ioctl(KvmIoctls.GetRegs, &r, "KVM_GET_REGS"); return r; }
    public void SetRegs(in KvmRegs regs) { fixed (KvmRegs* p = &regs) Ioctl(KvmIoctls.SetRegs, p, "KVM_SET_REGS"); }
    public KvmSregs GetSregs() { KvmSregs r; Ioctl(KvmIoctls.GetSregs, &r, "KVM_GET_SREGS"); return r; }
    public void SetSregs(in KvmSregs sregs) { fixed (KvmSregs* p = &sregs) Ioctl(KvmIoctls.SetSregs, p, "KVM_SET_SREGS"); }
    public KvmFpu GetFpu() { KvmFpu r; Ioctl(KvmIoctls.GetFpu, &r, "KVM_GET_FPU"); return r; }
    public void SetFpu(in KvmFpu fpu) { fixed (KvmFpu* p = &fpu) Ioctl(KvmIoctls.SetFpu, p, "KVM_SET_FPU"); }
    public KvmLapicState GetLapic() { KvmLapicState r; Ioctl(KvmIoctls.GetLapic, &r, "KVM_GET_LAPIC"); return r; }
    public void SetLapic(in KvmLapicState lapic) { fixed (KvmLapicState* p = &lapic) Ioctl(KvmIoctls.SetLapic, p, "KVM_SET_LAPIC"); }
    public KvmVcpuEvents GetVcpuEvents() { KvmVcpuEvents r; Ioctl(KvmIoctls.GetVcpuEvents, &r, "KVM_GET_VCPU_EVENTS"); return r; }
    public void SetVcpuEvents(in KvmVcpuEvents ev) { fixed (KvmVcpuEvents* p = &ev) Ioctl(KvmIoctls.SetVcpuEvents, p, "KVM_SET_VCPU_EVENTS"); }
    public KvmMpState GetMpState() { KvmMpState r; Ioctl(KvmIoctls.GetMpState, &r, "KVM_GET_MP_STATE"); return r; }
    public void SetMpState(KvmMpState state) => Ioctl(KvmIoctls.SetMpState, &state, "KVM_SET_MP_STATE");
    public KvmXcrs GetXcrs() { KvmXcrs r; Ioctl(KvmIoctls.GetXcrs, &r, "KVM_GET_XCRS"); return r; }
    public void SetXcrs(in KvmXcrs xcrs) { fixed (KvmXcrs* p = &xcrs) Ioctl(KvmIoctls.SetXcrs, p, "KVM_SET_XCRS"); }

    /// <summary>KVM_TRANSLATE: walks the guest's page tables for <paramref name="linearAddress"/>.</summary>
    public KvmTranslation Translate(ulong linearAddress)
    {
        var t = new KvmTranslation { LinearAddress = linearAddress };
        Ioctl(KvmIoctls.Translate, &t, "KVM_TRANSLATE");
        return t;
    }

    /// <summary>KVM_GET_MSRS for the given indices; returns how many were read (stops at the first unknown MSR).</summary>
    public int GetMsrs(Span<KvmMsrEntry> entries)
    {
        int bytes = sizeof(KvmMsrs) + entries.Length * sizeof(KvmMsrEntry);
        byte* buffer = stackalloc byte[bytes];
        ((KvmMsrs*)buffer)->Nmsrs = (uint)entries.Length;
        ((KvmMsrs*)buffer)->Pad = 0;
        var inBuffer = new Span<KvmMsrEntry>(buffer + sizeof(KvmMsrs), entries.Length);
        entries.CopyTo(inBuffer);
        int n = (int)Errno.Check(Native.ioctl(_fd.Number, KvmIoctls.GetMsrs, (nint)buffer), "KVM_GET_MSRS");
        inBuffer.CopyTo(entries);
        return n;
    }

    /// <summary>KVM_SET_MSRS; returns how many were written (stops at the first rejected MSR).</summary>
    public int SetMsrs(ReadOnlySpan<KvmMsrEntry> entries)
    {
        int bytes = sizeof(KvmMsrs) + entries.Length * sizeof(KvmMsrEntry);
        byte* buffer = stackalloc byte[bytes];
        ((KvmMsrs*)buffer)->Nmsrs = (uint)entries.Length;
        ((KvmMsrs*)buffer)->Pad = 0;
        entries.CopyTo(new Span<KvmMsrEntry>(buffer + sizeof(KvmMsrs), entries.Length));
        return (int)Errno.Check(Native.ioctl(_fd.Number, KvmIoctls.SetMsrs, (nint)buffer), "KVM_SET_MSRS");
    }

    /// <summary>KVM_SET_CPUID2: the CPUID leaves the guest will see.</summary>
    public void SetCpuid2(ReadOnlySpan<KvmCpuidEntry2> entries)
    {
        fixed (KvmCpuidEntry2* p = entries) SetCpuid2(p, entries.Length);
    }

    /// <summary>
    /// KVM_SET_CPUID2 from an array: what the VM-setup path calls, because the span overload's
    /// conversion and copy are CoreLib generics over our struct that ReadyToRun cannot precompile
    /// (they would be JIT-compiled while the first VM is built; see bench/README.md).
    /// </summary>
    public void SetCpuid2(KvmCpuidEntry2[] entries)
    {
        fixed (KvmCpuidEntry2* p = entries) SetCpuid2(p, entries.Length);
    }

    private void SetCpuid2(KvmCpuidEntry2* entries, int count)
    {
        byte[] buffer = new byte[sizeof(KvmCpuid2) + count * sizeof(KvmCpuidEntry2)];
        fixed (byte* p = buffer)
        {
            ((KvmCpuid2*)p)->Nent = (uint)count;
            long bytes = (long)count * sizeof(KvmCpuidEntry2);
            Buffer.MemoryCopy(entries, p + sizeof(KvmCpuid2), bytes, bytes);
            Ioctl(KvmIoctls.SetCpuid2, p, "KVM_SET_CPUID2");
        }
    }

    /// <summary>KVM_GET_CPUID2: the leaves currently set.</summary>
    public KvmCpuidEntry2[] GetCpuid2()
    {
        const int max = 256;
        byte[] buffer = new byte[sizeof(KvmCpuid2) + max * sizeof(KvmCpuidEntry2)];
        fixed (byte* p = buffer)
        {
            ((KvmCpuid2*)p)->Nent = max;
            Ioctl(KvmIoctls.GetCpuid2, p, "KVM_GET_CPUID2");
            return KvmCpuidEntries.Copy((KvmCpuidEntry2*)(p + sizeof(KvmCpuid2)), (int)((KvmCpuid2*)p)->Nent);
        }
    }

    /// <summary>
    /// KVM_SET_SIGNAL_MASK: the signal mask in force while the guest runs. SharpVM passes the thread's
    /// mask minus the kick signal, so a kick interrupts KVM_RUN but never reaches a handler.
    /// </summary>
    public void SetSignalMask(ulong mask)
    {
        byte* buffer = stackalloc byte[sizeof(KvmSignalMask) + 8];
        ((KvmSignalMask*)buffer)->Len = 8;
        *(ulong*)(buffer + sizeof(KvmSignalMask)) = mask;
        Ioctl(KvmIoctls.SetSignalMask, buffer, "KVM_SET_SIGNAL_MASK");
    }

    public void Dispose()
    {
        _run.Dispose();
        _fd.Dispose();
    }
}
