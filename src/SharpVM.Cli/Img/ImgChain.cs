using System.CommandLine;
using SharpVM.Storage;
using SharpVM.Storage.Operations;
using SharpVM.Storage.Qcow2;
using static SharpVM.Cli.Img.ImgCommon;

namespace SharpVM.Cli.Img;

/// <summary>commit and rebase: moving data along a backing chain.</summary>
internal static class ImgChain
{
    public static Command CommitCmd()
    {
        var cmd = new Command("commit", "Write an overlay's data into its backing file: commit [-b base] [-d] [-p] FILE");
        var baseOpt = new Option<string?>("-b") { Description = "Commit into this image of the chain (default: the immediate backing file)" };
        var keep = new Option<bool>("-d") { Description = "Do not empty the overlay afterwards" };
        var fmt = Format(); var objects = Objects(); var imageOpts = ImageOpts(); var pw = Password(); var progress = Progress(); var quiet = Quiet();
        var file = new Argument<string>("filename");
        foreach (var x in new Option[] { baseOpt, keep, fmt, objects, imageOpts, pw, progress, quiet }) cmd.Options.Add(x);
        cmd.Arguments.Add(file);
        ImgCommon.SetAction(cmd, pr =>
        {
            var (path, _, secret) = ResolveTarget(pr.GetValue(file)!, pr.GetValue(fmt), pr.GetValue(imageOpts), ParseSecrets(pr.GetValue(objects)), pr.GetValue(pw));
            using var top = OpenQcow2(path, false, secret);
            if (top.Backing == null) throw new UserFacingException($"'{path}' has no backing file to commit into");
            int depth = 1;
            var b = top.Backing;
            if (pr.GetValue(baseOpt) is { } want)
            {
                string full = Path.GetFullPath(want);
                while (b != null && Path.GetFullPath(b.Path) != full) { b = b.Backing; depth++; }
                if (b == null) throw new UserFacingException($"'{want}' is not in the backing chain of '{path}'");
            }
            using (var baseImg = Open(b!.Path, b.Format, false, secret, noBacking: b.Format == "qcow2" && depth > 1 && false))
            {
                if (baseImg.Size < top.Size) throw new UserFacingException("the base image is smaller than the overlay; resize it first");
                WithProgress(pr.GetValue(progress), "commit", p => Wrap(() => ImageOps.Commit(top, baseImg, depth, p)));
            }
            if (!pr.GetValue(keep) && top.ListSnapshots().Count == 0) Wrap(top.MakeEmpty);
            if (depth > 1)
            {
                // Intermediate images are now redundant: link the overlay straight to the base.
                string rel = Path.GetRelativePath(Path.GetDirectoryName(Path.GetFullPath(path))!, Path.GetFullPath(b.Path));
                Wrap(() => top.SetBackingFile(rel, b.Format));
            }
            if (!pr.GetValue(quiet)) Console.WriteLine("Image committed.");
            return 0;
        });
        return cmd;
    }

    public static Command RebaseCmd()
    {
        var cmd = new Command("rebase", "Change an overlay's backing file: rebase [-u] -b BACKING [-F fmt] FILE");
        var backing = new Option<string?>("-b") { Description = "New backing file (\"\" for none)" };
        var backingFmt = new Option<string?>("-F") { Description = "Format of the new backing file" };
        var unsafeOpt = new Option<bool>("-u") { Description = "Unsafe: only rewrite the backing file name" };
        var fmt = Format(); var objects = Objects(); var imageOpts = ImageOpts(); var pw = Password(); var progress = Progress(); var quiet = Quiet();
        var file = new Argument<string>("filename");
        foreach (var x in new Option[] { backing, backingFmt, unsafeOpt, fmt, objects, imageOpts, pw, progress, quiet }) cmd.Options.Add(x);
        cmd.Arguments.Add(file);
        ImgCommon.SetAction(cmd, pr =>
        {
            var (path, _, secret) = ResolveTarget(pr.GetValue(file)!, pr.GetValue(fmt), pr.GetValue(imageOpts), ParseSecrets(pr.GetValue(objects)), pr.GetValue(pw));
            string nb = pr.GetValue(backing) ?? throw new UserFacingException("rebase needs -b BACKING (use -b \"\" to remove the backing file)");
            string? nbf = pr.GetValue(backingFmt);
            if (nb != "" && nbf == null)
            {
                string full = DiskImage.ResolveBacking(path, nb);
                if (File.Exists(full)) nbf = DiskImage.Probe(full);
            }
            if (pr.GetValue(unsafeOpt))
            {
                using var top = OpenQcow2(path, false, secret, noBacking: true);
                Wrap(() => top.SetBackingFile(nb == "" ? null : nb, nbf));
                return 0;
            }
            using (var top = OpenQcow2(path, false, secret))
            {
                IDiskImage? newBacking = nb == "" ? null : Open(DiskImage.ResolveBacking(path, nb), nbf, true, secret);
                using (newBacking)
                    WithProgress(pr.GetValue(progress), "rebase", p => Wrap(() => ImageOps.RebaseCopy(top, newBacking, p)));
                Wrap(() => top.SetBackingFile(nb == "" ? null : nb, nbf));
            }
            return 0;
        });
        return cmd;
    }
}
