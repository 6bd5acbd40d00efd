using System.CommandLine;
using System.Globalization;
using System.Text.Json.Nodes;
using SharpVM.Storage;
using SharpVM.Storage.Qcow2;
using static SharpVM.Cli.Img.ImgCommon;

namespace SharpVM.Cli.Img;

/// <summary>info and map.</summary>
internal static class ImgInfo
{
    public static Command Create()
    {
        var cmd = new Command("info", "Show image information: info [--output json] [--backing-chain] FILE");
        var fmt = Format(); var output = Output(); var objects = Objects(); var imageOpts = ImageOpts(); var pw = Password();
        var chain = new Option<bool>("--backing-chain") { Description = "Show every image of the backing chain" };
        var file = new Argument<string>("filename");
        foreach (var x in new Option[] { fmt, output, objects, imageOpts, pw, chain }) cmd.Options.Add(x);
        cmd.Arguments.Add(file);
        ImgCommon.SetAction(cmd, pr =>
        {
            var (path, format, secret) = ResolveTarget(pr.GetValue(file)!, pr.GetValue(fmt), pr.GetValue(imageOpts), ParseSecrets(pr.GetValue(objects)), pr.GetValue(pw));
            bool json = pr.GetValue(output) == "json";
            var infos = new List<JsonObject>();
            string? cur = path; string? curFmt = format;
            var seen = new HashSet<string>();
            while (cur != null)
            {
                if (!seen.Add(Path.GetFullPath(cur))) throw new UserFacingException($"backing chain loops back to '{cur}'");
                using var img = OpenLocked(cur, curFmt, secret);
                var info = InfoJson(img, cur);
                infos.Add(info);
                if (!pr.GetValue(chain) || img is not Qcow2Image q || q.Header.BackingFile == null) break;
                cur = BackingDisplayPath(cur, q.Header.BackingFile);
                curFmt = q.Header.BackingFormat;
            }
            if (json) Console.WriteLine(pr.GetValue(chain) ? Json(new JsonArray(infos.Cast<JsonNode>().ToArray())) : Json(infos[0]));
            else
            {
                for (int i = 0; i < infos.Count; i++)
                {
                    if (i > 0) Console.WriteLine();
                    PrintHuman(infos[i]);
                }
            }
            return 0;
        });
        return cmd;
    }

    public static JsonObject InfoJson(IDiskImage img, string name)
    {
        var o = new JsonObject();
        if (img is Qcow2Image q)
        {
            var h = q.Header;
            if (h.BackingFormat != null) o["backing-filename-format"] = h.BackingFormat;
            if (q.ListSnapshots().Count > 0) o["snapshots"] = SnapshotsJson(q);
            o["virtual-size"] = img.Size;
            o["filename"] = name;
            o["cluster-size"] = h.ClusterSize;
            o["format"] = "qcow2";
            o["actual-size"] = img.ActualSize;
            if (h.CryptMethod == 2) o["encrypted"] = true;
            var data = new JsonObject { ["compat"] = h.Version >= 3 ? "1.1" : "0.10" };
            if (h.Version >= 3)
            {
                data["compression-type"] = h.CompressionType == 1 ? "zstd" : "zlib";
                data["lazy-refcounts"] = (h.CompatibleFeatures & Qcow2Header.CompatLazyRefcounts) != 0;
                data["refcount-bits"] = 1 << h.RefcountOrder;
                data["corrupt"] = (h.IncompatibleFeatures & Qcow2Header.IncompatCorrupt) != 0;
                data["extended-l2"] = h.ExtendedL2;
                if (q.ListBitmaps() is { Count: > 0 } bitmaps) data["bitmaps"] = BitmapsJson(bitmaps);
            }
            else
            {
                data["compression-type"] = "zlib";
                data["refcount-bits"] = 16; // v2 images always have 16-bit refcounts, and qemu-img says so
            }
            if (q.ReadLuksHeader() is { } luks) data["encrypt"] = LuksJson(luks);
            o["format-specific"] = new JsonObject { ["type"] = "qcow2", ["data"] = data };
            if (h.BackingFile != null)
            {
                o["full-backing-filename"] = BackingDisplayPath(name, h.BackingFile);
                o["backing-filename"] = h.BackingFile;
            }
            o["dirty-flag"] = (h.IncompatibleFeatures & Qcow2Header.IncompatDirty) != 0;
        }
        else
        {
            o["virtual-size"] = img.Size;
            o["filename"] = name;
            o["format"] = img.Format;
            o["actual-size"] = img.ActualSize;
            o["dirty-flag"] = false;
        }
        return o;
    }

    /// <summary>
    /// The backing file's name as qemu-img shows it: relative to the overlay's directory as the user spelled it
    /// ("dir/top.qcow2" → "dir/base.qcow2"), not made absolute.
    /// </summary>
    private static string BackingDisplayPath(string overlay, string backing) =>
        !Path.IsPathRooted(backing) && !Path.IsPathRooted(overlay)
            ? Path.Combine(Path.GetDirectoryName(overlay) ?? "", backing)
            : DiskImage.ResolveBacking(overlay, backing);

    private static void PrintHuman(JsonObject o)
    {
        Console.WriteLine($"image: {o["filename"]}");
        Console.WriteLine($"file format: {o["format"]}");
        long vs = (long)o["virtual-size"]!;
        Console.WriteLine($"virtual size: {HumanSize(vs)} ({vs} bytes)");
        Console.WriteLine($"disk size: {HumanSize((long)o["actual-size"]!)}");
        if (o["encrypted"] is not null) Console.WriteLine("encrypted: yes");
        if (o["cluster-size"] is { } cs) Console.WriteLine($"cluster_size: {cs}");
        if (o["backing-filename"] is { } bf)
        {
            var full = (string?)o["full-backing-filename"];
            Console.WriteLine($"backing file: {bf}" + (full != null && full != (string?)bf ? $" (actual path: {full})" : ""));
            if (o["backing-filename-format"] is { } bff) Console.WriteLine($"backing file format: {bff}");
        }
        if (o["snapshots"] is JsonArray snaps) { Console.WriteLine("Snapshot list:"); PrintSnapshotRows(snaps); }
        if (o["format-specific"]?["data"] is JsonObject d)
        {
            Console.WriteLine("Format specific information:");
            DumpQObject(1, QemuJsonOrder.Apply(d));
        }
    }

    /// <summary>qemu's dump_qobject (block/qapi.c): nested members indented by 4, dashes in keys as spaces, lists as [i].</summary>
    private static void DumpQObject(int indent, JsonNode? node)
    {
        static bool Composite(JsonNode? n) => n is JsonObject or JsonArray;
        void Line(string label, JsonNode? value)
        {
            Console.Write($"{new string(' ', indent * 4)}{label}:{(Composite(value) ? '\n' : ' ')}");
            DumpQObject(indent + 1, value);
            if (!Composite(value)) Console.WriteLine();
        }
        switch (node)
        {
            case JsonObject o: foreach (var (k, v) in o) Line(k.Replace('-', ' '), v); break;
            case JsonArray a: for (int i = 0; i < a.Count; i++) Line($"[{i}]", a[i]); break;
            case JsonValue v when v.TryGetValue<bool>(out var b): Console.Write(b ? "true" : "false"); break;
            case JsonValue v: Console.Write(v.ToString()); break;
        }
    }

    /// <summary>qemu's QCryptoBlockInfoLUKS, with the "format" discriminator of its union.</summary>
    private static JsonObject LuksJson(SharpVM.Storage.Crypto.LuksHeaderInfo l)
    {
        var slots = new JsonArray();
        foreach (var s in l.Slots)
            slots.Add(s.Active
                ? new JsonObject { ["active"] = true, ["iters"] = s.Iterations, ["stripes"] = s.Stripes, ["key-offset"] = s.KeyOffset }
                : new JsonObject { ["active"] = false, ["key-offset"] = s.KeyOffset });
        var o = new JsonObject { ["format"] = "luks", ["cipher-alg"] = l.CipherAlg, ["cipher-mode"] = l.CipherMode, ["ivgen-alg"] = l.IvgenAlg };
        if (l.IvgenHashAlg != null) o["ivgen-hash-alg"] = l.IvgenHashAlg;
        o["hash-alg"] = l.HashAlg;
        o["payload-offset"] = l.PayloadOffset;
        o["master-key-iters"] = l.MasterKeyIterations;
        o["uuid"] = l.Uuid;
        o["slots"] = slots;
        return o;
    }

    private static JsonArray BitmapsJson(IEnumerable<Qcow2Image.BitmapInfo> bitmaps)
    {
        var arr = new JsonArray();
        foreach (var b in bitmaps)
        {
            var flags = new JsonArray();
            if (b.InUse) flags.Add("in-use");
            if (b.Auto) flags.Add("auto");
            arr.Add(new JsonObject { ["flags"] = flags, ["name"] = b.Name, ["granularity"] = 1L << b.GranularityBits });
        }
        return arr;
    }

    public static JsonArray SnapshotsJson(Qcow2Image q)
    {
        var arr = new JsonArray();
        foreach (var s in q.ListSnapshots())
            arr.Add(new JsonObject
            {
                ["icount"] = s.Icount is { } ic && ic != ulong.MaxValue ? (long)ic : 0,
                ["vm-clock-nsec"] = (long)(s.VmClockNsec % 1_000_000_000),
                ["name"] = s.Name,
                ["date-sec"] = (long)s.DateSec,
                ["date-nsec"] = (long)s.DateNsec,
                ["vm-clock-sec"] = (long)(s.VmClockNsec / 1_000_000_000),
                ["id"] = s.Id,
                ["vm-state-size"] = (long)s.VmStateSize,
            });
        return arr;
    }

    public static void PrintSnapshots(Qcow2Image q)
    {
        Console.WriteLine("Snapshot list:");
        PrintSnapshotRows(SnapshotsJson(q));
    }

    private static void PrintSnapshotRows(JsonArray snaps)
    {
        Console.WriteLine("ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT");
        foreach (var s in snaps)
        {
            var date = DateTimeOffset.FromUnixTimeSeconds((long)s!["date-sec"]!).ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture);
            long clk = (long)s["vm-clock-sec"]!;
            string clock = $"{clk / 3600:00}:{clk / 60 % 60:00}:{clk % 60:00}.{(long)s["vm-clock-nsec"]! / 1_000_000:000}";
            Console.WriteLine($"{s["id"],-9} {s["name"],-17} {HumanSize((long)s["vm-state-size"]!),7} {date} {clock} {s["icount"],10}");
        }
    }

    public static Command MapCmd()
    {
        var cmd = new Command("map", "Show how guest ranges map to files: map [--output json] FILE");
        var fmt = Format(); var output = Output(); var objects = Objects(); var imageOpts = ImageOpts(); var pw = Password();
        var file = new Argument<string>("filename");
        foreach (var x in new Option[] { fmt, output, objects, imageOpts, pw }) cmd.Options.Add(x);
        cmd.Arguments.Add(file);
        ImgCommon.SetAction(cmd, pr =>
        {
            var (path, format, secret) = ResolveTarget(pr.GetValue(file)!, pr.GetValue(fmt), pr.GetValue(imageOpts), ParseSecrets(pr.GetValue(objects)), pr.GetValue(pw));
            using var img = Open(path, format, true, secret);
            var list = new List<(long Start, long Len, int Depth, bool Present, bool Zero, bool Data, long Off, string? File)>();
            long pos = 0;
            while (pos < img.Size)
            {
                var e = Wrap(() => img.GetExtent(pos, img.Size - pos));
                bool present = e.Kind != ExtentKind.Unallocated;
                bool zero = e.Kind is ExtentKind.Zero or ExtentKind.Unallocated;
                bool data = e.Kind is ExtentKind.Data or ExtentKind.Compressed;
                // Like qemu: data has a host offset; raw holes keep theirs too (the file offset), qcow2 zero clusters have none.
                long off = e.Kind != ExtentKind.Compressed && e.HostOffset >= 0 ? e.HostOffset : -1;
                // qemu gives no offset for encrypted images either: the file there holds ciphertext, not the data.
                if (LayerAt(img, e.Depth) is Qcow2Image { IsEncrypted: true }) off = -1;
                var depth = e.Depth;
                if (!present) depth = ChainLength(img) - 1;
                if (list.Count > 0)
                {
                    var p = list[^1];
                    if (p.Depth == depth && p.Present == present && p.Zero == zero && p.Data == data && p.File == e.File &&
                        ((p.Off < 0 && off < 0) || (p.Off >= 0 && off == p.Off + p.Len)))
                    {
                        list[^1] = p with { Len = p.Len + e.Length };
                        pos += e.Length;
                        continue;
                    }
                }
                list.Add((pos, e.Length, depth, present, zero, data, off, e.File));
                pos += e.Length;
            }
            if (pr.GetValue(output) == "json")
            {
                var lines = list.Select(x => $"{{ \"start\": {x.Start}, \"length\": {x.Len}, \"depth\": {x.Depth}, \"present\": {B(x.Present)}, \"zero\": {B(x.Zero)}, \"data\": {B(x.Data)}" + (x.Off >= 0 ? $", \"offset\": {x.Off}}}" : "}"));
                Console.WriteLine("[" + string.Join(",\n", lines) + "]");
            }
            else
            {
                Console.WriteLine($"{"Offset",-16}{"Length",-16}{"Mapped to",-16}File");
                foreach (var x in list.Where(x => x.Data))
                {
                    // Data with no place in a file cannot be shown in this format; qemu-img refuses the same way.
                    if (x.Off < 0) throw new UserFacingException("File contains external, encrypted or compressed clusters.");
                    if (!x.Zero) Console.WriteLine($"{Hex(x.Start),-16}{Hex(x.Len),-16}{Hex(x.Off),-16}{x.File}");
                }
            }
            return 0;
        });
        return cmd;
    }

    private static string B(bool b) => b ? "true" : "false";

    /// <summary>C's "%#x": 0 has no 0x prefix.</summary>
    private static string Hex(long v) => v == 0 ? "0" : "0x" + v.ToString("x", CultureInfo.InvariantCulture);

    private static IDiskImage? LayerAt(IDiskImage top, int depth)
    {
        var img = top;
        for (int i = 0; i < depth && img != null; i++) img = img.Backing;
        return img;
    }

    private static int ChainLength(IDiskImage img)
    {
        int n = 0;
        for (var i = img; i != null; i = i.Backing) n++;
        return n;
    }
}
