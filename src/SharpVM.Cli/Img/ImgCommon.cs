using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using SharpVM.Storage;
using SharpVM.Storage.Operations;
using SharpVM.Storage.Qcow2;
using Spectre.Console;

namespace SharpVM.Cli.Img;

/// <summary>Options and helpers shared by the `sharpvm img` subcommands (qemu-img's spellings).</summary>
internal static class ImgCommon
{
    public static Option<string?> Format() => new("-f", "--format") { Description = "Image format (qcow2, raw); probed when omitted" };
    public static Option<string[]> Objects() => new("--object") { Description = "QEMU-style object, e.g. secret,id=sec0,data=PASSWORD" };
    public static Option<bool> ImageOpts() => new("--image-opts") { Description = "The filename is an option string: file.filename=PATH,encrypt.key-secret=ID" };
    public static Option<string?> Password() => new("--password") { Description = "Secret for LUKS-encrypted images (SharpVM shortcut for --object secret)" };
    public static Option<string> Output() => new("--output") { Description = "human or json", DefaultValueFactory = _ => "human" };
    public static Option<bool> Progress() => new("-p", "--progress") { Description = "Show a progress bar" };
    public static Option<bool> Quiet() => new("-q", "--quiet") { Description = "Quiet mode" };
    /// <summary>qemu's -t: how the written image is cached. Only writeback (flushes fsync) and unsafe (they do not) exist here.</summary>
    public static Option<string?> Cache(string defaultMode) => new("-t") { Description = $"Cache mode of the written image: writeback or unsafe (default {defaultMode}; unsafe skips fsync, as qemu-img does)" };

    /// <summary>True for cache=unsafe. A mode we do not implement is refused rather than silently treated as another.</summary>
    public static bool IsUnsafeCache(string? mode, string defaultMode) => (mode ?? defaultMode) switch
    {
        "unsafe" => true,
        "writeback" => false,
        var m => throw new UserFacingException($"cache mode '{m}' is not supported (writeback, unsafe)"),
    };

    public static Option<string[]> O() => new("-o", "--options") { Description = "Format options key=value[,key=value...]" };

    /// <summary>Secrets named by --object secret,id=...,data=... (or file=...).</summary>
    public static Dictionary<string, string> ParseSecrets(string[]? objects)
    {
        var map = new Dictionary<string, string>();
        foreach (var o in objects ?? [])
        {
            var kv = ParseKv(o);
            if (!kv.ContainsKey("secret")) throw new UserFacingException($"--object '{o}': only 'secret' objects are supported");
            if (!kv.TryGetValue("id", out var id)) throw new UserFacingException($"--object '{o}' needs id=");
            if (kv.TryGetValue("data", out var data)) map[id] = data;
            else if (kv.TryGetValue("file", out var f)) map[id] = File.ReadAllText(f);
            else throw new UserFacingException($"secret '{id}' needs data= or file=");
        }
        return map;
    }

    /// <summary>"a=1,b,c=x" → {a:1, b:"", c:x}; a leading bare word becomes a key with empty value (qemu's implied key).</summary>
    public static Dictionary<string, string> ParseKv(string s)
    {
        var d = new Dictionary<string, string>();
        foreach (var part in s.Split(',', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = part.IndexOf('=');
            if (eq < 0) d[part] = "";
            else d[part[..eq]] = part[(eq + 1)..];
        }
        return d;
    }

    public static Dictionary<string, string> MergeO(string[]? os)
    {
        var d = new Dictionary<string, string>();
        foreach (var o in os ?? []) foreach (var (k, v) in ParseKv(o)) d[k] = v;
        return d;
    }

    public static long ParseSize(string s)
    {
        s = s.Trim();
        if (s.Length == 0) throw new UserFacingException("empty size");
        char last = char.ToUpperInvariant(s[^1]);
        int shift = last switch { 'B' => 0, 'K' => 10, 'M' => 20, 'G' => 30, 'T' => 40, 'P' => 50, 'E' => 60, _ => -1 };
        string num = shift >= 0 ? s[..^1] : s;
        if (shift < 0) shift = 0;
        if (!double.TryParse(num, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || v < 0)
            throw new UserFacingException($"invalid size '{s}' (use e.g. 512, 64k, 10G)");
        return (long)(v * Math.Pow(2, shift));
    }

    /// <summary>Resolves the filename (or --image-opts string) and the secret to unlock it.</summary>
    public static (string Path, string? Format, string? Secret) ResolveTarget(string arg, string? format, bool imageOpts, Dictionary<string, string> secrets, string? password)
    {
        string path = arg; string? secret = password;
        if (imageOpts)
        {
            var kv = ParseKv(arg);
            path = kv.GetValueOrDefault("file.filename") ?? kv.GetValueOrDefault("filename") ?? throw new UserFacingException("--image-opts needs file.filename=");
            format = kv.GetValueOrDefault("driver") ?? format;
            if (kv.TryGetValue("encrypt.key-secret", out var id))
                secret = secrets.TryGetValue(id, out var sv) ? sv : throw new UserFacingException($"no secret with id '{id}' (add --object secret,id={id},data=...)");
        }
        if (secret == null && secrets.Count == 1) secret = secrets.Values.First();
        return (path, format, secret);
    }

    public static IDiskImage Open(string path, string? format, bool readOnly, string? secret, bool noBacking = false, bool unsafeCache = false)
    {
        if (!File.Exists(path)) throw new UserFacingException($"Could not open '{path}': No such file or directory");
        return Wrap(() => DiskImage.Open(path, format, new Qcow2Image.OpenOptions { ReadOnly = readOnly, Secret = secret, NoBacking = noBacking, UnsafeCache = unsafeCache }));
    }

    /// <summary>Opens for metadata only: an encrypted image without its secret still shows its header (like qemu-img info).</summary>
    public static IDiskImage OpenLocked(string path, string? format, string? secret)
    {
        if (!File.Exists(path)) throw new UserFacingException($"Could not open '{path}': No such file or directory");
        return Wrap(() => DiskImage.Open(path, format, new Qcow2Image.OpenOptions { ReadOnly = true, Secret = secret, NoBacking = true, AllowLocked = true }));
    }

    public static Qcow2Image OpenQcow2(string path, bool readOnly, string? secret, bool noBacking = false, bool noRepair = false, bool allowLocked = false)
    {
        if (!File.Exists(path)) throw new UserFacingException($"Could not open '{path}': No such file or directory");
        if (DiskImage.Probe(path) != "qcow2") throw new UserFacingException($"'{path}' is not a qcow2 image; this operation needs qcow2");
        return Wrap(() => Qcow2Image.Open(path, new Qcow2Image.OpenOptions { ReadOnly = readOnly, Secret = secret, NoBacking = noBacking, NoRepairOnOpen = noRepair, AllowLocked = allowLocked }));
    }

    /// <summary>
    /// Installs the action with error reporting: System.CommandLine's default handler would print a stack trace for
    /// exceptions escaping an action, so user-facing and library errors are turned into "sharpvm: message" here.
    /// </summary>
    public static void SetAction(Command cmd, Func<ParseResult, int> action)
    {
        cmd.SetAction(pr =>
        {
            try { return action(pr); }
            catch (UserFacingException e) { Console.Error.WriteLine($"sharpvm: {e.Message}"); return e.ExitCode; }
            catch (DiskImageException e) { Console.Error.WriteLine($"sharpvm: {e.Message}"); return 1; }
            catch (IOException e) { Console.Error.WriteLine($"sharpvm: {e.Message}"); return 1; }
        });
    }

    /// <summary>Turns library errors into one-line user errors.</summary>
    public static T Wrap<T>(Func<T> f)
    {
        try { return f(); }
        catch (DiskImageException e) { throw new UserFacingException(e.Message, 1, e); }
    }

    public static void Wrap(Action f) => Wrap(() => { f(); return 0; });

    public static void WithProgress(bool show, string label, Action<ProgressFn> work)
    {
        if (!show) { work((_, _) => { }); return; }
        AnsiConsole.Progress().AutoClear(false).Start(ctx =>
        {
            var task = ctx.AddTask(label, maxValue: 100);
            work((done, total) => task.Value = total == 0 ? 100 : 100.0 * done / total);
            task.Value = 100;
        });
    }

    /// <summary>qemu-img's JSON layout: 4-space indent, members in qemu's QDict order (see <see cref="QemuJsonOrder"/>).</summary>
    public static string Json(JsonNode node)
    {
        var text = QemuJsonOrder.Apply(node)!.ToJsonString(new JsonSerializerOptions { WriteIndented = true, IndentSize = 4 });
        // qemu's pretty printer opens and closes an empty list or dict on lines of their own.
        var lines = text.Split('\n').Select(line =>
        {
            var body = line.TrimEnd(',');
            if (!(body.EndsWith("[]", StringComparison.Ordinal) || body.EndsWith("{}", StringComparison.Ordinal))) return line;
            string indent = line[..(line.Length - line.TrimStart().Length)];
            return body[..^1] + "\n" + indent + body[^1] + line[body.Length..];
        });
        return string.Join('\n', lines);
    }

    public static Qcow2CreateOptions CreateOptionsFrom(Dictionary<string, string> o, long size, Dictionary<string, string> secrets)
    {
        var c = new Qcow2CreateOptions { Size = size };
        foreach (var (k, v) in o)
        {
            switch (k)
            {
                case "cluster_size": c.ClusterSize = (int)ParseSize(v); break;
                case "compat": c.Compat = v is "v3" ? "1.1" : v is "v2" ? "0.10" : v; break;
                case "refcount_bits": c.RefcountBits = int.Parse(v, CultureInfo.InvariantCulture); break;
                case "extended_l2": c.ExtendedL2 = v is "on" or "true"; break;
                case "lazy_refcounts": c.LazyRefcounts = v is "on" or "true"; break;
                case "compression_type": c.CompressionType = v; break;
                case "backing_file": c.BackingFile = v; break;
                case "backing_fmt": c.BackingFormat = v; break;
                case "preallocation": c.Preallocation = v; break;
                case "encrypt.format":
                    if (v != "luks") throw new UserFacingException($"encrypt.format '{v}' is not supported (luks)");
                    break;
                case "encrypt.key-secret":
                    c.EncryptSecret = secrets.TryGetValue(v, out var s) ? s : throw new UserFacingException($"no secret with id '{v}' (add --object secret,id={v},data=...)");
                    break;
                case "encrypt.iter-time": c.EncryptIterTimeMs = int.Parse(v, CultureInfo.InvariantCulture); break;
                case "encrypt.cipher-alg" or "encrypt.cipher-mode" or "encrypt.hash-alg" or "encrypt.ivgen-alg":
                    if (v is not ("aes-256" or "xts" or "sha256" or "plain64")) throw new UserFacingException($"{k}={v} is not supported (aes-256, xts, sha256, plain64)");
                    break;
                default: throw new UserFacingException($"Invalid parameter '{k}'");
            }
        }
        if (o.ContainsKey("encrypt.format") && c.EncryptSecret == null) throw new UserFacingException("encrypt.format=luks needs encrypt.key-secret=ID and --object secret,id=ID,data=...");
        return c;
    }

    public static string HumanSize(long b)
    {
        string[] u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        double v = b; int i = 0;
        while (v >= 1024 && i < u.Length - 1) { v /= 1024; i++; }
        return i == 0 ? $"{b} B" : v.ToString(v >= 100 ? "0" : v >= 10 ? "0.#" : "0.##", CultureInfo.InvariantCulture) + " " + u[i];
    }
}
