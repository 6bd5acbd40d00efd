using Iced.Intel;
using SharpVM.Hypervisor;
using SharpVM.Memory;

namespace SharpVM.Vmm.Exits;

/// <summary>Reads and disassembles the instruction a vCPU stopped at, for stop reports.</summary>
public static class FaultingInstruction
{
    /// <summary>"bytes  mnemonic operands" for the instruction at CS:RIP, or why it could not be read.</summary>
    public static string Describe(IVcpu vcpu, GuestMemory memory, in Registers regs, in SpecialRegisters sregs)
    {
        int bitness = (sregs.Efer & (1UL << 10)) != 0 && sregs.Cs.L ? 64 : sregs.Cs.Db && (sregs.Cr0 & 1) != 0 ? 32 : 16;
        ulong linear = bitness == 64 ? regs.Rip : sregs.Cs.Base + (regs.Rip & (bitness == 32 ? 0xFFFF_FFFFUL : 0xFFFFUL));
        ulong physical;
        bool paging = (sregs.Cr0 & 0x8000_0000) != 0;
        if (paging)
        {
            ulong? translated;
            try { translated = vcpu.Translate(linear); }
            catch (Exception e) { return $"linear 0x{linear:x}: cannot translate ({e.Message})"; }
            if (translated is null) return $"linear 0x{linear:x}: not mapped by the guest's page tables";
            physical = translated.Value;
        }
        else physical = linear;

        var bytes = new byte[15];
        int available = 0;
        for (; available < bytes.Length; available++)
        {
            var address = new GuestAddress(physical) + (ulong)available;
            if (!memory.IsRam(address, 1)) break;
            bytes[available] = memory.Read<byte>(address);
        }
        if (available == 0) return $"physical 0x{physical:x}: not guest RAM";

        var decoder = Iced.Intel.Decoder.Create(bitness, new ByteArrayCodeReader(bytes, 0, available));
        decoder.IP = linear;
        decoder.Decode(out var instruction);
        var formatter = new NasmFormatter();
        var output = new StringOutput();
        formatter.Format(instruction, output);
        string hex = Convert.ToHexString(bytes, 0, Math.Max(1, Math.Min(instruction.Length, available))).ToLowerInvariant();
        return $"0x{linear:x} ({bitness}-bit): {hex}  {output.ToStringAndReset()}";
    }
}
