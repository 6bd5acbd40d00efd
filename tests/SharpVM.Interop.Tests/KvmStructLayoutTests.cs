using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using SharpVM.Interop.Kvm;

namespace SharpVM.Interop.Tests;

/// <summary>
/// Every KVM struct and ioctl number in SharpVM.Interop is checked against the real
/// &lt;linux/kvm.h&gt;: a C program compiled here prints sizeof, offsetof and the ioctl numbers.
/// </summary>
public class KvmStructLayoutTests
{
    private sealed record StructSpec(string CName, Type Type, (string C, string Cs)[] Fields);

    private static (string, string) F(string c) => (c, Pascal(c));
    private static (string, string) F(string c, string cs) => (c, cs);

    private static string Pascal(string c) =>
        string.Concat(c.Split('_', '.').Select(p => p.Length == 0 ? p : char.ToUpperInvariant(p[0]) + p[1..]));

    private static readonly StructSpec[] Structs =
    [
        new("kvm_userspace_memory_region", typeof(KvmUserspaceMemoryRegion), [F("slot"), F("flags"), F("guest_phys_addr"), F("memory_size"), F("userspace_addr")]),
        new("kvm_regs", typeof(KvmRegs), [F("rax"), F("rbx"), F("rcx"), F("rdx"), F("rsi"), F("rdi"), F("rsp"), F("rbp"), F("r8"), F("r15"), F("rip"), F("rflags")]),
        new("kvm_segment", typeof(KvmSegment), [F("base"), F("limit"), F("selector"), F("type"), F("present"), F("dpl"), F("db"), F("s"), F("l"), F("g"), F("avl"), F("unusable"), F("padding")]),
        new("kvm_dtable", typeof(KvmDtable), [F("base"), F("limit"), F("padding", "Padding0")]),
        new("kvm_sregs", typeof(KvmSregs), [F("cs"), F("ds"), F("es"), F("fs"), F("gs"), F("ss"), F("tr"), F("ldt"), F("gdt"), F("idt"), F("cr0"), F("cr2"), F("cr3"), F("cr4"), F("cr8"), F("efer"), F("apic_base"), F("interrupt_bitmap")]),
        new("kvm_fpu", typeof(KvmFpu), [F("fpr"), F("fcw"), F("fsw"), F("ftwx"), F("pad1"), F("last_opcode"), F("last_ip"), F("last_dp"), F("xmm"), F("mxcsr"), F("pad2")]),
        new("kvm_msr_entry", typeof(KvmMsrEntry), [F("index"), F("reserved"), F("data")]),
        new("kvm_msrs", typeof(KvmMsrs), [F("nmsrs"), F("pad")]),
        new("kvm_cpuid_entry2", typeof(KvmCpuidEntry2), [F("function"), F("index"), F("flags"), F("eax"), F("ebx"), F("ecx"), F("edx"), F("padding")]),
        new("kvm_cpuid2", typeof(KvmCpuid2), [F("nent"), F("padding")]),
        new("kvm_lapic_state", typeof(KvmLapicState), [F("regs")]),
        new("kvm_vcpu_events", typeof(KvmVcpuEvents), [F("exception.injected"), F("exception.nr"), F("exception.has_error_code"), F("exception.pending"), F("exception.error_code"),
            F("interrupt.injected"), F("interrupt.nr"), F("interrupt.soft"), F("interrupt.shadow"), F("nmi.injected"), F("nmi.pending"), F("nmi.masked"), F("nmi.pad"),
            F("sipi_vector"), F("flags"), F("smi.smm"), F("smi.pending"), F("smi.smm_inside_nmi"), F("smi.latched_init"), F("triple_fault.pending"), F("reserved"), F("exception_has_payload"), F("exception_payload")]),
        new("kvm_mp_state", typeof(KvmMpState), [F("mp_state")]),
        new("kvm_xcr", typeof(KvmXcr), [F("xcr"), F("reserved"), F("value")]),
        new("kvm_xcrs", typeof(KvmXcrs), [F("nr_xcrs"), F("flags"), F("xcrs", "Xcrs0"), F("padding")]),
        new("kvm_translation", typeof(KvmTranslation), [F("linear_address"), F("physical_address"), F("valid"), F("writeable"), F("usermode"), F("pad")]),
        new("kvm_irq_level", typeof(KvmIrqLevel), [F("irq"), F("level")]),
        new("kvm_irqfd", typeof(KvmIrqfd), [F("fd"), F("gsi"), F("flags"), F("resamplefd"), F("pad")]),
        new("kvm_ioeventfd", typeof(KvmIoeventfd), [F("datamatch"), F("addr"), F("len"), F("fd"), F("flags"), F("pad")]),
        new("kvm_pit_config", typeof(KvmPitConfig), [F("flags"), F("pad")]),
        new("kvm_irq_routing", typeof(KvmIrqRouting), [F("nr"), F("flags")]),
        new("kvm_irq_routing_entry", typeof(KvmIrqRoutingEntry), [F("gsi"), F("type"), F("flags"), F("pad"), F("u.irqchip.irqchip", "IrqchipOrAddressLo"), F("u.irqchip.pin", "PinOrAddressHi"),
            F("u.msi.address_lo", "IrqchipOrAddressLo"), F("u.msi.address_hi", "PinOrAddressHi"), F("u.msi.data", "MsiData"), F("u.msi.devid", "MsiDevid")]),
        new("kvm_dirty_log", typeof(KvmDirtyLog), [F("slot"), F("padding1"), F("dirty_bitmap")]),
        new("kvm_signal_mask", typeof(KvmSignalMask), [F("len")]),
        new("kvm_run", typeof(KvmRun), [F("request_interrupt_window"), F("immediate_exit"), F("exit_reason"), F("ready_for_interrupt_injection"), F("if_flag"), F("flags"), F("cr8"), F("apic_base"),
            F("io"), F("mmio"), F("fail_entry"), F("internal"), F("system_event")]),
    ];

    // Nested struct members of kvm_run, checked as offsets inside their own C# struct.
    private static readonly (string C, Type Type, string Cs)[] RunUnionMembers =
    [
        ("io.direction", typeof(KvmRunIo), "Direction"), ("io.size", typeof(KvmRunIo), "Size"), ("io.port", typeof(KvmRunIo), "Port"),
        ("io.count", typeof(KvmRunIo), "Count"), ("io.data_offset", typeof(KvmRunIo), "DataOffset"),
        ("mmio.phys_addr", typeof(KvmRunMmio), "PhysAddr"), ("mmio.data", typeof(KvmRunMmio), "Data"), ("mmio.len", typeof(KvmRunMmio), "Len"), ("mmio.is_write", typeof(KvmRunMmio), "IsWrite"),
        ("fail_entry.hardware_entry_failure_reason", typeof(KvmRunFailEntry), "HardwareEntryFailureReason"), ("fail_entry.cpu", typeof(KvmRunFailEntry), "Cpu"),
        ("internal.suberror", typeof(KvmRunInternal), "Suberror"), ("internal.ndata", typeof(KvmRunInternal), "Ndata"), ("internal.data", typeof(KvmRunInternal), "Data"),
        ("system_event.type", typeof(KvmRunSystemEvent), "Type"), ("system_event.ndata", typeof(KvmRunSystemEvent), "Ndata"), ("system_event.data", typeof(KvmRunSystemEvent), "Data"),
    ];

    private static readonly string[] Ioctls =
    [
        "KVM_GET_API_VERSION", "KVM_CREATE_VM", "KVM_CHECK_EXTENSION", "KVM_GET_VCPU_MMAP_SIZE", "KVM_GET_SUPPORTED_CPUID", "KVM_GET_MSR_INDEX_LIST",
        "KVM_CREATE_VCPU", "KVM_GET_DIRTY_LOG", "KVM_SET_USER_MEMORY_REGION", "KVM_SET_TSS_ADDR", "KVM_SET_IDENTITY_MAP_ADDR", "KVM_CREATE_IRQCHIP",
        "KVM_IRQ_LINE", "KVM_SET_GSI_ROUTING", "KVM_IRQFD", "KVM_CREATE_PIT2", "KVM_IOEVENTFD", "KVM_SET_TSC_KHZ", "KVM_GET_TSC_KHZ", "KVM_RUN",
        "KVM_GET_REGS", "KVM_SET_REGS", "KVM_GET_SREGS", "KVM_SET_SREGS", "KVM_TRANSLATE", "KVM_GET_MSRS", "KVM_SET_MSRS", "KVM_SET_SIGNAL_MASK",
        "KVM_GET_FPU", "KVM_SET_FPU", "KVM_GET_LAPIC", "KVM_SET_LAPIC", "KVM_SET_CPUID2", "KVM_GET_CPUID2", "KVM_GET_MP_STATE", "KVM_SET_MP_STATE",
        "KVM_GET_VCPU_EVENTS", "KVM_SET_VCPU_EVENTS", "KVM_GET_XCRS", "KVM_SET_XCRS",
    ];

    private static readonly Lazy<Dictionary<string, ulong>> CFacts = new(CompileAndRun);

    private static Dictionary<string, ulong> CompileAndRun()
    {
        var c = new System.Text.StringBuilder("#include <stdio.h>\n#include <stddef.h>\n#include <linux/kvm.h>\nint main(void) {\n");
        foreach (var s in Structs)
        {
            c.AppendLine($"  printf(\"{s.CName} %zu\\n\", sizeof(struct {s.CName}));");
            foreach (var (f, _) in s.Fields) c.AppendLine($"  printf(\"{s.CName}.{f} %zu\\n\", offsetof(struct {s.CName}, {f}));");
        }
        foreach (var (f, _, _) in RunUnionMembers) c.AppendLine($"  printf(\"kvm_run.{f} %zu\\n\", offsetof(struct kvm_run, {f}));");
        foreach (var i in Ioctls) c.AppendLine($"  printf(\"{i} %lu\\n\", (unsigned long){i});");
        c.AppendLine("  return 0;\n}");
        string dir = Directory.CreateTempSubdirectory("sharpvm-kvmh").FullName;
        File.WriteAllText(Path.Combine(dir, "facts.c"), c.ToString());
        Run("gcc", $"-o {dir}/facts {dir}/facts.c");
        string output = Run(Path.Combine(dir, "facts"), "");
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split(' ')).ToDictionary(p => p[0], p => ulong.Parse(p[1]));
    }

    private static string Run(string file, string args)
    {
        using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true })
            ?? throw new InvalidOperationException($"cannot start {file}");
        string stdout = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{file} {args} failed (is gcc installed, with linux-libc-dev?): {stderr}");
        return stdout;
    }

    public static TheoryData<string> StructNames() => new(Structs.Select(s => s.CName));

    [Theory]
    [MemberData(nameof(StructNames))]
    public void StructMatchesTheKernelHeader(string cName)
    {
        var spec = Structs.Single(s => s.CName == cName);
        var facts = CFacts.Value;
        Assert.Equal(facts[cName], (ulong)Marshal.SizeOf(spec.Type));
        foreach (var (c, cs) in spec.Fields)
        {
            Assert.True(spec.Type.GetField(cs, BindingFlags.Public | BindingFlags.Instance) is not null, $"{spec.Type.Name} has no field {cs} for {cName}.{c}");
            Assert.True(facts[$"{cName}.{c}"] == (ulong)Marshal.OffsetOf(spec.Type, cs), $"{cName}.{c}: C offset {facts[$"{cName}.{c}"]}, C# {spec.Type.Name}.{cs} at {Marshal.OffsetOf(spec.Type, cs)}");
        }
    }

    [Fact]
    public void KvmRunUnionMembersMatchTheKernelHeader()
    {
        var facts = CFacts.Value;
        foreach (var (c, type, cs) in RunUnionMembers)
        {
            ulong expected = facts[$"kvm_run.{c}"];
            ulong actual = 32 + (ulong)Marshal.OffsetOf(type, cs);
            Assert.True(expected == actual, $"kvm_run.{c}: C offset {expected}, C# {actual}");
        }
    }

    [Fact]
    public void IoctlNumbersMatchTheKernelHeader()
    {
        var facts = CFacts.Value;
        foreach (var name in Ioctls)
        {
            string cs = Pascal(name["KVM_".Length..].ToLowerInvariant());
            var field = typeof(KvmIoctls).GetField(cs, BindingFlags.Public | BindingFlags.Static);
            Assert.True(field is not null, $"KvmIoctls has no {cs} for {name}");
            Assert.True(facts[name] == (ulong)(nuint)field!.GetValue(null)!, $"{name}: C 0x{facts[name]:x}, C# 0x{(ulong)(nuint)field.GetValue(null)!:x}");
        }
    }
}
