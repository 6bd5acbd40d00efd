using SharpVM.Hypervisor;

namespace SharpVM.Vmm.Exits;

/// <summary>How a VM ended.</summary>
public enum VmStopKind
{
    /// <summary>Stopped from outside (API, Ctrl-A x, a test).</summary>
    Requested,
    /// <summary>The guest powered off.</summary>
    PowerOff,
    /// <summary>The guest asked for a reset (reboot).</summary>
    Reset,
    /// <summary>A vCPU halted with nothing that could wake it.</summary>
    Halted,
    /// <summary>Triple fault.</summary>
    TripleFault,
    /// <summary>The backend failed: entry failure, internal/emulation error, unknown exit, crash event.</summary>
    Error,
}

/// <summary>
/// Why the VM ended, with the evidence: the vCPU, its registers and the instruction it was at,
/// disassembled. <see cref="ExitCode"/> is the status `sharpvm run` exits with.
/// </summary>
public sealed record VmStopReport(VmStopKind Kind, string Message, int? VcpuId = null, VcpuExit? Exit = null,
    Registers? Registers = null, SpecialRegisters? SpecialRegisters = null, string? Instruction = null, int? GuestExitCode = null)
{
    /// <summary>0 power-off or requested, 2 reset, 3 halted, 4 triple fault, 5 backend error; a guest-chosen code wins.</summary>
    public int ExitCode => GuestExitCode ?? Kind switch
    {
        VmStopKind.PowerOff or VmStopKind.Requested => 0,
        VmStopKind.Reset => 2,
        VmStopKind.Halted => 3,
        VmStopKind.TripleFault => 4,
        _ => 5,
    };

    /// <summary>A multi-line report: reason, then registers and the faulting instruction where known.</summary>
    public string Describe()
    {
        var text = new System.Text.StringBuilder();
        text.Append(VcpuId is int id ? $"vCPU {id}: {Message}" : Message);
        if (Registers is Registers r)
        {
            text.AppendLine();
            text.AppendLine($"  rip={r.Rip:x16} rflags={r.Rflags:x8}");
            text.AppendLine($"  rax={r.Rax:x16} rbx={r.Rbx:x16} rcx={r.Rcx:x16} rdx={r.Rdx:x16}");
            text.AppendLine($"  rsi={r.Rsi:x16} rdi={r.Rdi:x16} rsp={r.Rsp:x16} rbp={r.Rbp:x16}");
            text.AppendLine($"  r8 ={r.R8:x16} r9 ={r.R9:x16} r10={r.R10:x16} r11={r.R11:x16}");
            text.Append($"  r12={r.R12:x16} r13={r.R13:x16} r14={r.R14:x16} r15={r.R15:x16}");
        }
        if (SpecialRegisters is SpecialRegisters s)
        {
            text.AppendLine();
            text.Append($"  cr0={s.Cr0:x} cr2={s.Cr2:x} cr3={s.Cr3:x} cr4={s.Cr4:x} efer={s.Efer:x} cs={s.Cs.Selector:x4} (base {s.Cs.Base:x}, {(s.Cs.L ? "64" : s.Cs.Db ? "32" : "16")}-bit) cpl={s.Cs.Selector & 3}");
        }
        if (Instruction is not null)
        {
            text.AppendLine();
            text.Append($"  at: {Instruction}");
        }
        return text.ToString();
    }
}
