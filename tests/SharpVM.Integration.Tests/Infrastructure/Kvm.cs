using SharpVM.Hypervisor.Kvm;
using SharpVM.Interop.Kvm;

namespace SharpVM.Integration.Tests.Infrastructure;

/// <summary>Opens the real /dev/kvm. A host without a usable one fails the test loudly, with the reason.</summary>
public static class Kvm
{
    public static KvmHypervisor Open()
    {
        try
        {
            return KvmHypervisor.Open();
        }
        catch (KvmUnavailableException e)
        {
            Assert.Fail($"this test needs a usable /dev/kvm: {e.Message}");
            throw;
        }
    }
}
