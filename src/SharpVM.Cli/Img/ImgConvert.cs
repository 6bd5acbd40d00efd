using System.CommandLine;
using System.Text.Json.Nodes;
using SharpVM.Storage;
using SharpVM.Storage.Operations;
using SharpVM.Storage.Qcow2;
using static SharpVM.Cli.Img.ImgCommon;

namespace SharpVM.Cli.Img;

/// <summary>convert, compare, measure.</summary>
internal static class ImgConvert
{
    public static Command Create()
    {
        var cmd = new Command("convert", "Convert an image: convert [-f fmt] [-O fmt] [-c] [-o opts] [-p] SRC DST");
        var fmt = Format(); var objects = Objects(); var imageOpts = ImageOpts(); var pw = Password(); var progress = Progress(); var o = O(); var quiet = Quiet();
        var outFmt = new Option<string?>("-O") { Description = "Output format (default raw)" };
        var compress = new Option<bool>("-c") { Description = "Compress data clusters (qcow2 target)" };
        var backing = new Option<string?>("-B") { Description = "Backing file for the target (only data differing from it is written)" };
        // qemu-img convert writes its target with cache=unsafe unless told otherwise: an interrupted convert leaves
        // no useful image anyway, so it does not pay for fsync. -t writeback makes each flush durable.
        var cache = Cache("unsafe");
        var srcCache = new Option<string?>("-T") { Description = "Cache mode of the source (accepted for compatibility; reads are not cached by SharpVM)" };
        var src = new Argument<string>("source");
        var dst = new Argument<string>("destination");
        foreach (var x in new Option[] { fmt, objects, imageOpts, pw, progress, o, quiet, outFmt, compress, backing, cache, srcCache }) cmd.Options.Add(x);
        cmd.Arguments.Add(src); cmd.Arguments.Add(dst);
        ImgCommon.SetAction(cmd, pr =>
        {
            var secrets = ParseSecrets(pr.GetValue(objects));
            var opts = MergeO(pr.GetValue(o));
            // The source's secret comes from --image-opts; -o encrypt.key-secret names the target's.
            var (srcPath, srcFmt, srcSecret) = ResolveTarget(pr.GetValue(src)!, pr.GetValue(fmt), pr.GetValue(imageOpts), pr.GetValue(imageOpts) ? secrets : [], pr.GetValue(pw));
            string dstPath = pr.GetValue(dst)!;
            string of = pr.GetValue(outFmt) ?? "raw";
            bool unsafeCache = IsUnsafeCache(pr.GetValue(cache), "unsafe");
            using var source = Open(srcPath, srcFmt, true, srcSecret);
            if (File.Exists(dstPath)) File.Delete(dstPath);
            IDiskImage target;
            if (of == "raw")
            {
                if (opts.Count > 0 || pr.GetValue(compress)) throw new UserFacingException("raw output takes no -o options and cannot be compressed");
                target = RawImage.Create(dstPath, source.Size, unsafeCache);
            }
            else if (of == "qcow2")
            {
                var co = CreateOptionsFrom(opts, source.Size, secrets);
                if (pr.GetValue(backing) is { } b) { co.BackingFile = b; co.BackingFormat ??= DiskImage.Probe(DiskImage.ResolveBacking(dstPath, b)); }
                target = Wrap(() => Qcow2Image.Create(dstPath, co, new Qcow2Image.OpenOptions { Secret = co.EncryptSecret, UnsafeCache = unsafeCache }));
            }
            else throw new UserFacingException($"Unknown output format '{of}'");
            using (target)
            {
                bool c = pr.GetValue(compress);
                if (target.Backing != null)
                    WithProgress(pr.GetValue(progress), "convert", p => Wrap(() => ConvertAgainstBacking(source, target, p)));
                else
                    WithProgress(pr.GetValue(progress), "convert", p => Wrap(() => ImageOps.Convert(source, target, c, p)));
            }
            return 0;
        });
        return cmd;
    }

    /// <summary>convert -B: write only clusters whose content differs from what the target's backing file shows.</summary>
    private static void ConvertAgainstBacking(IDiskImage src, IDiskImage dst, ProgressFn p)
    {
        int cs = dst.ClusterSize;
        var a = new byte[cs]; var b = new byte[cs];
        for (long pos = 0; pos < src.Size; pos += cs)
        {
            int n = (int)Math.Min(cs, src.Size - pos);
            src.Read(pos, a.AsSpan(0, n));
            dst.Read(pos, b.AsSpan(0, n));
            if (!a.AsSpan(0, n).SequenceEqual(b.AsSpan(0, n))) dst.Write(pos, a.AsSpan(0, n));
            p(pos + n, src.Size);
        }
        dst.Flush();
    }

    public static Command CompareCmd()
    {
        var cmd = new Command("compare", "Compare guest content of two images: compare [-f fmt] [-F fmt] [-s] A B");
        var fmt = Format(); var fmt2 = new Option<string?>("-F") { Description = "Format of the second image" };
        var strict = new Option<bool>("-s") { Description = "Strict: images of different size are different" };
        var objects = Objects(); var pw = Password(); var progress = Progress(); var quiet = Quiet();
        var a = new Argument<string>("image1"); var b = new Argument<string>("image2");
        foreach (var x in new Option[] { fmt, fmt2, strict, objects, pw, progress, quiet }) cmd.Options.Add(x);
        cmd.Arguments.Add(a); cmd.Arguments.Add(b);
        ImgCommon.SetAction(cmd, pr =>
        {
            var secrets = ParseSecrets(pr.GetValue(objects));
            string? secret = pr.GetValue(pw) ?? secrets.Values.FirstOrDefault();
            using var ia = Open(pr.GetValue(a)!, pr.GetValue(fmt), true, secret);
            using var ib = Open(pr.GetValue(b)!, pr.GetValue(fmt2), true, secret);
            long? diff = null;
            WithProgress(pr.GetValue(progress), "compare", p => diff = Wrap(() => ImageOps.Compare(ia, ib, pr.GetValue(strict), p)));
            if (ia.Size != ib.Size && !pr.GetValue(strict) && !pr.GetValue(quiet)) Console.WriteLine("Warning: Image size mismatch!");
            if (diff is { } d)
            {
                if (!pr.GetValue(quiet))
                    Console.WriteLine(pr.GetValue(strict) && ia.Size != ib.Size ? "Strict mode: Image size mismatch!" : $"Content mismatch at offset {d}!");
                return 1;
            }
            if (!pr.GetValue(quiet)) Console.WriteLine("Images are identical.");
            return 0;
        });
        return cmd;
    }

    public static Command MeasureCmd()
    {
        var cmd = new Command("measure", "Size a new image would need: measure [--size N | [-f fmt] SRC] -O fmt [-o opts] [--output json]");
        var size = new Option<string?>("--size") { Description = "Virtual size (instead of a source image)" };
        var outFmt = new Option<string?>("-O") { Description = "Target format" };
        var fmt = Format(); var o = O(); var output = Output(); var objects = Objects(); var imageOpts = ImageOpts(); var pw = Password();
        var src = new Argument<string?>("filename") { Arity = ArgumentArity.ZeroOrOne };
        foreach (var x in new Option[] { size, outFmt, fmt, o, output, objects, imageOpts, pw }) cmd.Options.Add(x);
        cmd.Arguments.Add(src);
        ImgCommon.SetAction(cmd, pr =>
        {
            var secrets = ParseSecrets(pr.GetValue(objects));
            var opts = MergeO(pr.GetValue(o));
            string of = pr.GetValue(outFmt) ?? "raw";
            IDiskImage? img = null;
            long vsize;
            if (pr.GetValue(src) is { } s)
            {
                if (pr.GetValue(size) != null) throw new UserFacingException("--size N cannot be used together with a filename");
                var (path, f, secret) = ResolveTarget(s, pr.GetValue(fmt), pr.GetValue(imageOpts), secrets, pr.GetValue(pw));
                img = Open(path, f, true, secret);
                vsize = img.Size;
            }
            else if (pr.GetValue(size) is { } sz) vsize = ParseSize(sz);
            else throw new UserFacingException("Either --size N or one filename must be specified.");
            using (img)
            {
                long required, full;
                if (of == "raw") { required = full = vsize; }
                else if (of == "qcow2")
                {
                    var co = CreateOptionsFrom(opts.Where(kv => kv.Key != "encrypt.key-secret").ToDictionary(), vsize, secrets);
                    long luks = opts.ContainsKey("encrypt.format") ? 2 << 20 : 0;
                    (required, full) = ImageOps.MeasureQcow2(img, vsize, co.ClusterSize, co.RefcountBits, co.ExtendedL2, luks);
                }
                else throw new UserFacingException($"Unknown output format '{of}'");
                // qemu-img reports bitmaps only when the source is an image that can hold them (qcow2 v3).
                long? bitmaps = of == "qcow2" && img is Qcow2Image { Header.Version: >= 3 } q3
                    ? ImageOps.MeasureBitmaps(q3, CreateOptionsFrom(opts.Where(kv => kv.Key != "encrypt.key-secret").ToDictionary(), vsize, secrets).ClusterSize)
                    : null;
                if (pr.GetValue(output) == "json")
                {
                    var j = new JsonObject();
                    if (bitmaps is { } bs) j["bitmaps"] = bs;
                    j["required"] = required; j["fully-allocated"] = full;
                    Console.WriteLine(Json(j));
                }
                else
                {
                    Console.WriteLine($"required size: {required}");
                    Console.WriteLine($"fully allocated size: {full}");
                    if (bitmaps is { } bs) Console.WriteLine($"bitmaps size: {bs}");
                }
            }
            return 0;
        });
        return cmd;
    }
}
