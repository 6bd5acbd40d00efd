using Iced.Intel;

namespace SharpVM.Cpu;

internal enum InterruptKind { Exception, External, Software, Nmi }

public sealed unsafe partial class EmulatorVcpu
{
    private int _deliveryDepth;

    private void ExecSystem(ref Instruction i, int sz, int asz)
    {
        switch (i.Mnemonic)
        {
            case Mnemonic.Hlt:
                if (Cpl != 0) throw GP();
                _halted = true;
                _endBlock = true;
                return;
            case Mnemonic.Int:
                if ((SystemFlags & Flags.VM) != 0 && ((SystemFlags >> 12) & 3) < 3) throw GP();
                DeliverInterrupt(i.Immediate8, false, 0, InterruptKind.Software);
                return;
            case Mnemonic.Int3:
                DeliverInterrupt(3, false, 0, InterruptKind.Software);
                return;
            case Mnemonic.Into:
                if (Bitness == 64) throw UD();
                if ((Rflags & Flags.OF) != 0) DeliverInterrupt(4, false, 0, InterruptKind.Software);
                return;
            case Mnemonic.Int1:
                DeliverInterrupt(1, false, 0, InterruptKind.External);
                return;
            case Mnemonic.Iret:
            case Mnemonic.Iretd:
            case Mnemonic.Iretq:
                ExecIret(i.Mnemonic == Mnemonic.Iretq ? 8 : i.Mnemonic == Mnemonic.Iretd ? 4 : 2);
                return;
            case Mnemonic.Retf:
                ExecRetf(sz, i.OpCount > 0 ? i.Immediate16 : 0);
                return;
            case Mnemonic.Cpuid:
            {
                Cpuid((uint)Gpr[0], (uint)Gpr[1], out uint a, out uint b, out uint c, out uint d);
                Gpr[0] = a; Gpr[3] = b; Gpr[1] = c; Gpr[2] = d;
                return;
            }
            case Mnemonic.Rdtsc:
            case Mnemonic.Rdtscp:
            {
                if ((Cr4 & 4) != 0 && Cpl != 0 && Protected) throw GP();
                ulong t = ReadTsc();
                Gpr[0] = (uint)t; Gpr[2] = t >> 32;
                if (i.Mnemonic == Mnemonic.Rdtscp) Gpr[1] = (uint)TscAux;
                return;
            }
            case Mnemonic.Rdpid:
                SetReg(i.Op0Register, TscAux);
                return;
            case Mnemonic.Rdmsr:
            {
                if (Cpl != 0) throw GP();
                if (!TryReadMsr((uint)Gpr[1], out ulong v)) throw GP();
                Gpr[0] = (uint)v; Gpr[2] = v >> 32;
                return;
            }
            case Mnemonic.Wrmsr:
                if (Cpl != 0) throw GP();
                if (!TryWriteMsr((uint)Gpr[1], (Gpr[0] & 0xFFFFFFFF) | (Gpr[2] << 32))) throw GP();
                _endBlock = true;
                return;
            case Mnemonic.Rdpmc:
                throw GP();
            case Mnemonic.Lgdt:
            case Mnemonic.Lidt:
            {
                if (Cpl != 0) throw GP();
                ulong la = MemAddr(ref i);
                ushort limit = (ushort)Read(la, 2);
                ulong bas = Bitness == 64 ? Read(la + 2, 8) : Read(la + 2, 4);
                if (Bitness != 64 && sz == 2) bas &= 0xFFFFFF;
                if (i.Mnemonic == Mnemonic.Lgdt) { GdtBase = bas; GdtLimit = limit; }
                else { IdtBase = bas; IdtLimit = limit; }
                return;
            }
            case Mnemonic.Sgdt:
            case Mnemonic.Sidt:
            {
                ulong la = MemAddr(ref i);
                bool g = i.Mnemonic == Mnemonic.Sgdt;
                Write(la, 2, g ? GdtLimit : IdtLimit);
                Write(la + 2, Bitness == 64 ? 8 : 4, g ? GdtBase : IdtBase);
                return;
            }
            case Mnemonic.Sldt:
            case Mnemonic.Str:
            {
                ushort sel = i.Mnemonic == Mnemonic.Sldt ? Ldtr.Sel : Tr.Sel;
                if (i.Op0Kind == OpKind.Register) SetReg(i.Op0Register, sel);
                else Write(MemAddr(ref i), 2, sel);
                return;
            }
            case Mnemonic.Lldt:
            case Mnemonic.Ltr:
            {
                if (!Protected || (SystemFlags & Flags.VM) != 0) throw UD();
                if (Cpl != 0) throw GP();
                ushort sel = (ushort)ReadOp(ref i, 0, 2);
                LoadSystemSegment(i.Mnemonic == Mnemonic.Ltr, sel);
                return;
            }
            case Mnemonic.Lmsw:
            {
                if (Cpl != 0) throw GP();
                ulong v = ReadOp(ref i, 0, 2);
                WriteCr(0, (Cr0 & ~0xEUL) | (v & 0xF) | (Cr0 & 1));
                return;
            }
            case Mnemonic.Smsw:
                if (i.Op0Kind == OpKind.Register) SetReg(i.Op0Register, Cr0 & Bits.Mask(sz));
                else Write(MemAddr(ref i), 2, Cr0 & 0xFFFF);
                return;
            case Mnemonic.Clts:
                if (Cpl != 0) throw GP();
                Cr0 &= ~Cr0Ts;
                return;
            case Mnemonic.Invlpg:
                if (Cpl != 0) throw GP();
                InvalidatePage(MemAddr(ref i));
                return;
            case Mnemonic.Invpcid:
                if (Cpl != 0) throw GP();
                FlushTlb(true);
                return;
            case Mnemonic.Wbinvd:
            case Mnemonic.Invd:
            case Mnemonic.Wbnoinvd:
                if (Cpl != 0) throw GP();
                return;
            case Mnemonic.Swapgs:
            {
                if (Bitness != 64) throw UD();
                if (Cpl != 0) throw GP();
                (Sregs[GS].Base, KernelGsBase) = (KernelGsBase, Sregs[GS].Base);
                return;
            }
            case Mnemonic.Syscall:
                ExecSyscall();
                return;
            case Mnemonic.Sysret:
            case Mnemonic.Sysretq:
                ExecSysret(i.Code == Code.Sysretq);
                return;
            case Mnemonic.Lds: case Mnemonic.Les: case Mnemonic.Lfs: case Mnemonic.Lgs: case Mnemonic.Lss:
            {
                ulong la = MemAddr(ref i);
                ulong off = Read(la, sz);
                ushort sel = (ushort)Read(la + (ulong)sz, 2);
                int seg = i.Mnemonic switch { Mnemonic.Lds => DS, Mnemonic.Les => ES, Mnemonic.Lfs => FS, Mnemonic.Lgs => GS, _ => SS };
                LoadSegment(seg, sel);
                SetReg(i.Op0Register, off);
                return;
            }
            case Mnemonic.Lsl:
            case Mnemonic.Lar:
            {
                ushort sel = (ushort)ReadOp(ref i, 1, 2);
                if (!Protected || (sel & ~3) == 0 || !TryReadDescriptor(sel, out ulong d))
                {
                    Rflags &= ~Flags.ZF;
                    return;
                }
                var s = ParseDescriptor(d, sel);
                int dpl = s.Dpl;
                bool conformingCode = (s.Attr & 0x1C) == 0x1C;
                if (!conformingCode && (dpl < Cpl || dpl < (sel & 3)))
                {
                    Rflags &= ~Flags.ZF;
                    return;
                }
                ulong v = i.Mnemonic == Mnemonic.Lsl ? s.Limit : (d >> 32) & 0x00F0FF00;
                SetReg(i.Op0Register, v);
                Rflags |= Flags.ZF;
                return;
            }
            case Mnemonic.Verr:
            case Mnemonic.Verw:
            {
                ushort sel = (ushort)ReadOp(ref i, 0, 2);
                bool ok = false;
                if (Protected && (sel & ~3) != 0 && TryReadDescriptor(sel, out ulong d))
                {
                    var s = ParseDescriptor(d, sel);
                    bool code = (s.Attr & 8) != 0;
                    bool data = (s.Attr & 0x10) != 0;
                    ok = data && (i.Mnemonic == Mnemonic.Verr ? (!code || (s.Attr & 2) != 0) : (!code && (s.Attr & 2) != 0))
                         && (((s.Attr & 0x1C) == 0x1C) || (s.Dpl >= Cpl && s.Dpl >= (sel & 3)));
                }
                Rflags = ok ? Rflags | Flags.ZF : Rflags & ~Flags.ZF;
                return;
            }
            case Mnemonic.Xgetbv:
            case Mnemonic.Xsetbv:
            case Mnemonic.Rdrand:
            case Mnemonic.Rdseed:
            case Mnemonic.Sysenter:
            case Mnemonic.Sysexit:
            case Mnemonic.Sysexitq:
            case Mnemonic.Rsm:
            case Mnemonic.Monitor:
            case Mnemonic.Mwait:
            case Mnemonic.Vmcall:
            case Mnemonic.Vmmcall:
            case Mnemonic.Clac:
            case Mnemonic.Stac:
            case Mnemonic.Rdfsbase: case Mnemonic.Rdgsbase: case Mnemonic.Wrfsbase: case Mnemonic.Wrgsbase:
                throw UD();
            default:
                ExecSse(ref i);
                return;
        }
    }

    // ---------- control registers ----------

    internal ulong ReadCr(int n)
    {
        if (Cpl != 0) throw GP();
        return n switch { 0 => Cr0, 2 => Cr2, 3 => Cr3, 4 => Cr4, 8 => Cr8, _ => throw UD() };
    }

    internal void WriteCr(int n, ulong v)
    {
        if (Cpl != 0) throw GP();
        switch (n)
        {
            case 0:
            {
                if (Bitness != 64) v = (uint)v;
                if ((v >> 32) != 0) throw GP();
                if ((v & Cr0Pg) != 0 && (v & Cr0Pe) == 0) throw GP();
                v |= 0x10; // ET
                if ((v & Cr0Pg) != 0 && (Cr0 & Cr0Pg) == 0 && (Efer & EferLme) != 0)
                {
                    if ((Cr4 & Cr4Pae) == 0) throw GP();
                    Efer |= EferLma;
                }
                if ((v & Cr0Pg) == 0 && (Cr0 & Cr0Pg) != 0)
                {
                    if (LongMode && Bitness == 64) throw GP();
                    Efer &= ~EferLma;
                }
                Cr0 = v;
                FlushTlb(true);
                UpdateMode();
                _endBlock = true;
                return;
            }
            case 2: Cr2 = v; return;
            case 3:
                Cr3 = v & ~(1UL << 63);
                FlushTlb(false);
                _endBlock = true;
                return;
            case 4:
                if (LongMode && (v & Cr4Pae) == 0) throw GP();
                if ((v & ~0x3F67FFUL) != 0) throw GP();
                Cr4 = v;
                FlushTlb(true);
                _endBlock = true;
                return;
            case 8:
                Cr8 = v & 0xF;
                return;
            default:
                throw UD();
        }
    }

    // ---------- segments ----------

    internal static Seg ParseDescriptor(ulong d, ushort sel)
    {
        uint lo = (uint)d, hi = (uint)(d >> 32);
        uint limit = (lo & 0xFFFF) | (hi & 0xF0000);
        uint attr = (hi >> 8) & 0xF0FF;
        if ((attr & 0x8000) != 0) limit = (limit << 12) | 0xFFF;
        return new Seg
        {
            Base = (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000),
            Limit = limit,
            Sel = sel,
            Attr = attr,
        };
    }

    private bool TryReadDescriptor(ushort sel, out ulong d)
    {
        bool ldt = (sel & 4) != 0;
        ulong bas = ldt ? Ldtr.Base : GdtBase;
        ulong limit = ldt ? Ldtr.Limit : GdtLimit;
        if (((uint)sel | 7) > limit) { d = 0; return false; }
        d = ReadSys(bas + (ulong)(sel & ~7), 8);
        return true;
    }

    internal ulong ReadDescriptor(ushort sel)
    {
        if (!TryReadDescriptor(sel, out ulong d)) throw GP((uint)(sel & 0xFFFC));
        return d;
    }

    private void SetAccessed(ushort sel, ulong d)
    {
        if ((d & (1UL << 40)) != 0) return;
        ulong bas = (sel & 4) != 0 ? Ldtr.Base : GdtBase;
        WriteSys(bas + (ulong)(sel & ~7) + 5, 1, ((d >> 40) & 0xFF) | 1);
    }

    internal void LoadSegment(int seg, ushort sel)
    {
        if (!Protected || (SystemFlags & Flags.VM) != 0)
        {
            Sregs[seg].Sel = sel;
            Sregs[seg].Base = (ulong)sel << 4;
            if ((SystemFlags & Flags.VM) != 0) { Sregs[seg].Limit = 0xFFFF; Sregs[seg].Attr = 0xF3; }
            if (seg == SS || seg == CS) UpdateMode();
            return;
        }
        if ((sel & ~3) == 0)
        {
            if (seg == SS && (Bitness != 64 || Cpl == 3 || (sel & 3) != Cpl)) throw GP();
            Sregs[seg] = new Seg { Sel = sel, Attr = 0x10000 | (seg == SS ? (uint)Cpl << 5 | 0x4093 : 0) };
            if (seg == SS) UpdateMode();
            return;
        }
        ulong d = ReadDescriptor(sel);
        var s = ParseDescriptor(d, sel);
        uint err = (uint)(sel & 0xFFFC);
        if ((s.Attr & 0x10) == 0) throw GP(err);
        bool code = (s.Attr & 8) != 0;
        if (seg == SS)
        {
            if (code || (s.Attr & 2) == 0 || (sel & 3) != Cpl || s.Dpl != Cpl) throw GP(err);
            if (!s.Present) throw Fault(12, err, true);
        }
        else
        {
            if (code && (s.Attr & 2) == 0) throw GP(err);
            bool conforming = code && (s.Attr & 4) != 0;
            if (!conforming && ((sel & 3) > s.Dpl || Cpl > s.Dpl)) throw GP(err);
            if (!s.Present) throw Fault(11, err, true);
        }
        SetAccessed(sel, d);
        s.Attr |= 1;
        Sregs[seg] = s;
        if (seg == SS) UpdateMode();
    }

    private void LoadSystemSegment(bool tr, ushort sel)
    {
        if ((sel & ~3) == 0)
        {
            if (tr) throw GP();
            Ldtr = new Seg { Sel = sel, Attr = 0x10000 };
            return;
        }
        if ((sel & 4) != 0) throw GP((uint)(sel & 0xFFFC));
        ulong d = ReadDescriptor(sel);
        var s = ParseDescriptor(d, sel);
        uint type = s.Attr & 0x1F;
        if (tr ? type is not (0x9 or 0x1) : type != 0x2) throw GP((uint)(sel & 0xFFFC));
        if (!s.Present) throw Fault(11, (uint)(sel & 0xFFFC), true);
        if (LongMode) s.Base |= ReadSys(GdtBase + (ulong)(sel & ~7) + 8, 4) << 32;
        if (tr)
        {
            s.Attr |= 2; // busy
            WriteSys(GdtBase + (ulong)(sel & ~7) + 5, 1, ((d >> 40) & 0xFF) | 2);
            Tr = s;
        }
        else Ldtr = s;
    }

    private Seg LoadCodeDescriptor(ushort sel, out ulong desc)
    {
        uint err = (uint)(sel & 0xFFFC);
        if ((sel & ~3) == 0) throw GP();
        desc = ReadDescriptor(sel);
        var s = ParseDescriptor(desc, sel);
        if ((s.Attr & 0x18) != 0x18) throw GP(err);
        if (!s.Present) throw Fault(11, err, true);
        return s;
    }

    private void FarJump(ushort sel, ulong off, bool call, int osz)
    {
        if (!Protected || (SystemFlags & Flags.VM) != 0)
        {
            if (call)
            {
                Push(Sregs[CS].Sel, osz);
                Push(Rip, osz);
            }
            Sregs[CS].Sel = sel;
            Sregs[CS].Base = (ulong)sel << 4;
            Rip = osz == 4 ? (uint)off : (ushort)off;
            UpdateMode();
            _endBlock = true;
            return;
        }
        ulong d = ReadDescriptor(sel);
        if (((d >> 44) & 1) == 0) throw new CpuUnimplemented("far transfer through a call gate or task gate");
        var cs = LoadCodeDescriptor(sel, out d);
        bool conforming = (cs.Attr & 4) != 0;
        if (conforming ? cs.Dpl > Cpl : (cs.Dpl != Cpl || (sel & 3) > Cpl)) throw GP((uint)(sel & 0xFFFC));
        if (call)
        {
            Push(Sregs[CS].Sel, osz);
            Push(Rip, osz);
        }
        SetAccessed(sel, d);
        cs.Attr |= 1;
        cs.Sel = (ushort)((sel & ~3) | Cpl);
        Sregs[CS] = cs;
        UpdateMode();
        Rip = Bitness == 64 ? off : osz == 2 ? (ushort)off : (uint)off;
        _endBlock = true;
    }

    private void ExecRetf(int osz, int imm)
    {
        ulong sp = Gpr[4] & StackMask();
        ulong off = Read(Linear(SS, sp), osz);
        ushort sel = (ushort)Read(Linear(SS, sp + (ulong)osz), osz == 8 ? 8 : osz);
        if (!Protected || (SystemFlags & Flags.VM) != 0)
        {
            SetSp(sp + (ulong)(2 * osz + imm));
            Sregs[CS].Sel = sel;
            Sregs[CS].Base = (ulong)sel << 4;
            Rip = osz == 4 ? (uint)off : (ushort)off;
            UpdateMode();
            _endBlock = true;
            return;
        }
        int rpl = sel & 3;
        if (rpl < Cpl) throw GP((uint)(sel & 0xFFFC));
        var cs = LoadCodeDescriptor(sel, out _);
        if (rpl > Cpl)
        {
            ulong nsp = Read(Linear(SS, sp + (ulong)(2 * osz + imm)), osz);
            ushort nss = (ushort)Read(Linear(SS, sp + (ulong)(3 * osz + imm)), osz == 8 ? 8 : osz);
            Sregs[CS] = cs;
            UpdateMode();
            LoadSegmentForReturn(nss, rpl);
            StackSize = Bitness == 64 ? 8 : Sregs[SS].Big ? 4 : 2;
            SetSp(nsp + (ulong)imm);
        }
        else
        {
            Sregs[CS] = cs;
            UpdateMode();
            SetSp(sp + (ulong)(2 * osz + imm));
        }
        Rip = Bitness == 64 ? off : osz == 2 ? (ushort)off : (uint)off;
        _endBlock = true;
    }

    private void LoadSegmentForReturn(ushort ss, int rpl)
    {
        if ((ss & ~3) == 0)
        {
            if (!LongMode || rpl == 3) throw GP();
            Sregs[SS] = new Seg { Sel = ss, Attr = 0x10000 | ((uint)rpl << 5) | 0x4093 };
        }
        else
        {
            ulong d = ReadDescriptor(ss);
            var s = ParseDescriptor(d, ss);
            if ((s.Attr & 0x1A) != 0x12 || s.Dpl != rpl || (ss & 3) != rpl) throw GP((uint)(ss & 0xFFFC));
            if (!s.Present) throw Fault(12, (uint)(ss & 0xFFFC), true);
            SetAccessed(ss, d);
            s.Attr |= 1;
            Sregs[SS] = s;
        }
        UpdateMode();
    }

    private void ExecIret(int osz)
    {
        _endBlock = true;
        _irqHint = true;
        if (!Protected || (SystemFlags & Flags.VM) != 0)
        {
            if ((SystemFlags & Flags.VM) != 0 && ((SystemFlags >> 12) & 3) < 3) throw GP();
            ulong sp0 = Gpr[4] & StackMask();
            ulong ip = Read(Linear(SS, sp0), osz);
            ushort rcs = (ushort)Read(Linear(SS, sp0 + (ulong)osz), 2);
            ulong fl = Read(Linear(SS, sp0 + (ulong)(2 * osz)), osz);
            SetSp(sp0 + (ulong)(3 * osz));
            Sregs[CS].Sel = rcs;
            Sregs[CS].Base = (ulong)rcs << 4;
            Rip = osz == 4 ? (uint)ip : (ushort)ip;
            if ((SystemFlags & Flags.VM) != 0)
            {
                ulong m = Flags.Arith | Flags.TF | Flags.IF | Flags.DF | Flags.NT | (osz == 4 ? Flags.AC | Flags.ID : 0);
                if (osz == 2) m &= 0xFFFF;
                Rflags = (Rflags & ~m) | (fl & m) | 2;
            }
            else LoadFlags(fl, osz);
            _nmiBlocked = false;
            UpdateMode();
            return;
        }
        if ((SystemFlags & Flags.NT) != 0 && !LongMode) throw new CpuUnimplemented("IRET with NT set (task return)");
        ulong sp = Gpr[4] & StackMask();
        ulong nrip = Read(Linear(SS, sp), osz);
        ushort nsel = (ushort)Read(Linear(SS, sp + (ulong)osz), 2);
        ulong nfl = Read(Linear(SS, sp + (ulong)(2 * osz)), osz);
        int rpl = nsel & 3;
        if (rpl < Cpl) throw GP((uint)(nsel & 0xFFFC));
        if (!LongMode && (nfl & Flags.VM) != 0 && Cpl == 0 && osz == 4)
            throw new CpuUnimplemented("IRET to virtual-8086 mode");
        var cs = LoadCodeDescriptor(nsel, out _);
        bool popStack = (LongMode && Bitness == 64) || rpl > Cpl;
        ulong nsp = 0;
        ushort nss = 0;
        if (popStack)
        {
            nsp = Read(Linear(SS, sp + (ulong)(3 * osz)), osz);
            nss = (ushort)Read(Linear(SS, sp + (ulong)(4 * osz)), 2);
        }
        int oldCpl = Cpl;
        // Flags first (privilege checks use the old CPL).
        ulong mask = Flags.Arith | Flags.TF | Flags.DF | Flags.NT | Flags.AC | Flags.ID | Flags.RF;
        int iopl = (int)((SystemFlags >> 12) & 3);
        if (oldCpl == 0) mask |= Flags.IOPL | Flags.IF | Flags.VIF | Flags.VIP;
        else if (oldCpl <= iopl) mask |= Flags.IF;
        if (osz == 2) mask &= 0xFFFF;
        Sregs[CS] = cs;
        Sregs[CS].Attr |= 1;
        Rflags = (Rflags & ~mask) | (nfl & mask) | 2;
        UpdateMode();
        if (popStack)
        {
            LoadSegmentForReturn(nss, rpl);
            StackSize = Bitness == 64 ? 8 : Sregs[SS].Big ? 4 : 2;
            if (Bitness == 64) Gpr[4] = nsp; else SetSp(nsp);
        }
        else SetSp(sp + (ulong)(3 * osz));
        Rip = Bitness == 64 ? nrip : osz == 2 ? (ushort)nrip : (uint)nrip;
        if (rpl > oldCpl)
        {
            // Data segments the outer level may not use become null.
            for (int s = 0; s < 6; s++)
            {
                if (s is CS or SS) continue;
                ref var sg = ref Sregs[s];
                bool conformingCode = (sg.Attr & 0x1C) == 0x1C;
                if ((sg.Attr & 0x10000) == 0 && (sg.Attr & 0x10) != 0 && !conformingCode && sg.Dpl < rpl)
                    sg = new Seg { Sel = 0, Attr = 0x10000 };
            }
        }
        _nmiBlocked = false;
    }

    private void ExecSyscall()
    {
        if ((Efer & EferSce) == 0 || !LongMode) throw UD();
        Gpr[1] = Rip;
        Gpr[11] = Rflags & ~Flags.RF;
        ushort cs = (ushort)((Star >> 32) & 0xFFFC);
        Rip = Bitness == 64 ? Lstar : Cstar;
        Sregs[CS] = new Seg { Sel = cs, Base = 0, Limit = 0xFFFFFFFF, Attr = 0xA09B };
        Sregs[SS] = new Seg { Sel = (ushort)(cs + 8), Base = 0, Limit = 0xFFFFFFFF, Attr = 0xC093 };
        Rflags = (Rflags & ~Sfmask & ~Flags.RF) | 2;
        UpdateMode();
        _endBlock = true;
    }

    private void ExecSysret(bool to64)
    {
        if ((Efer & EferSce) == 0 || !LongMode) throw UD();
        if (Cpl != 0 || Bitness != 64) throw GP();
        ushort bas = (ushort)(Star >> 48);
        if (to64)
        {
            if ((ulong)(((long)Gpr[1] << 16) >> 16) != Gpr[1]) throw GP();
            Sregs[CS] = new Seg { Sel = (ushort)((bas + 16) | 3), Base = 0, Limit = 0xFFFFFFFF, Attr = 0xA0FB };
            Rip = Gpr[1];
        }
        else
        {
            Sregs[CS] = new Seg { Sel = (ushort)(bas | 3), Base = 0, Limit = 0xFFFFFFFF, Attr = 0xC0FB };
            Rip = (uint)Gpr[1];
        }
        Sregs[SS] = new Seg { Sel = (ushort)((bas + 8) | 3), Base = 0, Limit = 0xFFFFFFFF, Attr = 0xC0F3 };
        Rflags = (Gpr[11] & 0x3C7FD7) | 2;
        UpdateMode();
        _irqHint = true;
        _endBlock = true;
    }

    // ---------- exceptions and interrupts ----------

    /// <summary>Delivers a fault raised by an instruction (RIP already points at it), escalating to #DF and triple fault.</summary>
    private void DeliverException(int vector, bool hasErr, uint err)
    {
        ExceptionsDelivered++;
        if (_deliveryDepth > 0) throw new CpuTripleFault();
        _deliveryDepth++;
        try
        {
            try
            {
                DeliverInterrupt(vector, hasErr, err, InterruptKind.Exception);
            }
            catch (CpuFault)
            {
                if (vector == 8) throw new CpuTripleFault();
                try
                {
                    DeliverInterrupt(8, true, 0, InterruptKind.Exception);
                }
                catch (CpuFault)
                {
                    throw new CpuTripleFault();
                }
            }
        }
        finally
        {
            _deliveryDepth--;
        }
    }

    /// <summary>Delivers vector <paramref name="vec"/> through the IVT/IDT; the return address is the current RIP.</summary>
    internal void DeliverInterrupt(int vec, bool hasErr, uint err, InterruptKind kind)
    {
        if (_trace is not null) TraceEvent($"{kind} vector {vec} err 0x{err:x} at RIP 0x{Rip:x} (CS 0x{Sregs[CS].Sel:x}) CR2 0x{Cr2:x} RSP 0x{Gpr[4]:x}");
        _endBlock = true;
        _halted = false;
        uint ext = kind is InterruptKind.External or InterruptKind.Nmi ? 1u : 0u;
        if (!Protected)
        {
            ulong entryAddr = IdtBase + (ulong)vec * 4;
            if ((ulong)vec * 4 + 3 > IdtLimit) throw GP();
            uint entry = (uint)ReadSys(entryAddr, 4);
            Push(Rflags & 0xFFFF, 2);
            Push(Sregs[CS].Sel, 2);
            Push(Rip & 0xFFFF, 2);
            Rflags &= ~(Flags.IF | Flags.TF | Flags.AC | Flags.RF);
            Sregs[CS].Sel = (ushort)(entry >> 16);
            Sregs[CS].Base = (ulong)(entry >> 16) << 4;
            Rip = entry & 0xFFFF;
            UpdateMode();
            return;
        }
        uint idtErr = (uint)(vec * 8 + 2) | ext;
        if (LongMode)
        {
            if ((ulong)vec * 16 + 15 > IdtLimit) throw GP(idtErr);
            ulong w0 = ReadSys(IdtBase + (ulong)vec * 16, 8);
            ulong w1 = ReadSys(IdtBase + (ulong)vec * 16 + 8, 8);
            uint type = (uint)(w0 >> 40) & 0x1F;
            int dpl = (int)(w0 >> 45) & 3;
            if (type is not (0xE or 0xF)) throw GP(idtErr);
            if (kind == InterruptKind.Software && dpl < Cpl) throw GP(idtErr);
            if (((w0 >> 47) & 1) == 0) throw Fault(11, idtErr, true);
            ulong target = (w0 & 0xFFFF) | ((w0 >> 32) & 0xFFFF0000) | (w1 << 32);
            ushort sel = (ushort)(w0 >> 16);
            int ist = (int)(w0 >> 32) & 7;
            var cs = LoadCodeDescriptor(sel, out _);
            if (!cs.Long || cs.Big) throw GP((uint)(sel & 0xFFFC) | ext);
            int newCpl = (cs.Attr & 4) != 0 ? Cpl : cs.Dpl;
            if (newCpl > Cpl) throw GP((uint)(sel & 0xFFFC) | ext);
            ulong rsp;
            if (ist != 0) rsp = ReadSys(Tr.Base + 0x24 + (ulong)(ist - 1) * 8, 8);
            else if (newCpl < Cpl) rsp = ReadSys(Tr.Base + 4 + (ulong)newCpl * 8, 8);
            else rsp = Gpr[4];
            rsp &= ~0xFUL;
            ulong oldRsp = Gpr[4];
            ushort oldSs = Sregs[SS].Sel;
            if (Bitness != 64 && newCpl == Cpl && ist == 0) rsp = (uint)oldRsp & ~0xFUL;
            WriteSys(rsp - 8, 8, oldSs);
            WriteSys(rsp - 16, 8, oldRsp);
            WriteSys(rsp - 24, 8, Rflags & ~Flags.RF);
            WriteSys(rsp - 32, 8, Sregs[CS].Sel);
            WriteSys(rsp - 40, 8, Rip);
            rsp -= 40;
            if (hasErr) { rsp -= 8; WriteSys(rsp, 8, err); }
            Gpr[4] = rsp;
            if (newCpl < Cpl) Sregs[SS] = new Seg { Sel = (ushort)newCpl, Attr = 0x10000 | ((uint)newCpl << 5) | 0x4093 };
            cs.Sel = (ushort)((sel & ~3) | newCpl);
            cs.Attr |= 1;
            Sregs[CS] = cs;
            Rip = target;
            Rflags &= ~(Flags.TF | Flags.NT | Flags.RF | Flags.VM);
            if (type == 0xE) Rflags &= ~Flags.IF;
            UpdateMode();
            return;
        }
        // Legacy protected mode.
        if ((ulong)vec * 8 + 7 > IdtLimit) throw GP(idtErr);
        ulong g = ReadSys(IdtBase + (ulong)vec * 8, 8);
        uint gtype = (uint)(g >> 40) & 0x1F;
        int gdpl = (int)(g >> 45) & 3;
        if (gtype == 0x5) throw new CpuUnimplemented("interrupt through a task gate");
        if (gtype is not (0xE or 0xF or 0x6 or 0x7)) throw GP(idtErr);
        if (kind == InterruptKind.Software && gdpl < Cpl) throw GP(idtErr);
        if (((g >> 47) & 1) == 0) throw Fault(11, idtErr, true);
        int gsz = (gtype & 8) != 0 ? 4 : 2;
        ulong off = (g & 0xFFFF) | ((g >> 32) & 0xFFFF0000);
        if (gsz == 2) off &= 0xFFFF;
        ushort gsel = (ushort)(g >> 16);
        var gcs = LoadCodeDescriptor(gsel, out _);
        int ncpl = (gcs.Attr & 4) != 0 ? Cpl : gcs.Dpl;
        if (ncpl > Cpl) throw GP((uint)(gsel & 0xFFFC) | ext);
        if ((SystemFlags & Flags.VM) != 0) throw new CpuUnimplemented("interrupt from virtual-8086 mode");
        ulong flagsToPush = Rflags & ~Flags.RF;
        ushort ocs = Sregs[CS].Sel;
        if (ncpl < Cpl)
        {
            bool tss32 = (Tr.Attr & 8) != 0;
            ulong nesp = tss32 ? ReadSys(Tr.Base + 4 + (ulong)ncpl * 8, 4) : ReadSys(Tr.Base + 2 + (ulong)ncpl * 4, 2);
            ushort nss = (ushort)(tss32 ? ReadSys(Tr.Base + 8 + (ulong)ncpl * 8, 2) : ReadSys(Tr.Base + 4 + (ulong)ncpl * 4, 2));
            ushort oss = Sregs[SS].Sel;
            ulong oesp = Gpr[4];
            if ((nss & ~3) == 0) throw Fault(10, (uint)(nss & 0xFFFC) | ext, true);
            ulong sd = ReadDescriptor(nss);
            var ss = ParseDescriptor(sd, nss);
            if ((ss.Attr & 0x1A) != 0x12 || ss.Dpl != ncpl) throw Fault(10, (uint)(nss & 0xFFFC) | ext, true);
            ulong mask = ss.Big ? 0xFFFFFFFF : 0xFFFF;
            ulong sp = nesp;
            void PushNew(ulong v)
            {
                sp = (sp - (ulong)gsz) & mask;
                WriteSys((uint)(ss.Base + sp), gsz, v);
            }
            PushNew(oss); PushNew(oesp); PushNew(flagsToPush); PushNew(ocs); PushNew(Rip);
            if (hasErr) PushNew(err);
            Sregs[SS] = ss;
            if (ss.Big) Gpr[4] = (uint)sp; else Gpr[4] = (Gpr[4] & ~0xFFFFUL) | sp;
        }
        else
        {
            ulong mask = Sregs[SS].Big ? 0xFFFFFFFF : 0xFFFF;
            ulong sp = Gpr[4] & mask;
            ulong sbase = Sregs[SS].Base;
            void PushSame(ulong v)
            {
                sp = (sp - (ulong)gsz) & mask;
                WriteSys((uint)(sbase + sp), gsz, v);
            }
            PushSame(flagsToPush); PushSame(ocs); PushSame(Rip);
            if (hasErr) PushSame(err);
            if (Sregs[SS].Big) Gpr[4] = (uint)sp; else Gpr[4] = (Gpr[4] & ~0xFFFFUL) | sp;
        }
        gcs.Sel = (ushort)((gsel & ~3) | ncpl);
        gcs.Attr |= 1;
        Sregs[CS] = gcs;
        Rip = off;
        Rflags &= ~(Flags.TF | Flags.NT | Flags.RF | Flags.VM);
        if ((gtype & 1) == 0) Rflags &= ~Flags.IF;
        UpdateMode();
    }
}
