using SharpVM.Interop.Kvm;

namespace SharpVM.Vmm.Host;

/// <summary>Which kernel module provides /dev/kvm.</summary>
public enum KvmProvider { None, KvmIntel, KvmAmd, KvmPvm, Unknown }

/// <summary>What the host offers for virtualization, read from /proc, /sys and /dev/kvm.</summary>
public sealed record HostReport(
    string CpuVendor,
    string CpuModel,
    bool Vmx,
    bool Svm,
    KvmProvider Provider,
    bool DevKvmExists,
    string? KvmError,
    int? ApiVersion,
    IReadOnlyList<(string Name, int Value)> Capabilities,
    string? Nested,
    string? KsmRun,
    string? TransparentHugePages,
    long? HugePagesTotal)
{
    /// <summary>True if KVM here runs unmodified guests on hardware virtualization (VMX/SVM).</summary>
    public bool HardwareKvm => DevKvmExists && KvmError is null && Provider is KvmProvider.KvmIntel or KvmProvider.KvmAmd;
}

/// <summary>Reads the host's virtualization facts. Never throws: what cannot be read is reported as such.</summary>
public static class HostProbe
{
    public static readonly KvmCapability[] UsedCapabilities =
    [
        KvmCapability.UserMemory, KvmCapability.Irqchip, KvmCapability.Pit2, KvmCapability.Irqfd,
        KvmCapability.Ioeventfd, KvmCapability.IrqRouting, KvmCapability.SetTssAddr, KvmCapability.SetIdentityMapAddr,
        KvmCapability.ExtCpuid, KvmCapability.VcpuEvents, KvmCapability.Xcrs, KvmCapability.ImmediateExit,
        KvmCapability.NrVcpus, KvmCapability.MaxVcpus, KvmCapability.NrMemslots, KvmCapability.GetTscKhz,
        KvmCapability.AdjustClock,
    ];

    public static HostReport Probe(string devicePath = KvmSystem.DevicePath)
    {
        var (vendor, model, flags) = ReadCpuInfo();
        var provider = Directory.Exists("/sys/module/kvm_intel") ? KvmProvider.KvmIntel
            : Directory.Exists("/sys/module/kvm_amd") ? KvmProvider.KvmAmd
            : Directory.Exists("/sys/module/kvm_pvm") ? KvmProvider.KvmPvm
            : Directory.Exists("/sys/module/kvm") ? KvmProvider.Unknown
            : KvmProvider.None;
        string? nested = provider switch
        {
            KvmProvider.KvmIntel => ReadTrimmed("/sys/module/kvm_intel/parameters/nested"),
            KvmProvider.KvmAmd => ReadTrimmed("/sys/module/kvm_amd/parameters/nested"),
            _ => null,
        };
        string? error = null;
        int? api = null;
        var caps = new List<(string, int)>();
        try
        {
            using var kvm = KvmSystem.Open(devicePath);
            api = kvm.GetApiVersion();
            foreach (var cap in UsedCapabilities) caps.Add((cap.ToString(), kvm.CheckExtension(cap)));
        }
        catch (Exception e) when (e is KvmUnavailableException or Interop.Libc.SystemCallException)
        {
            error = e.Message;
        }
        string? thp = ReadTrimmed("/sys/kernel/mm/transparent_hugepage/enabled");
        long? huge = long.TryParse(ReadTrimmed("/proc/sys/vm/nr_hugepages"), out var n) ? n : null;
        return new HostReport(vendor, model, flags.Contains("vmx"), flags.Contains("svm"), provider,
            File.Exists(devicePath), error, api, caps, nested, ReadTrimmed("/sys/kernel/mm/ksm/run"), thp, huge);
    }

    private static (string Vendor, string Model, HashSet<string> Flags) ReadCpuInfo()
    {
        string vendor = "unknown", model = "unknown";
        var flags = new HashSet<string>();
        try
        {
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
            {
                int colon = line.IndexOf(':');
                if (colon < 0) continue;
                string key = line[..colon].Trim(), value = line[(colon + 1)..].Trim();
                if (key == "vendor_id") vendor = value;
                else if (key == "model name") model = value;
                else if (key == "flags")
                {
                    foreach (var f in value.Split(' ', StringSplitOptions.RemoveEmptyEntries)) flags.Add(f);
                    break;
                }
            }
        }
        catch (IOException) { }
        return (vendor, model, flags);
    }

    private static string? ReadTrimmed(string path)
    {
        try { return File.ReadAllText(path).Trim(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }
}
