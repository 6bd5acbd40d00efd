using System.Diagnostics;
using System.Runtime;
using SharpVM.Devices.Bus;
using SharpVM.Hypervisor;
using SharpVM.Hypervisor.Kvm;
using SharpVM.Memory;
using SharpVM.Vmm;
using SharpVM.Vmm.Exits;
using SharpVM.Vmm.X86;

// The SharpVM side of bench/kvm: the same work as bench/kvm/pio_exit.c, through SharpVM's own
// path (KvmHypervisor, VmBuilder, VcpuThread, VcpuIoDispatcher, PioBus, a device).
// Prints "first-exit" at the first PIO exit, then "setup_us=... exit_ns=... exits=...".
uint n = args.Length > 0 ? uint.Parse(args[0]) : 200_000;
var config = new VmConfig { MemoryBytes = 16UL << 20, Cpus = 1, Accelerator = SharpVM.Vmm.Host.Accelerator.Kvm, InterruptController = false, Pit = false };
// A first VM (cold: the first use of every code path in the process), torn down, then a second
// one (warm) that runs: the same sequence as the C side, which also times up to "vCPU ready" and
// tears the first VM down outside the timed window.
long jitBefore = JitInfo.GetCompiledMethodCount();
long t0 = Stopwatch.GetTimestamp();
var first = VmBuilder.Build(config);
double coldUs = Stopwatch.GetElapsedTime(t0).TotalMicroseconds;
// Methods the JIT compiled while the first VM was built: 0 when ReadyToRun code covers the whole
// setup path (each one otherwise costs ~0.1-0.6 ms, the first also loading the JIT itself).
long coldJit = JitInfo.GetCompiledMethodCount() - jitBefore;
first.Dispose();
t0 = Stopwatch.GetTimestamp();
var hypervisor = KvmHypervisor.Open();
using var vm = VmBuilder.Build(config, hypervisor);
long ready = Stopwatch.GetTimestamp();

byte[] code = [0x66, 0xB9, 0, 0, 0, 0, 0xE6, 0x10, 0x66, 0x49, 0x75, 0xFA, 0xF4];
BitConverter.TryWriteBytes(code.AsSpan(2), n);
vm.Memory.Write(new GuestAddress(0x10000), code);
var counter = new CountingDevice();
vm.Pio.Register(0x10, 1, counter, "bench-counter");
vm.VcpuSetup = vcpu =>
{
    vcpu.SetSpecialRegisters(GuestCpuSetup.RealMode(vcpu.GetSpecialRegisters(), 0x10000));
    vcpu.SetRegisters(new Registers { Rip = 0, Rflags = 2 });
};
vm.Start();
var report = vm.WaitForStop(TimeSpan.FromMinutes(5));
if (report.Kind != VmStopKind.Halted || counter.Count != n)
{
    Console.Error.WriteLine($"unexpected end: {report.Describe()} after {counter.Count} exits");
    return 1;
}
// Between the first and the last exit, as the C side measures: what follows the last OUT (the HLT
// exit and its report) is not part of the round trip.
double exitNs = Stopwatch.GetElapsedTime(counter.FirstTimestamp, counter.LastTimestamp).TotalNanoseconds / (counter.Count - 1);
Console.WriteLine($"setup_cold_us={coldUs:F1} setup_us={Stopwatch.GetElapsedTime(t0, ready).TotalMicroseconds:F1} exit_ns={exitNs:F1} exits={counter.Count} setup_cold_jit={coldJit}");
hypervisor.Dispose();
return 0;

sealed class CountingDevice : IBusDevice
{
    public long Count;
    public long FirstTimestamp, LastTimestamp;
    public void Read(ulong offset, Span<byte> data) => data.Clear();
    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (Count++ == 0)
        {
            FirstTimestamp = Stopwatch.GetTimestamp();
            Console.WriteLine("first-exit");
            Console.Out.Flush();
        }
        LastTimestamp = Stopwatch.GetTimestamp();
    }
}
