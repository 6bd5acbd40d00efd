using System.Runtime.CompilerServices;
using SharpVM.Memory;

namespace SharpVM.Cpu;

/// <summary>One software TLB entry: a 4 KiB linear page, its physical page and the accesses allowed.</summary>
internal unsafe struct TlbEntry
{
    public ulong Vpn;
    public ulong Ppn;
    /// <summary>Host address of the page, or null for MMIO.</summary>
    public byte* Host;
    /// <summary>Allowed accesses for the fast path (0 for MMIO pages, so they always take the slow path).</summary>
    public int FastPerm;
    /// <summary>Allowed accesses.</summary>
    public int Perm;
    public bool Global;
    /// <summary>log2(page size / 4 KiB) of the guest mapping this 4 KiB entry came from (0, 9, 10 or 18).</summary>
    public byte LargeShift;
}

public sealed unsafe partial class EmulatorVcpu
{
    internal const int PermSR = 1, PermSW = 2, PermUR = 4, PermUW = 8, PermSX = 16, PermUX = 32;
    private const int TlbBits = 10, TlbSize = 1 << TlbBits, TlbMask = TlbSize - 1;
    private TlbEntry[] _tlb = null!;
    private bool _tlbHasLarge;
    private byte _walkLargeShift;
    internal int NeedR = PermSR, NeedW = PermSW, NeedX = PermSX;
    private bool _endBlock;
    private ulong _blockPpn = ulong.MaxValue, _blockPpn2 = ulong.MaxValue;

    /// <summary>
    /// The TLB entry for virtual page <paramref name="vpn"/>'s slot, without a bounds check: every guest memory access
    /// and block entry goes through here. SAFETY: the index is masked to TlbSize, the length of _tlb (InitTlb is its
    /// only assignment).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref TlbEntry TlbSlot(ulong vpn) =>
        ref Unsafe.Add(ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(_tlb), (int)vpn & TlbMask);

    private void InitTlb()
    {
        _tlb = new TlbEntry[TlbSize];
        FlushTlb(true);
    }

    internal void FlushTlb(bool includeGlobal)
    {
        var t = _tlb;
        for (int i = 0; i < t.Length; i++)
            if (includeGlobal || !t[i].Global) t[i].Vpn = ulong.MaxValue;
        if (includeGlobal) _tlbHasLarge = false;
    }

    internal void InvalidatePage(ulong la)
    {
        ulong vpn = la >> 12;
        ref var e = ref _tlb[(int)vpn & TlbMask];
        if (e.Vpn == vpn) e.Vpn = ulong.MaxValue;
        if (!_tlbHasLarge) return;
        // The page may be part of a large mapping cached as many 4 KiB entries: drop all of them.
        var t = _tlb;
        for (int i = 0; i < t.Length; i++)
        {
            int s = t[i].LargeShift;
            if (s != 0 && t[i].Vpn >> s == vpn >> s) t[i].Vpn = ulong.MaxValue;
        }
    }

    private void UpdateTlbPermissions()
    {
        bool user = Cpl == 3;
        NeedR = user ? PermUR : PermSR;
        NeedW = user ? PermUW : PermSW;
        NeedX = user ? PermUX : PermSX;
    }

    private bool Paging => (Cr0 & Cr0Pg) != 0;

    // ---------- physical memory ----------

    /// <summary>Host address of a RAM page, or null if the page is not RAM.</summary>
    internal byte* HostPage(ulong ppn)
    {
        ulong pa = ppn << 12;
        var region = _mem.FindRegion(new GuestAddress(pa));
        if (region is null) return null;
        // SAFETY: the page lies inside a native mmap'd RAM region (checked by GetReference), which lives as long as the VM.
        return (byte*)Unsafe.AsPointer(ref _mem.GetReference(new GuestAddress(pa), 4096));
    }

    internal ulong PhysRead64(ulong pa)
    {
        var region = _mem.FindRegion(new GuestAddress(pa));
        if (region is null || !region.Contains(new GuestAddress(pa), 8)) return 0;
        return _mem.Read<ulong>(new GuestAddress(pa));
    }

    internal uint PhysRead32(ulong pa)
    {
        var region = _mem.FindRegion(new GuestAddress(pa));
        if (region is null || !region.Contains(new GuestAddress(pa), 4)) return 0;
        return _mem.Read<uint>(new GuestAddress(pa));
    }

    private void PhysSetBits64(ulong pa, ulong bits)
    {
        if (_mem.FindRegion(new GuestAddress(pa)) is null) return;
        ref byte b = ref _mem.GetReference(new GuestAddress(pa), 8);
        Interlocked.Or(ref Unsafe.As<byte, ulong>(ref b), bits);
        NotePageWritten(pa >> 12);
    }

    private void PhysSetBits32(ulong pa, uint bits)
    {
        if (_mem.FindRegion(new GuestAddress(pa)) is null) return;
        ref byte b = ref _mem.GetReference(new GuestAddress(pa), 4);
        Interlocked.Or(ref Unsafe.As<byte, uint>(ref b), bits);
        NotePageWritten(pa >> 12);
    }

    // ---------- page walk ----------

    /// <summary>
    /// Walks the guest page tables for <paramref name="la"/>. Returns false with the #PF error code in
    /// <paramref name="perm"/> when the access is not allowed.
    /// </summary>
    internal bool TryWalk(ulong la, bool write, bool user, bool fetch, bool setBits, out ulong phys, out int perm, out bool global)
    {
        global = false;
        perm = 0;
        _walkLargeShift = 0;
        if (!Paging)
        {
            phys = Bitness == 64 ? la : la & 0xFFFFFFFF;
            perm = 63;
            return true;
        }
        bool nxe = (Efer & EferNxe) != 0;
        bool u = true, w = true, nx = false;
        ulong leafAddr;
        ulong leaf;
        ulong pageMask;
        bool large = false;
        phys = 0;
        int err = (write ? 2 : 0) | (user ? 4 : 0) | (fetch && nxe ? 16 : 0);
        if ((Cr4 & Cr4Pae) == 0)
        {
            // 32-bit paging.
            uint la32 = (uint)la;
            ulong pdeAddr = (Cr3 & 0xFFFFF000) + ((la32 >> 22) * 4);
            uint pde = PhysRead32(pdeAddr);
            if ((pde & 1) == 0) { perm = err; return false; }
            u &= (pde & 4) != 0; w &= (pde & 2) != 0;
            if ((pde & 0x80) != 0 && (Cr4 & Cr4Pse) != 0)
            {
                if (setBits) PhysSetBits32(pdeAddr, (uint)(0x20 | (write ? 0x40 : 0)));
                ulong basePa = (pde & 0xFFC00000UL) | ((ulong)(pde >> 13) & 0xFF) << 32;
                phys = basePa | (la32 & 0x3FFFFF);
                large = true;
                _walkLargeShift = 10;
                leaf = pde; leafAddr = pdeAddr; pageMask = 0;
                global = (pde & 0x100) != 0 && (Cr4 & Cr4Pge) != 0;
                return Check(ref perm);
            }
            if (setBits && (pde & 0x20) == 0) PhysSetBits32(pdeAddr, 0x20);
            ulong pteAddr = (pde & 0xFFFFF000UL) + (((la32 >> 12) & 0x3FF) * 4);
            uint pte = PhysRead32(pteAddr);
            if ((pte & 1) == 0) { perm = err; return false; }
            u &= (pte & 4) != 0; w &= (pte & 2) != 0;
            if (setBits) PhysSetBits32(pteAddr, (uint)(0x20 | (write ? 0x40 : 0)));
            phys = (pte & 0xFFFFF000UL) | (la32 & 0xFFF);
            global = (pte & 0x100) != 0 && (Cr4 & Cr4Pge) != 0;
            leaf = pte; leafAddr = pteAddr; pageMask = 0;
            return Check(ref perm);
        }

        const ulong AddrMask = 0x000F_FFFF_FFFF_F000UL;
        ulong table;
        int level;
        if (LongMode)
        {
            table = Cr3 & AddrMask;
            level = 4;
        }
        else
        {
            // PAE: the PDPTE comes straight from memory (no PDPTE register caching).
            ulong pdpte = PhysRead64((Cr3 & 0xFFFFFFE0) + ((la >> 30) & 3) * 8);
            if ((pdpte & 1) == 0) { perm = err; return false; }
            table = pdpte & AddrMask;
            level = 2;
        }
        while (true)
        {
            int shift = 12 + 9 * (level - 1);
            ulong entryAddr = table + ((la >> shift) & 511) * 8;
            ulong e = PhysRead64(entryAddr);
            if ((e & 1) == 0) { perm = err; return false; }
            if (nxe && (e & (1UL << 63)) != 0) nx = true;
            else if (!nxe && (e & (1UL << 63)) != 0) { perm = err | 9; return false; }
            u &= (e & 4) != 0; w &= (e & 2) != 0;
            bool ps = level is 2 or 3 && (e & 0x80) != 0;
            if (level == 1 || ps)
            {
                if (setBits) PhysSetBits64(entryAddr, 0x20UL | (write ? 0x40UL : 0));
                pageMask = (1UL << shift) - 1;
                phys = (e & AddrMask & ~pageMask) | (la & pageMask);
                large = ps;
                if (ps) _walkLargeShift = (byte)(shift - 12);
                global = (e & 0x100) != 0 && (Cr4 & Cr4Pge) != 0;
                leaf = e; leafAddr = entryAddr;
                return Check(ref perm);
            }
            if (setBits && (e & 0x20) == 0) PhysSetBits64(entryAddr, 0x20);
            table = e & AddrMask;
            level--;
        }

        bool Check(ref int p)
        {
            _ = leafAddr; _ = pageMask;
            if (large) _tlbHasLarge = true;
            bool wp = (Cr0 & Cr0Wp) != 0;
            bool dirty = (leaf & 0x40) != 0 || write;
            bool ok = true;
            if (user && !u) ok = false;
            if (write && (user ? !w : wp && !w)) ok = false;
            if (fetch && nx) ok = false;
            if (!ok) { p = err | 1; return false; }
            int pm = PermSR;
            if (nx == false) pm |= PermSX;
            if (dirty && (w || !wp)) pm |= PermSW;
            if (u)
            {
                pm |= PermUR;
                if (!nx) pm |= PermUX;
                if (w && dirty) pm |= PermUW;
            }
            p = pm;
            return true;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ref TlbEntry Fill(ulong la, int need)
    {
        if (LongMode && (ulong)(((long)la << 16) >> 16) != la) throw GP();
        if (!LongMode) la &= 0xFFFFFFFF;
        ref var e = ref TlbSlot(la >> 12);
        if (e.Vpn == la >> 12 && (e.Perm & need) != 0) return ref e;
        bool write = (need & (PermSW | PermUW)) != 0;
        bool user = (need & (PermUR | PermUW | PermUX)) != 0;
        bool fetch = (need & (PermSX | PermUX)) != 0;
        if (!TryWalk(la, write, user, fetch, true, out ulong phys, out int perm, out bool global))
        {
            Cr2 = la;
            throw Fault(14, (uint)perm, true);
        }
        e.Vpn = la >> 12;
        e.Ppn = phys >> 12;
        e.Host = HostPage(e.Ppn);
        e.Perm = perm;
        e.FastPerm = e.Host != null ? perm : 0;
        e.Global = global;
        e.LargeShift = _walkLargeShift;
        return ref e;
    }

    // ---------- linear memory access ----------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong Read(ulong la, int size) => Read(la, size, NeedR);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong Read(ulong la, int size, int need) => TryReadFast(la, size, need, out ulong v) ? v : ReadSlow(la, size, need);

    /// <summary>
    /// Whether TLB entry <paramref name="e"/> serves an access of <paramref name="size"/> bytes at <paramref name="la"/>
    /// needing <paramref name="need"/> on the fast path: it maps la's page, allows the access, and the access stays in
    /// the page. FastPerm is non-zero only for entries whose Host is a whole 4 KiB RAM page (HostPage).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool ServesFast(in TlbEntry e, ulong la, int size, int need) =>
        e.Vpn == la >> 12 && (e.FastPerm & need) != 0 && ((uint)la & 0xFFF) + (uint)size <= 4096;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong ReadSlow(ulong la, int size, int need)
    {
        uint off = (uint)la & 0xFFF;
        if (off + (uint)size > 4096)
        {
            ulong v = 0;
            for (int i = 0; i < size; i++) v |= ReadSlow(la + (ulong)i, 1, need) << (8 * i);
            return v;
        }
        ref var e = ref Fill(la, need);
        if (e.Host != null)
        {
            byte* p = e.Host + off;
            return size switch { 1 => *p, 2 => Unsafe.ReadUnaligned<ushort>(p), 4 => Unsafe.ReadUnaligned<uint>(p), _ => Unsafe.ReadUnaligned<ulong>(p) };
        }
        Span<byte> buf = stackalloc byte[8];
        buf.Clear();
        _io!.MmioRead((e.Ppn << 12) | off, buf[..size]);
        return BitConverter.ToUInt64(buf);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Write(ulong la, int size, ulong v) => Write(la, size, v, NeedW);

    /// <summary>
    /// Read's TLB fast path alone: false (nothing read) on a miss, where Read would walk the page tables and may fault.
    /// Translated loops call it so that what a fault needs (registers written back, FaultRip) is done only on the miss.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryReadFast(ulong la, int size, int need, out ulong v)
    {
        ref var e = ref TlbSlot(la >> 12);
        if (!ServesFast(in e, la, size, need))
        {
            v = 0;
            return false;
        }
        // SAFETY: ServesFast: Host is a whole 4 KiB RAM page and the access stays inside it.
        byte* p = e.Host + ((uint)la & 0xFFF);
        v = size switch { 1 => *p, 2 => Unsafe.ReadUnaligned<ushort>(p), 4 => Unsafe.ReadUnaligned<uint>(p), _ => Unsafe.ReadUnaligned<ulong>(p) };
        return true;
    }

    /// <summary>Write's TLB fast path alone (see <see cref="TryReadFast"/>): false (nothing written) on a miss.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryWriteFast(ulong la, int size, ulong v, int need)
    {
        ref var e = ref TlbSlot(la >> 12);
        if (!ServesFast(in e, la, size, need)) return false;
        // SAFETY: ServesFast: Host is a whole 4 KiB RAM page and the access stays inside it.
        StoreToPage(ref e, (uint)la & 0xFFF, size, v);
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Write(ulong la, int size, ulong v, int need)
    {
        if (!TryWriteFast(la, size, v, need)) WriteSlow(la, size, v, need);
    }

    /// <summary>
    /// Stores into a RAM page the TLB entry maps (the caller checked that the access stays inside it), ends the
    /// block if that page holds the running code, and marks the page dirty for the software dirty log.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void StoreToPage(ref TlbEntry e, uint off, int size, ulong v)
    {
        byte* p = e.Host + off;
        switch (size)
        {
            case 1: *p = (byte)v; break;
            case 2: Unsafe.WriteUnaligned(p, (ushort)v); break;
            case 4: Unsafe.WriteUnaligned(p, (uint)v); break;
            default: Unsafe.WriteUnaligned(p, v); break;
        }
        NotePageWritten(e.Ppn);
    }

    /// <summary>
    /// After a store into RAM page <paramref name="ppn"/> (every writer of the vCPU calls it): ends the running block if
    /// the page holds it, invalidates code decoded from the page, marks it dirty.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void NotePageWritten(ulong ppn)
    {
        if (ppn == _blockPpn || ppn == _blockPpn2) _endBlock = true;
        _codePages.NoteWrite(ppn);
        var log = _mem.SoftwareDirtyLog;
        if (log != null) log.MarkPage(ppn);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void WriteSlow(ulong la, int size, ulong v, int need)
    {
        uint off = (uint)la & 0xFFF;
        if (off + (uint)size > 4096)
        {
            // Check both pages before writing anything, so a fault leaves memory untouched.
            Fill(la, need);
            Fill(la + (ulong)size - 1, need);
            for (int i = 0; i < size; i++) WriteSlow(la + (ulong)i, 1, v >> (8 * i), need);
            return;
        }
        ref var e = ref Fill(la, need);
        if (e.Host != null)
        {
            StoreToPage(ref e, off, size, v);
            return;
        }
        Span<byte> buf = stackalloc byte[8];
        BitConverter.TryWriteBytes(buf, v);
        _io!.MmioWrite((e.Ppn << 12) | off, buf[..size]);
    }

    /// <summary>
    /// Host pointer for an aligned-enough RAM access that does not cross a page (for LOCK-ed
    /// atomics), or null when the access must be emulated non-atomically (MMIO or page-crossing).
    /// </summary>
    // SAFETY: the pointer returned is inside one RAM page (the access does not cross it); callers use
    // it for at most `size` bytes and only until the next guest memory operation.
    internal byte* WritablePointer(ulong la, int size)
    {
        if (((uint)la & 0xFFF) + (uint)size > 4096) return null;
        ref var e = ref Fill(la, NeedW);
        if (e.Host == null) return null;
        NotePageWritten(e.Ppn); // before the caller writes: the block ends after the instruction and is decoded again
        return e.Host + ((uint)la & 0xFFF);
    }

    /// <summary>Translates an instruction fetch; returns the physical address (host page via <paramref name="host"/>).</summary>
    internal ulong TranslateFetch(ulong la, out byte* host)
    {
        ref var e = ref TlbSlot(la >> 12);
        if (e.Vpn != la >> 12 || (e.Perm & NeedX) == 0) e = ref Fill(la, NeedX);
        host = e.Host;
        return (e.Ppn << 12) | ((uint)la & 0xFFF);
    }

    /// <summary>
    /// The read of a read-modify-write instruction, checked for write access too: a read-only (copy-on-write)
    /// page then faults before the instruction has changed any flags (the handler must see RFLAGS as before
    /// it, and ADC/SBB/RCL re-run after the fault must read the old CF), and with the W bit in the error
    /// code, as on hardware.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong ReadForWrite(ulong la, int size) => Read(la, size, NeedW);

    // Supervisor-implicit accesses (descriptor tables, TSS, interrupt frames).
    internal ulong ReadSys(ulong la, int size) => Read(la, size, PermSR);
    internal void WriteSys(ulong la, int size, ulong v) => Write(la, size, v, PermSW);
}
