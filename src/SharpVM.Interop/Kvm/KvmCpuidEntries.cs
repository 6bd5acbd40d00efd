namespace SharpVM.Interop.Kvm;

/// <summary>Copies kvm_cpuid_entry2 arrays out of kernel buffers.</summary>
internal static unsafe class KvmCpuidEntries
{
    /// <summary>
    /// The <paramref name="count"/> entries at <paramref name="source"/> as a new array. A plain
    /// memory copy rather than <c>ReadOnlySpan&lt;KvmCpuidEntry2&gt;.ToArray()</c>: that is a CoreLib
    /// generic over our struct, which ReadyToRun cannot precompile, so it would be JIT-compiled on
    /// the first VM's setup path (bench/README.md).
    /// </summary>
    public static KvmCpuidEntry2[] Copy(KvmCpuidEntry2* source, int count)
    {
        var entries = new KvmCpuidEntry2[count];
        long bytes = (long)count * sizeof(KvmCpuidEntry2);
        // SAFETY: the array is pinned for the copy and holds exactly count entries; the caller vouches
        // for count entries at source (the kernel filled them in and set nent).
        fixed (KvmCpuidEntry2* destination = entries) Buffer.MemoryCopy(source, destination, bytes, bytes);
        return entries;
    }
}
