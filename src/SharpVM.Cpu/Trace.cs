using System.Runtime.CompilerServices;
using Iced.Intel;

namespace SharpVM.Cpu;

/// <summary>
/// Off-by-default instruction trace for debugging guests: set <c>SHARPVM_TRACE=/path/file</c> and
/// optionally <c>SHARPVM_TRACE_SKIP=n</c> (instructions to skip first) and <c>SHARPVM_TRACE_COUNT=n</c>
/// (how many to write); or <c>SHARPVM_OPSTATS=/path/file</c> for counts by instruction form. Each trace line: instruction index, RIP and the general-purpose registers before it.
/// The switch is a static readonly field, so the JIT removes the check when tracing is off.
/// </summary>
public sealed partial class EmulatorVcpu
{
    private static readonly bool s_trace = Environment.GetEnvironmentVariable("SHARPVM_TRACE") is { Length: > 0 }
        || Environment.GetEnvironmentVariable("SHARPVM_OPSTATS") is { Length: > 0 };
    private static readonly string? s_opStatsPath = Environment.GetEnvironmentVariable("SHARPVM_OPSTATS") is { Length: > 0 } o ? o : null;
    private long[]? _opStats;
    private static readonly long s_traceSkip = long.TryParse(Environment.GetEnvironmentVariable("SHARPVM_TRACE_SKIP"), out long s) ? s : 0;
    private static readonly long s_traceCount = long.TryParse(Environment.GetEnvironmentVariable("SHARPVM_TRACE_COUNT"), out long c) ? c : 5_000_000;
    private static StreamWriter? s_traceWriter;
    private long _traceIndex;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void TraceInstruction(in Instruction ins)
    {
        if (s_opStatsPath is not null)
        {
            // SHARPVM_OPSTATS=/path: executed instructions by Iced code (with or without a fast handler), rewritten every 2^24.
            var st = _opStats ??= new long[Enum.GetValues<Code>().Length + 16];
            st[(int)ins.Code]++;
            if ((++_traceIndex & 0xFFFFFF) == 0)
            {
                using var sw = new StreamWriter($"{s_opStatsPath}.{Id}");
                foreach (var (code, count) in st.Select((v, c) => ((Code)c, v)).Where(x => x.v > 0).OrderByDescending(x => x.v)) sw.WriteLine($"{count} {code}");
            }
            return;
        }
        ulong rip = ins.IP;
        long n = _traceIndex++;
        if (n < s_traceSkip || n >= s_traceSkip + s_traceCount) return;
        var w = s_traceWriter ??= new StreamWriter(Environment.GetEnvironmentVariable("SHARPVM_TRACE")! + "." + Id) { AutoFlush = false };
        var g = Gpr;
        w.Write($"{n} {rip:x} ax={g[0]:x} cx={g[1]:x} dx={g[2]:x} bx={g[3]:x} sp={g[4]:x} bp={g[5]:x} si={g[6]:x} di={g[7]:x} ");
        w.WriteLine($"r8={g[8]:x} r9={g[9]:x} r10={g[10]:x} r11={g[11]:x} r12={g[12]:x} r13={g[13]:x} r14={g[14]:x} r15={g[15]:x} fl={Rflags:x}  {ins}");
        if (n == s_traceSkip + s_traceCount - 1 || (n & 0xFFFF) == 0) w.Flush();
    }

    /// <summary>Flushes the trace file (when a vCPU stops).</summary>
    internal static void FlushTrace() => s_traceWriter?.Flush();
}
