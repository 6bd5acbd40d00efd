using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using SharpVM.Storage;
using static SharpVM.Cli.Img.ImgCommon;

namespace SharpVM.Cli.Img;

/// <summary>`bench`: qemu-img bench's request loop (count, depth, size, step, read/write, flush interval).</summary>
internal static class ImgBench
{
    public static Command Create()
    {
        var cmd = new Command("bench", "Run a simple I/O benchmark: bench [-c count] [-d depth] [-s size] [-S step] [-o offset] [-w] [--pattern N] [--flush-interval N] FILE");
        var count = new Option<int>("-c") { Description = "Number of requests", DefaultValueFactory = _ => 75000 };
        var depth = new Option<int>("-d") { Description = "Requests in flight", DefaultValueFactory = _ => 64 };
        var size = new Option<string>("-s") { Description = "Request size", DefaultValueFactory = _ => "4k" };
        var step = new Option<string?>("-S") { Description = "Offset step (default: request size)" };
        var offset = new Option<string>("-o") { Description = "Start offset", DefaultValueFactory = _ => "0" };
        var write = new Option<bool>("-w") { Description = "Write instead of read" };
        var pattern = new Option<int>("--pattern") { Description = "Byte written", DefaultValueFactory = _ => 0 };
        var flushInterval = new Option<int>("--flush-interval") { Description = "Flush every N requests (writes)" };
        var cache = Cache("writeback");
        var nocache = new Option<bool>("-n") { Description = "Native AIO / no cache (accepted for compatibility)" };
        var fmt = Format(); var objects = Objects(); var imageOpts = ImageOpts(); var pw = Password(); var quiet = Quiet();
        var file = new Argument<string>("filename");
        foreach (var x in new Option[] { count, depth, size, step, offset, write, pattern, flushInterval, cache, nocache, fmt, objects, imageOpts, pw, quiet }) cmd.Options.Add(x);
        cmd.Arguments.Add(file);
        ImgCommon.SetAction(cmd, pr =>
        {
            var (path, format, secret) = ResolveTarget(pr.GetValue(file)!, pr.GetValue(fmt), pr.GetValue(imageOpts), ParseSecrets(pr.GetValue(objects)), pr.GetValue(pw));
            int n = pr.GetValue(count), d = Math.Max(1, pr.GetValue(depth));
            int bs = (int)ParseSize(pr.GetValue(size)!);
            long st = pr.GetValue(step) is { } s ? ParseSize(s) : bs;
            long start = ParseSize(pr.GetValue(offset)!);
            bool w = pr.GetValue(write);
            int flushEvery = pr.GetValue(flushInterval);
            using var img = Open(path, format, !w, secret, unsafeCache: IsUnsafeCache(pr.GetValue(cache), "writeback"));
            Console.WriteLine($"Sending {n} {(w ? "write" : "read")} requests, {bs} bytes each, {d} in parallel (starting at offset {start}, step size {st})");
            long next = 0;
            long size0 = img.Size;
            var sw = Stopwatch.StartNew();
            // d workers pull request numbers; each request wraps around the image like qemu-img bench does.
            var workers = Enumerable.Range(0, d).Select(_ => Task.Run(async () =>
            {
                var buf = new byte[bs];
                if (w) Array.Fill(buf, (byte)pr.GetValue(pattern));
                while (true)
                {
                    long i = Interlocked.Increment(ref next) - 1;
                    if (i >= n) return;
                    long off = (start + i * st) % Math.Max(1, size0 - bs + 1);
                    if (w)
                    {
                        await img.WriteAsync(off, buf);
                        if (flushEvery > 0 && (i + 1) % flushEvery == 0) await img.FlushAsync();
                    }
                    else await img.ReadAsync(off, buf);
                }
            })).ToArray();
            Wrap(() => Task.WaitAll(workers));
            if (w) img.Flush();
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Run completed in {sw.Elapsed.TotalSeconds:0.000} seconds."));
            return 0;
        });
        return cmd;
    }
}
