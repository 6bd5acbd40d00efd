using System.Runtime.InteropServices;
using SharpVM.Interop.Libc;

namespace SharpVM.Interop.Kvm;

/// <summary>The /dev/kvm system fd: capability queries and VM creation.</summary>
public sealed unsafe class KvmSystem : IDisposable
{
    public const string DevicePath = "/dev/kvm";
    public const int ExpectedApiVersion = 12;
    private const int ORdwr = 2, OCloexec = 0x80000;

    private readonly FileDescriptor _fd;

    private KvmSystem(FileDescriptor fd) => _fd = fd;

    /// <summary>Opens /dev/kvm and checks the API version; failures name the fix.</summary>
    public static KvmSystem Open(string path = DevicePath)
    {
        int fd = Native.open(path, ORdwr | OCloexec, 0);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw errno switch
            {
                Errno.ENOENT => new KvmUnavailableException(
                    $"{path} does not exist: enable VT-x/AMD-V in firmware and load the module (modprobe kvm_intel or kvm_amd), or run with --accel emu"),
                Errno.EACCES or Errno.EPERM => new KvmUnavailableException(
                    $"no permission to open {path}: add yourself to its group (sudo usermod -aG kvm $USER, then log in again) or run as root"),
                _ => new KvmUnavailableException($"cannot open {path}: {Errno.Describe(errno)}"),
            };
        }
        var system = new KvmSystem(new FileDescriptor(fd));
        int version;
        try
        {
            version = system.GetApiVersion();
        }
        catch
        {
            system.Dispose();
            throw;
        }
        if (version != ExpectedApiVersion)
        {
            system.Dispose();
            throw new KvmUnavailableException(
                $"{path} speaks KVM API version {version}, SharpVM needs {ExpectedApiVersion}: update the host kernel");
        }
        return system;
    }

    /// <summary>KVM_GET_API_VERSION.</summary>
    public int GetApiVersion() => (int)Errno.Check(Native.ioctl(_fd.Number, KvmIoctls.GetApiVersion, 0), "KVM_GET_API_VERSION");

    /// <summary>KVM_CHECK_EXTENSION: 0 if absent, otherwise a capability-specific positive value.</summary>
    public int CheckExtension(KvmCapability capability)
    {
        int result = Native.ioctl(_fd.Number, KvmIoctls.CheckExtension, (nint)capability);
        // The name (an enum formatted by reflection) is built only on failure.
        if (result < 0) throw new SystemCallException($"KVM_CHECK_EXTENSION({capability})", Marshal.GetLastPInvokeError());
        return result;
    }

    /// <summary>KVM_GET_VCPU_MMAP_SIZE: the size of each vCPU's kvm_run mapping.</summary>
    public int GetVcpuMmapSize() => (int)Errno.Check(Native.ioctl(_fd.Number, KvmIoctls.GetVcpuMmapSize, 0), "KVM_GET_VCPU_MMAP_SIZE");

    /// <summary>KVM_GET_SUPPORTED_CPUID: every leaf KVM can present to a guest on this host.</summary>
    public KvmCpuidEntry2[] GetSupportedCpuid()
    {
        const int maxEntries = 256;
        int bytes = sizeof(KvmCpuid2) + maxEntries * sizeof(KvmCpuidEntry2);
        byte* buffer = stackalloc byte[bytes];
        new Span<byte>(buffer, bytes).Clear();
        ((KvmCpuid2*)buffer)->Nent = maxEntries;
        Errno.Check(Native.ioctl(_fd.Number, KvmIoctls.GetSupportedCpuid, (nint)buffer), "KVM_GET_SUPPORTED_CPUID");
        return KvmCpuidEntries.Copy((KvmCpuidEntry2*)(buffer + sizeof(KvmCpuid2)), (int)((KvmCpuid2*)buffer)->Nent);
    }

    /// <summary>KVM_CREATE_VM with the default machine type.</summary>
    public KvmVm CreateVm()
    {
        int fd = (int)Errno.Check(Native.ioctl(_fd.Number, KvmIoctls.CreateVm, 0), "KVM_CREATE_VM");
        return new KvmVm(this, new FileDescriptor(fd));
    }

    public void Dispose() => _fd.Dispose();
}
