using System.Runtime.InteropServices;

namespace SharpVM.Storage.Qcow2;

/// <summary>
/// Compressed-cluster codecs. QEMU writes raw deflate with a 4 KiB window (windowBits -12) and inflates with the
/// same window, so data deflated with .NET's fixed 32 KiB window would be unreadable by qemu. .NET exposes no
/// window size, hence the system zlib (always present on Debian) for compression; inflation is window-agnostic
/// and uses it too for symmetry. zstd clusters are plain zstd frames; QEMU reads them with a streaming
/// decoder because the sector-rounded slot carries trailing garbage, so we do the same.
/// </summary>
internal static unsafe class NativeCompression
{
    private const string Zlib = "libz.so.1";
    private const string Zstd = "libzstd.so.1";

    [StructLayout(LayoutKind.Sequential)]
    private struct ZStream
    {
        public byte* next_in; public uint avail_in; public nuint total_in;
        public byte* next_out; public uint avail_out; public nuint total_out;
        public IntPtr msg; public IntPtr state; public IntPtr zalloc; public IntPtr zfree; public IntPtr opaque;
        public int data_type; public nuint adler; public nuint reserved;
    }

    [DllImport(Zlib)] private static extern int deflateInit2_(ZStream* s, int level, int method, int windowBits, int memLevel, int strategy, [MarshalAs(UnmanagedType.LPStr)] string version, int size);
    [DllImport(Zlib)] private static extern int deflate(ZStream* s, int flush);
    [DllImport(Zlib)] private static extern int deflateEnd(ZStream* s);
    [DllImport(Zlib)] private static extern int inflateInit2_(ZStream* s, int windowBits, [MarshalAs(UnmanagedType.LPStr)] string version, int size);
    [DllImport(Zlib)] private static extern int inflate(ZStream* s, int flush);
    [DllImport(Zlib)] private static extern int inflateEnd(ZStream* s);

    /// <summary>Returns compressed length, or -1 if it would not be smaller than the input.</summary>
    public static int Deflate(ReadOnlySpan<byte> src, Span<byte> dst)
    {
        var s = new ZStream();
        if (deflateInit2_(&s, 6, 8, -12, 9, 0, "1.2.11", sizeof(ZStream)) != 0)
            throw new DiskImageException("zlib deflateInit2 failed");
        try
        {
            fixed (byte* pi = src) fixed (byte* po = dst)
            {
                s.next_in = pi; s.avail_in = (uint)src.Length; s.next_out = po; s.avail_out = (uint)dst.Length;
                int rc = deflate(&s, 4 /* Z_FINISH */);
                if (rc != 1 /* Z_STREAM_END */) return -1;
                return (int)s.total_out;
            }
        }
        finally { deflateEnd(&s); }
    }

    public static void Inflate(ReadOnlySpan<byte> src, Span<byte> dst)
    {
        var s = new ZStream();
        if (inflateInit2_(&s, -12, "1.2.11", sizeof(ZStream)) != 0)
            throw new DiskImageException("zlib inflateInit2 failed");
        try
        {
            fixed (byte* pi = src) fixed (byte* po = dst)
            {
                s.next_in = pi; s.avail_in = (uint)src.Length; s.next_out = po; s.avail_out = (uint)dst.Length;
                int rc = inflate(&s, 4);
                // Z_BUF_ERROR with a full output buffer is fine: the slot holds trailing sector padding.
                if (rc is not (1 or -5) || s.total_out != (nuint)dst.Length)
                    throw new CorruptImageException($"compressed cluster does not inflate to a full cluster (zlib rc {rc})");
            }
        }
        finally { inflateEnd(&s); }
    }

    [StructLayout(LayoutKind.Sequential)] private struct ZstdBuf { public byte* ptr; public nuint size; public nuint pos; }
    [DllImport(Zstd)] private static extern nuint ZSTD_compress(byte* dst, nuint dstCap, byte* src, nuint srcSize, int level);
    [DllImport(Zstd)] private static extern uint ZSTD_isError(nuint code);
    [DllImport(Zstd)] private static extern IntPtr ZSTD_createDStream();
    [DllImport(Zstd)] private static extern nuint ZSTD_freeDStream(IntPtr ds);
    [DllImport(Zstd)] private static extern nuint ZSTD_decompressStream(IntPtr ds, ZstdBuf* output, ZstdBuf* input);

    public static int ZstdCompress(ReadOnlySpan<byte> src, Span<byte> dst)
    {
        fixed (byte* pi = src) fixed (byte* po = dst)
        {
            nuint n = ZSTD_compress(po, (nuint)dst.Length, pi, (nuint)src.Length, 3);
            if (ZSTD_isError(n) != 0) return -1;
            return (int)n;
        }
    }

    public static void ZstdDecompress(ReadOnlySpan<byte> src, Span<byte> dst)
    {
        IntPtr ds = ZSTD_createDStream();
        if (ds == IntPtr.Zero) throw new DiskImageException("ZSTD_createDStream failed");
        try
        {
            fixed (byte* pi = src) fixed (byte* po = dst)
            {
                var input = new ZstdBuf { ptr = pi, size = (nuint)src.Length };
                var output = new ZstdBuf { ptr = po, size = (nuint)dst.Length };
                while (output.pos < output.size)
                {
                    nuint before = input.pos + output.pos;
                    nuint rc = ZSTD_decompressStream(ds, &output, &input);
                    if (ZSTD_isError(rc) != 0)
                        throw new CorruptImageException("compressed cluster is not valid zstd data");
                    if (rc == 0 && output.pos < output.size)
                        throw new CorruptImageException("zstd cluster decompresses to less than a cluster");
                    if (input.pos + output.pos == before)
                        throw new CorruptImageException("zstd cluster is truncated");
                }
            }
        }
        finally { ZSTD_freeDStream(ds); }
    }
}
