using System.Diagnostics;
using System.Text;
using SharpVM.Cpu;
using SharpVM.Devices.Bus;
using SharpVM.Hypervisor;
using SharpVM.Memory;

// Smoke test of SharpVM.Cpu on a real kernel: loads a bzImage with the Linux 64-bit boot protocol
// (long mode set up through the public register API, like the VMM does), gives it a serial port
// and nothing else (no interrupt controllers or timers), and runs until the guest stops, a limit
// is reached, or the CPU reports an error. It shows how far Linux gets on the emulated CPU.
//
// usage: dotnet run -c Release --project bench/cpu/SharpVM.Cpu.LinuxSmoke -- <bzImage> [seconds] [initramfs]

string kernelPath = args.Length > 0 ? args[0] : "/root/.cache/sharpvm/guest/vmlinuz";
double seconds = args.Length > 1 ? double.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 60;
string? initrd = args.Length > 2 ? args[2] : null;
byte[] image = File.ReadAllBytes(kernelPath);

const ulong Ram = 512UL << 20, BootParams = 0x7000, CmdLine = 0x20000, LoadAddr = 0x1000000, InitrdAddr = 0x10000000;
const ulong Gdt = 0x1000, Pml4 = 0x9000, Pdpt = 0xA000, Pd = 0xB000;
using var mem = GuestMemory.Create(Ram);
void W(ulong a, ReadOnlySpan<byte> b) => mem.Write(new GuestAddress(a), b);
void W64(ulong a, ulong v) => mem.Write(new GuestAddress(a), v);
void W32(ulong a, uint v) => mem.Write(new GuestAddress(a), v);
void W8(ulong a, byte v) => mem.Write(new GuestAddress(a), v);

int setupSects = image[0x1F1] == 0 ? 4 : image[0x1F1];
int pmOffset = (setupSects + 1) * 512;
W(LoadAddr, image.AsSpan(pmOffset));
// boot_params: the setup header copied from the image, then our fields.
int hdrEnd = 0x202 + image[0x201];
W(BootParams + 0x1F1, image.AsSpan(0x1F1, hdrEnd - 0x1F1));
W8(BootParams + 0x210, 0xFF);                                   // type_of_loader
W8(BootParams + 0x211, (byte)(image[0x211] | 0x01 | 0x80));     // loadflags: LOADED_HIGH | CAN_USE_HEAP
W32(BootParams + 0x228, (uint)CmdLine);
string cmdline = Environment.GetEnvironmentVariable("SHARPVM_CMDLINE") ?? "console=ttyS0 earlyprintk=serial,ttyS0,115200 noapic nolapic nosmp tsc=reliable panic=-1 loglevel=8";
W(CmdLine, Encoding.ASCII.GetBytes(cmdline + "\0"));
if (initrd is not null)
{
    byte[] rd = File.ReadAllBytes(initrd);
    W(InitrdAddr, rd);
    W32(BootParams + 0x218, (uint)InitrdAddr);
    W32(BootParams + 0x21C, (uint)rd.Length);
}
// e820: low RAM, then everything from 1 MiB.
W8(BootParams + 0x1E8, 2);
W64(BootParams + 0x2D0, 0); W64(BootParams + 0x2D8, 0x9FC00); W32(BootParams + 0x2E0, 1);
W64(BootParams + 0x2E4, 0x100000); W64(BootParams + 0x2EC, Ram - 0x100000); W32(BootParams + 0x2F4, 1);
// GDT: __BOOT_CS = 0x10, __BOOT_DS = 0x18.
W64(Gdt + 0x10, 0x00AF9B000000FFFF);
W64(Gdt + 0x18, 0x00CF93000000FFFF);
// Identity map of the first 1 GiB with 2 MiB pages.
W64(Pml4, Pdpt | 3);
W64(Pdpt, Pd | 3);
for (ulong i = 0; i < 512; i++) W64(Pd + i * 8, (i << 21) | 0x83);

using var hv = new EmulatorHypervisor();
using var vm = hv.CreateVm(mem, new PioBus(), new MmioBus(), new VmPlatformOptions());
var cpu = (EmulatorVcpu)vm.CreateVcpu(0);
cpu.AttachToCurrentThread();
cpu.Tracing = Environment.GetEnvironmentVariable("SHARPVM_CPU_TRACE") == "1";
var s = cpu.GetSpecialRegisters();
s.Cr0 = 0x80050033; s.Cr3 = Pml4; s.Cr4 = 0x20; s.Efer = 0x500;
s.Cs = Segment.Flat(0x10, 0xB, longMode: true, code: true);
var ds = Segment.Flat(0x18, 0x3, longMode: true, code: false);
s.Ds = s.Es = s.Ss = s.Fs = s.Gs = ds;
s.Gdt = new DescriptorTable { Base = Gdt, Limit = 0x1F };
s.Idt = new DescriptorTable { Base = 0, Limit = 0 };
s.Tr = new Segment { Type = 0xB, Present = true, Limit = 0x67 };
cpu.SetSpecialRegisters(s);
cpu.SetRegisters(new Registers { Rip = LoadAddr + 0x200, Rsi = BootParams, Rsp = 0x8000, Rflags = 2 });

var io = new MiniPlatform();
io.OnGuestStopped = cpu.RequestExit;
cpu.AttachInterruptSource(io);
var timer = new Timer(_ => cpu.RequestExit(), null, TimeSpan.FromSeconds(seconds), Timeout.InfiniteTimeSpan);
var sw = Stopwatch.StartNew();
VcpuExit exit;
while (true)
{
    exit = cpu.Run(io);
    break;
}
var r = cpu.GetRegisters();
Console.WriteLine();
Console.WriteLine($"--- {exit.Reason} {exit.Detail} after {sw.Elapsed.TotalSeconds:F1} s, RIP=0x{r.Rip:x}, {cpu.InstructionsRetired / 1e6:F0} M instructions ({cpu.InstructionsRetired / sw.Elapsed.TotalSeconds / 1e6:F1} M/s wall), serial bytes {io.SerialBytes}, port accesses {io.PortAccesses}, MMIO accesses {io.MmioAccesses}, interrupts {io.Interrupts}, guest exceptions {cpu.ExceptionsDelivered}");
timer.Dispose();
if (cpu.Tracing)
{
    Console.WriteLine("recent blocks: " + string.Join(" ", cpu.RecentBlocks().TakeLast(48).Select(a => a.ToString("x"))));
    foreach (var e in cpu.RecentEvents()) Console.WriteLine("event: " + e);
    foreach (ulong va in cpu.RecentBlocks().TakeLast(6).Distinct())
    {
        ulong? pa = cpu.Translate(va);
        if (pa is null || pa.Value + 64 > Ram) { Console.WriteLine($"{va:x}: unmapped"); continue; }
        var bytes = mem.GetSpan(new GuestAddress(pa.Value), 64).ToArray();
        var dec = Iced.Intel.Decoder.Create(64, new Iced.Intel.ByteArrayCodeReader(bytes), va);
        for (int k = 0; k < 10; k++)
        {
            dec.Decode(out var ins);
            Console.WriteLine($"  {ins.IP:x}: {ins}");
            if (ins.FlowControl != Iced.Intel.FlowControl.Next) break;
        }
    }
    Console.WriteLine($"regs: rax={r.Rax:x} rbx={r.Rbx:x} rcx={r.Rcx:x} rdx={r.Rdx:x} rsi={r.Rsi:x} rdi={r.Rdi:x} rbp={r.Rbp:x} rsp={r.Rsp:x} r8={r.R8:x} r9={r.R9:x} r10={r.R10:x} r11={r.R11:x} r12={r.R12:x} r13={r.R13:x} r14={r.R14:x} r15={r.R15:x} fl={r.Rflags:x}");
}

