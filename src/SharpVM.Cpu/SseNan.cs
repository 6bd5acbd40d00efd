using System.Runtime.Intrinsics;
using X86Sse = System.Runtime.Intrinsics.X86.Sse;
using X86Sse2 = System.Runtime.Intrinsics.X86.Sse2;

namespace SharpVM.Cpu;

/// <summary>
/// x86's NaN rule for SSE arithmetic (SDM vol. 1, table 4-7): when a source is a NaN, the result is the
/// first source (the destination) if it is a NaN, otherwise the second, quieted either way. The .NET
/// intrinsics give that only by accident: the JIT treats ADD/MUL as commutative and may swap their
/// operands in optimized code, so the commutative operations get their NaN lanes fixed up here.
/// </summary>
internal static class SseNan
{
    private static readonly Vector128<float> QuietPs = Vector128.Create(0x0040_0000u).AsSingle();
    private static readonly Vector128<double> QuietPd = Vector128.Create(0x0008_0000_0000_0000UL).AsDouble();
    private static readonly Vector128<float> Lane0Ps = Vector128.Create(uint.MaxValue, 0, 0, 0).AsSingle();
    private static readonly Vector128<double> Lane0Pd = Vector128.Create(ulong.MaxValue, 0).AsDouble();

    /// <summary>Packed single: <paramref name="r"/> with NaN lanes taken from <paramref name="a"/>, else <paramref name="b"/>.</summary>
    public static Vector128<float> Ps(Vector128<float> a, Vector128<float> b, Vector128<float> r) => Fix(a, b, r, Vector128<float>.AllBitsSet);

    /// <summary>Scalar single: only lane 0 is computed (the others are <paramref name="a"/>'s, untouched).</summary>
    public static Vector128<float> Ss(Vector128<float> a, Vector128<float> b, Vector128<float> r) => Fix(a, b, r, Lane0Ps);

    public static Vector128<double> Pd(Vector128<double> a, Vector128<double> b, Vector128<double> r) => Fix(a, b, r, Vector128<double>.AllBitsSet);

    public static Vector128<double> Sd(Vector128<double> a, Vector128<double> b, Vector128<double> r) => Fix(a, b, r, Lane0Pd);

    private static Vector128<float> Fix(Vector128<float> a, Vector128<float> b, Vector128<float> r, Vector128<float> lanes)
    {
        var an = X86Sse.And(X86Sse.CompareUnordered(a, a), lanes);
        var bn = X86Sse.And(X86Sse.CompareUnordered(b, b), lanes);
        var pick = X86Sse.Or(X86Sse.And(an, X86Sse.Or(a, QuietPs)), X86Sse.AndNot(an, X86Sse.And(bn, X86Sse.Or(b, QuietPs))));
        var any = X86Sse.Or(an, bn);
        return X86Sse.Or(X86Sse.And(any, pick), X86Sse.AndNot(any, r));
    }

    private static Vector128<double> Fix(Vector128<double> a, Vector128<double> b, Vector128<double> r, Vector128<double> lanes)
    {
        var an = X86Sse2.And(X86Sse2.CompareUnordered(a, a), lanes);
        var bn = X86Sse2.And(X86Sse2.CompareUnordered(b, b), lanes);
        var pick = X86Sse2.Or(X86Sse2.And(an, X86Sse2.Or(a, QuietPd)), X86Sse2.AndNot(an, X86Sse2.And(bn, X86Sse2.Or(b, QuietPd))));
        var any = X86Sse2.Or(an, bn);
        return X86Sse2.Or(X86Sse2.And(any, pick), X86Sse2.AndNot(any, r));
    }
}
