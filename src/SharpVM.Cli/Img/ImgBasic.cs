using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using SharpVM.Storage;
using SharpVM.Storage.Qcow2;
using static SharpVM.Cli.Img.ImgCommon;

namespace SharpVM.Cli.Img;

/// <summary>create, check, snapshot, resize, amend.</summary>
internal static class ImgBasic
{
    public static Command CreateCmd()
    {
        var cmd = new Command("create", "Create a new image: create [-f fmt] [-o opts] [-b backing [-F fmt]] FILE [SIZE]");
        var fmt = Format(); var o = O(); var objects = Objects(); var quiet = Quiet();
        var backing = new Option<string?>("-b") { Description = "Backing file" };
        var backingFmt = new Option<string?>("-F") { Description = "Backing file format" };
        var unsafeOpt = new Option<bool>("-u") { Description = "Do not open the backing file to find its size" };
        var file = new Argument<string>("filename");
        var size = new Argument<string?>("size") { Arity = ArgumentArity.ZeroOrOne };
        foreach (var x in new Option[] { fmt, o, objects, quiet, backing, backingFmt, unsafeOpt }) cmd.Options.Add(x);
        cmd.Arguments.Add(file); cmd.Arguments.Add(size);
        ImgCommon.SetAction(cmd, pr =>
        {
            string path = pr.GetValue(file)!;
            string format = pr.GetValue(fmt) ?? "raw";
            var secrets = ParseSecrets(pr.GetValue(objects));
            var opts = MergeO(pr.GetValue(o));
            string? b = pr.GetValue(backing) ?? opts.GetValueOrDefault("backing_file");
            string? bf = pr.GetValue(backingFmt) ?? opts.GetValueOrDefault("backing_fmt");
            opts.Remove("backing_file"); opts.Remove("backing_fmt");
            long sz;
            if (pr.GetValue(size) is { } s) sz = ParseSize(s);
            else if (b != null)
            {
                string full = DiskImage.ResolveBacking(path, b);
                using var bi = Open(full, bf, true, secrets.Values.FirstOrDefault());
                bf ??= bi.Format;
                sz = bi.Size;
            }
            else throw new UserFacingException("Image creation needs a size parameter");
            if (b != null && bf == null)
            {
                string full = DiskImage.ResolveBacking(path, b);
                if (File.Exists(full)) bf = DiskImage.Probe(full);
            }
            if (format == "raw")
            {
                if (b != null || opts.Count > 0) throw new UserFacingException("raw images take no -o options or backing file");
                Wrap(() => { RawImage.Create(path, sz).Dispose(); });
            }
            else if (format == "qcow2")
            {
                var co = CreateOptionsFrom(opts, sz, secrets);
                co.BackingFile = b; co.BackingFormat = bf;
                Wrap(() => Qcow2Image.Create(path, co, new Qcow2Image.OpenOptions { Secret = co.EncryptSecret, NoBacking = true }).Dispose());
            }
            else throw new UserFacingException($"Unknown file format '{format}'");
            if (!pr.GetValue(quiet))
                Console.WriteLine($"Formatting '{path}', fmt={format} size={sz}" + (b != null ? $" backing_file={b}" : "") + (bf != null ? $" backing_fmt={bf}" : ""));
            return 0;
        });
        return cmd;
    }

    public static Command CheckCmd()
    {
        var cmd = new Command("check", "Check an image for consistency: check [-r leaks|all] [--output json] FILE");
        var fmt = Format(); var output = Output(); var objects = Objects(); var imageOpts = ImageOpts(); var pw = Password(); var quiet = Quiet();
        var repair = new Option<string?>("-r") { Description = "Repair: leaks or all" };
        var file = new Argument<string>("filename");
        foreach (var x in new Option[] { fmt, output, objects, imageOpts, pw, quiet, repair }) cmd.Options.Add(x);
        cmd.Arguments.Add(file);
        ImgCommon.SetAction(cmd, pr =>
        {
            var (path, format, secret) = ResolveTarget(pr.GetValue(file)!, pr.GetValue(fmt), pr.GetValue(imageOpts), ParseSecrets(pr.GetValue(objects)), pr.GetValue(pw));
            var mode = pr.GetValue(repair) switch
            {
                null => CheckRepair.None, "leaks" => CheckRepair.Leaks, "all" => CheckRepair.All,
                var x => throw new UserFacingException($"Invalid -r option '{x}' (leaks or all)"),
            };
            if (!File.Exists(path)) throw new UserFacingException($"Could not open '{path}': No such file or directory");
            // qemu-img's exit code for "check is not supported for this format" is 63.
            if ((format ?? DiskImage.Probe(path)) != "qcow2") throw new UserFacingException("This image format does not support checks", 63);
            CheckResult r;
            Qcow2Image img;
            try
            {
                img = Qcow2Image.Open(path, new Qcow2Image.OpenOptions { ReadOnly = mode == CheckRepair.None, Secret = secret, NoBacking = true, NoRepairOnOpen = true, ForRepair = mode == CheckRepair.All, AllowLocked = true });
            }
            catch (DiskImageException e)
            {
                Console.Error.WriteLine($"sharpvm: Could not open '{path}': {e.Message}");
                return 1;
            }
            using (img) r = img.Check(mode);
            bool json = pr.GetValue(output) == "json";
            if (json)
            {
                // qemu-img leaves out every count that is zero, except check-errors.
                var o = new JsonObject { ["check-errors"] = r.CheckErrors };
                if (r.ImageEndOffset > 0) o["image-end-offset"] = r.ImageEndOffset;
                if (r.TotalClusters > 0) o["total-clusters"] = r.TotalClusters;
                if (r.Leaks > 0) o["leaks"] = r.Leaks;
                if (r.Corruptions > 0) o["corruptions"] = r.Corruptions;
                if (r.LeaksFixed > 0) o["leaks-fixed"] = r.LeaksFixed;
                if (r.CorruptionsFixed > 0) o["corruptions-fixed"] = r.CorruptionsFixed;
                if (r.AllocatedClusters > 0) o["allocated-clusters"] = r.AllocatedClusters;
                if (r.FragmentedClusters > 0) o["fragmented-clusters"] = r.FragmentedClusters;
                if (r.CompressedClusters > 0) o["compressed-clusters"] = r.CompressedClusters;
                o["filename"] = path; o["format"] = "qcow2";
                Console.WriteLine(Json(o));
            }
            else if (!pr.GetValue(quiet))
            {
                foreach (var m in r.Messages) Console.Error.WriteLine(m);
                if (r.LeaksFixed > 0 || r.CorruptionsFixed > 0)
                    Console.WriteLine($"The following inconsistencies were found and repaired:\n\n    {r.LeaksFixed} leaked clusters\n    {r.CorruptionsFixed} corruptions\n\nDouble checking the fixed image now...");
                if (r.Corruptions > 0) Console.WriteLine($"\n{r.Corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.");
                if (r.Leaks > 0) Console.WriteLine($"\n{r.Leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.");
                if (r.Corruptions == 0 && r.Leaks == 0) Console.WriteLine("No errors were found on the image.");
                if (r.TotalClusters > 0 && r.AllocatedClusters > 0)
                    Console.WriteLine(string.Format(CultureInfo.InvariantCulture, "{0}/{1} = {2:0.00}% allocated, {3:0.00}% fragmented, {4:0.00}% compressed clusters",
                        r.AllocatedClusters, r.TotalClusters, 100.0 * r.AllocatedClusters / r.TotalClusters,
                        r.AllocatedClusters == 0 ? 0 : 100.0 * r.FragmentedClusters / r.AllocatedClusters,
                        r.AllocatedClusters == 0 ? 0 : 100.0 * r.CompressedClusters / r.AllocatedClusters));
                Console.WriteLine($"Image end offset: {r.ImageEndOffset}");
            }
            return r.Corruptions > 0 ? 2 : r.Leaks > 0 ? 3 : 0;
        });
        return cmd;
    }

    public static Command SnapshotCmd()
    {
        var cmd = new Command("snapshot", "Internal snapshots: snapshot [-l | -c NAME | -a NAME | -d NAME] FILE");
        var list = new Option<bool>("-l") { Description = "List snapshots" };
        var create = new Option<string?>("-c") { Description = "Create snapshot NAME" };
        var apply = new Option<string?>("-a") { Description = "Revert to snapshot NAME" };
        var delete = new Option<string?>("-d") { Description = "Delete snapshot NAME" };
        var output = Output(); var objects = Objects(); var imageOpts = ImageOpts(); var pw = Password(); var quiet = Quiet(); var fmt = Format();
        var file = new Argument<string>("filename");
        foreach (var x in new Option[] { list, create, apply, delete, output, objects, imageOpts, pw, quiet, fmt }) cmd.Options.Add(x);
        cmd.Arguments.Add(file);
        ImgCommon.SetAction(cmd, pr =>
        {
            var (path, _, secret) = ResolveTarget(pr.GetValue(file)!, pr.GetValue(fmt), pr.GetValue(imageOpts), ParseSecrets(pr.GetValue(objects)), pr.GetValue(pw));
            bool readOnly = pr.GetValue(create) == null && pr.GetValue(apply) == null && pr.GetValue(delete) == null;
            using var img = OpenQcow2(path, readOnly, secret, noBacking: true, allowLocked: readOnly);
            if (pr.GetValue(create) is { } c) Wrap(() => img.CreateSnapshot(c));
            else if (pr.GetValue(apply) is { } a) Wrap(() => img.ApplySnapshot(a));
            else if (pr.GetValue(delete) is { } d) Wrap(() => img.DeleteSnapshot(d));
            else if (pr.GetValue(output) == "json") Console.WriteLine(Json(ImgInfo.SnapshotsJson(img)));
            else ImgInfo.PrintSnapshots(img);
            return 0;
        });
        return cmd;
    }

    public static Command ResizeCmd()
    {
        var cmd = new Command("resize", "Change the virtual size: resize [--shrink] FILE [+|-]SIZE");
        var shrink = new Option<bool>("--shrink") { Description = "Allow shrinking (data past the new end is lost)" };
        var fmt = Format(); var objects = Objects(); var imageOpts = ImageOpts(); var pw = Password(); var quiet = Quiet();
        var file = new Argument<string>("filename");
        var size = new Argument<string>("size");
        foreach (var x in new Option[] { shrink, fmt, objects, imageOpts, pw, quiet }) cmd.Options.Add(x);
        cmd.Arguments.Add(file); cmd.Arguments.Add(size);
        ImgCommon.SetAction(cmd, pr =>
        {
            var (path, format, secret) = ResolveTarget(pr.GetValue(file)!, pr.GetValue(fmt), pr.GetValue(imageOpts), ParseSecrets(pr.GetValue(objects)), pr.GetValue(pw));
            string s = pr.GetValue(size)!;
            using var img = Open(path, format, false, secret, noBacking: true);
            long target = s[0] == '+' ? img.Size + ParseSize(s[1..]) : s[0] == '-' ? img.Size - ParseSize(s[1..]) : ParseSize(s);
            if (target < 0) throw new UserFacingException("New image size must be positive");
            bool allowShrink = pr.GetValue(shrink);
            if (img is Qcow2Image q) Wrap(() => q.Resize(target, allowShrink));
            else if (img is RawImage r)
            {
                if (target < r.Size && !allowShrink) throw new UserFacingException("Use the --shrink option to perform a shrink operation.");
                r.Resize(target);
            }
            if (!pr.GetValue(quiet)) Console.WriteLine("Image resized.");
            return 0;
        });
        return cmd;
    }

    public static Command AmendCmd()
    {
        var cmd = new Command("amend", "Change format options in place: amend -o compat=0.10|1.1,refcount_bits=N,lazy_refcounts=on|off FILE");
        var o = O(); var fmt = Format(); var objects = Objects(); var imageOpts = ImageOpts(); var pw = Password(); var quiet = Quiet(); var progress = Progress();
        var file = new Argument<string>("filename");
        foreach (var x in new Option[] { o, fmt, objects, imageOpts, pw, quiet, progress }) cmd.Options.Add(x);
        cmd.Arguments.Add(file);
        ImgCommon.SetAction(cmd, pr =>
        {
            var (path, _, secret) = ResolveTarget(pr.GetValue(file)!, pr.GetValue(fmt), pr.GetValue(imageOpts), ParseSecrets(pr.GetValue(objects)), pr.GetValue(pw));
            var opts = MergeO(pr.GetValue(o));
            if (opts.Count == 0) throw new UserFacingException("amend needs -o options");
            using var img = OpenQcow2(path, false, secret, noBacking: true);
            string? compat = opts.GetValueOrDefault("compat") switch { "v3" => "1.1", "v2" => "0.10", var x => x };
            int? bits = opts.TryGetValue("refcount_bits", out var rb) ? int.Parse(rb, CultureInfo.InvariantCulture) : null;
            foreach (var k in opts.Keys)
                if (k is not ("compat" or "refcount_bits" or "lazy_refcounts"))
                    throw new UserFacingException($"amend does not support changing '{k}' (compat, refcount_bits, lazy_refcounts)");
            // Upgrade before changing the width (v2 only has 16-bit refcounts); narrow/widen to 16 before a downgrade.
            if (compat == "1.1") Wrap(() => img.ChangeCompat("1.1"));
            if (bits is { } b) Wrap(() => img.ChangeRefcountBits(b));
            if (compat == "0.10") Wrap(() => img.ChangeCompat("0.10"));
            if (compat is not (null or "1.1" or "0.10")) throw new UserFacingException($"Invalid compat level '{compat}'");
            if (opts.TryGetValue("lazy_refcounts", out var lz)) Wrap(() => img.SetLazyRefcounts(lz is "on" or "true"));
            return 0;
        });
        return cmd;
    }
}
